package checkpoint

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestTrackerConfirmsOnlyFullyAckedPrefix(t *testing.T) {
	type step struct {
		op        string // begin, add, commit, ack
		arg       uint64 // end LSN for commit, ticket index for ack
		wantLSN   uint64
		wantIdle  bool
		checkLast bool
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"empty transaction confirms at commit", []step{
			{op: "begin"}, {op: "commit", arg: 100, wantLSN: 100, wantIdle: true, checkLast: true},
		}},
		{"waits for ack", []step{
			{op: "begin"}, {op: "add"}, {op: "commit", arg: 100, wantLSN: 7, checkLast: true},
			{op: "ack", arg: 0, wantLSN: 100, wantIdle: true, checkLast: true},
		}},
		{"later ack does not jump over an earlier transaction", []step{
			{op: "begin"}, {op: "add"}, {op: "commit", arg: 100},
			{op: "begin"}, {op: "add"}, {op: "commit", arg: 200},
			{op: "ack", arg: 1, wantLSN: 7, checkLast: true},
			{op: "ack", arg: 0, wantLSN: 200, wantIdle: true, checkLast: true},
		}},
		{"open transaction is not confirmable even when acked", []step{
			{op: "begin"}, {op: "add"}, {op: "ack", arg: 0, wantLSN: 7, checkLast: true},
			{op: "commit", arg: 300, wantLSN: 300, wantIdle: true, checkLast: true},
		}},
		{"position never moves back below the start", []step{
			{op: "begin"}, {op: "commit", arg: 3, wantLSN: 7, wantIdle: true, checkLast: true},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := NewTracker(7, Limits{})
			var tickets []Ticket
			for i, s := range tc.steps {
				switch s.op {
				case "begin":
					if err := tr.Begin(); err != nil {
						t.Fatal(err)
					}
				case "add":
					tk, err := tr.Add(10)
					if err != nil {
						t.Fatal(err)
					}
					tickets = append(tickets, tk)
				case "commit":
					if err := tr.Commit(s.arg); err != nil {
						t.Fatal(err)
					}
				case "ack":
					tr.Ack(tickets[s.arg])
				}
				if s.checkLast {
					lsn, idle := tr.Confirmable()
					if lsn != s.wantLSN || idle != s.wantIdle {
						t.Fatalf("step %d (%s): Confirmable() = %d, %v; want %d, %v", i, s.op, lsn, idle, s.wantLSN, s.wantIdle)
					}
				}
			}
		})
	}
}

func TestTrackerMisuse(t *testing.T) {
	tr := NewTracker(0, Limits{})
	if _, err := tr.Add(1); err == nil {
		t.Error("Add outside a transaction: want error")
	}
	if err := tr.Commit(1); err == nil {
		t.Error("Commit without Begin: want error")
	}
	if err := tr.Begin(); err != nil {
		t.Fatal(err)
	}
	if err := tr.Begin(); err == nil {
		t.Error("nested Begin: want error")
	}
}

func TestTrackerLimits(t *testing.T) {
	tr := NewTracker(0, Limits{MaxEvents: 2, MaxBytes: 100})
	_ = tr.Begin()
	if tr.Full() {
		t.Fatal("empty tracker reports full")
	}
	big, _ := tr.Add(500) // one oversized event is admitted when nothing else is in flight
	if !tr.Full() {
		t.Fatal("over the byte bound: want full")
	}
	tr.Ack(big)
	<-tr.Notify()
	a, _ := tr.Add(1)
	if tr.Full() {
		t.Fatal("one small event: want room")
	}
	b, _ := tr.Add(1)
	if !tr.Full() {
		t.Fatal("at the event bound: want full")
	}
	if ev, by := tr.InFlight(); ev != 2 || by != 2 {
		t.Fatalf("InFlight() = %d, %d; want 2, 2", ev, by)
	}
	tr.Ack(a)
	tr.Ack(b)
	if tr.Full() {
		t.Fatal("after acks: want room")
	}
}

// TestTrackerRandomAcks checks the safety invariant against a brute-force
// oracle: the confirmable position is always the end of the longest prefix of
// committed transactions whose events are all acknowledged.
func TestTrackerRandomAcks(t *testing.T) {
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 1))
		tr := NewTracker(0, Limits{})
		type ev struct {
			tk    Ticket
			tx    int
			acked bool
		}
		var events []ev
		var ends []uint64
		lsn := uint64(0)
		for tx := range 30 {
			_ = tr.Begin()
			for range rng.IntN(4) {
				tk, _ := tr.Add(1)
				events = append(events, ev{tk: tk, tx: tx})
			}
			lsn += uint64(1 + rng.IntN(50))
			_ = tr.Commit(lsn)
			ends = append(ends, lsn)
		}
		for _, i := range rng.Perm(len(events)) {
			tr.Ack(events[i].tk)
			events[i].acked = true
			want := uint64(0)
			for tx, end := range ends {
				done := true
				for _, e := range events {
					if e.tx == tx && !e.acked {
						done = false
					}
				}
				if !done {
					break
				}
				want = end
			}
			if got, _ := tr.Confirmable(); got != want {
				t.Fatalf("seed %d: Confirmable() = %d, oracle %d", seed, got, want)
			}
		}
		if got, idle := tr.Confirmable(); got != lsn || !idle {
			t.Fatalf("seed %d: after all acks Confirmable() = %d, %v; want %d, true", seed, got, idle, lsn)
		}
	}
}

