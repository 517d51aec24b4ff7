package replication

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// Setup creates what preflight found missing: first the publication, then
// the slot (in that order, so that every change the slot decodes sees the
// publication). Another relay creating them at the same moment is fine.
func Setup(ctx context.Context, cfg Config, st State, log *slog.Logger) error {
	if st.PublicationExists && (st.SlotExists || cfg.DeferSlot) {
		return nil
	}
	conn, err := connectSQL(ctx, cfg.ConnString)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if !st.PublicationExists {
		_, err := conn.Exec(ctx, PublicationDDL(cfg))
		switch {
		case isCode(err, "42710"), isCode(err, "23505"): // duplicate_object, or the catalog's unique_violation when both create at once: created meanwhile
		case err != nil:
			return fmt.Errorf("creating publication %q: %w", cfg.Publication, err)
		default:
			log.Info("created publication", "publication", cfg.Publication, "tables", cfg.Tables, "publish", "insert")
		}
	}
	if !st.SlotExists && !cfg.DeferSlot {
		var lsn string
		sql := "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')"
		if cfg.SlotFailover {
			sql = "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput', false, false, true)"
		}
		if st.InRecovery {
			log.Info("creating the replication slot on a standby; "+standbyHint, "slot", cfg.Slot)
		}
		err := conn.QueryRow(ctx, sql, cfg.Slot).Scan(&lsn)
		switch {
		case isCode(err, "42710"):
		case err != nil:
			return fmt.Errorf("creating replication slot %q: %w", cfg.Slot, err)
		default:
			log.Info("created replication slot", "slot", cfg.Slot, "plugin", "pgoutput", "consistent_point", lsn, "failover", cfg.SlotFailover)
		}
	}
	return nil
}

func isCode(err error, code string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == code
}

// SlotInUseError means another connection streams from the slot; a standby
// relay waits and retries.
type SlotInUseError struct {
	Slot string
	PID  int
}

func (e *SlotInUseError) Error() string {
	return fmt.Sprintf("replication slot %q is in use by the walsender with PID %d (another relay, or one that died less than wal_sender_timeout ago)", e.Slot, e.PID)
}

// ErrSlotGone means the slot cannot be streamed from any more: it was
// dropped, or invalidated because PostgreSQL removed WAL it needed. Events
// may have been lost; retrying cannot help.
var ErrSlotGone = errors.New("replication slot is gone")

func classifyStartError(slot string, err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err
	}
	switch pgErr.Code {
	case "55006": // object_in_use
		pid := 0
		if i := strings.LastIndex(pgErr.Message, "PID "); i >= 0 {
			pid, _ = strconv.Atoi(strings.TrimSpace(pgErr.Message[i+4:]))
		}
		return &SlotInUseError{Slot: slot, PID: pid}
	case "42704": // undefined_object
		return fmt.Errorf("%w: slot %q no longer exists (it was dropped while outboxrelay ran; events written meanwhile were not captured): restart outboxrelay to create it and replay from the outbox table if rows are kept: %v", ErrSlotGone, slot, err)
	case "55000": // object_not_in_prerequisite_state: invalidated slot
		return fmt.Errorf("%w: slot %q was invalidated (PostgreSQL removed WAL it still needed, see max_slot_wal_keep_size); drop it with SELECT pg_drop_replication_slot('%s'), restart outboxrelay, and replay from the outbox table if rows are kept: %v", ErrSlotGone, slot, slot, err)
	}
	return err
}

func parseLSN(s string) (uint64, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("LSN %q: want X/Y", s)
	}
	h, err := strconv.ParseUint(hi, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("LSN %q: %w", s, err)
	}
	l, err := strconv.ParseUint(lo, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("LSN %q: %w", s, err)
	}
	return h<<32 | l, nil
}

// FormatLSN prints an LSN the way PostgreSQL does (X/Y).
func FormatLSN(lsn uint64) string {
	return fmt.Sprintf("%X/%X", uint32(lsn>>32), uint32(lsn))
}

// currentLSN is SQL for the server's newest WAL position: on a standby,
// where pg_current_wal_lsn() fails, the position replayed.
const currentLSN = "(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)"

// ParseLSN parses an LSN as PostgreSQL prints it (X/Y).
func ParseLSN(s string) (uint64, error) { return parseLSN(s) }
