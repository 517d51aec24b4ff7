#!/usr/bin/env bash
# Fetches the Apache Kafka broker named in pom.xml (with its dependencies)
# from Maven Central into a cache folder outside the repository, unless it is
# there already, and prints that folder: the harness runs
# `java -cp '<folder>/*' kafka.Kafka`. Idempotent; safe to run on every CI run.
#
# The folder is $OUTBOXRELAY_KAFKA_CACHE (default
# ${XDG_CACHE_HOME:-~/.cache}/outboxrelay)/kafka-<version>-<pom hash>/lib.
# Maven's own repository (~/.m2) caches the downloads as well.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
pom="$here/pom.xml"
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")
hash=$(sha256sum "$pom" | cut -c1-12)
cache=${OUTBOXRELAY_KAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/outboxrelay}
dir="$cache/kafka-$version-$hash"

mkdir -p "$cache"
# One fetch at a time: test packages running in parallel may all call this.
if command -v flock >/dev/null; then
	exec 9>"$cache/.fetch.lock"
	flock 9
fi
if [ ! -f "$dir/complete" ]; then
	command -v mvn >/dev/null || { echo "fetch.sh: mvn not found (Maven is needed to fetch the Kafka broker)" >&2; exit 1; }
	command -v java >/dev/null || { echo "fetch.sh: java not found (the Kafka broker needs a JDK 17 or newer)" >&2; exit 1; }
	tmp=$(mktemp -d "$cache/.fetch-XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	# Send Maven's output to stderr: stdout carries only the folder.
	mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies \
		-DincludeScope=runtime -DoutputDirectory="$tmp/lib" >&2
	ls "$tmp"/lib/kafka_2.13-"$version".jar >/dev/null
	touch "$tmp/complete"
	rm -rf "$dir"
	mv "$tmp" "$dir"
	trap - EXIT
fi
echo "$dir/lib"
