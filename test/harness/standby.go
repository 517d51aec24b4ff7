package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"
)

// StandbyOptions tunes a physical standby.
type StandbyOptions struct {
	// SlotName, when set, is the primary's physical replication slot the
	// standby streams from (primary_slot_name). StartStandby creates it
	// before the backup when missing, so that the primary keeps every WAL
	// segment the standby has yet to read.
	SlotName string
	// Settings are extra postgresql.conf lines for the standby, name to
	// value, such as hot_standby_feedback or (17+) sync_replication_slots.
	Settings map[string]string
}

// StartStandby makes a streaming-replication standby of the running primary
// p, starts it on a free port and waits until it streams. It needs no
// pg_basebackup (the npm builds of test/postgres/fetch.sh have none): it
// copies p's data directory between the low-level backup API's start and
// stop calls, then the WAL written meanwhile, and writes standby.signal and
// a primary_conninfo naming a database, which 17's slot synchronization
// needs. Stop the standby as any cluster; Promote makes it a primary.
func (p *Postgres) StartStandby(ctx context.Context, opts StandbyOptions) (*Postgres, error) {
	if p.netns != nil {
		return nil, errors.New("starting a standby: a primary in a network namespace is not supported")
	}
	dir, err := os.MkdirTemp("", "outboxrelay-pg-standby-")
	if err != nil {
		return nil, fmt.Errorf("creating the standby's directory: %w", err)
	}
	s := &Postgres{Dir: dir, Host: "127.0.0.1", binDir: p.binDir, cred: p.cred}
	if err := s.becomeStandby(ctx, p, opts); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := s.waitStreaming(ctx, p); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// becomeStandby fills s's directory with a backup of primary, configures
// it as primary's standby and starts it.
func (s *Postgres) becomeStandby(ctx context.Context, primary *Postgres, opts StandbyOptions) error {
	if err := s.own(s.Dir); err != nil {
		return err
	}
	if err := s.backUp(ctx, primary, opts.SlotName); err != nil {
		return fmt.Errorf("backing up the primary for a standby: %w", err)
	}
	conf := map[string]string{
		"primary_conninfo": fmt.Sprintf("'host=%s port=%d user=postgres dbname=postgres application_name=%s'",
			primary.Host, primary.Port, s.appName()),
		"hot_standby": "on",
	}
	if opts.SlotName != "" {
		conf["primary_slot_name"] = "'" + opts.SlotName + "'"
	}
	for k, v := range opts.Settings {
		conf[k] = v
	}
	if err := s.appendConf(conf); err != nil {
		return err
	}
	if err := s.writeDataFile("standby.signal", nil); err != nil {
		return err
	}
	return s.startOnFreePort(ctx)
}

// appName is the application_name the standby's WAL receiver gives the
// primary, in pg_stat_replication: its directory's name, unique.
func (s *Postgres) appName() string { return filepath.Base(s.Dir) }

// backupAPI is the low-level backup API of one major version: its start
// query takes a label and selects the WAL file the backup starts in, its
// stop query selects the WAL file it ends in, the backup_label and the
// tablespace_map contents.
type backupAPI struct{ start, stop string }

// 15 renamed pg_start_backup and pg_stop_backup and dropped their exclusive
// mode; both APIs run non-exclusively here, on the one session.
var (
	backupAPI15 = backupAPI{
		start: `SELECT pg_walfile_name(pg_backup_start($1, true))`,
		stop:  `SELECT pg_walfile_name(lsn), labelfile, coalesce(spcmapfile, '') FROM pg_backup_stop(false)`,
	}
	backupAPI13 = backupAPI{
		start: `SELECT pg_walfile_name(pg_start_backup($1, true, false))`,
		stop:  `SELECT pg_walfile_name(lsn), labelfile, coalesce(spcmapfile, '') FROM pg_stop_backup(false, false)`,
	}
)

// backupAPIOf returns the backup API of the server conn is connected to.
func backupAPIOf(ctx context.Context, conn *pgx.Conn) (backupAPI, error) {
	var version int
	if err := conn.QueryRow(ctx, `SELECT current_setting('server_version_num')::int`).Scan(&version); err != nil {
		return backupAPI{}, fmt.Errorf("reading the primary's version: %w", err)
	}
	if version < 150000 {
		return backupAPI13, nil
	}
	return backupAPI15, nil
}

// backUp copies primary's data directory into s's as pg_basebackup
// -X fetch would, creating physical slot slot first when it is not empty.
func (s *Postgres) backUp(ctx context.Context, primary *Postgres, slot string) error {
	conn, err := pgx.Connect(ctx, primary.URL("postgres", "postgres"))
	if err != nil {
		return fmt.Errorf("connecting to the primary: %w", err)
	}
	defer conn.Close(ctx)
	if slot != "" {
		if _, err := conn.Exec(ctx, `SELECT pg_create_physical_replication_slot($1, true)
			WHERE NOT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = $1)`, slot); err != nil {
			return fmt.Errorf("creating physical slot %s: %w", slot, err)
		}
	}
	api, err := backupAPIOf(ctx, conn)
	if err != nil {
		return err
	}
	var first, last, label, spcmap string
	if err := conn.QueryRow(ctx, api.start, "outboxrelay standby "+s.appName()).Scan(&first); err != nil {
		return fmt.Errorf("starting the backup: %w", err)
	}
	copyErr := s.copyData(primary.data())
	if err := conn.QueryRow(ctx, api.stop).Scan(&last, &label, &spcmap); err != nil {
		return fmt.Errorf("stopping the backup: %w", err)
	}
	if copyErr != nil {
		return copyErr
	}
	if spcmap != "" {
		return errors.New("the primary has tablespaces, which the standby's copy does not handle")
	}
	if err := s.writeDataFile("backup_label", []byte(label)); err != nil {
		return err
	}
	return s.copyWAL(primary.data(), first, last)
}

// skipped names the files a base backup leaves out, as pg_basebackup does:
// the running server's own and those a server rebuilds.
var skipped = map[string]bool{
	"postmaster.pid": true, "postmaster.opts": true, "backup_label": true, "tablespace_map": true,
	"current_logfiles": true, "standby.signal": true, "recovery.signal": true, "pg_internal.init": true,
}

// emptied names the folders whose contents a base backup leaves out: those a
// server rebuilds, the WAL (copied after the backup's stop) and the slots
// (the primary's own).
var emptied = map[string]bool{
	"pg_wal": true, "pg_replslot": true, "pg_stat_tmp": true, "pg_dynshmem": true, "pg_notify": true,
	"pg_serial": true, "pg_snapshots": true, "pg_subtrans": true,
}

// copyData copies the running primary's data directory src into s's, but
// for what skipped and emptied name. Files that vanish meanwhile are passed
// over: WAL replay recreates whatever the backup needs.
func (s *Postgres) copyData(src string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading the primary's data directory: %w", err)
		}
		rel, _ := filepath.Rel(src, path)
		to := filepath.Join(s.data(), rel)
		parent := filepath.Dir(rel)
		switch {
		case d.IsDir() && emptied[parent] && parent != "pg_wal":
			return fs.SkipDir // a slot's folder, say
		case d.IsDir() && emptied[parent]:
			if err := s.mkdir(to); err != nil {
				return err
			}
			return fs.SkipDir // pg_wal/archive_status (and summaries, 17+), empty
		case d.IsDir():
			return s.mkdir(to)
		case skipped[d.Name()] || emptied[parent]:
			return nil
		case !d.Type().IsRegular():
			return fmt.Errorf("copying the primary's data directory: %s is not a regular file", rel)
		}
		return s.copyFile(path, to)
	})
}

