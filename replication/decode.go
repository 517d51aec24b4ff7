package replication

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pglogrepl"
)

// Kind says which of Message's fields a decoded pgoutput message filled.
type Kind uint8

// What a pgoutput message means for the relay.
const (
	// KindNone carries nothing: a message about another table, a delete, a
	// type or an origin, a logical decoding message that is not a heartbeat.
	KindNone Kind = iota
	KindBegin
	KindCommit
	// KindInsert is an insert into an outbox table.
	KindInsert
	// KindRelation announces an outbox table's definition (Table, Columns).
	KindRelation
	// KindHeartbeat is a heartbeat (see HeartbeatPrefix) sent at Heartbeat.
	KindHeartbeat
	// KindIgnored is an UPDATE or TRUNCATE (Op) of an outbox table (Table):
	// never published.
	KindIgnored
)

// Message is one decoded pgoutput message; Kind says which field is set.
type Message struct {
	Kind   Kind
	Begin  Begin
	Commit Commit
	Insert Insert
	// Table is the outbox table (an index into the decoder's tables) a
	// Relation or an ignored change is about; an Insert carries its own.
	Table     int
	Columns   []Column
	Heartbeat time.Time
	Op        string
}

// Deliver hands the message to h.
func (m *Message) Deliver(h Handler) error {
	switch m.Kind {
	case KindBegin:
		return h.Begin(m.Begin)
	case KindCommit:
		return h.Commit(m.Commit)
	case KindInsert:
		return h.Insert(m.Insert)
	case KindRelation:
		return h.Relation(m.Table, m.Columns)
	case KindHeartbeat:
		return h.Heartbeat(m.Heartbeat)
	case KindIgnored:
		return h.Unpublished(m.Table, m.Op)
	}
	return nil
}

// Decoder turns the pgoutput messages (protocol version 1) of one
// publication into Messages about its outbox tables. It is pure: bytes in, a
// message out, no connection and no I/O; it keeps only what decoding needs
// between messages (the outbox tables' relation ids, the open transaction's
// commit time). Begin, Commit and an insert into another table decode
// without allocating; an outbox insert costs one copy of the message.
type Decoder struct {
	tables     map[tableName]int // schema.table -> index
	rels       map[uint32]int    // relation id -> index, for the tables announced
	commitTime time.Time
}

type tableName struct{ schema, table string }

// NewDecoder returns a Decoder for the tables, each "schema.table" or
// "table" (schema public); Messages name a table by its index in tables.
func NewDecoder(tables ...string) *Decoder {
	d := &Decoder{tables: make(map[tableName]int, len(tables)), rels: make(map[uint32]int, len(tables))}
	for i, t := range tables {
		schema, table, _ := SplitTable(t)
		d.tables[tableName{schema, table}] = i
	}
	return d
}

// Decode decodes the message data that a XLogData starting at walStart,
// sent by the server at serverTime, carried. A malformed message is an
// error, never a panic.
func (d *Decoder) Decode(walStart uint64, serverTime time.Time, data []byte) (Message, error) {
	switch {
	case len(data) > 0 && data[0] == 'I':
		return d.insert(walStart, serverTime, data)
	case len(data) >= beginLen && data[0] == 'B':
		d.commitTime = pgTime(data[9:17])
		return Message{Kind: KindBegin, Begin: Begin{Xid: binary.BigEndian.Uint32(data[17:21]), FinalLSN: binary.BigEndian.Uint64(data[1:9]), CommitTime: d.commitTime}}, nil
	case len(data) >= commitLen && data[0] == 'C':
		return Message{Kind: KindCommit, Commit: Commit{CommitLSN: binary.BigEndian.Uint64(data[2:10]), EndLSN: binary.BigEndian.Uint64(data[10:18]), CommitTime: pgTime(data[18:26])}}, nil
	}
	m, err := parse(data)
	if err != nil {
		return Message{}, fmt.Errorf("decoding pgoutput message at %s: %w", FormatLSN(walStart), err)
	}
	return d.other(m), nil
}

// other decodes what pglogrepl parsed: relations, heartbeats, and the
// changes that are never published.
func (d *Decoder) other(m pglogrepl.Message) Message {
	switch m := m.(type) {
	case *pglogrepl.RelationMessage:
		return d.relation(m)
	case *pglogrepl.LogicalDecodingMessage:
		if m.Prefix != HeartbeatPrefix {
			return Message{}
		}
		ns, err := strconv.ParseInt(string(m.Content), 10, 64)
		if err != nil {
			return Message{} // not ours after all
		}
		return Message{Kind: KindHeartbeat, Heartbeat: time.Unix(0, ns)}
	case *pglogrepl.UpdateMessage:
		return d.ignored("UPDATE", m.RelationID)
	case *pglogrepl.TruncateMessage:
		for _, id := range m.RelationIDs {
			if msg := d.ignored("TRUNCATE", id); msg.Kind != KindNone {
				return msg
			}
		}
	}
	// Deletes (insert-and-delete writers), types and origins carry no events.
	return Message{}
}

func (d *Decoder) relation(m *pglogrepl.RelationMessage) Message {
	idx, ok := d.tables[tableName{m.Namespace, m.RelationName}]
	if !ok {
		delete(d.rels, m.RelationID) // renamed away, or never ours
		return Message{}
	}
	d.rels[m.RelationID] = idx
	cols := make([]Column, len(m.Columns))
	for i, c := range m.Columns {
		cols[i] = Column{Name: c.Name, TypeOID: c.DataType, TypMod: c.TypeModifier}
	}
	return Message{Kind: KindRelation, Table: idx, Columns: cols}
}

