package replication

import (
	"crypto/tls"
	"errors"
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
	tests := map[string]bool{
		"127.0.0.1":   true,
		"127.3.2.1":   true,
		"::1":         true,
		"192.0.2.1":   false, // TEST-NET-1: documentation only, never assigned
		"2001:db8::1": false,
		"":            false,
	}
	// Every address of this host's interfaces counts as this host.
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() {
			tests[n.IP.String()] = true
		}
	}
	for ip, want := range tests {
		if got := sameHost(net.ParseIP(ip)); got != want {
			t.Errorf("sameHost(%q) = %v, want %v", ip, got, want)
		}
	}
}

func TestPaceMeter(t *testing.T) {
	repeat := func(size, n int) []int {
		s := make([]int, n)
		for i := range s {
			s[i] = size
		}
		return s
	}
	tests := []struct {
		name  string
		sizes []int
		want  int // the message after which add answers true; -1: never
	}{
		{"single-event transactions", repeat(120, 10*paceSample), -1},
		{"average exactly at the bound", repeat(unpaceAbove, 2*paceSample), -1},
		{"large events", repeat(16<<10, 2*paceSample), paceSample - 1},
		{"one huge message among small ones", append(repeat(100, paceSample-1), 2<<20), paceSample - 1},
		{"large only in the second sample", append(repeat(100, paceSample), repeat(8<<10, paceSample)...), 2*paceSample - 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var m paceMeter
			got := -1
			for i, size := range tc.sizes {
				if m.add(size) {
					got = i
					break
				}
			}
			if got != tc.want {
				t.Fatalf("unpaced after message %d, want %d", got, tc.want)
			}
		})
	}
}

// unpace ends pacing for good, also through TLS, and fails once the
// connection is closed.
func TestUnpace(t *testing.T) {
	pc, _ := pollPair(t, true)
	if pacedConn(tls.Client(pc, &tls.Config{})) != pc {
		t.Fatal("pacedConn does not find the paced socket under TLS")
	}
	c := pacedConn(pc)
	if c == nil {
		t.Fatal("pacedConn(paced) = nil")
	}
	if err := c.unpace(); err != nil {
		t.Fatal(err)
	}
	if pacedConn(pc) != nil || c.pause != pollPause {
		t.Fatalf("still paced after unpace: pause %v", c.pause)
	}
	rcvbuf, err := unix.GetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_RCVBUF)
	if err != nil {
		t.Fatal(err)
	}
	if rcvbuf <= 2*pacedRecvBuffer {
		t.Fatalf("SO_RCVBUF %d after unpace", rcvbuf)
	}
	unpaced, _ := pollPair(t, false)
	if pacedConn(unpaced) != nil {
		t.Fatal("pacedConn(unpaced) is not nil")
	}
	pc.Close()
	if err := c.unpace(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("unpace after Close = %v, want net.ErrClosed", err)
	}
}
