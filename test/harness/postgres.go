// Package harness starts the real components outboxrelay's tests and demo
// run against: a throwaway PostgreSQL cluster (initdb and pg_ctl from the
// machine's PostgreSQL server package, wal_level=logical, a free loopback
// port, a temporary directory, run as the postgres OS user when the caller is
// root) and an in-process Kafka-protocol broker (kfake), or Apache Kafka
// itself (StartRealKafka, kafka_real.go).
package harness

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresOptions tunes a cluster.
type PostgresOptions struct {
	// WALLevel defaults to "logical".
	WALLevel string
	// Settings are extra postgresql.conf lines, name to value.
	Settings map[string]string
	// TLS turns on TLS with a self-signed certificate for 127.0.0.1;
	// clients then connect with sslmode=require.
	TLS bool
	// Netns runs the server in a network namespace, listening on its end
	// of the link; clients reach it over the link (see Netns).
	Netns *Netns
}

// Postgres is one running throwaway cluster. Its superuser is "postgres"
// with trust authentication on 127.0.0.1 only.
type Postgres struct {
	Dir  string
	Port int
	// Host is the address clients connect to: 127.0.0.1, or the
	// namespace's end of the link.
	Host   string
	binDir string
	cred   *osUser
	netns  *Netns
	down   bool // stopped by StopImmediate
}

// ErrNoServer means no PostgreSQL server binaries were found.
var ErrNoServer = errors.New("PostgreSQL server binaries (initdb, pg_ctl) not found: install them, e.g. apt-get install postgresql")

// BinDir finds the directory holding initdb and pg_ctl: the build of the
// major version $OUTBOXRELAY_PG_MAJOR names (MajorBinDir), else $PG_BINDIR,
// then `pg_config --bindir`, then the newest /usr/lib/postgresql/*/bin.
func BinDir() (string, error) {
	major, err := requestedMajor()
	if err != nil {
		return "", err
	}
	if major != 0 {
		return MajorBinDir(major)
	}
	var candidates []string
	if d := os.Getenv("PG_BINDIR"); d != "" {
		candidates = append(candidates, d)
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		candidates = append(candidates, strings.TrimSpace(string(out)))
	}
	globbed, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(globbed, func(i, j int) bool { return versionOf(globbed[i]) > versionOf(globbed[j]) })
	candidates = append(candidates, globbed...)
	if p, err := exec.LookPath("initdb"); err == nil {
		candidates = append(candidates, filepath.Dir(p))
	}
	for _, d := range candidates {
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "pg_ctl")) {
			return d, nil
		}
	}
	return "", ErrNoServer
}

func versionOf(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// StartPostgres initializes and starts a cluster in a new temporary
// directory. Call Stop to shut it down and remove the directory.
func StartPostgres(ctx context.Context, opts PostgresOptions) (*Postgres, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "outboxrelay-pg-")
	if err != nil {
		return nil, fmt.Errorf("creating the cluster directory: %w", err)
	}
	p := &Postgres{Dir: dir, binDir: bin, Host: "127.0.0.1", netns: opts.Netns}
	if p.netns != nil {
		p.Host = p.netns.PeerAddr
	}
	if os.Geteuid() == 0 {
		// initdb refuses to run as root: run the cluster as postgres.
		if p.cred, err = postgresUser(); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		if err := os.Chown(dir, int(p.cred.Uid), int(p.cred.Gid)); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("handing the cluster directory to postgres: %w", err)
		}
	}
	if err := p.init(ctx, opts); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := p.startOnFreePort(ctx); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return p, nil
}

// startOnFreePort starts the server on a free port, trying again on another
// when one was taken between choosing and binding it.
func (p *Postgres) startOnFreePort(ctx context.Context) error {
	var err error
	for range 4 {
		if err = p.start(ctx); err == nil {
			return nil
		}
	}
	return err
}

// osUser is an operating-system user the cluster runs as.
type osUser struct{ Uid, Gid uint32 }

