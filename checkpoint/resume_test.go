package checkpoint

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// replay runs transactions (their event counts) through r, as the slot
// replays them, and returns the events it sends ("tx/event") and, after
// every event sent and every transaction boundary, the checkpoint that
// holds then with the events delivered up to it.
func replay(r *Resume, txs []int) (sent []string, checkpoints []checkpointAt) {
	for j, n := range txs {
		commit := uint64(100 * (j + 1))
		r.Begin(commit)
		for e := range n {
			if r.Delivered() {
				continue
			}
			ev := fmt.Sprintf("%d/%d", j, e)
			sent = append(sent, ev)
			checkpoints = append(checkpoints, checkpointAt{value: r.Send(), upTo: len(sent)})
		}
		if b := r.Commit(commit + 10); b != nil {
			checkpoints = append(checkpoints, checkpointAt{value: b, upTo: len(sent)})
		}
	}
	return sent, checkpoints
}

type checkpointAt struct {
	value []byte
	upTo  int // events of the first run delivered when this checkpoint holds
}

var identity = Position{Slot: "s", SystemID: "7", Timeline: 1}

// An oracle over random transaction sizes: resuming after any checkpoint a
// first run wrote sends exactly the events that checkpoint does not cover,
// in order, once each; and the checkpoints the second run writes continue
// the first run's.
func TestResumeAfterEveryCheckpoint(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		txs := make([]int, 1+rng.IntN(6))
		for i := range txs {
			txs[i] = rng.IntN(5) // empty transactions included
		}
		all, checkpoints := replay(NewResume(identity, Position{}), txs)
		for _, cp := range checkpoints {
			from, err := DecodePosition(cp.value)
			if err != nil {
				t.Fatal(err)
			}
			again, later := replay(NewResume(identity, from), txs)
			if want := all[cp.upTo:]; !slices.Equal(again, want) {
				t.Fatalf("round %d, txs %v, resuming after %s: sent %v, want %v", round, txs, cp.value, again, want)
			}
			for _, l := range later {
				if got := covered(t, l.value, txs); got != cp.upTo+l.upTo {
					t.Fatalf("round %d, txs %v: after resuming, checkpoint %s covers %d events, want %d", round, txs, l.value, got, cp.upTo+l.upTo)
				}
			}
		}
	}
}

// covered counts the events of txs a checkpoint value says are delivered.
func covered(t *testing.T, v []byte, txs []int) int {
	t.Helper()
	p, err := DecodePosition(v)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for j, size := range txs {
		if skip := p.Skip(uint64(100 * (j + 1))); skip < 0 {
			n += size
		} else {
			n += min(skip, size)
		}
	}
	return n
}

func TestResumeWithoutCheckpointSendsEverything(t *testing.T) {
	sent, checkpoints := replay(NewResume(identity, Position{}), []int{2, 0, 1})
	if want := []string{"0/0", "0/1", "2/0"}; !slices.Equal(sent, want) {
		t.Fatalf("sent %v, want %v", sent, want)
	}
	// Two events and a boundary, no boundary for the empty transaction, one
	// event and a boundary.
	if len(checkpoints) != 5 {
		t.Fatalf("%d checkpoints, want 5", len(checkpoints))
	}
	last, err := DecodePosition(checkpoints[4].value)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Position{Slot: "s", SystemID: "7", Timeline: 1, EndLSN: 310}); last != want {
		t.Fatalf("last checkpoint %+v, want %+v", last, want)
	}
}
