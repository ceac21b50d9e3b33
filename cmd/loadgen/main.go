// Command loadgen is the transaction load generator behind `make bench`.
//
// It sends appservice transactions one at a time, as Synapse does
// (PUT /_matrix/app/v1/transactions/{txnId} with the hs_token as a bearer
// token and a body of m.room.message events), and measures events/s,
// transactions/s and ack latency for:
//
//   - the bridge's durable transaction endpoint (pkg/appservice over
//     pkg/eventlog) on PostgreSQL, in a throwaway cluster it starts itself,
//   - the same endpoint on SQLite, in a temporary file,
//   - mautrix's default, non-durable transaction handler, as the reference,
//
// each with 100-event and 1-event transactions, side by side in one run,
// all served on real 127.0.0.1 listeners with net/http and driven by one
// keep-alive HTTP client. It also measures the floor: a single fsync'd
// commit of a trivial INSERT. Everything it starts is removed at the end.
//
//	go run ./cmd/loadgen                          all scenarios, 2s warmup + 10s each
//	go run ./cmd/loadgen -scenarios postgres-1 -cpuprofile cpu.out
//	go run ./cmd/loadgen -duration 3s -json
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/lib/pq"

	"github.com/daarion/matrix-bridge/database"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// Stores and targets a scenario runs against.
const (
	storePostgres       = "postgres"
	storeSQLite         = "sqlite"
	storeMautrix        = "mautrix"
	storePostgresNoSync = "postgres-nosync"
)

// Floor probes.
const (
	probeFsyncPostgres  = "fsync-postgres"
	probeNoSyncPostgres = "nosync-postgres"
	probeRTTPostgres    = "rtt-postgres"
	probeFsyncSQLite    = "fsync-sqlite"
)

var storeDesc = map[string]string{
	storePostgres:       "the bridge's durable endpoint on PostgreSQL",
	storeSQLite:         "the bridge's durable endpoint on SQLite",
	storeMautrix:        "mautrix's default (in-memory) transaction handler",
	storePostgresNoSync: "the bridge's endpoint on PostgreSQL with synchronous_commit=off",
}

type scenarioDef struct {
	Name  string
	Store string // storePostgres, storeSQLite, storeMautrix, storePostgresNoSync
	Batch int    // events per transaction
	Probe string // set for floor probes instead of Store/Batch
	Diag  bool   // not part of "all"
	Desc  string
}

var scenarios = []scenarioDef{
	{Name: "postgres-100", Store: storePostgres, Batch: 100},
	{Name: "sqlite-100", Store: storeSQLite, Batch: 100},
	{Name: "mautrix-100", Store: storeMautrix, Batch: 100},
	{Name: "postgres-1", Store: storePostgres, Batch: 1},
	{Name: "sqlite-1", Store: storeSQLite, Batch: 1},
	{Name: "mautrix-1", Store: storeMautrix, Batch: 1},
	{Name: probeFsyncPostgres, Probe: probeFsyncPostgres, Desc: "autocommit INSERT of one row, synchronous_commit=on (one fsync'd commit)"},
	{Name: probeNoSyncPostgres, Probe: probeNoSyncPostgres, Desc: "same INSERT with synchronous_commit=off (no wait for the WAL flush)"},
	{Name: probeRTTPostgres, Probe: probeRTTPostgres, Desc: "prepared SELECT $1+$2 (one round trip, no commit)"},
	{Name: probeFsyncSQLite, Probe: probeFsyncSQLite, Desc: "autocommit INSERT of one row, WAL + synchronous=FULL"},
	{Name: "postgres-nosync-100", Store: storePostgresNoSync, Batch: 100, Diag: true},
	{Name: "postgres-nosync-1", Store: storePostgresNoSync, Batch: 1, Diag: true},
}

// scenarioGroups are the shorthands -scenarios accepts besides names.
var scenarioGroups = map[string]func(scenarioDef) bool{
	"all":      func(s scenarioDef) bool { return !s.Diag },
	"txn":      func(s scenarioDef) bool { return s.Probe == "" && !s.Diag },
	"100":      func(s scenarioDef) bool { return s.Batch == 100 && !s.Diag },
	"1":        func(s scenarioDef) bool { return s.Batch == 1 && !s.Diag },
	"postgres": func(s scenarioDef) bool { return s.Store == storePostgres },
	"sqlite":   func(s scenarioDef) bool { return s.Store == storeSQLite },
	"mautrix":  func(s scenarioDef) bool { return s.Store == storeMautrix },
	"fsync":    func(s scenarioDef) bool { return s.Probe != "" },
	"diag":     func(s scenarioDef) bool { return s.Diag },
}