func (d *Decoder) ignored(op string, rel uint32) Message {
	if idx, ok := d.rels[rel]; ok {
		return Message{Kind: KindIgnored, Table: idx, Op: op}
	}
	return Message{}
}

// insert decodes an Insert message (pgoutput protocol 1: 'I', relation id,
// 'N', tuple). Inserts into other tables are skipped without decoding; an
// outbox insert costs one copy of the message, whose bytes the values share
// (a connection reuses its buffer for the next message).
func (d *Decoder) insert(walStart uint64, serverTime time.Time, data []byte) (Message, error) {
	if len(data) < 5 {
		return Message{}, fmt.Errorf("decoding insert at %s: message too short", FormatLSN(walStart))
	}
	idx, ok := d.rels[binary.BigEndian.Uint32(data[1:5])]
	if !ok {
		return Message{}, nil
	}
	values, err := insertValues(data)
	if err != nil {
		return Message{}, fmt.Errorf("decoding insert at %s: %w", FormatLSN(walStart), err)
	}
	return Message{Kind: KindInsert, Insert: Insert{Table: idx, Values: values, WALStart: walStart, CommitTime: d.commitTime, SentAt: serverTime}}, nil
}

// Lengths of pgoutput's Begin ('B', final LSN, commit time, xid) and Commit
// ('C', flags, commit LSN, end LSN, commit time) messages.
const (
	beginLen  = 1 + 8 + 8 + 4
	commitLen = 1 + 1 + 8 + 8 + 8
)

// pgTime converts a PostgreSQL timestamp (big-endian microseconds since
// 2000-01-01 UTC) to a time.Time.
func pgTime(b []byte) time.Time {
	const y2kUnixMicros = 946684800 * 1_000_000
	return time.UnixMicro(y2kUnixMicros + int64(binary.BigEndian.Uint64(b)))
}

// parse decodes one pgoutput message. pglogrepl indexes into the message
// without bounds checks, so a malformed message is turned from a panic into
// an error here.
func parse(data []byte) (m pglogrepl.Message, err error) {
	defer func() {
		if r := recover(); r != nil {
			m, err = nil, fmt.Errorf("malformed pgoutput message (%d bytes): %v", len(data), r)
		}
	}()
	if err := checkTuples(data); err != nil {
		return nil, err
	}
	return pglogrepl.Parse(data)
}

// checkTuples verifies that every tuple of an Insert, Update or Delete
// message, and the relation list of a Truncate, fits in the message, before pglogrepl allocates what a column's
// length field claims.
func checkTuples(data []byte) error {
	if len(data) == 0 {
		return fmt.Errorf("empty pgoutput message")
	}
	kind := data[0]
	if kind == 'T' { // Truncate: relation count, options, one id per relation
		if len(data) < 6 || int64(binary.BigEndian.Uint32(data[1:]))*4 != int64(len(data)-6) {
			return fmt.Errorf("malformed T message: relation count does not match its length")
		}
		return nil
	}
	if kind != 'I' && kind != 'U' && kind != 'D' {
		return nil
	}
	off := 5 // kind and relation id
	for off < len(data) {
		switch data[off] {
		case 'N', 'K', 'O':
		default:
			return fmt.Errorf("malformed %c message: tuple marker %q", kind, data[off])
		}
		next, err := skipTuple(data, off+1)
		if err != nil {
			return fmt.Errorf("malformed %c message: %w", kind, err)
		}
		off = next
	}
	if off != len(data) {
		return fmt.Errorf("malformed %c message: truncated", kind)
	}
	return nil
}

func skipTuple(data []byte, off int) (int, error) {
	if off+2 > len(data) {
		return 0, fmt.Errorf("truncated tuple")
	}
	n := int(binary.BigEndian.Uint16(data[off:]))
	off += 2
	for i := 0; i < n; i++ {
		if off >= len(data) {
			return 0, fmt.Errorf("truncated tuple at column %d", i)
		}
		t := data[off]
		off++
		if t != 't' && t != 'b' {
			continue
		}
		if off+4 > len(data) {
			return 0, fmt.Errorf("truncated length of column %d", i)
		}
		l := int(binary.BigEndian.Uint32(data[off:]))
		off += 4
		if l > len(data)-off {
			return 0, fmt.Errorf("column %d claims %d bytes, %d remain", i, l, len(data)-off)
		}
		off += l
	}
	return off, nil
}

func insertValues(msg []byte) ([][]byte, error) {
	if err := checkTuples(msg); err != nil {
		return nil, err
	}
	if len(msg) < 8 || msg[5] != 'N' {
		return nil, fmt.Errorf("insert without a new tuple")
	}
	data := bytes.Clone(msg[8:])
	values := make([][]byte, binary.BigEndian.Uint16(msg[6:8]))
	off := 0
	for i := range values {
		kind := data[off]
		off++
		switch kind {
		case 'n':
		case 't', 'b':
			l := int(binary.BigEndian.Uint32(data[off:]))
			off += 4
			values[i] = data[off : off+l : off+l]
			off += l
		default:
			return nil, fmt.Errorf("column %d: unexpected tuple data type %q in an insert", i, kind)
		}
	}
	return values, nil
}
