package replication

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// HeartbeatPrefix marks the logical decoding messages outboxrelay emits as
// heartbeats. They travel through the slot like events, so their arrival
// measures liveness and end-to-end lag even when the outbox is quiet.
const HeartbeatPrefix = "outboxrelay.heartbeat"

// Monitor runs the relay's side queries on one ordinary connection,
// reconnecting when it breaks: slot statistics and heartbeats. Not safe for
// concurrent use.
type Monitor struct {
	connString string
	slot       string
	conn       *pgx.Conn
}

// NewMonitor connects lazily, on first use.
func NewMonitor(connString, slot string) *Monitor {
	return &Monitor{connString: connString, slot: slot}
}

func (m *Monitor) connect(ctx context.Context) (*pgx.Conn, error) {
	if m.conn != nil && !m.conn.IsClosed() {
		return m.conn, nil
	}
	conn, err := connectSQL(ctx, m.connString)
	if err != nil {
		return nil, err
	}
	m.conn = conn
	return conn, nil
}

// SlotStats are the slot's WAL figures; a nil field is unknown.
type SlotStats struct {
	Active   bool
	Lag      *int64 // bytes from confirmed_flush_lsn to the current WAL position
	Retained *int64 // bytes from restart_lsn to the current WAL position
}

// Stats reads the slot's WAL figures.
func (m *Monitor) Stats(ctx context.Context) (SlotStats, error) {
	conn, err := m.connect(ctx)
	if err != nil {
		return SlotStats{}, err
	}
	var s SlotStats
	err = conn.QueryRow(ctx, `SELECT active, pg_wal_lsn_diff(`+currentLSN+`, confirmed_flush_lsn)::bigint,
		pg_wal_lsn_diff(`+currentLSN+`, restart_lsn)::bigint FROM pg_replication_slots WHERE slot_name = $1`, m.slot).Scan(&s.Active, &s.Lag, &s.Retained)
	if err != nil {
		m.Close(ctx)
		return SlotStats{}, fmt.Errorf("reading slot statistics: %w", err)
	}
	return s, nil
}

// ServerLSN reads the server's flushed WAL position: what a walsender may
// send (on a standby, the position replayed).
func (m *Monitor) ServerLSN(ctx context.Context) (uint64, error) {
	conn, err := m.connect(ctx)
	if err != nil {
		return 0, err
	}
	var s string
	err = conn.QueryRow(ctx, `SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_flush_lsn() END)::text`).Scan(&s)
	if err != nil {
		m.Close(ctx)
		return 0, fmt.Errorf("reading the server's WAL position: %w", err)
	}
	return parseLSN(s)
}

// EmitHeartbeat writes a non-transactional logical decoding message holding
// the current time; the stream hands it to Handler.Heartbeat.
func (m *Monitor) EmitHeartbeat(ctx context.Context) error {
	conn, err := m.connect(ctx)
	if err != nil {
		return err
	}
	_, err = conn.Exec(ctx, "SELECT pg_logical_emit_message(false, $1, $2)", HeartbeatPrefix, strconv.FormatInt(time.Now().UnixNano(), 10))
	if err != nil {
		m.Close(ctx)
		return fmt.Errorf("emitting a heartbeat: %w", err)
	}
	return nil
}

// Close closes the connection; the Monitor reconnects on next use.
func (m *Monitor) Close(ctx context.Context) {
	if m.conn != nil {
		_ = m.conn.Close(context.WithoutCancel(ctx))
		m.conn = nil
	}
}
