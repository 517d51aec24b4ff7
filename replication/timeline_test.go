package replication

import (
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestParseTimelineHistory(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []TimelineSwitch
		err      string
	}{
		{"one promotion", "1\t0/3000158\tno recovery target specified\n", []TimelineSwitch{{1, 0x3000158}}, ""},
		{"two, comments and blanks", "# made by hand\n\n1\t0/3000158\tno recovery target specified\n2\t1/A0\tbefore 2026-01-01\n",
			[]TimelineSwitch{{1, 0x3000158}, {2, 0x1000000A0}}, ""},
		{"spaces instead of tabs, no reason", "1 0/10", []TimelineSwitch{{1, 0x10}}, ""},
		{"empty", "", nil, ""},
		{"no position", "1\n", nil, "no switch position"},
		{"bad timeline", "x\t0/1\n", nil, "bad timeline"},
		{"zero timeline", "0\t0/1\n", nil, "bad timeline"},
		{"bad position", "1\t0-1\n", nil, "want X/Y"},
		{"not ascending", "2\t0/1\n1\t0/2\n", nil, "does not follow"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseTimelineHistory(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func FuzzParseTimelineHistory(f *testing.F) {
	f.Add("1\t0/3000158\tno recovery target specified\n2\t0/5000000\treason\n")
	f.Add("# c\n\n1 0/1")
	f.Fuzz(func(t *testing.T, in string) {
		got, err := ParseTimelineHistory(in)
		if err != nil {
			return
		}
		var b strings.Builder
		for i, s := range got {
			if s.Timeline <= 0 || (i > 0 && s.Timeline <= got[i-1].Timeline) {
				t.Fatalf("accepted %v from %q", got, in)
			}
			b.WriteString(strings.Join([]string{itoa(s.Timeline), FormatLSN(s.End), "x"}, "\t") + "\n")
		}
		again, err := ParseTimelineHistory(b.String())
		if err != nil || !reflect.DeepEqual(again, got) {
			t.Fatalf("round trip of %v: %v, %v", got, again, err)
		}
	})
}

func itoa(n int32) string { return strconv.Itoa(int(n)) }
