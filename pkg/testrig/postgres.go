// Package testrig provides real parts for tests and benchmarks: a throwaway
// PostgreSQL cluster and a pinned Dendrite homeserver.
package testrig

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/lib/pq"

	"github.com/daarion/matrix-bridge/pkg/clock"
)

// pgSuperuser is the superuser initdb creates. Authentication is "trust",
// and the server only listens on 127.0.0.1 and a unix socket in its own
// directory.
const pgSuperuser = "postgres"

// pgSettings go into postgresql.conf. They make the cluster small and quick
// to start, but durability is deliberately left as in production (fsync,
// synchronous_commit and full_page_writes on) because we benchmark it.
var pgSettings = []string{
	"listen_addresses = '127.0.0.1'",
	"max_connections = 200",
	"shared_buffers = 16MB",
	"fsync = on",
	"synchronous_commit = on",
	"full_page_writes = on",
	"wal_level = minimal",
	"max_wal_senders = 0",
	"max_wal_size = 256MB",
	"checkpoint_timeout = 30min",
	"dynamic_shared_memory_type = posix",
	"huge_pages = off",
	"jit = off",
	"logging_collector = off",
	"log_min_messages = warning",
	"log_min_error_statement = panic",
	"log_line_prefix = '%m [%p] '",
	"timezone = 'UTC'",
	"log_timezone = 'UTC'",
	"datestyle = 'iso, mdy'",
}

// PostgresCluster is a throwaway PostgreSQL cluster: initdb in a fresh
// directory, the server listening on 127.0.0.1:<free port> and on a unix
// socket. The postgres server is a direct child of this process; if this
// process dies, the kernel sends it SIGQUIT (immediate shutdown), so a
// crashed test binary does not leave it running.
//
// All methods are safe for concurrent use.
type PostgresCluster struct {
	// Dir is the cluster's own directory (data directory, log, socket).
	// Remove deletes it.
	Dir string
	// DataDir is the PostgreSQL data directory (Dir/data).
	DataDir string
	// SocketDir holds the unix socket (.s.PGSQL.<Port>); usually Dir.
	SocketDir string
	// LogFile receives the server's stderr (appended across restarts).
	LogFile string
	// Port is the TCP port on 127.0.0.1. It stays the same across Stop/Start
	// so DSNs handed out remain valid.
	Port int

	binDir     string
	cred       *syscall.Credential // non-nil when running as root
	ownSockDir bool                // SocketDir is a separate dir Remove must delete

	mu      sync.Mutex
	proc    *Process
	admin   *sql.DB
	removed bool
}

