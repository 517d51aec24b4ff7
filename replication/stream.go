package replication

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// Column is one column of the outbox table as pgoutput announces it.
type Column struct {
	Name    string
	TypeOID uint32
	// TypMod is the type modifier (atttypmod), -1 when the type has none.
	TypMod int32
	// NotNull is the column's NOT NULL constraint. The catalog query of
	// Preflight sets it; pgoutput's Relation message does not carry it.
	NotNull bool
}

// Begin starts a committed transaction.
type Begin struct {
	Xid        uint32
	FinalLSN   uint64 // the commit record's LSN
	CommitTime time.Time
}

// Insert is one row inserted into the outbox table.
type Insert struct {
	// Table is the outbox table inserted into, an index into Config.Tables.
	Table int
	// Values holds one text-format value per column of the last announced
	// definition; nil is SQL NULL. The slices are owned by the receiver.
	Values     [][]byte
	WALStart   uint64
	CommitTime time.Time
	// SentAt is the server's clock when the walsender sent the insert, on
	// the same clock as CommitTime: SentAt - CommitTime is how far decoding
	// ran behind the commit.
	SentAt time.Time
	// ReceivedAt is the relay's clock when the message was read.
	ReceivedAt time.Time
}

// Commit ends a transaction. EndLSN (the end of the commit record) is the
// position to confirm once every event of the transaction is in Kafka.
type Commit struct {
	CommitLSN  uint64
	EndLSN     uint64
	CommitTime time.Time
}

// Handler receives the outbox table's definition and inserts, and the
// boundaries of every transaction (also those with no outbox insert, which
// still move the confirmable position). Insert must not wait on Kafka.
type Handler interface {
	// Relation announces the definition of the table-th outbox table
	// (Config.Tables), before its first insert and after every change.
	Relation(table int, cols []Column) error
	Begin(Begin) error
	Insert(Insert) error
	Commit(Commit) error
	// Heartbeat reports a heartbeat emitted at sent (see HeartbeatPrefix).
	Heartbeat(sent time.Time) error
	// Unpublished reports an UPDATE or TRUNCATE (op) of the table-th outbox
	// table, which a publication that publishes more than inserts sends;
	// it is never published, and an error stops the stream.
	Unpublished(table int, op string) error
}

// Progress tells the stream what it may confirm and when to stop reading.
// Every rule about which position is safe lives behind it (the checkpoint
// tracker): the stream confirms what Confirmable returns and nothing else.
type Progress interface {
	// Keepalive reports a server keepalive's WAL position.
	Keepalive(serverEnd uint64)
	// Confirmable returns the highest safe LSN, never less than before, and
	// whether nothing is in flight.
	Confirmable() (lsn uint64, idle bool)
	// Full reports that the in-flight bound is reached.
	Full() bool
	// Notify receives a value when acknowledgements free room.
	Notify() <-chan struct{}
}

// pollInterval bounds how long a read blocks, and so how quickly the loop
// notices a stop request or a due status update.
const pollInterval = 200 * time.Millisecond

// Once the server has sent everything (it sends a keepalive when it starts
// waiting for WAL), the relay has nothing to read until Kafka acknowledges
// what is in flight. It then reads with short deadlines, so that it notices
// the acknowledgements, and confirms as soon as they advance the confirmable
// position, at most once per caughtUpGap (never less often than
// StatusInterval asks). A drained backlog or a quiet outbox is thus
// confirmed within milliseconds of Kafka's last acknowledgement instead of
// up to two status intervals later. The deadline starts at caughtUpPoll and
// doubles with every read that times out, so a Kafka outage with events in
// flight is back at the normal poll after a few reads.
const (
	caughtUpPoll = 2 * time.Millisecond
	caughtUpGap  = 10 * time.Millisecond
)

// Stream is one replication connection streaming from the slot.
type Stream struct {
	cfg   Config
	log   *slog.Logger
	conn  *pgconn.PgConn
	start uint64

	dec      *Decoder
	inTx     bool
	received time.Time // when the message being decoded was read

	systemID   string
	timeline   int32
	history    []TimelineSwitch
	slotSynced bool
	standby    bool

	lastSent   uint64
	lastSentAt time.Time
	confirmed  atomic.Uint64 // lastSent, for readers on other goroutines
	mustReply  bool
	// caughtUp is set by a keepalive and cleared by WAL data: the server
	// has sent everything it has.
	caughtUp bool
	// unconfirmed is set by status when events are in flight or the
	// confirmable position is above what was sent.
	unconfirmed bool
	// timeouts counts reads in a row that timed out while caught up.
	timeouts int
	// recvPos is the highest WAL position received: an XLogData's start, a
	// commit's end, a keepalive's server position. recvLSN and recvBytes
	// publish it and the bytes of stream data received so far to other
	// goroutines (Received).
	recvPos   uint64
	recvLSN   atomic.Uint64
	recvBytes atomic.Uint64
}

