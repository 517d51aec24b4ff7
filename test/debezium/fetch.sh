#!/usr/bin/env bash
# Builds the Debezium reference program (pom.xml, src/) and copies Debezium
# 3.6.1.Final with its dependencies from Maven Central into a cache folder
# outside the repository, unless that folder is complete already, and prints
# the class path to run it with:
#   java -cp "$(test/debezium/fetch.sh)" io.outboxrelay.reference.DebeziumReference connector.properties
# Idempotent; safe to run on every CI run.
#
# The folder is $OUTBOXRELAY_DEBEZIUM_CACHE (default
# ${XDG_CACHE_HOME:-~/.cache}/outboxrelay)/debezium-<version>-<sources hash>;
# Maven's own repository (~/.m2) caches the downloads as well.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
pom="$here/pom.xml"
version=$(sed -n 's:.*<debezium.version>\(.*\)</debezium.version>.*:\1:p' "$pom")
hash=$(cd "$here" && find pom.xml src -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-12)
cache=${OUTBOXRELAY_DEBEZIUM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/outboxrelay}
dir="$cache/debezium-$version-$hash"

if [ ! -f "$dir/complete" ]; then
	command -v mvn >/dev/null || { echo "fetch.sh: mvn not found (Maven is needed to fetch Debezium)" >&2; exit 1; }
	command -v java >/dev/null || { echo "fetch.sh: java not found (Debezium needs a JDK 17 or newer)" >&2; exit 1; }
	mkdir -p "$cache"
	tmp=$(mktemp -d "$cache/.fetch-XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	# Maven's output goes to stderr: stdout carries only the class path.
	mvn -q -B -Dstyle.color=never -f "$pom" -Dreference.build="$tmp/build" \
		package dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp/lib" >&2
	mv "$tmp/build/debezium-reference-0.jar" "$tmp/debezium-reference.jar"
	rm -rf "$tmp/build"
	ls "$tmp/lib/debezium-connector-postgres-$version.jar" >/dev/null
	touch "$tmp/complete"
	rm -rf "$dir"
	mv "$tmp" "$dir"
	trap - EXIT
fi
echo "$dir/debezium-reference.jar:$dir/lib/*"