// PostgresBinDir returns the directory holding initdb and postgres: $PG_BINDIR
// if set, otherwise the newest /usr/lib/postgresql/<version>/bin (Debian's
// layout).
func PostgresBinDir() (string, error) {
	if d := os.Getenv("PG_BINDIR"); d != "" {
		if err := checkBinDir(d); err != nil {
			return "", fmt.Errorf("PG_BINDIR=%s: %w", d, err)
		}
		return d, nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	type cand struct {
		dir string
		ver []int
	}
	var cands []cand
	for _, m := range matches {
		ver, ok := parsePGVersion(filepath.Base(filepath.Dir(m)))
		if !ok || checkBinDir(m) != nil {
			continue
		}
		cands = append(cands, cand{m, ver})
	}
	if len(cands) == 0 {
		return "", errors.New("no PostgreSQL server binaries found in /usr/lib/postgresql/*/bin; " +
			"install them with `apt-get install -y postgresql` (Debian/Ubuntu) or set PG_BINDIR " +
			"to the directory containing initdb and postgres")
	}
	best := slices.MaxFunc(cands, func(a, b cand) int { return slices.Compare(a.ver, b.ver) })
	return best.dir, nil
}

func parsePGVersion(s string) ([]int, bool) {
	var v []int
	for part := range strings.SplitSeq(s, ".") {
		n, err := strconv.Atoi(part)
		if err != nil {
			return nil, false
		}
		v = append(v, n)
	}
	return v, len(v) > 0
}

func checkBinDir(d string) error {
	for _, b := range []string{"initdb", "postgres"} {
		fi, err := os.Stat(filepath.Join(d, b))
		if err != nil {
			return err
		}
		if fi.IsDir() || fi.Mode()&0o111 == 0 {
			return fmt.Errorf("%s is not executable", filepath.Join(d, b))
		}
	}
	return nil
}

// StartPostgres creates a new cluster in a fresh directory inside dir ("" means
// os.TempDir()), starts it and waits until it accepts connections.
//
// When running as root (initdb and postgres refuse to), both run as the
// "postgres" OS user; the cluster directory is chowned to it, and if a
// directory between os.TempDir() and dir (such as one made by t.TempDir) is
// not traversable by others, StartPostgres adds o+x to it.
func StartPostgres(ctx context.Context, dir string) (*PostgresCluster, error) {
	return StartPostgresWith(ctx, dir, nil)
}

// PostgresStatementStats are the settings that load pg_stat_statements
// (every statement counted, nested ones too), for a bench that reports
// where a database's time goes; the extension is then created in the
// database to read it (CREATE EXTENSION pg_stat_statements).
var PostgresStatementStats = []string{
	"shared_preload_libraries = 'pg_stat_statements'",
	"pg_stat_statements.track = all",
}

// StartPostgresWith is StartPostgres with more postgresql.conf settings
// (after pgSettings, so they win).
func StartPostgresWith(ctx context.Context, dir string, settings []string) (*PostgresCluster, error) {
	binDir, err := PostgresBinDir()
	if err != nil {
		return nil, err
	}
	if dir == "" {
		dir = os.TempDir()
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	clusterDir, err := os.MkdirTemp(dir, "pg-")
	if err != nil {
		return nil, err
	}
	c := &PostgresCluster{
		Dir:       clusterDir,
		DataDir:   filepath.Join(clusterDir, "data"),
		SocketDir: clusterDir,
		LogFile:   filepath.Join(clusterDir, "postgres.log"),
		binDir:    binDir,
	}
	ok := false
	defer func() {
		if !ok {
			_ = c.Remove()
		}
	}()

	if os.Geteuid() == 0 {
		if c.cred, err = postgresUserCredential(); err != nil {
			return nil, err
		}
		if err := makeTraversable(clusterDir, int(c.cred.Uid)); err != nil {
			return nil, err
		}
		if err := os.Chown(clusterDir, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			return nil, err
		}
	}
	// A unix socket path is limited to 107 bytes; fall back to a short
	// directory if the cluster directory is too deep.
	if len(c.SocketDir)+len("/.s.PGSQL.65535.lock") > 100 {
		sd, err := os.MkdirTemp("", "pgs-")
		if err != nil {
			return nil, err
		}
		c.SocketDir, c.ownSockDir = sd, true
		if c.cred != nil {
			if err := os.Chown(sd, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
				return nil, err
			}
		}
	}

	if err := c.initdb(ctx, settings); err != nil {
		return nil, err
	}

	// The port is free when picked, but another process can grab it before
	// postgres binds it; retry with a fresh port if postgres cannot bind.
	for attempt := 1; ; attempt++ {
		if c.Port, err = FreePort(); err != nil {
			return nil, err
		}
		err = c.Start(ctx)
		if err == nil {
			break
		}
		if attempt >= 5 || !errors.Is(err, errPortInUse) || ctx.Err() != nil {
			return nil, err
		}
	}
	ok = true
	return c, nil
}

func postgresUserCredential() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, and initdb/postgres refuse to run as root, "+
			"but there is no \"postgres\" OS user to run them as (it comes with `apt-get install -y postgresql`): %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, err
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, err
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}

// makeTraversable ensures that user uid can reach path's parent. Directories
// strictly inside os.TempDir() that lack o+x get it added (for t.TempDir());
// anything else that is not traversable is reported as an error.
func makeTraversable(path string, uid int) error {
	tmp, err := filepath.Abs(os.TempDir())
	if err != nil {
		return err
	}
	tmp, _ = filepath.EvalSymlinks(tmp)
	parent, err := filepath.EvalSymlinks(filepath.Dir(path))
	if err != nil {
		return err
	}
	for d := parent; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		st, _ := fi.Sys().(*syscall.Stat_t)
		traversable := fi.Mode().Perm()&0o001 != 0 || (st != nil && int(st.Uid) == uid && fi.Mode().Perm()&0o100 != 0)
		if !traversable {
			if !strings.HasPrefix(d, tmp+string(filepath.Separator)) {
				return fmt.Errorf("the postgres OS user cannot reach %s: %s is mode %v; "+
					"use a directory under %s or one that others can traverse", path, d, fi.Mode().Perm(), tmp)
			}
			if err := os.Chmod(d, fi.Mode().Perm()|0o001); err != nil {
				return err
			}
		}
		if d == "/" || d == filepath.Dir(d) {
			return nil
		}
	}
}

