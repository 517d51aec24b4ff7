//go:build linux

package replication

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// pollConn is the replication connection's socket, read outside Go's network
// poller.
//
// The walsender sends every logical decoding message with its own send(2).
// A client that waits for data is woken for each one, and on loopback or a
// shared host that wake-up runs on the walsender's CPU: with a client that
// keeps up, it is most of what the walsender spends per event. A socket in
// Go's poller wakes the process for each message even while the reader is
// busy or sleeping, because the runtime waits in epoll for all sockets at
// once. pollConn takes the socket out of the poller. While messages flow, a
// read that finds nothing sleeps for a moment and reads again, so that the
// messages sent meanwhile arrive without waking anyone and come in one read.
// After busyPolls empty reads in a row it blocks in poll(2) until data comes,
// so an idle stream costs nothing.
type pollConn struct {
	fd int
	// eventfds that interrupt a blocked poll on a deadline change or Close:
	// one for the reader and one for the writer, so that neither can
	// consume the other's wake-up.
	wakeR, wakeW int
	local        net.Addr
	remote       net.Addr

	readDeadline  atomic.Int64 // unix nanoseconds; 0: none
	writeDeadline atomic.Int64
	closed        atomic.Bool
	// set while the reader or the writer is blocked in poll(2): only then
	// does a deadline change need to wake it, which keeps moving a deadline
	// down to two atomic operations while messages flow.
	readPolling, writePolling atomic.Bool

	rmu, wmu sync.Mutex // one reader and one writer at a time; Close waits for both
	empty    int        // empty reads in a row, under rmu
}

const (
	// pollPause is the sleep after an empty read while messages flow. The
	// runtime rounds short sleeps of an idle process up to a millisecond.
	pollPause = 100 * time.Microsecond
	// busyPolls is how many empty reads in a row end the flow.
	busyPolls = 20
)

// newPollConn takes over c's socket. It returns c itself when c is not a
// plain socket, and closes c when it fails.
func newPollConn(c net.Conn) (net.Conn, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c, nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return c, nil
	}
	fd := -1
	var dupErr error
	dup := func(s uintptr) { fd, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }
	if err := raw.Control(dup); err != nil {
		dupErr = err
	}
	local, remote := c.LocalAddr(), c.RemoteAddr()
	// Closing c takes its descriptor out of the runtime's epoll set; the
	// duplicate, never added to it, keeps the connection open. (A
	// duplicate made through os.NewFile would be added again.)
	c.Close()
	if dupErr != nil {
		return nil, fmt.Errorf("taking over the replication socket: %w", dupErr)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("taking over the replication socket: %w", err)
	}
	pc := &pollConn{fd: fd, wakeR: -1, wakeW: -1, local: local, remote: remote}
	for _, w := range []*int{&pc.wakeR, &pc.wakeW} {
		if *w, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
			pc.closeFDs()
			return nil, fmt.Errorf("taking over the replication socket: %w", err)
		}
	}
	return pc, nil
}

func (c *pollConn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil // read(2) would answer 0, which means EOF
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		if c.closed.Load() {
			return 0, net.ErrClosed
		}
		n, err := syscall.Read(c.fd, b)
		switch {
		case n > 0:
			c.empty = 0
			return n, nil
		case err == nil:
			return 0, io.EOF
		case errors.Is(err, syscall.EINTR):
			continue
		case !errors.Is(err, syscall.EAGAIN):
			return 0, &net.OpError{Op: "read", Net: c.remote.Network(), Source: c.local, Addr: c.remote, Err: err}
		}
		if expired(&c.readDeadline) {
			return 0, os.ErrDeadlineExceeded
		}
		if c.empty < busyPolls {
			c.empty++
			pause := pollPause
			if d := c.readDeadline.Load(); d != 0 {
				pause = min(pause, time.Until(time.Unix(0, d)))
			}
			time.Sleep(pause)
			continue
		}
		if err := c.poll(unix.POLLIN, c.wakeR, &c.readDeadline, &c.readPolling); err != nil {
			return 0, err
		}
	}
}

