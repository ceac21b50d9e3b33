package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"maunium.net/go/mautrix/id"

	matrixbridge "github.com/daarion/matrix-bridge"
	"github.com/daarion/matrix-bridge/internal/benchkit"
	"github.com/daarion/matrix-bridge/pkg/bridge"
	"github.com/daarion/matrix-bridge/pkg/clock"
	"github.com/daarion/matrix-bridge/pkg/config"
	"github.com/daarion/matrix-bridge/pkg/logging"
	"github.com/daarion/matrix-bridge/pkg/registration"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

const serverName = "daarion.test"

// rig is what every scenario shares: the bridge's config (tokens and ports
// fixed, so the one registration the homeserver read at start stays
// valid), a throwaway PostgreSQL cluster and the pinned Dendrite.
type rig struct {
	dir      string
	base     config.Config
	hs       *testrig.Homeserver
	pg       *testrig.PostgresCluster
	logLevel string
	runID    string
	dbSeq    atomic.Int64
}

func randomToken() string { return (rand.Text() + rand.Text())[:48] }

type rigOptions struct {
	dir        string
	homeserver bool
	postgres   bool
	dendrite   string
	logLevel   string
	maxOpen    int
	maxIdle    int
	workers    int
	// pgSample logs this fraction of PostgreSQL statements with their
	// durations (log_min_duration_sample = 0), for diagnosis; 0: off.
	pgSample float64
}

// startRig renders the config and registration and starts what the chosen
// scenarios need. On error, whatever was started is stopped again.
func startRig(ctx context.Context, opts rigOptions) (_ *rig, err error) {
	r := &rig{dir: opts.dir, logLevel: opts.logLevel, runID: strings.ToLower(rand.Text()[:6])}
	defer func() {
		if err != nil {
			r.close()
		}
	}()
	var hsPort, asPort, apiPort int
	for _, p := range []*int{&hsPort, &asPort, &apiPort} {
		if *p, err = testrig.FreePort(); err != nil {
			return nil, err
		}
	}
	cfg := config.Default()
	cfg.Homeserver.URL = fmt.Sprintf("http://127.0.0.1:%d", hsPort)
	cfg.Homeserver.ServerName = serverName
	cfg.AppService.URL = fmt.Sprintf("http://127.0.0.1:%d", asPort)
	cfg.AppService.Listen = fmt.Sprintf("127.0.0.1:%d", asPort)
	cfg.AppService.ASToken, cfg.AppService.HSToken = randomToken(), randomToken()
	cfg.InternalAPI.Port = apiPort
	cfg.InternalAPI.ServiceSecret = randomToken()
	// The default (100 req/s per service, burst 200) would turn a load test
	// into a rate-limit test: lift it.
	cfg.InternalAPI.RateLimit = config.RateLimit{RequestsPerSecond: 1e6, Burst: 1e6}
	cfg.Logging.Level = opts.logLevel
	cfg.Database.MaxOpenConns, cfg.Database.MaxIdleConns = opts.maxOpen, opts.maxIdle
	if opts.workers > 0 {
		cfg.Delivery.WebhookWorkers = opts.workers
	}
	cfg.Database.URL = "sqlite:" + filepath.Join(r.dir, "placeholder.db")
	if err = cfg.Validate(); err != nil {
		return nil, fmt.Errorf("bridge config: %w", err)
	}
	r.base = *cfg

	// The registration, exactly as `bridge -g` renders it.
	regPath := filepath.Join(r.dir, "registration.yaml")
	data, err := registration.Render(matrixbridge.RegistrationTemplate, registration.ValuesFromConfig(cfg))
	if err != nil {
		return nil, err
	}
	if err = os.WriteFile(regPath, data, 0o600); err != nil {
		return nil, err
	}

	if opts.postgres {
		benchkit.Progress("starting PostgreSQL")
		if r.pg, err = testrig.StartPostgres(ctx, r.dir); err != nil {
			return nil, err
		}
		if opts.pgSample > 0 {
			if err = samplePGStatements(ctx, r.pg, opts.pgSample); err != nil {
				return nil, err
			}
			benchkit.Progress("PostgreSQL logs %.0f%% of statements with their durations to %s", opts.pgSample*100, r.pg.LogFile)
		}
	}
	if opts.homeserver {
		benchkit.Progress("starting Dendrite %s on port %d", testrig.DendriteVersion, hsPort)
		r.hs, err = testrig.StartHomeserver(ctx, testrig.HomeserverOptions{
			Dir:               filepath.Join(r.dir, "homeserver"),
			ServerName:        serverName,
			RegistrationFiles: []string{regPath},
			SharedSecret:      randomToken(),
			Port:              hsPort,
			BinPath:           opts.dendrite,
			LogLevel:          "warn",
		})
		if err != nil {
			return nil, err
		}
	}
	return r, nil
}

func (r *rig) close() {
	if r.hs != nil {
		if err := r.hs.Stop(); err != nil {
			benchkit.Progress("stopping Dendrite: %v", err)
		}
		r.hs = nil
	}
	if r.pg != nil {
		// Keep the server's log (it goes with the cluster otherwise).
		if data, err := os.ReadFile(r.pg.LogFile); err == nil {
			_ = os.WriteFile(filepath.Join(r.dir, "postgres.log"), data, 0o600)
		}
		if err := r.pg.Remove(); err != nil {
			benchkit.Progress("removing PostgreSQL: %v", err)
		}
		r.pg = nil
	}
}

// bridgeRun is one in-process bridge on a fresh database.
type bridgeRun struct {
	b       *bridge.Bridge
	cfg     *config.Config
	db      string
	logPath string
	logFile *os.File
	api     *testrig.APIClient
	asURL   string
	hsToken string

	// On PostgreSQL: a connection for pg_stat_database (not the bridge's
	// pool), and the database's session count when the bridge started.
	stats     *sql.DB
	sessions0 int64
	rep       *scenarioReport
}

