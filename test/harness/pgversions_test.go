package harness

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeFetch stands a script in for test/postgres/fetch.sh that makes a bin
// folder whose pg_ctl claims to be PostgreSQL reports (the requested major
// when empty), logs each call in the returned file and fails for major 12.
func fakeFetch(t *testing.T, reports string) (calls string) {
	dir := t.TempDir()
	calls = filepath.Join(dir, "calls")
	script := filepath.Join(dir, "fetch.sh")
	body := `set -e
echo "$1" >>` + calls + `
[ "$1" != 12 ] || { echo "fetch.sh: no pinned build for PostgreSQL major '12'" >&2; exit 2; }
v=${REPORTS:-$1}
bin=` + dir + `/pg-$1/bin
mkdir -p "$bin"
printf '#!/bin/sh\necho "pg_ctl (PostgreSQL) %s.4"\n' "$v" >"$bin/pg_ctl"
cp "$bin/pg_ctl" "$bin/initdb"
chmod +x "$bin/pg_ctl" "$bin/initdb"
echo "fetched $1" >&2
echo "$bin"
`
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	// The fake gets a cache of its own: the real one may hold the major
	// that $OUTBOXRELAY_PG_MAJOR asked for already.
	fetchMu.Lock()
	oldScript, oldFetched := fetchScript, fetched
	fetchScript, fetched = script, map[int]string{}
	fetchMu.Unlock()
	t.Setenv("REPORTS", reports)
	t.Cleanup(func() {
		fetchMu.Lock()
		fetchScript, fetched = oldScript, oldFetched
		fetchMu.Unlock()
	})
	return calls
}

func TestMajorEnvFetchesThatMajorOnce(t *testing.T) {
	calls := fakeFetch(t, "")
	t.Setenv(PGMajorEnv, "13")
	t.Setenv("PG_BINDIR", t.TempDir()) // the major takes precedence
	first, err := BinDir()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(first, "/pg-13/bin") {
		t.Errorf("BinDir = %q, want the fetched pg-13/bin", first)
	}
	if again, err := BinDir(); err != nil || again != first {
		t.Errorf("second BinDir = %q, %v; want %q", again, err, first)
	}
	if log, _ := os.ReadFile(calls); string(log) != "13\n" {
		t.Errorf("fetch.sh was called with %q, want once with 13", log)
	}
}

func TestMajorEnvRefusesAnotherVersion(t *testing.T) {
	fakeFetch(t, "16")
	t.Setenv(PGMajorEnv, "14")
	if dir, err := BinDir(); err == nil || !strings.Contains(err.Error(), "PostgreSQL 16, not 14") {
		t.Errorf("BinDir = %q, %v; want it to refuse pg_ctl 16 for major 14", dir, err)
	}
}

func TestMajorEnvReportsFetchFailures(t *testing.T) {
	fakeFetch(t, "")
	for value, want := range map[string]string{
		"12":       "no pinned build for PostgreSQL major '12'",
		"thirteen": "want a PostgreSQL major version",
		"-3":       "want a PostgreSQL major version",
	} {
		t.Setenv(PGMajorEnv, value)
		if dir, err := BinDir(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s=%s: BinDir = %q, %v; want an error saying %q", PGMajorEnv, value, dir, err, want)
		}
	}
}

func TestVersionREReadsTheMajor(t *testing.T) {
	for out, want := range map[string]string{
		"pg_ctl (PostgreSQL) 13.23\n":          "13",
		"pg_ctl (PostgreSQL) 18.4\n":           "18",
		"pg_ctl (PostgreSQL) 15.14 (Debian)\n": "15",
		"pg_ctl (PostgreSQL) 19devel\n":        "19",
	} {
		if m := versionRE.FindStringSubmatch(out); m == nil || m[1] != want {
			t.Errorf("%q: got %v, want major %s", out, m, want)
		}
	}
}