func (c *PostgresCluster) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(c.binDir, name), args...)
	cmd.Dir = c.Dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "TZ=UTC")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred, Setpgid: true}
	return cmd
}

func (c *PostgresCluster) initdb(ctx context.Context, settings []string) error {
	// --no-sync only skips flushing initdb's own output: the cluster is
	// throwaway, and the server itself runs with fsync=on.
	cmd := c.command(ctx, "initdb",
		"-D", c.DataDir,
		"-U", pgSuperuser,
		"--auth=trust",
		"--encoding=UTF8",
		"--no-locale",
		"--no-sync",
		"--no-instructions",
	)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %w\n%s", err, out)
	}
	conf := "\n# testrig\n" + strings.Join(append(slices.Clone(pgSettings), settings...), "\n") + "\n" +
		"unix_socket_directories = '" + strings.ReplaceAll(c.SocketDir, "'", "''") + "'\n"
	f, err := os.OpenFile(filepath.Join(c.DataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(conf); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

var errPortInUse = errors.New("port in use")

// Start starts the server (again, after Stop) on the same data directory and
// port and waits until it accepts connections. It is a no-op if the server is
// running.
func (c *PostgresCluster) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.removed {
		return errors.New("postgres cluster has been removed")
	}
	if c.proc != nil {
		if !c.proc.Exited() {
			return nil
		}
		c.proc = nil
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
	}

	// Our previous server (if any) has exited, so a postmaster.pid left by a
	// kill is stale; if its pid got reused, postgres would refuse to start.
	_ = os.Remove(filepath.Join(c.DataDir, "postmaster.pid"))
	// On a kill of this process, the postmaster gets SIGQUIT: an immediate
	// shutdown that also ends its children.
	p, err := StartProcess(ProcessOptions{
		Path:        filepath.Join(c.binDir, "postgres"),
		Args:        []string{"-D", c.DataDir, "-p", strconv.Itoa(c.Port)},
		Dir:         c.Dir,
		Env:         append(os.Environ(), "LC_ALL=C", "TZ=UTC"),
		LogFile:     c.LogFile,
		Credential:  c.cred,
		DeathSignal: syscall.SIGQUIT,
	})
	if err != nil {
		return err
	}
	c.proc = p

	if err := c.waitReady(ctx, p); err != nil {
		_ = stopPostmaster(p, 10*time.Second, true)
		c.proc = nil
		tail := TailFile(c.LogFile, p.LogOffset(), 40)
		if strings.Contains(tail, "could not bind") || strings.Contains(tail, "Address already in use") {
			err = fmt.Errorf("%w: %w", errPortInUse, err)
		}
		return fmt.Errorf("postgres on port %d did not become ready: %w\nserver log (%s):\n%s", c.Port, err, c.LogFile, tail)
	}
	return nil
}

func (c *PostgresCluster) waitReady(ctx context.Context, p *Process) error {
	pidFile := filepath.Join(c.DataDir, "postmaster.pid")
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-p.Done():
			return fmt.Errorf("postgres exited: %v", p.Err())
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		// Line 8 of postmaster.pid is the postmaster status; "ready" once it
		// accepts connections (PostgreSQL 10+).
		b, err := os.ReadFile(pidFile)
		if err != nil {
			continue
		}
		lines := strings.Split(string(b), "\n")
		if len(lines) < 8 || lines[0] != strconv.Itoa(p.Pid()) || strings.TrimSpace(lines[7]) != "ready" {
			continue
		}
		db, err := sql.Open("postgres", c.DSN("postgres"))
		if err != nil {
			return err
		}
		err = db.PingContext(ctx)
		db.Close()
		if err == nil {
			return nil
		}
	}
}