func (c *pollConn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	written := 0
	for written < len(b) {
		if c.closed.Load() {
			return written, net.ErrClosed
		}
		n, err := syscall.Write(c.fd, b[written:])
		if n > 0 {
			written += n
		}
		switch {
		case err == nil, errors.Is(err, syscall.EINTR):
			continue
		case !errors.Is(err, syscall.EAGAIN):
			return written, &net.OpError{Op: "write", Net: c.remote.Network(), Source: c.local, Addr: c.remote, Err: err}
		}
		if expired(&c.writeDeadline) {
			return written, os.ErrDeadlineExceeded
		}
		if err := c.poll(unix.POLLOUT, c.wakeW, &c.writeDeadline, &c.writePolling); err != nil {
			return written, err
		}
	}
	return written, nil
}

// poll blocks until the socket is ready for events, the deadline passes, or
// wake (the caller's eventfd) says the deadline changed or the connection
// closed; the caller then checks and tries again. polling is set for as
// long as the deadline it read may be stale: a setter that stores a new
// deadline and then finds polling clear knows the next poll reads it.
func (c *pollConn) poll(events int16, wake int, deadline *atomic.Int64, polling *atomic.Bool) error {
	polling.Store(true)
	defer polling.Store(false)
	timeout := -1
	if d := deadline.Load(); d != 0 {
		left := time.Until(time.Unix(0, d))
		if left <= 0 {
			return os.ErrDeadlineExceeded
		}
		timeout = int((left + time.Millisecond - 1) / time.Millisecond)
	}
	fds := []unix.PollFd{{Fd: int32(c.fd), Events: events}, {Fd: int32(wake), Events: unix.POLLIN}}
	if _, err := unix.Poll(fds, timeout); err != nil && !errors.Is(err, syscall.EINTR) {
		return &net.OpError{Op: "poll", Net: c.remote.Network(), Source: c.local, Addr: c.remote, Err: err}
	}
	if fds[1].Revents != 0 {
		var buf [8]byte
		_, _ = unix.Read(wake, buf[:]) // reset; a missed reset only costs a spurious wake-up
	}
	return nil
}

func expired(deadline *atomic.Int64) bool {
	d := deadline.Load()
	return d != 0 && time.Now().UnixNano() >= d
}

// interrupt wakes both sides from a blocked poll so that they see Close.
func (c *pollConn) interrupt() {
	wake(c.wakeR)
	wake(c.wakeW)
}

// wakeIfPolling wakes the side whose polling flag is set; called after its
// deadline was stored.
func wakeIfPolling(polling *atomic.Bool, fd int) {
	if polling.Load() {
		wake(fd)
	}
}

func wake(fd int) {
	one := [8]byte{1}
	_, _ = unix.Write(fd, one[:]) // EAGAIN: a wake-up is pending already
}

// Close ends blocked reads and writes, waits for them to return, and then
// closes the socket, so that no read can reach a reused descriptor.
func (c *pollConn) Close() error {
	if c.closed.Swap(true) {
		return net.ErrClosed
	}
	c.interrupt()
	c.rmu.Lock()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	defer c.rmu.Unlock()
	return c.closeFDs()
}

func (c *pollConn) closeFDs() error {
	for _, w := range []int{c.wakeR, c.wakeW} {
		if w >= 0 {
			unix.Close(w)
		}
	}
	return unix.Close(c.fd)
}

func (c *pollConn) LocalAddr() net.Addr  { return c.local }
func (c *pollConn) RemoteAddr() net.Addr { return c.remote }

func (c *pollConn) SetDeadline(t time.Time) error {
	setDeadline(&c.readDeadline, t)
	setDeadline(&c.writeDeadline, t)
	wakeIfPolling(&c.readPolling, c.wakeR)
	wakeIfPolling(&c.writePolling, c.wakeW)
	return nil
}

func (c *pollConn) SetReadDeadline(t time.Time) error {
	setDeadline(&c.readDeadline, t)
	wakeIfPolling(&c.readPolling, c.wakeR)
	return nil
}

func (c *pollConn) SetWriteDeadline(t time.Time) error {
	setDeadline(&c.writeDeadline, t)
	wakeIfPolling(&c.writePolling, c.wakeW)
	return nil
}

func setDeadline(d *atomic.Int64, t time.Time) {
	if t.IsZero() {
		d.Store(0)
		return
	}
	d.Store(max(t.UnixNano(), 1))
}
