package replication

import (
	"strings"
	"testing"
	"time"
)

// The pure decoder, without a Stream: bytes in, a message out.
func TestDecoder(t *testing.T) {
	sent := time.Unix(1700000000, 0)
	truncate := msg{'T'}.u32(2).u8(0).u32(9).u32(2)
	tests := []struct {
		name    string
		data    []byte
		kind    Kind
		check   func(Message) bool
		wantErr string
	}{
		{name: "begin", data: beginMsg(0x500, 7), kind: KindBegin,
			check: func(m Message) bool { return m.Begin.FinalLSN == 0x500 && m.Begin.Xid == 7 }},
		{name: "commit", data: commitMsg(0x500, 0x528), kind: KindCommit,
			check: func(m Message) bool { return m.Commit.CommitLSN == 0x500 && m.Commit.EndLSN == 0x528 }},
		{name: "insert into the outbox", data: insertMsg(2, "a", "<null>", ""), kind: KindInsert,
			check: func(m Message) bool {
				v := m.Insert.Values
				return len(v) == 3 && string(v[0]) == "a" && v[1] == nil && v[2] != nil && len(v[2]) == 0 &&
					m.Insert.WALStart == 0x10 && m.Insert.SentAt.Equal(sent)
			}},
		{name: "insert into another table", data: insertMsg(3, "a"), kind: KindNone},
		{name: "delete", data: deleteMsg(2), kind: KindNone},
		{name: "update of the outbox", data: updateMsg(2), kind: KindIgnored, check: func(m Message) bool { return m.Op == "UPDATE" }},
		{name: "update of another table", data: updateMsg(3), kind: KindNone},
		{name: "truncate naming the outbox", data: truncate, kind: KindIgnored, check: func(m Message) bool { return m.Op == "TRUNCATE" }},
		{name: "heartbeat", data: messageMsg(HeartbeatPrefix, "1700000000000000000"), kind: KindHeartbeat,
			check: func(m Message) bool { return m.Heartbeat.Equal(sent) }},
		{name: "another prefix", data: messageMsg("app", "1"), kind: KindNone},
		{name: "another table's definition", data: relationMsg(9, "public", "other", "id"), kind: KindNone},
		{name: "the outbox's definition", data: relationMsg(2, "public", "outbox", "id", "x"), kind: KindRelation,
			check: func(m Message) bool {
				return len(m.Columns) == 2 && m.Columns[1] == Column{Name: "x", TypeOID: 25, TypMod: -1}
			}},
		{name: "a truncated insert", data: insertMsg(2, "abc")[:12], wantErr: "decoding insert at 0/10"},
		{name: "garbage", data: []byte{'R', 0, 0}, wantErr: "decoding pgoutput message at 0/10"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := NewDecoder("public.outbox")
			if _, err := d.Decode(1, sent, relationMsg(2, "public", "outbox", "id", "x", "y")); err != nil {
				t.Fatal(err)
			}
			m, err := d.Decode(0x10, sent, tc.data)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || m.Kind != tc.kind || (tc.check != nil && !tc.check(m)) {
				t.Fatalf("Decode = %+v, %v; want kind %d", m, err, tc.kind)
			}
		})
	}
}

// An insert carries the commit time of the Begin before it, and inserts
// before the table's definition are not the outbox's.
func TestDecoderState(t *testing.T) {
	d := NewDecoder("public.outbox")
	if m, err := d.Decode(1, time.Time{}, insertMsg(2, "a")); err != nil || m.Kind != KindNone {
		t.Fatalf("insert before any definition: %+v, %v", m, err)
	}
	begin, _ := beginCommitAt(0x500, 0x528, 7, 1_000_000)
	for _, data := range [][]byte{relationMsg(2, "public", "outbox", "id"), begin} {
		if _, err := d.Decode(1, time.Time{}, data); err != nil {
			t.Fatal(err)
		}
	}
	m, err := d.Decode(2, time.Time{}, insertMsg(2, "a"))
	if err != nil || m.Kind != KindInsert || !m.Insert.CommitTime.Equal(pgTime(msg{}.u64(1_000_000))) {
		t.Fatalf("insert: %+v, %v", m, err)
	}
	if m, _ := d.Decode(3, time.Time{}, relationMsg(2, "public", "renamed", "id")); m.Kind != KindNone {
		t.Fatalf("renaming the table away: %+v", m)
	}
	if m, _ := d.Decode(4, time.Time{}, insertMsg(2, "a")); m.Kind != KindNone {
		t.Fatalf("an insert after the table was renamed away: %+v", m)
	}
}

// Any bytes decode to a message or an error, never a panic, and the same
// bytes decode the same way.
func FuzzDecoder(f *testing.F) {
	for _, seed := range [][]byte{
		beginMsg(1, 2), commitMsg(1, 2), insertMsg(2, "a", "<null>", ""), deleteMsg(2), updateMsg(2),
		relationMsg(2, "public", "outbox", "id", "x"), messageMsg(HeartbeatPrefix, "12"), {'I'}, {'T', 0, 0, 0, 1, 0, 0, 0, 0, 2},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		decode := func() (Message, error) {
			d := NewDecoder("public.outbox")
			if _, err := d.Decode(1, time.Time{}, relationMsg(2, "public", "outbox", "id", "x")); err != nil {
				t.Fatal(err)
			}
			return d.Decode(2, time.Time{}, data)
		}
		m1, err1 := decode()
		m2, err2 := decode()
		if m1.Kind != m2.Kind || (err1 == nil) != (err2 == nil) {
			t.Fatalf("decoded twice: %d/%v, then %d/%v", m1.Kind, err1, m2.Kind, err2)
		}
		if err1 == nil && m1.Kind == KindInsert && len(m1.Insert.Values) == 0 && len(data) > 8 && data[6]|data[7] != 0 {
			t.Fatalf("an insert of %d columns decoded to none", int(data[6])<<8|int(data[7]))
		}
	})
}
