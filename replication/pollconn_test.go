//go:build linux

package replication

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// pollPair returns a pollConn dialled by the replication dialer to a
// loopback listener, and the listener's end of the connection.
func pollPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	pc, err := dialReplication(0)(t.Context(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := pc.(*pollConn); !ok {
		t.Fatalf("newPollConn returned %T, want *pollConn", pc)
	}
	server, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { pc.Close(); server.Close() })
	return pc, server
}

// Data arrives whether it comes while the reader polls busily, after it has
// gone idle and blocks, or in a burst; writes arrive whole; the peer's close
// reads as EOF.
func TestPollConnReadWriteEOF(t *testing.T) {
	pc, server := pollPair(t)
	// Chunks and the pauses before them: busy polling, idle blocking, and
	// more than the socket buffers hold at once.
	pauses := []time.Duration{0, 0, time.Millisecond, 50 * time.Millisecond, 0, 200 * time.Millisecond, 0}
	var chunks [][]byte
	var want bytes.Buffer
	for i := range pauses {
		chunk := bytes.Repeat([]byte{byte('a' + i)}, 1000*(i+1))
		if i == len(pauses)-1 {
			chunk = bytes.Repeat([]byte("z"), 4<<20)
		}
		chunks = append(chunks, chunk)
		want.Write(chunk)
	}
	go func() {
		for i, chunk := range chunks {
			time.Sleep(pauses[i])
			if _, err := server.Write(chunk); err != nil {
				return
			}
		}
		server.(*net.TCPConn).CloseWrite()
	}()
	if n, err := pc.Read(nil); n != 0 || err != nil {
		t.Fatalf("Read(nil) = %d, %v; want 0, nil", n, err)
	}
	got, err := io.ReadAll(pc)
	if err != nil {
		t.Fatalf("ReadAll: %v", err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("read %d bytes, want %d (contents differ: %v)", len(got), want.Len(), len(got) == want.Len())
	}

	msg := bytes.Repeat([]byte("w"), 8<<20) // more than fits without the peer reading
	read := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(server, int64(len(msg))))
		read <- b
	}()
	if n, err := pc.Write(msg); err != nil || n != len(msg) {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if b := <-read; !bytes.Equal(b, msg) {
		t.Fatalf("peer read %d bytes, want %d", len(b), len(msg))
	}
}

// A deadline ends a read that waits, with the timeout error the PostgreSQL
// driver expects, and leaves the connection usable; moving the deadline
// wakes a read blocked in poll(2).
func TestPollConnDeadlines(t *testing.T) {
	pc, server := pollPair(t)
	// A deadline nearer than the pause after an empty read ends the read
	// all the same.
	if err := pc.SetReadDeadline(time.Now().Add(time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if _, err := pc.Read(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past a 1ms deadline = %v, want a timeout", err)
	}
	if err := pc.SetReadDeadline(time.Now().Add(30 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	_, err := pc.Read(make([]byte, 10))
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read past the deadline = %v, want a timeout", err)
	}

	// No deadline: the read goes idle and blocks; a deadline set from
	// another goroutine must end it.
	if err := pc.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := pc.Read(make([]byte, 10))
		done <- err
	}()
	time.Sleep(100 * time.Millisecond) // past the busy polls
	_ = pc.SetReadDeadline(time.Now())
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Read = %v, want a timeout", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("moving the deadline did not wake the blocked read")
	}

	_ = pc.SetReadDeadline(time.Time{})
	go func() { _, _ = server.Write([]byte("after")) }()
	b := make([]byte, 5)
	if _, err := io.ReadFull(pc, b); err != nil || string(b) != "after" {
		t.Fatalf("read after a timeout: %q, %v", b, err)
	}
}

// Close ends a blocked read and a blocked write at once (the peer reads
// nothing), and only then releases the descriptor.
func TestPollConnCloseEndsBlockedReadAndWrite(t *testing.T) {
	pc, _ := pollPair(t)
	done := make(chan error, 2)
	go func() {
		_, err := pc.Read(make([]byte, 10))
		done <- err
	}()
	go func() {
		_, err := pc.Write(make([]byte, 64<<20)) // far more than the socket buffers hold
		done <- err
	}()
	time.Sleep(200 * time.Millisecond)
	closed := make(chan error, 1)
	go func() { closed <- pc.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close waits on a blocked call")
	}
	for range 2 {
		select {
		case err := <-done:
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("blocked call = %v, want net.ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Close did not end a blocked call")
		}
	}
	if err := pc.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close = %v, want net.ErrClosed", err)
	}
	if _, err := pc.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write after Close = %v, want net.ErrClosed", err)
	}
}

// A deadline moved while a read and a write are both blocked ends the call
// it applies to and leaves the other blocked; SetDeadline ends both.
func TestPollConnDeadlineWakesItsSide(t *testing.T) {
	pc, _ := pollPair(t)
	read, write := make(chan error, 1), make(chan error, 1)
	go func() {
		_, err := pc.Read(make([]byte, 10))
		read <- err
	}()
	go func() {
		_, err := pc.Write(make([]byte, 64<<20)) // far more than the socket buffers hold
		write <- err
	}()
	time.Sleep(200 * time.Millisecond) // both past their busy polls, blocked
	_ = pc.SetWriteDeadline(time.Now())
	select {
	case err := <-write:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("blocked Write = %v, want a timeout", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("moving the write deadline did not wake the blocked write")
	}
	_ = pc.SetReadDeadline(time.Now().Add(time.Hour))
	select {
	case err := <-read:
		t.Fatalf("the read ended (%v) though its deadline is an hour away", err)
	case <-time.After(100 * time.Millisecond):
	}
	_ = pc.SetDeadline(time.Now())
	select {
	case err := <-read:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("blocked Read = %v, want a timeout", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("SetDeadline did not wake the blocked read")
	}
}

// A connection that is not a socket is left as it is.
func TestPollConnKeepsOtherConns(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c, err := newPollConn(a)
	if err != nil || c != a {
		t.Fatalf("newPollConn(pipe) = %T, %v; want the pipe itself", c, err)
	}
}
