// Package reference runs Debezium itself (the embedded engine with the
// PostgreSQL connector and the Outbox Event Router, test/debezium) and the
// outboxrelay binary over the same WAL, each on its own replication slots,
// into the same broker, and compares what they produced record by record.
//
// It needs a JDK 17 and Maven (test/debezium/fetch.sh fetches Debezium from
// Maven Central into a cache) and runs only when OUTBOXRELAY_DEBEZIUM=1, so
// that a plain `go test ./...` starts no JVM. OUTBOXRELAY_KAFKA=real runs it
// against Apache Kafka instead of kfake.
package reference

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// DebeziumEnv names the environment variable that turns the package on.
const DebeziumEnv = "OUTBOXRELAY_DEBEZIUM"

var (
	binary    string // the outboxrelay binary under test
	classPath string // the Debezium reference program and its dependencies
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	if os.Getenv(DebeziumEnv) != "1" {
		fmt.Printf("skipping: set %s=1 to compare outboxrelay with Debezium (needs a JDK 17 and Maven)\n", DebeziumEnv)
		return m.Run() // every test skips itself
	}
	dir, err := os.MkdirTemp("", "outboxrelay-reference-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if binary = os.Getenv("OUTBOXRELAY_E2E_BINARY"); binary == "" {
		binary = filepath.Join(dir, "outboxrelay")
		build := exec.Command("go", "build", "-o", binary, "../../cmd/outboxrelay")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building outboxrelay:", err)
			return 1
		}
	}
	fetch := exec.CommandContext(context.Background(), "bash", "../debezium/fetch.sh")
	fetch.Stderr = os.Stderr
	out, err := fetch.Output()
	if err != nil {
		fmt.Fprintln(os.Stderr, "fetching Debezium (test/debezium/fetch.sh):", err)
		return 1
	}
	classPath = strings.TrimSpace(string(out))
	return m.Run()
}

func requireDebezium(t *testing.T) {
	t.Helper()
	if classPath == "" {
		t.Skipf("set %s=1 to run Debezium as the reference (needs a JDK 17 and Maven)", DebeziumEnv)
	}
}
