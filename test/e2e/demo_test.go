package e2e

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var demoSlot = regexp.MustCompile(`confirmed_flush_lsn=(\S+) \(server WAL at (\S+)\)`)

// The one-command demo (built with -tags demo; the deployed relay links no
// test code) relays its four events and leaves the slot at the server's WAL
// position.
func TestDemo(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "outboxrelay-demo")
	if out, err := exec.Command("go", "build", "-tags", "demo", "-o", bin, "../../cmd/outboxrelay").CombinedOutput(); err != nil {
		t.Fatalf("building the demo: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "demo").CombinedOutput()
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	s := string(out)
	if n := strings.Count(s, "topic=outbox.event."); n != 4 {
		t.Errorf("the demo printed %d records, want 4:\n%s", n, s)
	}
	m := demoSlot.FindStringSubmatch(s)
	if m == nil || m[1] != m[2] || !strings.Contains(s, "rows left in the outbox table: 0") {
		t.Errorf("the demo's slot or table is not where it should be:\n%s", s)
	}
	if out, err := exec.Command("go", "list", "-deps", "../../cmd/outboxrelay").Output(); err != nil || strings.Contains(string(out), "/test/") {
		t.Errorf("the relay users deploy imports test code (%v):\n%s", err, out)
	}
}