func selectScenarios(spec string) ([]scenarioDef, error) {
	want := map[string]bool{}
	for _, part := range strings.Split(spec, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		matched := false
		if group, ok := scenarioGroups[part]; ok {
			for _, s := range scenarios {
				if group(s) {
					want[s.Name] = true
				}
			}
			matched = true
		}
		for _, s := range scenarios {
			if s.Name == part {
				want[s.Name], matched = true, true
			}
		}
		if !matched {
			return nil, fmt.Errorf("unknown scenario %q (see -h)", part)
		}
	}
	var out []scenarioDef
	for _, s := range scenarios {
		if want[s.Name] {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no scenario selected")
	}
	return out, nil
}

type config struct {
	duration   time.Duration
	warmup     time.Duration
	scenarios  string
	json       bool
	cpuprofile string
	maxTxns    int
	workDir    string
	pgSettings settingsFlag
}

// env is what the scenarios share: the PostgreSQL cluster, the temporary
// directory, the client and the payload generator.
type env struct {
	cfg     config
	dir     string
	cluster *testrig.PostgresCluster
	admin   *sql.DB
	pgPID   int
	token   string
	runID   string
	client  *http.Client
	gen     *payloadGen
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func usage(flags *flag.FlagSet) func() {
	return func() {
		out := flags.Output()
		fmt.Fprintf(out, "Usage: loadgen [flags]\n\nScenarios (-scenarios, comma-separated names or groups):\n")
		for _, s := range scenarios {
			desc := s.Desc
			if s.Probe == "" {
				desc = fmt.Sprintf("%d-event transactions to %s", s.Batch, storeDesc[s.Store])
			}
			if s.Diag {
				desc += " (diagnostic, not durable, not in \"all\")"
			}
			fmt.Fprintf(out, "  %-20s %s\n", s.Name, desc)
		}
		groups := make([]string, 0, len(scenarioGroups))
		for g := range scenarioGroups {
			groups = append(groups, g)
		}
		slices.Sort(groups)
		fmt.Fprintf(out, "  groups: %s\n\nFlags:\n", strings.Join(groups, ", "))
		flags.PrintDefaults()
	}
}

func run(args []string) int {
	var cfg config
	flags := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	flags.DurationVar(&cfg.duration, "duration", 10*time.Second, "measured time per scenario")
	flags.DurationVar(&cfg.warmup, "warmup", 2*time.Second, "unmeasured warmup per scenario")
	flags.StringVar(&cfg.scenarios, "scenarios", "all", "scenarios to run: names or groups, comma-separated")
	flags.BoolVar(&cfg.json, "json", false, "print the results as JSON on stdout instead of tables")
	flags.StringVar(&cfg.cpuprofile, "cpuprofile", "", "write a CPU profile of the scenarios (client and server, in-process) to this file")
	flags.IntVar(&cfg.maxTxns, "max-txns", 2_000_000, "stop a scenario's warmup or measurement after this many transactions")
	flags.StringVar(&cfg.workDir, "dir", "", "parent of the temporary directory (PostgreSQL cluster, SQLite files); default $TMPDIR")
	flags.Var(&cfg.pgSettings, "pg-set", "name=value: a PostgreSQL setting for the throwaway cluster (ALTER SYSTEM and a restart), repeatable; for diagnosis, the default is the testrig's configuration")
	flags.Usage = usage(flags)
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if flags.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "loadgen: unexpected arguments %q\n", flags.Args())
		return 2
	}
	if cfg.duration <= 0 || cfg.warmup < 0 || cfg.maxTxns <= 0 {
		fmt.Fprintln(os.Stderr, "loadgen: -duration and -max-txns must be positive, -warmup not negative")
		return 2
	}
	selected, err := selectScenarios(cfg.scenarios)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		return 2
	}
	rep, err := runAll(cfg, selected)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		return 1
	}
	if cfg.json {
		err = rep.writeJSON(os.Stdout)
	} else {
		err = rep.writeText(os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		return 1
	}
	for _, r := range rep.Results {
		if r.Error != "" {
			return 1
		}
	}
	return 0
}