func postgresUser() (*osUser, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root needs the postgres OS user (it comes with the PostgreSQL server package): %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &osUser{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func (p *Postgres) data() string { return filepath.Join(p.Dir, "data") }

// LogFile is the server log.
func (p *Postgres) LogFile() string { return filepath.Join(p.Dir, "server.log") }

func (p *Postgres) run(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(p.binDir, name), args...)
	if p.netns != nil && name == "pg_ctl" {
		// The server starts in the namespace; nsenter enters it as root
		// and then becomes the server's user.
		cmd = p.netns.command(p.cred.Uid, p.cred.Gid, cmd.Path, args...)
	} else if p.cred != nil {
		runAs(cmd, p.cred)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Dir = p.Dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "TZ=UTC")
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("running %s %s: %w\n%s", name, strings.Join(args, " "), err, out.String())
	}
	return nil
}

func (p *Postgres) init(ctx context.Context, opts PostgresOptions) error {
	if err := p.run(ctx, "initdb", "-D", p.data(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"); err != nil {
		return err
	}
	level := opts.WALLevel
	if level == "" {
		level = "logical"
	}
	conf := map[string]string{
		"wal_level":               level,
		"listen_addresses":        "'127.0.0.1'",
		"unix_socket_directories": "''",
		"max_replication_slots":   "20",
		"max_wal_senders":         "20",
		"fsync":                   "off",
		"synchronous_commit":      "on",
		"full_page_writes":        "off",
		"shared_buffers":          "64MB",
		"max_connections":         "100",
		"log_min_messages":        "warning",
		"wal_sender_timeout":      "60s",
	}
	if opts.TLS {
		if err := p.writeServerCert(); err != nil {
			return fmt.Errorf("writing the server certificate: %w", err)
		}
		conf["ssl"] = "on"
		conf["ssl_cert_file"] = "'server.crt'"
		conf["ssl_key_file"] = "'server.key'"
	}
	if opts.Netns != nil {
		conf["listen_addresses"] = "'" + opts.Netns.PeerAddr + "'"
		if err := p.trustHost(opts.Netns.HostAddr); err != nil {
			return err
		}
	}
	for k, v := range opts.Settings {
		conf[k] = v
	}
	return p.appendConf(conf)
}

// appendConf appends settings, name to value, to postgresql.conf, where they
// override any earlier line for the same name.
func (p *Postgres) appendConf(conf map[string]string) error {
	var b strings.Builder
	for k, v := range conf {
		fmt.Fprintf(&b, "%s = %s\n", k, v)
	}
	f, err := os.OpenFile(filepath.Join(p.data(), "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("writing postgresql.conf: %w", err)
	}
	defer f.Close()
	if _, err := f.WriteString(b.String()); err != nil {
		return fmt.Errorf("writing postgresql.conf: %w", err)
	}
	return nil
}

// trustHost lets addr connect as any user, for replication too, without a
// password (as 127.0.0.1 may after initdb --auth=trust).
func (p *Postgres) trustHost(addr string) error {
	f, err := os.OpenFile(filepath.Join(p.data(), "pg_hba.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("writing pg_hba.conf: %w", err)
	}
	defer f.Close()
	_, err = fmt.Fprintf(f, "host all all %[1]s/32 trust\nhost replication all %[1]s/32 trust\n", addr)
	return err
}

// writeServerCert writes a self-signed certificate for 127.0.0.1 and its key
// into the data directory, readable only by the server's user.
func (p *Postgres) writeServerCert() error {
	cert, err := newServerCert(1, nil, nil)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalECPrivateKey(cert.key)
	if err != nil {
		return err
	}
	for name, block := range map[string]*pem.Block{
		"server.crt": {Type: "CERTIFICATE", Bytes: cert.der},
		"server.key": {Type: "EC PRIVATE KEY", Bytes: keyDER},
	} {
		if err := p.writeDataFile(name, pem.EncodeToMemory(block)); err != nil {
			return err
		}
	}
	return nil
}

// writeDataFile writes a file into the data directory, readable only by the
// server's user.
func (p *Postgres) writeDataFile(name string, content []byte) error {
	path := filepath.Join(p.data(), name)
	if err := os.WriteFile(path, content, 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	return p.own(path)
}

// own hands path to the server's user when the cluster runs as postgres.
func (p *Postgres) own(path string) error {
	if p.cred == nil {
		return nil
	}
	if err := os.Lchown(path, int(p.cred.Uid), int(p.cred.Gid)); err != nil {
		return fmt.Errorf("handing %s to postgres: %w", path, err)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (p *Postgres) start(ctx context.Context) error {
	if p.Port == 0 {
		port, err := freePort()
		if err != nil {
			return err
		}
		p.Port = port
	}
	err := p.run(ctx, "pg_ctl", "start", "-w", "-t", "60", "-D", p.data(), "-l", p.LogFile(), "-o", fmt.Sprintf("-p %d", p.Port))
	if err != nil {
		p.Port = 0
	}
	return err
}

// Restart stops the server with mode "fast" or "immediate" (a crash), unless
// StopImmediate stopped it already, and starts it again on the same port.
func (p *Postgres) Restart(ctx context.Context, mode string) error {
	if !p.down {
		if err := p.run(ctx, "pg_ctl", "stop", "-w", "-m", mode, "-D", p.data()); err != nil {
			return err
		}
	}
	if err := p.run(ctx, "pg_ctl", "start", "-w", "-t", "60", "-D", p.data(), "-l", p.LogFile(), "-o", fmt.Sprintf("-p %d", p.Port)); err != nil {
		return err
	}
	p.down = false
	return nil
}

// StopImmediate stops the server as a crash would (pg_ctl stop -m
// immediate: no shutdown checkpoint, every client cut off), leaving its
// directory for Restart or Stop; failover tests use it on a primary.
func (p *Postgres) StopImmediate(ctx context.Context) error { return p.stopLeaving(ctx, "immediate") }

// StopFast stops the server cleanly (pg_ctl stop -m fast: its standbys
// receive all of its WAL first), leaving its directory for Restart or Stop.
func (p *Postgres) StopFast(ctx context.Context) error { return p.stopLeaving(ctx, "fast") }

func (p *Postgres) stopLeaving(ctx context.Context, mode string) error {
	if err := p.run(ctx, "pg_ctl", "stop", "-w", "-m", mode, "-D", p.data()); err != nil {
		return err
	}
	p.down = true
	return nil
}

// Stop shuts the server down, unless StopImmediate did, and removes its
// directory.
func (p *Postgres) Stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var err error
	if !p.down {
		err = p.run(ctx, "pg_ctl", "stop", "-w", "-m", "fast", "-D", p.data())
	}
	if rmErr := os.RemoveAll(p.Dir); err == nil {
		err = rmErr
	}
	return err
}

// SlotStreamingSQL selects true once a walsender holds the slot named $1.
// A slot is also active while a plain backend creates or advances it
// (pg_create_logical_replication_slot); only a row in pg_stat_replication
// means a replication connection is reading from it.
const SlotStreamingSQL = `SELECT EXISTS (SELECT FROM pg_replication_slots s
	JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = $1)`

// URL is the connection URL of database db as user.
func (p *Postgres) URL(user, db string) string {
	return fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", user, p.Host, p.Port, db)
}

// CreateDatabase creates database name and returns its superuser URL.
func (p *Postgres) CreateDatabase(ctx context.Context, name string) (string, error) {
	conn, err := pgx.Connect(ctx, p.URL("postgres", "postgres"))
	if err != nil {
		return "", fmt.Errorf("connecting to the test cluster: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("creating database %s: %w", name, err)
	}
	return p.URL("postgres", name), nil
}
