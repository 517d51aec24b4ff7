// Package promtool runs Prometheus's promtool from tests: `check metrics` on
// a scraped exposition, `check rules` and `test rules` on alerting rules.
// promtool comes with Debian's prometheus package, which .ci/run installs;
// without it a test is skipped, except in CI (CI=true), where it fails.
package promtool

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Path is promtool's path. Without promtool the test is skipped, or fails
// when CI is set.
func Path(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err == nil {
		return p
	}
	const install = "promtool is not installed (apt-get install --no-install-recommends prometheus; .ci/run does it)"
	if os.Getenv("CI") == "true" {
		t.Fatal(install)
	}
	t.Skip(install)
	return ""
}

// Run runs promtool with args and stdin, and fails the test, with
// promtool's output, when it exits non-zero. It returns the output.
func Run(t testing.TB, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(Path(t), args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// CheckMetrics fails the test when `promtool check metrics` finds a problem
// in exposition (Prometheus's text format): a malformed line, or a name or
// help text against Prometheus's conventions.
func CheckMetrics(t testing.TB, exposition string) {
	t.Helper()
	Run(t, exposition, "check", "metrics")
}
