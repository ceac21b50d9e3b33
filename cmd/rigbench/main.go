// Command rigbench runs the benchmarks that need the real rig: the pinned
// Dendrite homeserver (pkg/testrig), a throwaway PostgreSQL cluster, SQLite,
// and the bridge itself, in this process (pkg/bridge), with the
// appservice registration rendered as `bridge -g` renders it. It starts
// everything itself, prints one table per scenario with PASS/MISS against
// the targets, and removes everything at the end.
//
// Scenarios (each runs on every database in -db, on a fresh database and a
// fresh bridge):
//
//	rooms-metadata  GET /internal/matrix/rooms/{roomId} from the cache, 10 clients
//	rooms-create    POST /internal/matrix/rooms/create with new slugs, sequential and 4 clients
//	agents-send     POST /internal/matrix/send as an agent vs. a direct client-server send
//	fanout          appservice transactions in, DTOs out by webhook (and NATS): throughput and latency
//
// Examples:
//
//	go run ./cmd/rigbench                                 every scenario, 10s per phase, SQLite and PostgreSQL
//	go run ./cmd/rigbench -scenarios fanout -db postgres -cpuprofile cpu.out
//	go run ./cmd/rigbench -duration 3s -json
//	go run ./cmd/rigbench -quiet-wait 3m                  on a shared machine: wait for other processes to calm down first
//	go run ./cmd/rigbench -scenarios fanout -db sqlite -cpuprofile cpu.out -cpuprofile-phase latency-webhook -dump-latency lat
//
// Every scenario run ends with a host line: how many cores the machine had
// busy, split into rigbench itself, its Dendrite and PostgreSQL, and other
// processes; results taken while other processes were busy are not
// comparable.
//
// Load is bounded: every phase stops after -duration (and the create
// scenario after -create-rooms rooms), waits are capped, and the whole run
// is cancelled after -max-runtime.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/daarion/matrix-bridge/internal/benchkit"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// settings are the flags every scenario reads.
type settings struct {
	duration                        time.Duration
	dbs                             []string
	clients                         int
	createRooms                     int
	createClients                   int
	agents                          int
	agentRooms                      int
	fanoutRooms                     int
	reconcileRooms, reconcileEvents int
	reconcileSenders                int
	fanoutBatch                     int
	fanoutRate                      int
	maxBacklog                      int
	drainTimeout                    time.Duration
	nats                            bool
	cpuprofile                      string
	profileCount                    int
	quietWait                       time.Duration
	quietCores                      float64
	dumpLatency                     string
	profilePhase                    string
	db                              string // the database of the scenario run in progress
}

// phase marks a measured phase; with -cpuprofile-phase naming it, only
// this phase is profiled. Call the returned function when it ends.
func (s *settings) phase(name string) func() {
	if s.cpuprofile == "" || s.profilePhase != name {
		return func() {}
	}
	ext := filepath.Ext(s.cpuprofile)
	return writeProfile(strings.TrimSuffix(s.cpuprofile, ext) + "-" + name + "-" + s.db + ext)
}

type scenarioDef struct {
	name    string
	title   string
	needsHS bool
	run     func(ctx context.Context, r *rig, s *settings, db string, rep *scenarioReport) error
}

var scenarios = []scenarioDef{
	{"rooms-metadata", "cached room metadata, GET /internal/matrix/rooms/{roomId}", true, runRoomsMetadata},
	{"rooms-create", "city room create-by-slug, POST /internal/matrix/rooms/create", true, runRoomsCreate},
	{"agents-send", "send as an agent through the bridge vs. a direct client-server send", true, runAgentsSend},
	{"fanout", "appservice transactions → DTOs by webhook (and NATS)", false, runFanout},
	{"reconcile", "gap repair: a city's timelines compared with the event log", true, runReconcile},
}

func main() {
	os.Exit(run())
}

