package reference

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// consumerGroupSwitch migrates the "string" set-up of outbox_jsonb the way
// the README describes, with a consumer group reading throughout: the group
// has consumed part of Debezium's records when Debezium stops; outboxrelay
// starts from the same properties file, on Debezium's slot, publication and
// topics; more events are written; the group reads on. Every event reaches
// the group, each aggregate stays on its partition, and per aggregate the
// events arrive in order.
func consumerGroupSwitch(t *testing.T, w *world, dbz *proc, before []row) {
	topics := []string{"dbz.string.Misc_jsonb", "dbz.string.Order_jsonb", "dbz.string.Last_jsonb"}
	const group = "migrating-consumers"
	first := consume(t, w, group, topics, len(before)/2, 30*time.Second)
	t.Logf("the group consumed %d of %d of Debezium's records before the switch", len(first), len(before))

	dbz.stop(30 * time.Second)
	file := w.writeFile("switch.properties", w.properties(setups[0], []string{"jsonb"}))
	w.start("outboxrelay on Debezium's slot", binary, "run", "--debezium-config", file,
		"--http-addr", "127.0.0.1:0", "--status-interval", "200ms", "--log-level", "warn")
	w.waitStreaming(30*time.Second, "dbz_string")

	var after []row
	for i := range 16 {
		p := fmt.Sprintf(`{"aggregate": "a-%d", "n": %d}`, i%8, 24+i)
		after = append(after, row{id: fmt.Sprintf("ffffffff-0000-4000-8000-%012d", i), atype: "Order_jsonb",
			aid: fmt.Sprintf("a-%d", i%8), typ: "OrderChanged", payload: &p, tenant: ptr("t"), shard: (i % 8) % 3})
	}
	writeRows(t, w.pool, map[string][]row{"jsonb": after})
	writeLastRows(t, w.pool, map[string][]row{"jsonb": after})

	want := map[string]bool{}
	for _, r := range append(append([]row(nil), before...), after...) {
		want[r.id] = true
	}
	for _, r := range first {
		id, _ := header(r, "id")
		delete(want, id)
	}
	rest := consumeIDs(t, w, group, topics, want, 60*time.Second)

	partOf := map[string]int32{}
	lastN := map[string]int{}
	seen := map[string]int{}
	for i, r := range append(first, rest...) {
		id, _ := header(r, "id")
		seen[id]++
		if seen[id] > 1 || r.Key == nil {
			continue // a redelivery after the switch, or the event without a key
		}
		aid := string(r.Key)
		if p, ok := partOf[aid]; ok && p != r.Partition {
			t.Errorf("aggregate %s moved from partition %d to %d (record %d, event %s)", aid, p, r.Partition, i, id)
		}
		partOf[aid] = r.Partition
		if n, ok := orderN(r.Value); ok {
			if prev, had := lastN[aid]; had && n <= prev {
				t.Errorf("aggregate %s: event n=%d arrived after n=%d", aid, n, prev)
			}
			lastN[aid] = n
		}
	}
	dups := 0
	for _, n := range seen {
		dups += n - 1
	}
	for _, r := range append(before, after...) {
		if seen[r.id] == 0 {
			t.Errorf("event %s never reached the group", r.id)
		}
	}
	t.Logf("the group read %d records in all, %d of them again after the switch (Debezium's last positions were not yet confirmed to the slot); %d aggregates kept their partitions",
		len(first)+len(rest), dups, len(partOf))
}

// orderN reads the "n" of an Order event's JSON payload.
func orderN(v []byte) (int, bool) {
	s := string(v)
	i := strings.Index(s, `"n": `)
	if !strings.HasPrefix(s, `{"aggregate"`) || i < 0 {
		return 0, false
	}
	n, err := strconv.Atoi(strings.TrimRight(s[i+5:], "}"))
	return n, err == nil
}

// consume joins group, takes the first n records it is given, commits them
// and leaves.
func consume(t *testing.T, w *world, group string, topics []string, n int, timeout time.Duration) []*kgo.Record {
	t.Helper()
	var got []*kgo.Record
	groupRead(t, w, group, topics, timeout, func(r *kgo.Record) bool {
		got = append(got, r)
		return len(got) < n
	})
	return got
}

// consumeIDs reads as group until every id in want arrived.
func consumeIDs(t *testing.T, w *world, group string, topics []string, want map[string]bool, timeout time.Duration) []*kgo.Record {
	t.Helper()
	var got []*kgo.Record
	left := len(want)
	groupRead(t, w, group, topics, timeout, func(r *kgo.Record) bool {
		got = append(got, r)
		if id, _ := header(r, "id"); want[id] {
			want[id] = false
			left--
		}
		return left > 0
	})
	return got
}

// groupRead reads as a member of group, from the group's committed offsets
// (the start when it has none), handing each record to take until it returns
// false, then commits what it took.
func groupRead(t *testing.T, w *world, group string, topics []string, timeout time.Duration, take func(*kgo.Record) bool) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(w.brokers...), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit(), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	var taken []*kgo.Record
	more := true
	for more {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("group %s: timed out after %v with %d records taken", group, timeout, len(taken))
		}
		fs.EachRecord(func(r *kgo.Record) {
			if more {
				taken = append(taken, r)
				more = take(r)
			}
		})
	}
	if err := cl.CommitRecords(context.Background(), taken...); err != nil {
		t.Fatalf("group %s: committing: %v", group, err)
	}
}