// Open connects for replication and starts streaming from the slot's
// confirmed position. A *SlotInUseError means another relay holds the slot;
// ErrSlotGone means it was dropped or invalidated.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Stream, error) {
	conn, err := connectReplication(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return start(ctx, conn, cfg, log)
}

// start begins streaming on conn, closing it on failure.
func start(ctx context.Context, conn *pgconn.PgConn, cfg Config, log *slog.Logger) (*Stream, error) {
	s := &Stream{cfg: cfg, log: log, conn: conn}
	s.dec = NewDecoder(cfg.Tables...)
	if err := s.begin(ctx); err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	return s, nil
}

// connectReplication opens a replication connection with the output
// settings the router depends on.
func connectReplication(ctx context.Context, cfg Config) (*pgconn.PgConn, error) {
	pcfg, err := pgconn.ParseConfig(cfg.ConnString)
	if err != nil {
		return nil, fmt.Errorf("parsing pg-url: %w", err)
	}
	pcfg.RuntimeParams["replication"] = "database"
	// pgoutput formats values with the walsender's settings; the router
	// depends on these.
	for k, v := range outputSettings() {
		pcfg.RuntimeParams[k] = v
	}
	if pcfg.RuntimeParams["application_name"] == "" {
		pcfg.RuntimeParams["application_name"] = "outboxrelay"
	}
	pcfg.DialFunc = dialReplication(pcfg.ConnectTimeout)
	conn, err := pgconn.ConnectConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to PostgreSQL for replication: %w", leadWithCause(err))
	}
	return conn, nil
}

func (s *Stream) begin(ctx context.Context) error {
	sys, err := pglogrepl.IdentifySystem(ctx, s.conn)
	if err != nil {
		return fmt.Errorf("identifying the database system: %w", err)
	}
	s.systemID, s.timeline = sys.SystemID, sys.Timeline
	if s.timeline > 1 {
		hist, err := pglogrepl.TimelineHistory(ctx, s.conn, s.timeline)
		if err != nil {
			return fmt.Errorf("reading the history of timeline %d: %w", s.timeline, err)
		}
		if s.history, err = ParseTimelineHistory(string(hist.Content)); err != nil {
			return err
		}
	}
	// synced exists from PostgreSQL 17; through to_jsonb older servers
	// read it as absent.
	res, err := s.conn.Exec(ctx, "SELECT confirmed_flush_lsn::text, coalesce(wal_status, ''), coalesce((to_jsonb(s)->>'synced')::bool, false), pg_is_in_recovery() FROM pg_replication_slots s WHERE slot_name = "+quoteLiteral(s.cfg.Slot)).ReadAll()
	if err != nil {
		return fmt.Errorf("reading the slot's position: %w", err)
	}
	if len(res) == 0 || len(res[0].Rows) == 0 {
		return classifyStartError(s.cfg.Slot, &pgconn.PgError{Code: "42704", Message: "replication slot does not exist"})
	}
	row := res[0].Rows[0]
	if string(row[1]) == "lost" {
		return classifyStartError(s.cfg.Slot, &pgconn.PgError{Code: "55000", Message: "wal_status is lost"})
	}
	s.slotSynced, s.standby = string(row[2]) == "t", string(row[3]) == "t"
	if s.start, err = parseLSN(string(row[0])); err != nil {
		return fmt.Errorf("reading the slot's position: %w", err)
	}
	s.lastSent, s.recvPos = s.start, s.start
	s.confirmed.Store(s.start)
	s.recvLSN.Store(s.start)
	args := []string{"proto_version '1'", "publication_names " + quoteLiteral(quoteIdent(s.cfg.Publication))}
	if s.cfg.Heartbeat {
		args = append(args, "messages 'true'")
	}
	err = pglogrepl.StartReplication(ctx, s.conn, s.cfg.Slot, 0, pglogrepl.StartReplicationOptions{
		Mode:       pglogrepl.LogicalReplication,
		PluginArgs: args,
	})
	if err != nil {
		return fmt.Errorf("starting replication from slot %q: %w", s.cfg.Slot, classifyStartError(s.cfg.Slot, err))
	}
	return nil
}

// SystemID and Timeline identify the database streamed from
// (IDENTIFY_SYSTEM).
func (s *Stream) SystemID() string { return s.systemID }

// Timeline is the server's current timeline.
func (s *Stream) Timeline() int32 { return s.timeline }