func BenchmarkTracker(b *testing.B) {
	tr := NewTracker(0, Limits{MaxEvents: 10000})
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		_ = tr.Begin()
		tk, _ := tr.Add(250)
		_ = tr.Commit(uint64(i + 1))
		tr.Ack(tk)
	}
}

// TestTrackerOracleWithKeepalives interleaves transactions, acknowledgements
// in any order, server keepalives (also in the middle of a transaction, when
// their position may lie beyond it) and reads of the confirmable position,
// and checks every read against a brute-force oracle: no transaction ending
// at or before the position has an unacknowledged event; the position never
// goes back; once nothing is in flight it reaches the last commit and the
// last keepalive received while nothing was in flight.
func TestTrackerOracleWithKeepalives(t *testing.T) {
	type txState struct {
		end     uint64
		pending int
	}
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 7))
		tr := NewTracker(0, Limits{})
		var txs []*txState
		var open *txState
		var inflight []Ticket
		var owner []*txState
		server, prev, idleFloor := uint64(0), uint64(0), uint64(0)
		check := func(step int) {
			lsn, idle := tr.Confirmable()
			if lsn < prev {
				t.Fatalf("seed %d step %d: position went back from %d to %d", seed, step, prev, lsn)
			}
			prev = lsn
			for _, tx := range txs {
				if tx.end <= lsn && tx.pending > 0 {
					t.Fatalf("seed %d step %d: confirmable %d covers a transaction ending at %d with %d events unacknowledged", seed, step, lsn, tx.end, tx.pending)
				}
			}
			if wantIdle := open == nil && len(inflight) == 0; idle != wantIdle {
				t.Fatalf("seed %d step %d: idle = %v, want %v", seed, step, idle, wantIdle)
			}
			lastEnd := uint64(0)
			if len(txs) > 0 {
				lastEnd = txs[len(txs)-1].end
			}
			if idle && (lsn < lastEnd || lsn < idleFloor) {
				t.Fatalf("seed %d step %d: idle at %d, behind the last commit %d or keepalive %d", seed, step, lsn, lastEnd, idleFloor)
			}
		}
		for step := range 200 {
			switch op := rng.IntN(6); {
			case op == 0 && open == nil:
				_ = tr.Begin()
				open = &txState{}
			case op == 1 && open != nil:
				tk, _ := tr.Add(1)
				open.pending++
				inflight, owner = append(inflight, tk), append(owner, open)
			case op == 2 && open != nil:
				server += uint64(1 + rng.IntN(20))
				open.end = server
				_ = tr.Commit(server)
				txs, open = append(txs, open), nil
			case op == 3 && len(inflight) > 0:
				i := rng.IntN(len(inflight))
				tr.Ack(inflight[i])
				owner[i].pending--
				inflight = append(inflight[:i], inflight[i+1:]...)
				owner = append(owner[:i], owner[i+1:]...)
			case op == 4:
				// A keepalive's position: beyond everything sent; inside a
				// transaction it may lie beyond that transaction's end too.
				ka := server + uint64(rng.IntN(5))
				if open != nil {
					ka += uint64(rng.IntN(30))
				} else {
					server = ka // the next commit ends beyond it
				}
				if open == nil && len(inflight) == 0 {
					idleFloor = max(idleFloor, ka)
				}
				tr.Keepalive(ka)
			}
			check(step)
		}
	}
}

// The initial snapshot is the first transaction: the stream reader waits
// (Full) until it ends, the snapshot reader waits for room, and nothing
// streamed after it is confirmed before every snapshot row is acknowledged.
func TestTrackerSnapshot(t *testing.T) {
	tr := NewTracker(100, Limits{MaxEvents: 2})
	if err := tr.BeginSnapshot(); err != nil {
		t.Fatal(err)
	}
	if !tr.Full() {
		t.Fatal("the stream reader must wait while the snapshot is read")
	}
	var rows []Ticket
	for range 2 {
		tk, err := tr.Add(10)
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, tk)
	}
	waited := make(chan struct{})
	go func() { tr.WaitRoom(nil); close(waited) }()
	select {
	case <-waited:
		t.Fatal("WaitRoom returned with the bound reached")
	case <-time.After(20 * time.Millisecond):
	}
	tr.Ack(rows[0])
	<-waited
	if lsn, idle := tr.Confirmable(); lsn != 100 || idle {
		t.Fatalf("during the snapshot: confirmable %d idle %v", lsn, idle)
	}
	tr.Keepalive(500) // not idle: no floor
	if err := tr.EndSnapshot(100); err != nil {
		t.Fatal(err)
	}
	if tr.Full() {
		t.Fatal("still full after the snapshot ended, with room")
	}
	if err := tr.Begin(); err != nil {
		t.Fatal(err)
	}
	streamed, _ := tr.Add(1)
	if err := tr.Commit(200); err != nil {
		t.Fatal(err)
	}
	tr.Ack(streamed)
	if lsn, _ := tr.Confirmable(); lsn != 100 {
		t.Fatalf("a streamed transaction confirmed (%d) before the last snapshot row was acknowledged", lsn)
	}
	tr.Ack(rows[1])
	if lsn, idle := tr.Confirmable(); lsn != 200 || !idle {
		t.Fatalf("after every acknowledgement: confirmable %d idle %v, want 200", lsn, idle)
	}
	if err := tr.EndSnapshot(1); err == nil {
		t.Fatal("EndSnapshot without BeginSnapshot must fail")
	}
	if err := tr.Begin(); err != nil {
		t.Fatal(err)
	}
	if err := tr.BeginSnapshot(); err == nil {
		t.Fatal("a snapshot after streamed transactions must be refused")
	}
}
