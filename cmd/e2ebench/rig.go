package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/daarion/matrix-bridge/internal/benchkit"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

const bridgeModule = "github.com/daarion/matrix-bridge/cmd/bridge"

func randomToken() string { return (rand.Text() + rand.Text())[:48] }

// buildBridge builds the bridge from this work tree with goolm (as `make
// build` does) into dir: the bench measures this tree's code, not a
// bin/bridge that may be older.
func buildBridge(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "bridge")
	build := exec.CommandContext(ctx, "go", "build", "-tags", "goolm", "-o", bin, bridgeModule)
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", bridgeModule, err, out)
	}
	return bin, nil
}

// rig is what every scenario shares: one registration (tokens and ports
// fixed, so the one the homeserver read at start stays valid for every
// bridge run), the idle Dendrite, and the throwaway PostgreSQL cluster.
// Each scenario runs a fresh bridge process on a fresh database, so that
// no backlog of one is in front of the next.
type rig struct {
	dir        string
	bin        string
	bridgeComm string // the bridge's command name in /proc (its CPU is found by it)
	logLevel   string
	nats       bool
	pprof      bool // metrics.pprof on (-bridge-profile)
	tag        string

	hsPort, asPort, apiPort, metricsPort int
	asToken, hsToken, secret             string

	hs     *testrig.Homeserver
	pg     *testrig.PostgresCluster
	ownPG  bool   // started here (else borrowed from another rig)
	extra  string // more of the bridge's config
	runSeq int
}

type rigOptions struct {
	dir, bin, logLevel string
	nats, postgres     bool
	pprof              bool
	pgStatements       bool // pg_stat_statements loaded (-pg-statements)
	// kind is the homeserver (default Dendrite); for Synapse, rateLimits
	// replaces its rc_* keys.
	kind, rateLimits string
	// pg, when set, is a running cluster to borrow (not removed by close).
	pg *testrig.PostgresCluster
	// extra is appended to the bridge's config.
	extra string
}

// startRig renders the registration with `bridge -g` (as an operator
// would) and starts Dendrite with it, and PostgreSQL when asked. On error
// whatever was started is stopped.
func startRig(ctx context.Context, opts rigOptions) (_ *rig, err error) {
	r := &rig{dir: opts.dir, bin: opts.bin, logLevel: opts.logLevel, nats: opts.nats, pprof: opts.pprof, pg: opts.pg, extra: opts.extra,
		tag: strings.ToLower(rand.Text()[:6]), asToken: randomToken(), hsToken: randomToken(), secret: randomToken()}
	if err = os.MkdirAll(r.dir, 0o700); err != nil {
		return nil, err
	}
	r.bridgeComm = filepath.Base(opts.bin)
	if len(r.bridgeComm) > 15 { // the kernel's TASK_COMM_LEN
		r.bridgeComm = r.bridgeComm[:15]
	}
	defer func() {
		if err != nil {
			r.close()
		}
	}()
	for _, p := range []*int{&r.hsPort, &r.asPort, &r.apiPort, &r.metricsPort} {
		if *p, err = testrig.FreePort(); err != nil {
			return nil, err
		}
	}
	cfgPath := filepath.Join(r.dir, "registration-config.yaml")
	if err = os.WriteFile(cfgPath, []byte(r.config("sqlite:"+filepath.Join(r.dir, "unused.db"), "")), 0o600); err != nil {
		return nil, err
	}
	regPath := filepath.Join(r.dir, "registration.yaml")
	if out, err := exec.CommandContext(ctx, r.bin, "-g", "-c", cfgPath, "-r", regPath).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("bridge -g: %v\n%s", err, out)
	}
	if opts.postgres && r.pg == nil {
		benchkit.Progress("starting PostgreSQL (throwaway cluster)")
		var settings []string
		if opts.pgStatements {
			settings = testrig.PostgresStatementStats
		}
		if r.pg, err = testrig.StartPostgresWith(ctx, r.dir, settings); err != nil {
			return nil, fmt.Errorf("starting PostgreSQL: %w", err)
		}
		r.ownPG = true
	}
	if opts.kind == testrig.Synapse {
		benchkit.Progress("starting Synapse %s on port %d", testrig.SynapseVersion, r.hsPort)
	} else {
		benchkit.Progress("starting Dendrite %s on port %d (idle: the bench pushes the transactions itself)", testrig.DendriteVersion, r.hsPort)
	}
	r.hs, err = testrig.StartHomeserver(ctx, testrig.HomeserverOptions{
		Kind:              opts.kind,
		RateLimits:        opts.rateLimits,
		Dir:               filepath.Join(r.dir, "homeserver"),
		ServerName:        serverName,
		RegistrationFiles: []string{regPath},
		SharedSecret:      randomToken(),
		Port:              r.hsPort,
		LogLevel:          "warn",
	})
	if err != nil {
		return nil, fmt.Errorf("starting the homeserver: %w", err)
	}
	return r, nil
}

