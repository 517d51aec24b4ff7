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
	p := Position{Slot: "s", EndLSN: 0x500, SystemID: "100", Timeline: 1}
	partial := p
	partial.PartialCommitLSN, partial.PartialEvents = 0x700, 3
	promoted := Source{SystemID: "100", Timeline: 2, History: []TimelineSwitch{{1, 0x800}}, SlotSynced: true}
	with := func(f func(*Source)) Source { s := promoted; f(&s); return s }
	for _, tc := range []struct {
		name string
		pos  Position
		src  Source
		want string // "" accepts
	}{
		{"same timeline", p, Source{SystemID: "100", Timeline: 1}, ""},
		{"same timeline, slot not synced", p, Source{SystemID: "100", Timeline: 1}, ""},
		{"another cluster", p, Source{SystemID: "200", Timeline: 1}, "another cluster"},
		{"promoted standby with a synced slot", p, promoted, ""},
		{"promotion, partial transaction below the switch", partial, promoted, ""},
		{"two promotions", p, Source{SystemID: "100", Timeline: 3, History: []TimelineSwitch{{1, 0x800}, {2, 0x900}}, SlotSynced: true}, ""},
		{"ends exactly at the switch", p, with(func(s *Source) { s.History = []TimelineSwitch{{1, 0x500}} }), ""},
		{"standby lagged behind what was delivered", p, with(func(s *Source) { s.History = []TimelineSwitch{{1, 0x4FF}} }), "never received"},
		{"partial commit at the switch", partial, with(func(s *Source) { s.History = []TimelineSwitch{{1, 0x700}} }), "never received"},
		{"slot not synced (restored backup, slot by hand)", p, with(func(s *Source) { s.SlotSynced = false }), "not a synchronized copy"},
		{"timeline not in the history", p, with(func(s *Source) { s.History = nil }), "not in the history"},
		{"decoded on this standby, which was promoted", Position{Slot: "s", EndLSN: 0x900, SystemID: "100", Timeline: 1, Standby: true},
			with(func(s *Source) { s.SlotSynced = false }), ""},
		{"decoded on a standby, timeline not in the history", Position{Slot: "s", EndLSN: 1, SystemID: "100", Timeline: 1, Standby: true},
			with(func(s *Source) { s.SlotSynced, s.History = false, nil }), "not in the history"},
		{"checkpoint from a later timeline", Position{Slot: "s", EndLSN: 1, SystemID: "100", Timeline: 3}, promoted, "not in the history"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.pos.Check(tc.src)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (!errors.Is(err, ErrOtherSource) || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want ErrOtherSource with %q", err, tc.want)
			}
		})
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
