package replication

import (
	"fmt"
	"strconv"
	"strings"
)

// TimelineSwitch is one line of a timeline history file: the server left
// Timeline at End, the first WAL position of the next timeline.
type TimelineSwitch struct {
	Timeline int32
	End      uint64
}

// ParseTimelineHistory reads a timeline history file as PostgreSQL writes
// it (TIMELINE_HISTORY): one "parent-timeline<TAB>switch-LSN<TAB>reason"
// line per earlier timeline, in order, with blank lines and # comments
// allowed. Timelines must ascend, as PostgreSQL requires.
func ParseTimelineHistory(content string) ([]TimelineSwitch, error) {
	var out []TimelineSwitch
	for n, line := range strings.Split(content, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		sw, err := parseSwitch(line)
		if err != nil {
			return nil, fmt.Errorf("reading timeline history line %d: %w", n+1, err)
		}
		if len(out) > 0 && sw.Timeline <= out[len(out)-1].Timeline {
			return nil, fmt.Errorf("reading timeline history line %d: timeline %d does not follow %d", n+1, sw.Timeline, out[len(out)-1].Timeline)
		}
		out = append(out, sw)
	}
	return out, nil
}

func parseSwitch(line string) (TimelineSwitch, error) {
	f := strings.Fields(line)
	if len(f) < 2 {
		return TimelineSwitch{}, fmt.Errorf("%q has no switch position", line)
	}
	tl, err := strconv.ParseInt(f[0], 10, 32)
	if err != nil || tl <= 0 {
		return TimelineSwitch{}, fmt.Errorf("%q: bad timeline %q", line, f[0])
	}
	lsn, err := parseLSN(f[1])
	if err != nil {
		return TimelineSwitch{}, fmt.Errorf("%q: %w", line, err)
	}
	return TimelineSwitch{Timeline: int32(tl), End: lsn}, nil
}