// settingsFlag collects repeated -pg-set name=value flags.
type settingsFlag []string

func (f *settingsFlag) String() string { return strings.Join(*f, ",") }

func (f *settingsFlag) Set(v string) error {
	name, _, ok := strings.Cut(v, "=")
	if !ok || name == "" || strings.ContainsFunc(name, func(r rune) bool {
		return (r < 'a' || r > 'z') && r != '_' && (r < '0' || r > '9')
	}) {
		return fmt.Errorf("want name=value with a PostgreSQL setting name, got %q", v)
	}
	*f = append(*f, v)
	return nil
}

// configurePostgres turns on WAL I/O timing (two clock reads per WAL write
// or sync, for pg_stat_wal) and applies the -pg-set settings with ALTER
// SYSTEM, restarting the throwaway cluster if there are any.
func configurePostgres(ctx context.Context, cluster *testrig.PostgresCluster, settings []string) error {
	admin, err := sql.Open("postgres", cluster.DSN("postgres"))
	if err != nil {
		return err
	}
	defer admin.Close()
	queries := []string{"ALTER SYSTEM SET track_wal_io_timing = on"}
	for _, s := range settings {
		name, value, _ := strings.Cut(s, "=")
		queries = append(queries, "ALTER SYSTEM SET "+name+" = "+pq.QuoteLiteral(value))
	}
	queries = append(queries, "SELECT pg_reload_conf()")
	for _, q := range queries {
		if _, err := admin.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	if len(settings) == 0 {
		return nil
	}
	_ = admin.Close()
	progress("restarting PostgreSQL for -pg-set %s", strings.Join(settings, " "))
	if err := cluster.Stop(); err != nil {
		return err
	}
	return cluster.Start(ctx)
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "loadgen: "+format+"\n", args...)
}

func runAll(cfg config, selected []scenarioDef) (*report, error) {
	// Bounded in time: every scenario gets its warmup and duration plus a
	// generous allowance for setup and teardown.
	budget := time.Duration(len(selected))*(cfg.warmup+cfg.duration+2*time.Minute) + 3*time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	dir, err := os.MkdirTemp(cfg.workDir, "loadgen-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	e := &env{cfg: cfg, dir: dir, gen: newPayloadGen(uint64(time.Now().UnixNano()))}
	var b [16]byte
	_, _ = rand.Read(b[:])
	e.token = hex.EncodeToString(b[:])
	e.runID = hex.EncodeToString(b[:4])
	transport := &http.Transport{
		Proxy:               nil, // loopback only, whatever $HTTP_PROXY says
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        4,
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}
	defer transport.CloseIdleConnections()
	e.client = &http.Client{Transport: transport, Timeout: time.Minute}

	rep := &report{Config: reportConfig{
		Duration:  cfg.duration.String(),
		Warmup:    cfg.warmup.String(),
		Scenarios: cfg.scenarios,
		MaxTxns:   cfg.maxTxns,
	}}
	rep.Machine = machineInfo()

	needPG := slices.ContainsFunc(selected, func(s scenarioDef) bool {
		return strings.HasPrefix(s.Store, storePostgres) || strings.HasSuffix(s.Probe, "-postgres")
	})
	if needPG {
		progress("starting a throwaway PostgreSQL cluster in %s", dir)
		if e.cluster, err = testrig.StartPostgres(ctx, dir); err != nil {
			return nil, err
		}
		defer func() {
			if err := e.cluster.Remove(); err != nil {
				progress("removing the PostgreSQL cluster: %v", err)
			}
		}()
		if err := configurePostgres(ctx, e.cluster, cfg.pgSettings); err != nil {
			return nil, err
		}
		e.pgPID = postmasterPID(e.cluster.DataDir)
		if e.admin, err = sql.Open("postgres", e.cluster.DSN("postgres")); err != nil {
			return nil, err
		}
		defer e.admin.Close()
		e.admin.SetMaxOpenConns(1)
		rep.Machine.Postgres = postgresInfo(ctx, e.admin)
		rep.Config.PostgresSettings = cfg.pgSettings
	}
	needSQLite := slices.ContainsFunc(selected, func(s scenarioDef) bool {
		return s.Store == storeSQLite || s.Probe == probeFsyncSQLite
	})
	if needSQLite {
		if !slices.Contains(sql.Drivers(), database.SQLiteDriver) {
			return nil, fmt.Errorf("database/sql driver %q is not registered: build with cgo (CGO_ENABLED=1 and a C compiler)", database.SQLiteDriver)
		}
		rep.Machine.SQLite = sqliteInfo(ctx, filepath.Join(dir, "info.db"))
	}

	if cfg.cpuprofile != "" {
		f, err := os.Create(cfg.cpuprofile)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, err
		}
		defer pprof.StopCPUProfile()
	}

	for _, sc := range selected {
		if ctx.Err() != nil {
			rep.Results = append(rep.Results, Result{Scenario: sc.Name, Error: "not run: " + context.Cause(ctx).Error()})
			continue
		}
		progress("%s: %v warmup + %v", sc.Name, cfg.warmup, cfg.duration)
		var res Result
		if sc.Probe != "" {
			res = e.runProbe(ctx, sc)
		} else {
			res = e.runTxn(ctx, sc)
		}
		if res.Error != "" {
			progress("%s: %s", sc.Name, res.Error)
		} else {
			progress("%s: %.0f txn/s, %.0f events/s, p50 %.2f ms, p99 %.2f ms",
				sc.Name, res.TxnsPerSec, res.EventsPerSec, res.Ack.P50, res.Ack.P99)
		}
		rep.Results = append(rep.Results, res)
		transport.CloseIdleConnections()
	}
	rep.evaluate()
	return rep, nil
}