// History is where the server left each earlier timeline, read when
// streaming began (empty on timeline 1).
func (s *Stream) History() []TimelineSwitch { return s.history }

// SlotSynced tells whether the slot is a copy synchronized from a primary
// (PostgreSQL 17+), kept by a promotion.
func (s *Stream) SlotSynced() bool { return s.slotSynced }

// Standby tells whether the server was a standby when streaming began.
func (s *Stream) Standby() bool { return s.standby }

// StartLSN is the slot's confirmed position when streaming began; nothing
// lower is ever confirmed.
func (s *Stream) StartLSN() uint64 { return s.start }

// Close closes the connection; the server releases the slot.
func (s *Stream) Close(ctx context.Context) error {
	return s.conn.Close(ctx)
}

// Run reads the stream until ctx ends (returning ctx's error at once,
// confirming nothing more) or stop closes. On stop it finishes reading the
// transaction it is in, stops reading, waits up to DrainTimeout for Kafka to
// acknowledge what is in flight, sends a final status update, ends the stream
// once the server has read it, and returns nil.
func (s *Stream) Run(ctx context.Context, stop <-chan struct{}, h Handler, p Progress) error {
	netConn := s.conn.Conn()
	// Reads are bounded by a deadline, not by a context: a cancelable
	// context would cost pgconn a watcher registration per message. ctx ends
	// a blocked read through the deadline instead.
	stopWatch := context.AfterFunc(ctx, func() { _ = netConn.SetReadDeadline(time.Now()) })
	defer stopWatch()
	// A read waits at most until the next status update may be due.
	poll := min(pollInterval, s.cfg.StatusInterval)
	timer := time.NewTimer(poll)
	defer timer.Stop()
	stopping := false
	// One clock reading per message serves the status check, the read
	// deadline and the insert's receive time.
	now := time.Now()
	var readDeadline time.Time
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !stopping {
			select {
			case <-stop:
				stopping = true
			default:
			}
		}
		if stopping && !s.inTx {
			return s.drain(ctx, p)
		}
		if err := s.status(p, false, now); err != nil {
			return err
		}
		if p.Full() {
			timer.Reset(poll)
			select {
			case <-ctx.Done():
			case <-p.Notify():
			case <-timer.C:
			}
			now = time.Now()
			continue
		}
		wait := poll
		if s.caughtUp && s.unconfirmed {
			wait = min(poll, caughtUpPoll<<min(s.timeouts, 16))
		}
		// The deadline moves only when less than half of wait is left or
		// more than wait: a read never waits longer than wait.
		if left := readDeadline.Sub(now); left < wait/2 || left > wait {
			readDeadline = now.Add(wait)
			if err := netConn.SetReadDeadline(readDeadline); err != nil {
				return fmt.Errorf("receiving from PostgreSQL: %w", err)
			}
		}
		msg, err := s.conn.ReceiveMessage(context.Background()) //nolint:contextcheck // cancellation goes through the read deadline
		now = time.Now()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if pgconn.Timeout(err) {
				if s.caughtUp {
					s.timeouts++
				}
				continue
			}
			return fmt.Errorf("receiving from PostgreSQL: %w", err)
		}
		s.received, s.timeouts = now, 0
		if err := s.handle(msg, h, p); err != nil {
			return err
		}
	}
}

func (s *Stream) handle(msg pgproto3.BackendMessage, h Handler, p Progress) error {
	switch msg := msg.(type) {
	case *pgproto3.CopyData:
		if len(msg.Data) == 0 {
			return fmt.Errorf("receiving from PostgreSQL: empty CopyData message")
		}
		s.recvBytes.Add(uint64(len(msg.Data)))
		switch msg.Data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(msg.Data[1:])
			if err != nil {
				return fmt.Errorf("parsing keepalive: %w", err)
			}
			p.Keepalive(uint64(ka.ServerWALEnd))
			if ka.ReplyRequested {
				s.mustReply = true
			}
			s.caughtUp = true
			s.receivedTo(uint64(ka.ServerWALEnd))
			return nil
		case pglogrepl.XLogDataByteID:
			xld, err := pglogrepl.ParseXLogData(msg.Data[1:])
			if err != nil {
				return fmt.Errorf("parsing XLogData: %w", err)
			}
			s.caughtUp = false
			s.receivedTo(uint64(xld.WALStart))
			return s.decode(xld, h)
		}
		return nil
	case *pgproto3.ErrorResponse:
		return fmt.Errorf("streaming from slot %q: %w", s.cfg.Slot, classifyStartError(s.cfg.Slot, pgconn.ErrorResponseToPgError(msg)))
	case *pgproto3.CopyDone:
		return fmt.Errorf("streaming from slot %q: the server ended the stream", s.cfg.Slot)
	}
	return nil
}

