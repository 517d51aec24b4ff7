package checkpoint

import (
	"errors"
	"strings"
	"testing"
)

func TestPositionRoundTrip(t *testing.T) {
	p := Position{Slot: "outboxrelay", EndLSN: 0x16B374D848, SystemID: "7311234567890123456", Timeline: 2}
	got, err := DecodePosition(p.Encode())
	if err != nil || got != p {
		t.Fatalf("DecodePosition(Encode()) = %+v, %v", got, err)
	}
}

func TestPositionSkip(t *testing.T) {
	p := Position{EndLSN: 100, PartialCommitLSN: 500, PartialEvents: 7}
	for commit, want := range map[uint64]int{50: -1, 99: -1, 100: 0, 200: 0, 500: 7, 501: 0} {
		if got := p.Skip(commit); got != want {
			t.Errorf("Skip(%d) = %d, want %d", commit, got, want)
		}
	}
}

func TestDecodePositionRejects(t *testing.T) {
	for in, want := range map[string]string{
		`nope`:                     "decoding checkpoint",
		`{"slot":"s","end_lsn":1}`: "no system identifier",
		`{"end_lsn":1,"system_id":"x","timeline":1}`: "no slot",
		`{"slot":"s","system_id":"x"}`:               "no timeline",
	} {
		if _, err := DecodePosition([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("DecodePosition(%s) = %v, want %q", in, err, want)
		}
	}
}

func TestPositionCheck(t *testing.T) {
	p := Position{Slot: "s", EndLSN: 1, SystemID: "100", Timeline: 1}
	if err := p.Check("100", 1); err != nil {
		t.Fatal(err)
	}
	if err := p.Check("200", 1); !errors.Is(err, ErrOtherSource) || !strings.Contains(err.Error(), "restored backup") {
		t.Fatalf("other system: %v", err)
	}
	if err := p.Check("100", 2); !errors.Is(err, ErrOtherSource) || !strings.Contains(err.Error(), "failover") {
		t.Fatalf("other timeline: %v", err)
	}
}

func FuzzDecodePosition(f *testing.F) {
	f.Add(Position{Slot: "s", EndLSN: 9, SystemID: "1", Timeline: 1}.Encode())
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := DecodePosition(b)
		if err != nil {
			return
		}
		again, err := DecodePosition(p.Encode())
		if err != nil || again != p {
			t.Fatalf("round trip of %+v: %+v, %v", p, again, err)
		}
	})
}