// drive runs op back to back, first for the warmup (not recorded), then for
// the measured duration, and returns the measured latencies and how long the
// measured phase took. begin is called between the two phases.
func (e *env) drive(ctx context.Context, op func() (time.Duration, error), begin func() error) ([]time.Duration, time.Duration, error) {
	deadline := time.Now().Add(e.cfg.warmup)
	for n := 0; n < e.cfg.maxTxns && time.Now().Before(deadline); n++ {
		if err := ctx.Err(); err != nil {
			return nil, 0, err
		}
		if _, err := op(); err != nil {
			return nil, 0, fmt.Errorf("warmup: %w", err)
		}
	}
	if err := begin(); err != nil {
		return nil, 0, err
	}
	samples := make([]time.Duration, 0, min(e.cfg.maxTxns, 1<<16))
	start := time.Now()
	deadline = start.Add(e.cfg.duration)
	for len(samples) < e.cfg.maxTxns && time.Now().Before(deadline) {
		if err := ctx.Err(); err != nil {
			return nil, 0, err
		}
		d, err := op()
		if err != nil {
			return nil, 0, err
		}
		samples = append(samples, d)
	}
	return samples, time.Since(start), nil
}

// measure drives op and records in res what every scenario reports: the
// transactions, their ack latency, how long they took and the CPU they used.
// As the measured phase begins it calls start (when not nil), resets
// PostgreSQL's WAL counters and reads the CPU times; pgPID is PostgreSQL's
// postmaster, 0 when the scenario runs without it.
func (e *env) measure(ctx context.Context, res *Result, op func() (time.Duration, error), start func(), pgPID int) error {
	var cpu0 cpuSnapshot
	begin := func() error {
		if start != nil {
			start()
		}
		if pgPID > 0 {
			if err := resetWAL(ctx, e.admin); err != nil {
				return err
			}
		}
		cpu0 = takeCPU(pgPID)
		return nil
	}
	samples, elapsed, err := e.drive(ctx, op, begin)
	if err == nil && len(samples) == 0 {
		err = errors.New("no transaction completed in the measured time")
	}
	if err != nil {
		return err
	}
	cpu1 := takeCPU(pgPID)
	res.Noise = noise(cpu0, cpu1, runtime.NumCPU())
	res.Txns = len(samples)
	res.Seconds = elapsed.Seconds()
	res.TxnsPerSec = float64(res.Txns) / res.Seconds
	res.Ack = summarize(samples)
	res.CPUSelfUSPerTxn = float64((cpu1.self - cpu0.self).Microseconds()) / float64(max(res.Txns, 1))
	if pgPID > 0 {
		res.CPUPostgresUSPerTxn = float64((cpu1.postgres - cpu0.postgres).Microseconds()) / float64(max(res.Txns, 1))
	}
	return nil
}

