package replication

import (
	"context"
	"net"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// dialReplication returns the replication connection's dialer: a plain
// net.Dialer with connectTimeout, as pgconn's own, whose connection is then
// taken over (takeOver): on Linux by a pollConn, which reads the socket
// outside Go's poller (it halves the relay's CPU per event over a network
// link and lowers it on loopback: docs/performance.md), elsewhere not at all.
//
// The connection keeps the kernel's receive buffer and its autotuning, on
// this host too. A receive buffer shrunk to pace the walsender (tried: 16
// KiB, so that its sends queue instead of delivering each message on its
// CPU) holds one loopback segment: the kernel then drops segments on receive
// whenever the reader falls behind, and with a one-segment window TCP can
// only repair a drop by a retransmission timeout, so a large transaction
// crawled at one window per 200 ms or more (docs/performance.md).
func dialReplication(connectTimeout time.Duration) pgconn.DialFunc {
	d := &net.Dialer{Timeout: connectTimeout}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return takeOver(c)
	}
}
