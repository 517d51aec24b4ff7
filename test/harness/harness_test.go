package harness

import (
	"net"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

func TestBinDirHoldsTheServerTools(t *testing.T) {
	dir, err := BinDir()
	if err != nil {
		t.Fatal(err)
	}
	for _, tool := range []string{"initdb", "pg_ctl"} {
		if !isExec(filepath.Join(dir, tool)) {
			t.Errorf("%s has no %s", dir, tool)
		}
	}
	t.Setenv("PG_BINDIR", t.TempDir()) // an empty directory is passed over
	if again, err := BinDir(); err != nil || again != dir {
		t.Errorf("with an empty PG_BINDIR: %q, %v; want %q", again, err, dir)
	}
}

func TestFreePortIsBindable(t *testing.T) {
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatalf("port %d is not free: %v", port, err)
	}
	l.Close()
}

func TestCount(t *testing.T) {
	two := make([]*kgo.Record, 2)
	if Count(3)(two) || !Count(2)(two) {
		t.Error("Count(n) must hold from n records on")
	}
}

func TestVersionOf(t *testing.T) {
	if v := versionOf("/usr/lib/postgresql/15/bin"); v != 15 {
		t.Errorf("versionOf = %d, want 15", v)
	}
}