// stopPostmaster shuts the postmaster down, by default in fast mode (SIGINT,
// what `pg_ctl stop -m fast` sends), escalating to immediate mode (SIGQUIT)
// and then SIGKILL whenever it takes longer than timeout. immediate starts
// with SIGQUIT: no shutdown checkpoint, crash recovery on the next start.
func stopPostmaster(p *Process, timeout time.Duration, immediate bool) error {
	if immediate {
		return p.Stop(timeout, syscall.SIGQUIT)
	}
	return p.Stop(timeout, syscall.SIGINT, syscall.SIGQUIT)
}

// Stop shuts the server down in fast mode (the equivalent of
// `pg_ctl stop -m fast`: SIGINT to the postmaster this cluster started, and
// nothing else) and waits for it to exit. Data survives for Start. It is a
// no-op if the server is not running.
func (c *PostgresCluster) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopLocked(false)
}

func (c *PostgresCluster) stopLocked(immediate bool) error {
	if c.admin != nil {
		c.admin.Close()
		c.admin = nil
	}
	if c.proc == nil {
		return nil
	}
	err := stopPostmaster(c.proc, 30*time.Second, immediate)
	c.proc = nil
	return err
}

// Remove stops the server and deletes the cluster's directory. As the data
// is thrown away, it uses an immediate shutdown, skipping the shutdown
// checkpoint (which, with fsync on, can take seconds). Only the postmaster
// this cluster started is signalled.
func (c *PostgresCluster) Remove() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.stopLocked(true)
	c.removed = true
	if err2 := os.RemoveAll(c.Dir); err == nil {
		err = err2
	}
	if c.ownSockDir {
		if err2 := os.RemoveAll(c.SocketDir); err == nil {
			err = err2
		}
	}
	return err
}

// DSN returns a lib/pq URL for database name as the superuser over TCP.
func (c *PostgresCluster) DSN(name string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(pgSuperuser),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(c.Port)),
		Path:     "/" + name,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// CreateDatabase creates an empty database (from template1) and returns a
// lib/pq DSN for it: postgres://postgres@127.0.0.1:PORT/name?sslmode=disable.
func (c *PostgresCluster) CreateDatabase(ctx context.Context, name string) (string, error) {
	if name == "" || len(name) > 63 {
		return "", fmt.Errorf("invalid database name %q: must be 1 to 63 bytes", name)
	}
	admin, err := c.adminDB()
	if err != nil {
		return "", err
	}
	// CREATE DATABASE fails if someone else is connected to the template;
	// nobody should be, but retry briefly rather than flake.
	for attempt := 0; ; attempt++ {
		_, err = admin.ExecContext(ctx, "CREATE DATABASE "+pq.QuoteIdentifier(name))
		var pqErr *pq.Error
		if err == nil || attempt >= 20 || !errors.As(err, &pqErr) || pqErr.Code != "55006" /* object_in_use */ {
			break
		}
		if !clock.Sleep(ctx, 50*time.Millisecond) {
			return "", ctx.Err()
		}
	}
	if err != nil {
		return "", fmt.Errorf("creating database %q: %w", name, err)
	}
	return c.DSN(name), nil
}

func (c *PostgresCluster) adminDB() (*sql.DB, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil {
		return nil, errors.New("postgres cluster is not running")
	}
	if c.admin == nil {
		db, err := sql.Open("postgres", c.DSN("postgres"))
		if err != nil {
			return nil, err
		}
		db.SetMaxOpenConns(4)
		db.SetMaxIdleConns(2)
		c.admin = db
	}
	return c.admin, nil
}
