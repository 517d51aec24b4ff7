package replication

import (
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// A paced dial to this host shrinks the socket's receive buffer before
// connecting and sleeps the paced pause between empty reads; an unpaced one
// keeps the kernel's buffer and the short pause.
func TestDialReplicationPacesLocalConnections(t *testing.T) {
	for _, tc := range []struct {
		pace      bool
		wantPause int64
	}{
		{pace: true, wantPause: int64(pacedPause)},
		{pace: false, wantPause: int64(pollPause)},
	} {
		pc, _ := pollPair(t, tc.pace)
		c := pc.(*pollConn)
		if int64(c.pause) != tc.wantPause {
			t.Errorf("pace=%v: pause %v, want %v", tc.pace, c.pause, tc.wantPause)
		}
		rcvbuf, err := unix.GetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_RCVBUF)
		if err != nil {
			t.Fatal(err)
		}
		// Linux doubles the size set, for its bookkeeping; an unset buffer
		// starts at tcp_rmem's default (128 KiB; 85 KiB on old kernels) and
		// grows.
		if small := rcvbuf <= 2*pacedRecvBuffer; small != tc.pace {
			t.Errorf("pace=%v: SO_RCVBUF %d", tc.pace, rcvbuf)
		}
	}
}

func TestSameHost(t *testing.T) {
	tests := []struct {
		ip   string
		want bool
	}{
		{"127.0.0.1", true},
		{"127.3.2.1", true},
		{"::1", true},
		{"192.0.2.1", false}, // TEST-NET-1: documentation only, never assigned
		{"2001:db8::1", false},
		{"", false},
	}
	// Every address of this host's interfaces counts as this host.
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() {
			tests = append(tests, struct {
				ip   string
				want bool
			}{n.IP.String(), true})
		}
	}
	for _, tc := range tests {
		if got := sameHost(net.ParseIP(tc.ip)); got != tc.want {
			t.Errorf("sameHost(%q) = %v, want %v", tc.ip, got, tc.want)
		}
	}
}