// Result is one scenario's measurement.
type Result struct {
	Scenario     string  `json:"scenario"`
	Store        string  `json:"store,omitempty"`
	Probe        string  `json:"probe,omitempty"`
	Durable      bool    `json:"durable"`
	EventsPerTxn int     `json:"events_per_txn,omitempty"`
	Txns         int     `json:"txns"`
	Events       int     `json:"events,omitempty"`
	Seconds      float64 `json:"seconds"`
	TxnsPerSec   float64 `json:"txns_per_sec"`
	EventsPerSec float64 `json:"events_per_sec,omitempty"`
	// BodyBytesPerTxn is the mean transaction body size sent.
	BodyBytesPerTxn float64 `json:"body_bytes_per_txn,omitempty"`
	// Ack is the latency seen by the client: from sending the request to
	// having read the whole 200 answer.
	Ack *Latency `json:"ack_latency"`
	// Handler is the time inside the server's HTTP handler.
	Handler *Latency `json:"handler_latency,omitempty"`
	// Append is the time inside eventlog.Log.Journal (the commit the answer waits for).
	Append *Latency `json:"append_latency,omitempty"`
	// CPU per transaction, in microseconds: this process (client and
	// server) and the PostgreSQL cluster (all its processes).
	CPUSelfUSPerTxn     float64 `json:"cpu_self_us_per_txn"`
	CPUPostgresUSPerTxn float64 `json:"cpu_postgres_us_per_txn,omitempty"`
	WAL                 *WAL    `json:"postgres_wal,omitempty"`
	// Noise is the CPU used by anything else on the machine meanwhile.
	Noise Noise `json:"noise"`
	// Connections is how many TCP connections the client opened to the
	// endpoint over the whole scenario (1: keep-alive worked).
	Connections int64 `json:"connections,omitempty"`
	// Verified says the endpoint took in every event sent (stored in the
	// log, or delivered on mautrix's channel).
	Verified bool   `json:"verified"`
	Error    string `json:"error,omitempty"`
}

func (e *env) runTxn(ctx context.Context, sc scenarioDef) (res Result) {
	res = Result{Scenario: sc.Name, Store: sc.Store, EventsPerTxn: sc.Batch,
		Durable: sc.Store == storePostgres || sc.Store == storeSQLite}
	var tgt *target
	var err error
	if sc.Store == storeMautrix {
		tgt, err = e.startMautrix()
	} else {
		tgt, err = e.startBridge(ctx, sc)
	}
	if err != nil {
		res.Error = "setup: " + err.Error()
		return res
	}
	closed := false
	closeTarget := func() {
		if !closed {
			closed = true
			tgt.close()
		}
	}
	defer closeTarget()

	url := tgt.baseURL + "/_matrix/app/v1/transactions/"
	auth := "Bearer " + e.token
	prefix := e.runID + "." + sc.Name + "."
	var sent, bodyBytes, measuredBytes int64
	measuring := false
	op := func() (time.Duration, error) {
		body := e.gen.transaction(sc.Batch)
		sent++
		if measuring {
			measuredBytes += int64(len(body))
		}
		bodyBytes += int64(len(body))
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, url+prefix+strconv.FormatInt(sent, 10), bytes.NewReader(body))
		if err != nil {
			return 0, err
		}
		req.Header.Set("Authorization", auth)
		req.Header.Set("Content-Type", "application/json")
		start := time.Now()
		resp, err := e.client.Do(req)
		if err != nil {
			return 0, err
		}
		answer, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		d := time.Since(start)
		if err != nil {
			return 0, err
		}
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("transaction %d: HTTP %d: %s", sent, resp.StatusCode, bytes.TrimSpace(answer))
		}
		return d, nil
	}
	pgPID := 0
	if sc.Store == storePostgres || sc.Store == storePostgresNoSync {
		pgPID = e.pgPID
	}
	start := func() {
		measuring = true
		tgt.handler.start()
		if tgt.appends != nil {
			tgt.appends.start()
		}
	}
	if err := e.measure(ctx, &res, op, start, pgPID); err != nil {
		res.Error = err.Error()
		return res
	}
	res.Events = res.Txns * sc.Batch
	res.EventsPerSec = float64(res.Events) / res.Seconds
	res.BodyBytesPerTxn = float64(measuredBytes) / float64(max(res.Txns, 1))
	res.Handler = summarize(tgt.handler.stop())
	res.Connections = tgt.conns.Load()
	if tgt.appends != nil {
		res.Append = summarize(tgt.appends.stop())
	}

	got, err := tgt.count(ctx)
	if err != nil {
		res.Error = "verify: " + err.Error()
		return res
	}
	if want := sent * int64(sc.Batch); got != want {
		res.Error = fmt.Sprintf("verify: sent %d events, endpoint took in %d", want, got)
		return res
	}
	res.Verified = true

	if pgPID > 0 {
		// Closing the pool ends the backends, which flushes their WAL counters.
		closeTarget()
		time.Sleep(200 * time.Millisecond)
		if res.WAL, err = readWAL(ctx, e.admin, res.Txns); err != nil {
			res.Error = "pg_stat_wal: " + err.Error()
		}
	}
	return res
}