// receivedTo records that the stream has received WAL up to lsn.
func (s *Stream) receivedTo(lsn uint64) {
	if lsn > s.recvPos {
		s.recvPos = lsn
		s.recvLSN.Store(lsn)
	}
}

// Received returns the highest WAL position the stream has received (an
// XLogData's start, a commit's end, a keepalive's server position) and the
// bytes of stream data received so far; safe to call from any goroutine.
func (s *Stream) Received() (lsn, bytes uint64) {
	return s.recvLSN.Load(), s.recvBytes.Load()
}

// decode hands one pgoutput message to h, keeping the stream's own state:
// whether a transaction is open and the received position.
func (s *Stream) decode(xld pglogrepl.XLogData, h Handler) error {
	m, err := s.dec.Decode(uint64(xld.WALStart), xld.ServerTime, xld.WALData)
	if err != nil {
		return err
	}
	switch m.Kind {
	case KindBegin:
		s.inTx = true
	case KindCommit:
		s.inTx = false
		s.receivedTo(m.Commit.EndLSN)
	case KindInsert:
		m.Insert.ReceivedAt = s.received
	}
	return m.Deliver(h)
}

// status sends a Standby Status Update when the confirmable position moved
// and one is due (after StatusInterval, or caughtUpGap once the server has
// sent everything), when the server asked for a reply, every ten intervals
// in any case, or when force is set.
func (s *Stream) status(p Progress, force bool, now time.Time) error {
	lsn, idle := p.Confirmable()
	interval := s.cfg.StatusInterval
	if s.caughtUp {
		interval = min(interval, caughtUpGap)
	}
	due := now.Sub(s.lastSentAt) >= interval && lsn > s.lastSent
	s.unconfirmed = !idle || lsn > s.lastSent
	if !force && !s.mustReply && !due && now.Sub(s.lastSentAt) < 10*s.cfg.StatusInterval {
		return nil
	}
	err := pglogrepl.SendStandbyStatusUpdate(context.Background(), s.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: pglogrepl.LSN(lsn),
		WALFlushPosition: pglogrepl.LSN(lsn),
		WALApplyPosition: pglogrepl.LSN(lsn),
		ClientTime:       now,
	})
	if err != nil {
		return fmt.Errorf("sending status update: %w", err)
	}
	if lsn > s.lastSent {
		s.log.Debug("confirmed position", "lsn", FormatLSN(lsn))
	}
	s.lastSent, s.lastSentAt, s.mustReply = lsn, now, false
	s.unconfirmed = !idle
	s.confirmed.Store(lsn)
	return nil
}

// Confirmed is the last position sent to the server; safe to call from any
// goroutine.
func (s *Stream) Confirmed() uint64 { return s.confirmed.Load() }

func (s *Stream) drain(ctx context.Context, p Progress) error {
	deadline := time.NewTimer(s.cfg.DrainTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(s.cfg.StatusInterval)
	defer tick.Stop()
	for {
		if _, idle := p.Confirmable(); idle {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			s.log.Warn("stopping before Kafka acknowledged every event; those events will be sent again after a restart", "waited", s.cfg.DrainTimeout.String())
			return s.finish(p)
		case <-p.Notify():
		case <-tick.C:
			if err := s.status(p, false, time.Now()); err != nil {
				return err
			}
		}
	}
	return s.finish(p)
}

// copyDoneTimeout bounds how long finish waits for the server to answer the
// end of the stream.
const copyDoneTimeout = 2 * time.Second

// finish sends the final status update and ends the stream with CopyDone,
// discarding what the server still sends until it answers. The server reads
// messages in order, so its answer proves it recorded the final position.
// Closing without it leaves unread data behind, the kernel resets the
// connection, and a walsender that is busy sending can exit before it reads
// the update: the slot would stay behind what Kafka holds, and a clean stop
// would send events again.
func (s *Stream) finish(p Progress) error {
	if err := s.status(p, true, time.Now()); err != nil {
		return err
	}
	if err := s.conn.Conn().SetReadDeadline(time.Now().Add(copyDoneTimeout)); err != nil {
		return fmt.Errorf("ending the stream: %w", err)
	}
	if _, err := pglogrepl.SendStandbyCopyDone(context.Background(), s.conn); err != nil {
		// The data is safe either way; at worst a restart sends again what
		// followed the server's last recorded position.
		s.log.Warn("the server did not confirm the end of the stream; events after the slot's last recorded position will be sent again after a restart", "error", err)
	}
	return nil
}