// startBridge starts a bridge in this process on a fresh database of kind
// ("sqlite" or "postgres"). mutate may change the config first.
func (r *rig) startBridge(ctx context.Context, kind, scenario string, rep *scenarioReport, mutate func(*config.Config)) (*bridgeRun, error) {
	cfg := r.base
	n := r.dbSeq.Add(1)
	name := fmt.Sprintf("rb%d_%s", n, strings.ReplaceAll(scenario, "-", "_"))
	switch kind {
	case testrig.SQLite:
		cfg.Database.URL = "sqlite:" + testrig.SQLiteURI(filepath.Join(r.dir, name+".db"))
	case testrig.Postgres:
		if r.pg == nil {
			return nil, errors.New("PostgreSQL was not started")
		}
		dsn, err := r.pg.CreateDatabase(ctx, name)
		if err != nil {
			return nil, err
		}
		cfg.Database.URL = dsn
	default:
		return nil, fmt.Errorf("unknown database %q", kind)
	}
	if mutate != nil {
		mutate(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("bridge config: %w", err)
	}
	logPath := filepath.Join(r.dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	log, err := logging.New(cfg.Logging.Level, cfg.Logging.Format, logFile)
	if err != nil {
		logFile.Close()
		return nil, err
	}
	b, err := bridge.New(ctx, &cfg, log)
	if err == nil {
		if err = b.Start(ctx); err != nil {
			stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_ = b.Stop(stopCtx)
			cancel()
		}
	}
	if err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting the bridge on %s: %w", kind, err)
	}
	br := &bridgeRun{
		b: b, cfg: &cfg, db: kind, logPath: logPath, logFile: logFile,
		api:     testrig.NewAPIClient("http://"+b.InternalAPIAddr(), cfg.InternalAPI.ServiceSecret, 64, 60*time.Second),
		asURL:   "http://" + b.AppserviceAddr(),
		hsToken: cfg.AppService.HSToken,
		rep:     rep,
	}
	if kind == testrig.Postgres {
		if br.stats, err = sql.Open("postgres", cfg.Database.URL); err == nil {
			br.stats.SetMaxOpenConns(1)
			br.sessions0, _ = br.pgSessions(ctx)
		}
	}
	return br, nil
}

// pgSessions is how many sessions PostgreSQL has counted for the bridge's
// database (every connection the bridge's pool opened, and this one).
func (br *bridgeRun) pgSessions(ctx context.Context) (int64, error) {
	var n int64
	err := br.stats.QueryRowContext(ctx, `SELECT sessions FROM pg_stat_database WHERE datname = current_database()`).Scan(&n)
	return n, err
}

func (br *bridgeRun) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if br.stats != nil {
		// Session statistics are flushed at most once a second.
		time.Sleep(1100 * time.Millisecond)
		if n, err := br.pgSessions(ctx); err == nil && br.rep != nil {
			br.rep.Note("[%s] PostgreSQL: the bridge opened %d connections during this run (database.max_idle_conns %d; 0: the bridge's default)",
				br.db, n-br.sessions0, br.cfg.Database.MaxIdleConns)
		}
		_ = br.stats.Close()
	}
	if err := br.b.Stop(ctx); err != nil {
		benchkit.Progress("stopping the bridge: %v", err)
	}
	br.api.Close()
	_ = br.logFile.Close()
}

// logTail returns the last lines of the bridge's log at warn or above.
func (br *bridgeRun) logTail(n int) string {
	data, _ := os.ReadFile(br.logPath)
	var lines []string
	for line := range strings.SplitSeq(strings.TrimSpace(string(data)), "\n") {
		var entry struct {
			Level string `json:"level"`
		}
		if json.Unmarshal([]byte(line), &entry) == nil && (entry.Level == "warn" || entry.Level == "error") {
			lines = append(lines, line)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// createCityRoom creates a city room, retrying while the bridge is still
// registering its bot with the homeserver (502/503).
func (br *bridgeRun) createCityRoom(ctx context.Context, slug string) (id.RoomID, error) {
	deadline := time.Now().Add(60 * time.Second)
	body := map[string]string{"slug": slug, "name": "Rigbench " + slug, "visibility": "public"}
	for {
		var out struct {
			RoomID id.RoomID `json:"matrix_room_id"`
		}
		status, raw, err := br.api.Call(ctx, http.MethodPost, "/internal/matrix/rooms/create", nil, body, &out)
		if err == nil && status == http.StatusOK && out.RoomID != "" {
			return out.RoomID, nil
		}
		if err == nil && status != http.StatusBadGateway && status != http.StatusServiceUnavailable {
			return "", fmt.Errorf("rooms/create %s answered %d: %s", slug, status, raw)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return "", fmt.Errorf("rooms/create %s: %d %s %v\nbridge log:\n%s", slug, status, raw, err, br.logTail(10))
		}
		clock.Sleep(ctx, 200*time.Millisecond)
	}
}

func roomPath(roomID id.RoomID) string {
	return "/internal/matrix/rooms/" + url.PathEscape(string(roomID))
}

func samplePGStatements(ctx context.Context, pg *testrig.PostgresCluster, rate float64) error {
	db, err := sql.Open("postgres", pg.DSN("postgres"))
	if err != nil {
		return err
	}
	defer db.Close()
	for _, q := range []string{
		"ALTER SYSTEM SET log_min_duration_sample = 0",
		fmt.Sprintf("ALTER SYSTEM SET log_statement_sample_rate = %g", rate),
		"SELECT pg_reload_conf()",
	} {
		if _, err = db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	return nil
}