// runProbe measures the floor: back-to-back trivial statements.
func (e *env) runProbe(ctx context.Context, sc scenarioDef) (res Result) {
	res = Result{Scenario: sc.Name, Probe: sc.Probe, Durable: sc.Probe != probeNoSyncPostgres && sc.Probe != probeRTTPostgres}
	var db *sql.DB
	pgPID := 0
	switch sc.Probe {
	case probeFsyncPostgres, probeNoSyncPostgres, probeRTTPostgres:
		pgPID = e.pgPID
		dbName := "probe_" + strings.ReplaceAll(sc.Probe, "-", "_")
		dsn, err := e.cluster.CreateDatabase(ctx, dbName)
		if err != nil {
			res.Error = "setup: " + err.Error()
			return res
		}
		if sc.Probe == probeNoSyncPostgres {
			if _, err := e.admin.ExecContext(ctx, "ALTER DATABASE "+pq.QuoteIdentifier(dbName)+" SET synchronous_commit = off"); err != nil {
				res.Error = "setup: " + err.Error()
				return res
			}
		}
		db, err = sql.Open("postgres", dsn)
		if err != nil {
			res.Error = "setup: " + err.Error()
			return res
		}
	case probeFsyncSQLite:
		var err error
		db, err = sql.Open(database.SQLiteDriver, testrig.SQLiteURI(filepath.Join(e.dir, "probe.db")))
		if err != nil {
			res.Error = "setup: " + err.Error()
			return res
		}
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.ExecContext(ctx, "CREATE TABLE probe (id INTEGER PRIMARY KEY, v BIGINT NOT NULL)"); err != nil {
		res.Error = "setup: " + err.Error()
		return res
	}
	query := "INSERT INTO probe (id, v) VALUES ($1, $2)"
	if sc.Probe == probeRTTPostgres {
		query = "SELECT $1::bigint + $2::bigint"
	}
	// Prepared, so that each execution is one round trip.
	stmt, err := db.PrepareContext(ctx, query)
	if err != nil {
		res.Error = "setup: " + err.Error()
		return res
	}
	defer stmt.Close()
	var n int64
	op := func() (time.Duration, error) {
		n++
		start := time.Now()
		var err error
		if sc.Probe == probeRTTPostgres {
			var sum int64
			err = stmt.QueryRowContext(ctx, n, n).Scan(&sum)
		} else {
			_, err = stmt.ExecContext(ctx, n, n)
		}
		return time.Since(start), err
	}
	if err := e.measure(ctx, &res, op, nil, pgPID); err != nil {
		res.Error = err.Error()
		return res
	}
	if pgPID > 0 {
		_ = stmt.Close()
		_ = db.Close()
		time.Sleep(200 * time.Millisecond)
		if res.WAL, err = readWAL(ctx, e.admin, res.Txns); err != nil {
			res.Error = "pg_stat_wal: " + err.Error()
		}
	}
	res.Verified = true
	return res
}