func run() int {
	var (
		s           settings
		names       = flag.String("scenarios", "all", "comma-separated scenarios: rooms-metadata, rooms-create, agents-send, fanout, reconcile, or all")
		dbs         = flag.String("db", "sqlite,postgres", "comma-separated databases for the bridge: sqlite, postgres")
		jsonOut     = flag.Bool("json", false, "print the results as JSON instead of tables")
		dendriteBin = flag.String("dendrite-bin", "", "Dendrite binary (default: $DENDRITE_BIN, else bin/dendrite, built if missing)")
		logLevel    = flag.String("log-level", "info", "the bridge's log level (its log goes to a file in the work directory)")
		keep        = flag.Bool("keep", false, "keep the work directory (bridge logs, Dendrite log) instead of removing it")
		maxRuntime  = flag.Duration("max-runtime", 30*time.Minute, "cancel the whole run after this long")
		maxOpen     = flag.Int("db-max-open", 0, "the bridge's database.max_open_conns (0: its default, unlimited)")
		maxIdle     = flag.Int("db-max-idle", 0, "the bridge's database.max_idle_conns (0: its default, database/sql's 2)")
		workers     = flag.Int("webhook-workers", 0, "the bridge's delivery.webhook_workers (0: its default, 8)")
		pgSample    = flag.Float64("pg-sample-statements", 0, "diagnosis: PostgreSQL logs this fraction of statements with their durations (see -keep)")
	)
	flag.DurationVar(&s.duration, "duration", 10*time.Second, "length of each measured phase")
	flag.IntVar(&s.clients, "clients", 10, "rooms-metadata: concurrent clients")
	flag.IntVar(&s.createRooms, "create-rooms", 50, "rooms-create: new slugs per phase (a phase also stops after -duration)")
	flag.IntVar(&s.createClients, "create-clients", 4, "rooms-create: concurrent clients of the concurrent phase")
	flag.IntVar(&s.agents, "agents", 10, "agents-send: concurrent agents of the throughput phase")
	flag.IntVar(&s.agentRooms, "agent-rooms", 1, "agents-send: rooms the concurrent agents post into (1: all in the same room; else agent i posts in room i mod n)")
	flag.IntVar(&s.reconcileRooms, "reconcile-rooms", 200, "reconcile: city rooms")
	flag.IntVar(&s.reconcileEvents, "reconcile-events", 50, "reconcile: messages a room (and reconcile.window)")
	flag.IntVar(&s.reconcileSenders, "reconcile-senders", 1, "reconcile: concurrent senders seeding the city (Dendrite serialises its writes)")
	flag.IntVar(&s.fanoutRooms, "fanout-rooms", 10, "fanout: rooms the synthetic events are spread over (each (subscription, room) is one ordered webhook queue)")
	flag.IntVar(&s.fanoutBatch, "fanout-batch", 100, "fanout: events per transaction in the throughput phase")
	flag.IntVar(&s.fanoutRate, "fanout-rate", 1000, "fanout: events/s of the paced latency phase (transactions of 10 events every 10 ms at 1000)")
	flag.IntVar(&s.maxBacklog, "max-backlog", 10000, "fanout: pause sending while this many events are sent but not yet received (bounds the backlog to drain)")
	flag.DurationVar(&s.drainTimeout, "drain-timeout", 30*time.Second, "fanout: longest wait for queued deliveries after a phase")
	flag.BoolVar(&s.nats, "nats", true, "fanout: also measure the NATS sink: a fresh bridge with delivery.nats_url pointing at an in-process nats-server (JetStream), DTOs counted by a subscriber")
	flag.DurationVar(&s.quietWait, "quiet-wait", 0, "before each scenario run, wait up to this long for other processes (not rigbench's) to use at most -quiet-cores (for shared machines)")
	flag.Float64Var(&s.quietCores, "quiet-cores", 0.3, "see -quiet-wait")
	flag.StringVar(&s.dumpLatency, "dump-latency", "", "fanout: write each event's send time and latency of the latency phase to <prefix>-<db>-<sink>.txt")
	flag.StringVar(&s.cpuprofile, "cpuprofile", "", "write a CPU profile of each scenario run (suffixed -<scenario>-<db> when several run)")
	flag.StringVar(&s.profilePhase, "cpuprofile-phase", "", "profile only this phase (suffixed -<phase>-<db>): metadata, create-seq, create-conc, send-seq, send-agents, send-humans, "+
		"throughput-webhook, latency-webhook, throughput-nats, latency-nats")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "unexpected arguments: %q\n", flag.Args())
		return 2
	}

	var chosen []scenarioDef
	for _, n := range benchkit.SplitList(*names) {
		if n == "all" {
			chosen = scenarios
			break
		}
		i := slices.IndexFunc(scenarios, func(d scenarioDef) bool { return d.name == n })
		if i < 0 {
			fmt.Fprintf(os.Stderr, "unknown scenario %q\n", n)
			return 2
		}
		chosen = append(chosen, scenarios[i])
	}
	if len(chosen) == 0 {
		fmt.Fprintln(os.Stderr, "no scenarios chosen")
		return 2
	}
	s.dbs = benchkit.SplitList(*dbs)
	if err := benchkit.CheckDatabases(s.dbs); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if len(s.dbs) == 0 || s.duration <= 0 || s.clients < 1 || s.createRooms < 1 || s.createClients < 1 ||
		s.agents < 1 || s.agentRooms < 1 || s.fanoutRooms < 1 || s.fanoutBatch < 1 || s.fanoutRate < 10 || s.maxBacklog < s.fanoutBatch {
		fmt.Fprintln(os.Stderr, "invalid settings: see -h")
		return 2
	}
	s.profileCount = len(chosen) * len(s.dbs)

	ctx, dir, done, err := benchkit.StartRun(*maxRuntime, "rigbench-*", *keep)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer done()

	needsHS := slices.ContainsFunc(chosen, func(d scenarioDef) bool { return d.needsHS })
	r, err := startRig(ctx, rigOptions{
		dir: dir, homeserver: needsHS, postgres: slices.Contains(s.dbs, testrig.Postgres),
		dendrite: *dendriteBin, logLevel: *logLevel, maxOpen: *maxOpen, maxIdle: *maxIdle, workers: *workers, pgSample: *pgSample,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting the rig:", err)
		return 1
	}
	defer r.close()

	rep := &report{
		Started: time.Now().UTC(),
		Host: map[string]string{
			"cpus": fmt.Sprint(runtime.NumCPU()), "go": runtime.Version(), "os": runtime.GOOS + "/" + runtime.GOARCH,
			"dendrite": testrig.DendriteVersion + " (SQLite, in its own process)",
		},
		Settings: map[string]string{
			"duration": s.duration.String(), "db": strings.Join(s.dbs, ","), "clients": fmt.Sprint(s.clients),
			"create_rooms": fmt.Sprint(s.createRooms), "create_clients": fmt.Sprint(s.createClients),
			"agents": fmt.Sprint(s.agents), "agent_rooms": fmt.Sprint(s.agentRooms),
			"fanout_rooms": fmt.Sprint(s.fanoutRooms), "fanout_batch": fmt.Sprint(s.fanoutBatch),
			"fanout_rate": fmt.Sprint(s.fanoutRate), "max_backlog": fmt.Sprint(s.maxBacklog),
			"bridge_log_level": *logLevel, "db_max_open_conns": fmt.Sprint(*maxOpen), "db_max_idle_conns": fmt.Sprint(*maxIdle),
			"webhook_workers": fmt.Sprint(*workers),
		},
	}
	rep.Host["source"] = benchkit.SourceRevision(func(files []string) string { return strings.Join(files, ", ") })
	if !*jsonOut {
		fmt.Printf("source: %s\n", rep.Host["source"])
		fmt.Printf("rigbench: %s CPUs, %s, Dendrite %s; bridge in-process; each phase %s; databases %s\n",
			rep.Host["cpus"], runtime.Version(), testrig.DendriteVersion, s.duration, strings.Join(s.dbs, ", "))
		fmt.Printf("All traffic is loopback; the load generator runs in the bridge's process and shares its %d cores.\n", runtime.NumCPU())
		fmt.Printf("Bridge config: log level %s, database max_open_conns %d, max_idle_conns %d, webhook_workers %d (0: the bridge's defaults).\n",
			*logLevel, *maxOpen, *maxIdle, *workers)
	}
	failed := false
	for _, def := range chosen {
		sr := &scenarioReport{Name: def.name, Title: def.title, Results: benchkit.Results{Rows: []benchkit.Row{}, Checks: []benchkit.Check{}}}
		rep.Scenarios = append(rep.Scenarios, sr)
		for _, db := range s.dbs {
			if ctx.Err() != nil {
				sr.Errors = append(sr.Errors, fmt.Sprintf("[%s] not run: %v", db, context.Cause(ctx)))
				failed = true
				continue
			}
			if s.quietWait > 0 {
				waitQuiet(ctx, s.quietCores, s.quietWait)
			}
			benchkit.Progress("%s on %s", def.name, db)
			s.db = db
			stopProfile := startProfile(&s, def.name, db)
			before := benchkit.ReadCPU(nil)
			err := def.run(ctx, r, &s, db, sr)
			sr.Note("[%s] %s", db, hostNote(before, benchkit.ReadCPU(nil)))
			stopProfile()
			if err != nil {
				benchkit.Progress("%s on %s failed: %v", def.name, db, err)
				sr.Errors = append(sr.Errors, fmt.Sprintf("[%s] %v", db, err))
				failed = true
			}
		}
		if !*jsonOut {
			sr.writeTable(os.Stdout)
		}
	}
	if *jsonOut {
		if err := benchkit.WriteJSON(os.Stdout, rep); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	if failed {
		return 1
	}
	return 0
}

// startProfile starts a CPU profile for one scenario run when asked to.
func startProfile(s *settings, scenario, db string) func() {
	if s.cpuprofile == "" || s.profilePhase != "" {
		return func() {}
	}
	path := s.cpuprofile
	if s.profileCount > 1 {
		ext := filepath.Ext(path)
		path = strings.TrimSuffix(path, ext) + "-" + scenario + "-" + db + ext
	}
	return writeProfile(path)
}

// writeProfile profiles until the returned function is called; a profile
// that cannot be written is reported and the run goes on without it.
func writeProfile(path string) func() {
	stop, err := benchkit.StartCPUProfile(path)
	if err != nil {
		benchkit.Progress("cpuprofile: %v", err)
		return func() {}
	}
	return stop
}