// walFileRE matches the names of WAL segments and timeline history files.
var walFileRE = regexp.MustCompile(`^([0-9A-F]{24}|[0-9A-F]{8}\.history)$`)

// copyWAL copies the WAL segments first to last (file names, on one
// timeline) and every timeline history file from the primary's pg_wal into
// s's: what replaying the backup up to its consistent point needs.
func (s *Postgres) copyWAL(src, first, last string) error {
	entries, err := os.ReadDir(filepath.Join(src, "pg_wal"))
	if err != nil {
		return fmt.Errorf("listing the primary's WAL: %w", err)
	}
	copied := 0
	for _, e := range entries {
		name := e.Name()
		if !walFileRE.MatchString(name) || (len(name) == 24 && (name < first || name > last)) {
			continue
		}
		if err := s.copyFile(filepath.Join(src, "pg_wal", name), filepath.Join(s.data(), "pg_wal", name)); err != nil {
			return err
		}
		if len(name) == 24 {
			copied++
		}
	}
	if copied == 0 {
		return fmt.Errorf("copying the primary's WAL: no segment from %s to %s in its pg_wal", first, last)
	}
	return nil
}

// mkdir makes a folder of s's data directory, owned by its server's user.
func (s *Postgres) mkdir(path string) error {
	if err := os.Mkdir(path, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("creating the standby's %s: %w", path, err)
	}
	return s.own(path)
}

// copyFile copies one file of the primary's into s's data directory, owned
// by its server's user; a file that vanished first is passed over.
func (s *Postgres) copyFile(from, to string) error {
	in, err := os.Open(from)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("copying the primary's data: %w", err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("copying the primary's data: %w", err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copying the primary's %s: %w", from, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("copying the primary's %s: %w", from, err)
	}
	return s.own(to)
}

// waitStreaming waits until s's WAL receiver streams from primary, as both
// of them see it.
func (s *Postgres) waitStreaming(ctx context.Context, primary *Postgres) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := waitOn(ctx, s, `SELECT EXISTS (SELECT FROM pg_stat_wal_receiver WHERE status = 'streaming')`); err != nil {
		return fmt.Errorf("waiting for the standby's WAL receiver to stream: %w (see %s)", err, s.LogFile())
	}
	if err := waitOn(ctx, primary, `SELECT EXISTS (SELECT FROM pg_stat_replication
		WHERE application_name = $1 AND state = 'streaming')`, s.appName()); err != nil {
		return fmt.Errorf("waiting for the primary to stream to the standby: %w", err)
	}
	return nil
}

// waitOn polls query on p until it selects true or ctx ends.
func waitOn(ctx context.Context, p *Postgres, query string, args ...any) error {
	conn, err := pgx.Connect(ctx, p.URL("postgres", "postgres"))
	if err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	defer conn.Close(context.Background())
	return waitTrue(ctx, conn, query, args...)
}

// waitTrue polls query on conn until it selects true or ctx ends.
func waitTrue(ctx context.Context, conn *pgx.Conn, query string, args ...any) error {
	for {
		var ok bool
		if err := conn.QueryRow(ctx, query, args...).Scan(&ok); err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Promote ends a standby's recovery, making it a primary that accepts
// writes, and waits until it does (pg_ctl promote -w).
func (p *Postgres) Promote(ctx context.Context) error {
	return p.run(ctx, "pg_ctl", "promote", "-w", "-t", "60", "-D", p.data())
}