func (r *rig) close() {
	if r.hs != nil {
		if err := r.hs.Stop(); err != nil {
			benchkit.Progress("stopping the homeserver: %v", err)
		}
		r.hs = nil
	}
	if r.pg != nil && r.ownPG {
		if err := r.pg.Remove(); err != nil {
			benchkit.Progress("removing PostgreSQL: %v", err)
		}
		r.pg = nil
	}
}

// config renders the bridge's config: the deployed defaults (every
// consumer on, database.poll_interval 1s, 8 webhook workers) but for what
// a bench must change: loopback ports, the tokens, metrics on (scraped for
// the leader and the consumers' names), the internal API's rate limit
// lifted (the sync client polls it), the timed reconciles off (homeserver
// traffic that no scenario measures; the bench's transaction ids are not
// Synapse's numbers, so the gap watch stays quiet), and NATS when natsURL is
// set. Encryption stays off, as by default (Dendrite lacks what it needs).
func (r *rig) config(dbURL, natsURL string) string {
	pprofLine := "" // only when asked: an older build refuses the key
	if r.pprof {
		pprofLine = "\n    pprof: true"
	}
	return fmt.Sprintf(`homeserver:
    url: http://127.0.0.1:%d
    server_name: %s
appservice:
    url: http://127.0.0.1:%d
    listen: 127.0.0.1:%d
    as_token: %s
    hs_token: %s
database:
    url: %q
internal_api:
    host: 127.0.0.1
    port: %d
    service_secret: %s
    rate_limit:
        requests_per_second: 1000000
        burst: 1000000
metrics:
    listen: 127.0.0.1:%d%s
delivery:
    nats_url: %q
reconcile:
    after_start: 0s
    interval: 0s
logging:
    level: %s
%s`, r.hsPort, serverName, r.asPort, r.asPort, r.asToken, r.hsToken, dbURL, r.apiPort, r.secret, r.metricsPort, pprofLine, natsURL, r.logLevel, r.extra)
}

// newDatabase makes a fresh database for a bridge run: its URL for the
// bridge's config, and the driver and DSN the bench reads it with.
func (r *rig) newDatabase(ctx context.Context, db, dir, name string) (bridgeURL, driver, dsn string, err error) {
	switch db {
	case testrig.SQLite:
		path := filepath.Join(dir, "bridge.db")
		// The bench reads the file beside the bridge (WAL: readers never
		// block its writer); a busy timeout rides out a checkpoint.
		return "sqlite:" + testrig.SQLiteURI(path), "sqlite3", testrig.SQLiteURI(path) + "&_busy_timeout=5000", nil
	case testrig.Postgres:
		if r.pg == nil {
			return "", "", "", fmt.Errorf("PostgreSQL was not started")
		}
		url, err := r.pg.CreateDatabase(ctx, "e2b_"+name)
		return url, "postgres", url, err
	}
	return "", "", "", fmt.Errorf("unknown database %q", db)
}
