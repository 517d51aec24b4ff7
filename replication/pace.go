package replication

import (
	"context"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sys/unix"
)

// On a TCP connection to this host, the kernel delivers each segment the
// walsender sends on the walsender's own CPU: the receive path, the wake-up
// check and the acknowledgement all run inside its send(2), once per
// logical decoding message, three times per single-event transaction. A
// paced connection moves that work to the relay. Its receive buffer is set
// to pacedRecvBuffer before connecting, so the window it advertises is
// small and the sender's segments are no larger than half of it; and it
// reads the socket every pacedPause while messages flow rather than every
// pollPause. While the relay sleeps the window fills and the walsender's
// send(2) only appends to its socket's queue; the relay's next read opens
// the window, and the queued messages cross in large segments on the
// relay's CPU. Over a network none of this applies: the receive path runs
// on the relay's machine anyway, and a small window would cap throughput at
// window/RTT.
const pacedRecvBuffer = 16 << 10

// dialReplication returns the replication connection's dialer: a plain
// net.Dialer with connectTimeout, as pgconn's own, whose connection is taken
// over by a pollConn; paced when pace is set and the server is on this host
// (sameHost).
func dialReplication(connectTimeout time.Duration, pace bool) pgconn.DialFunc {
	paced := func(network, address string) bool {
		if !pace || (network != "tcp" && network != "tcp4" && network != "tcp6") {
			return false
		}
		host, _, err := net.SplitHostPort(address)
		return err == nil && sameHost(net.ParseIP(host))
	}
	d := &net.Dialer{Timeout: connectTimeout, Control: func(network, address string, rc syscall.RawConn) error {
		if !paced(network, address) {
			return nil
		}
		var err error
		if cerr := rc.Control(func(fd uintptr) {
			err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, pacedRecvBuffer)
		}); cerr != nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("setting the receive buffer of a paced connection (--pace-local=false turns pacing off): %w", err)
		}
		return nil
	}}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		pause := pollPause
		if paced(network, c.RemoteAddr().String()) {
			pause = pacedPause
		}
		return newPollConn(c, pause)
	}
}

// unpacedRecvBuffer is the receive buffer an unpaced connection asks for
// (Linux caps it at net.core.rmem_max).
const unpacedRecvBuffer = 4 << 20

// paced reports whether c is paced.
func (c *pollConn) paced() bool {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	return c.pause == pacedPause
}

// unpace ends pacing for good: the short pause after an empty read, and a
// large receive buffer. Growing the buffer after the handshake is safe (the
// window scale allows it); shrinking it is not, which is why pacing never
// comes back on the same connection.
func (c *pollConn) unpace() error {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.closed.Load() {
		return net.ErrClosed
	}
	c.pause = pollPause
	if err := unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_RCVBUF, unpacedRecvBuffer); err != nil {
		return fmt.Errorf("enlarging the receive buffer: %w", err)
	}
	return nil
}

// pacedConn returns the paced pollConn under nc (through TLS too), or nil.
func pacedConn(nc net.Conn) *pollConn {
	if t, ok := nc.(interface{ NetConn() net.Conn }); ok {
		nc = t.NetConn()
	}
	if pc, ok := nc.(*pollConn); ok && pc.paced() {
		return pc
	}
	return nil
}

// paceMeter decides when a paced connection stops pacing. Pacing pays for
// small messages, where delivering each one is most of the walsender's cost
// per event; large messages are few per byte, and a small window only
// multiplies segments and acknowledgements on the relay's CPU (events of
// 96 KB: 80% more relay CPU, a quarter less throughput; of 16 KB: 60% more
// CPU). Every paceSample messages, it answers true if they averaged more
// than unpaceAbove bytes.
type paceMeter struct{ n, bytes int }

const (
	paceSample  = 64
	unpaceAbove = 4 << 10
)

func (m *paceMeter) add(size int) bool {
	m.n++
	m.bytes += size
	if m.n < paceSample {
		return false
	}
	large := m.bytes > unpaceAbove*m.n
	m.n, m.bytes = 0, 0
	return large
}

// sameHost reports whether ip is a loopback address or one of this host's
// interface addresses. It answers false when the interfaces cannot be
// listed.
func sameHost(ip net.IP) bool {
	if ip == nil {
		return false
	}
	if ip.IsLoopback() {
		return true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true
		}
	}
	return false
}
