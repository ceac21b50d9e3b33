// Command e2ebench measures the whole bridge binary as deployed, end to end
// (issue 15): the bridge runs as its own process with every consumer on
// (webhook fan-out and delivery, the NATS JetStream sink to an in-process
// nats-server, the sync API, rooms, agents, matrix-state, commands;
// encryption stays off, as by default), against the pinned Dendrite (idle:
// the bench pushes the transactions to the appservice endpoint with the
// hs_token itself, one in flight, as Synapse does), on a throwaway
// PostgreSQL cluster and on SQLite. Each scenario gets a fresh bridge
// process on a fresh database.
//
// Scenarios (-scenarios):
//
//   - throughput: 100-event transactions (loadgen's 300-500-byte events,
//     50 rooms) back to back for -duration, beside mautrix's non-durable
//     handler under the same load (the reference answer rate). Reports the
//     answer rate and p50/p99, the end-to-end rate (events sent / time from
//     the first send until txn_journal is empty and every consumer_cursor
//     has passed the last event, read from the bridge's database), the
//     journal backlog and consumer lag each second, and CPU per event of
//     the bridge, PostgreSQL and the bench.
//   - single: 1-event transactions back to back (how Synapse replays a
//     backlog): answer and end-to-end rate.
//   - latency: a steady -rate events/s as 10-event transactions every
//     10 ms over 50 rooms, to one signed webhook subscription to "*"
//     (the receiver is this binary re-executed in its own process), a NATS
//     subscriber and a waiting sync long-poll: p50/p99/max from each
//     event's origin_server_ts and from its send to receipt, every event
//     received, per-room order.
//   - synapse: a real Synapse (on SQLite) with real clients
//     sending messages into a room the bridge's agent is in: the rate and
//     latency from a client's send to the webhook receiver's receipt.
//   - floor (not by default): the event log alone, in this process — the
//     throughput scenario's transactions parsed, journalled with their
//     events handed off, paced, and indexed, with no HTTP and no consumer —
//     and the CPU PostgreSQL and the log's own code use per event: what
//     durable storage costs before anything else the bridge does.
//
// Examples:
//
//	go run -tags goolm ./cmd/e2ebench                          every default scenario, PostgreSQL and SQLite
//	go run -tags goolm ./cmd/e2ebench -db postgres -scenarios throughput -duration 20s
//	go run -tags goolm ./cmd/e2ebench -bridge-bin /tmp/bridge-before -json
//
// Bounded: every phase by its duration and -drain-timeout, the whole run
// by -max-runtime; everything it starts (the bridge, Dendrite, Synapse,
// PostgreSQL, NATS, the receiver) is stopped by its PID at the end, also
// on failure or ^C.
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

const (
	scenarioThroughput = "throughput"
	scenarioSingle     = "single"
	scenarioLatency    = "latency"
	scenarioSynapse    = "synapse"
	scenarioFloor      = "floor"
)

var allScenarios = []string{scenarioThroughput, scenarioSingle, scenarioLatency, scenarioSynapse, scenarioFloor}

type settings struct {
	duration, refDuration, singleDuration, latencyDuration time.Duration
	warmup, drainTimeout                                   time.Duration
	batch, rooms, rate, latencyBatch                       int
	synapseClients, synapseMessages                        int
	quietWait                                              time.Duration
	quietCores                                             float64
	latencyWebhook                                         bool
	keep                                                   bool
	// bridgeProfile, when set, is the path prefix of CPU profiles of the
	// bridge process (metrics.pprof on) over each measured phase.
	bridgeProfile string
	// pgStatements, when > 0, is how many of PostgreSQL's statements (by
	// calls) each throughput and single phase notes (pg_stat_statements).
	pgStatements int
}

// report is the run's results: the table (benchkit's rows, checks and
// notes) and each scenario's details.
type report struct {
	Started time.Time         `json:"started"`
	Host    map[string]string `json:"host"`
	benchkit.Results
	Throughput []throughputResult `json:"throughput,omitempty"`
	Latency    []latencyResult    `json:"latency,omitempty"`
	Synapse    []synapseResult    `json:"synapse,omitempty"`
}

func main() {
	if len(os.Args) == 2 && os.Args[1] == "-receiver" {
		os.Exit(runReceiver())
	}
	os.Exit(run())
}

func run() int {
	var s settings
	var (
		dbs        = flag.String("db", "postgres,sqlite", "comma-separated databases for the bridge: postgres, sqlite")
		scenarios  = flag.String("scenarios", "throughput,single,latency,synapse", "comma-separated scenarios: "+strings.Join(allScenarios, ", "))
		bridgeBin  = flag.String("bridge-bin", "", "the bridge binary to measure (built with -tags goolm); default: build ./cmd/bridge from this tree")
		useNATS    = flag.Bool("nats", true, "run the NATS JetStream sink (delivery.nats_url) to an in-process nats-server")
		logLevel   = flag.String("log-level", "info", "the bridge's log level")
		jsonOut    = flag.Bool("json", false, "print the results as JSON instead of a table")
		jsonFile   = flag.String("json-file", "", "also write the results as JSON to this file")
		cpuprofile = flag.String("cpuprofile", "", "write a CPU profile of this process to this file")
		maxRuntime = flag.Duration("max-runtime", 40*time.Minute, "cancel the whole run after this long")
		receiver   = flag.Bool("receiver", false, "internal: run as the webhook receiver process")
	)
	flag.DurationVar(&s.duration, "duration", 60*time.Second, "throughput: how long the bridge is sent 100-event transactions")
	flag.DurationVar(&s.refDuration, "ref-duration", 15*time.Second, "throughput: how long mautrix's handler is measured (its rate settles in seconds)")
	flag.DurationVar(&s.singleDuration, "single-duration", 20*time.Second, "single: how long 1-event transactions are sent")
	flag.DurationVar(&s.latencyDuration, "latency-duration", 20*time.Second, "latency: how long the paced load runs")
	flag.DurationVar(&s.warmup, "warmup", 2*time.Second, "untimed load before each phase (let through before it starts)")
	flag.DurationVar(&s.drainTimeout, "drain-timeout", 3*time.Minute, "longest wait after a phase's last send for it to be through")
	flag.IntVar(&s.batch, "batch", 100, "throughput: events per transaction")
	flag.IntVar(&s.rooms, "rooms", 50, "rooms the events are spread over (at most 256)")
	flag.IntVar(&s.rate, "rate", 1000, "latency: events per second")
	flag.BoolVar(&s.latencyWebhook, "latency-webhook", true, "latency: subscribe the webhook receiver (false: NATS and sync only, to see what webhook delivery costs the others)")
	flag.IntVar(&s.latencyBatch, "latency-batch", 10, "latency: events per transaction")
	flag.IntVar(&s.synapseClients, "synapse-clients", 4, "synapse: clients sending at once")
	flag.IntVar(&s.synapseMessages, "synapse-messages", 500, "synapse: messages each client sends")
	flag.DurationVar(&s.quietWait, "quiet-wait", time.Minute, "before each scenario, wait up to this long for other processes to use at most -quiet-cores (a shared machine)")
	flag.Float64Var(&s.quietCores, "quiet-cores", 0.3, "see -quiet-wait")
	flag.IntVar(&s.pgStatements, "pg-statements", 0, "note the N statements PostgreSQL ran most often in each throughput and single phase, with their calls, time and rows (loads pg_stat_statements into the throwaway cluster)")
	flag.StringVar(&s.bridgeProfile, "bridge-profile", "", "write a CPU profile of the bridge process over each measured phase (at most 25 s) to PREFIX-DB-SCENARIO.pprof (the bridge must have metrics.pprof)")
	flag.BoolVar(&s.keep, "keep", false, "keep the work directory (configs, bridge logs, databases)")
	flag.Parse()
	if *receiver {
		return runReceiver()
	}
	databases, selected := benchkit.SplitList(*dbs), benchkit.SplitList(*scenarios)
	for _, sc := range selected {
		if !slices.Contains(allScenarios, sc) {
			fmt.Fprintf(os.Stderr, "unknown scenario %q (%s)\n", sc, strings.Join(allScenarios, ", "))
			return 2
		}
	}
	if flag.NArg() > 0 || len(databases) == 0 || len(selected) == 0 || s.batch < 1 || s.rooms < 1 || s.rooms > 256 ||
		s.rate < 1 || s.latencyBatch < 1 || s.duration <= 0 || s.refDuration <= 0 || s.synapseClients < 1 || s.synapseMessages < 1 {
		fmt.Fprintln(os.Stderr, "invalid arguments: see -h")
		return 2
	}
	if err := benchkit.CheckDatabases(databases); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, dir, done, err := benchkit.StartRun(*maxRuntime, "e2ebench-*", s.keep)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer done()
	if *cpuprofile != "" {
		stop, err := benchkit.StartCPUProfile(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer stop()
	}
	bin := *bridgeBin
	if bin == "" {
		benchkit.Progress("building the bridge (-tags goolm)")
		if bin, err = buildBridge(ctx, dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	} else if bin, err = filepath.Abs(bin); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	rep := &report{Started: time.Now().UTC(), Host: map[string]string{
		"cpus": fmt.Sprint(runtime.NumCPU()), "go": runtime.Version(), "dendrite": testrig.DendriteVersion,
		"bridge_bin": *bridgeBin, "nats": fmt.Sprint(*useNATS), "bridge_log_level": *logLevel,
		"source": benchkit.SourceRevision(func(files []string) string { return strings.Join(files, ", ") }),
	}}
	if *bridgeBin == "" {
		rep.Host["bridge_bin"] = "built from this tree"
	}
	failed := runAll(ctx, dir, bin, *logLevel, *useNATS, databases, selected, &s, rep)
	for _, c := range rep.Checks {
		failed = failed || !c.Pass
	}
	if *jsonFile != "" {
		if f, err := os.Create(*jsonFile); err != nil {
			fmt.Fprintln(os.Stderr, err)
		} else {
			_ = benchkit.WriteJSON(f, rep)
			_ = f.Close()
		}
	}
	if *jsonOut {
		if err := benchkit.WriteJSON(os.Stdout, rep); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	} else {
		fmt.Printf("source: %s; bridge: %s\n", rep.Host["source"], rep.Host["bridge_bin"])
		fmt.Printf("e2ebench: %s CPUs, %s, Dendrite %s (idle; the bench pushes the transactions); the bridge as its own process, every consumer on (NATS %v), log level %s\n",
			rep.Host["cpus"], runtime.Version(), testrig.DendriteVersion, *useNATS, *logLevel)
		fmt.Printf("throughput %s (mautrix %s), single %s, latency %s at %d events/s; %d rooms; warm-up %s before each phase. All loopback, all on the same cores.\n",
			s.duration, s.refDuration, s.singleDuration, s.latencyDuration, s.rate, s.rooms, s.warmup)
		fmt.Println()
		rep.Render(os.Stdout, "MISS")
	}
	if failed {
		return 1
	}
	return 0
}

// runAll runs the scenarios on each database; true when one failed to run.
func runAll(ctx context.Context, dir, bin, logLevel string, useNATS bool, databases, selected []string, s *settings, rep *report) bool {
	r, err := startRig(ctx, rigOptions{dir: dir, bin: bin, logLevel: logLevel, nats: useNATS, postgres: slices.Contains(databases, testrig.Postgres),
		pprof: s.bridgeProfile != "", pgStatements: s.pgStatements > 0})
	if err != nil {
		rep.Errors = append(rep.Errors, err.Error())
		return true
	}
	defer r.close()
	failed := false
	for _, db := range databases {
		for _, sc := range selected {
			if ctx.Err() != nil {
				rep.Errors = append(rep.Errors, fmt.Sprintf("[%s] %s: not run: %v", db, sc, context.Cause(ctx)))
				failed = true
				continue
			}
			if s.quietWait > 0 {
				waitQuiet(ctx, s.quietCores, s.quietWait)
			}
			benchkit.Progress("[%s] %s", db, sc)
			var err error
			switch sc {
			case scenarioThroughput:
				err = runThroughput(ctx, r, s, db, sc, s.batch, s.duration, true, rep)
			case scenarioSingle:
				err = runThroughput(ctx, r, s, db, sc, 1, s.singleDuration, false, rep)
			case scenarioLatency:
				err = runLatency(ctx, r, s, db, rep)
			case scenarioSynapse:
				err = runSynapse(ctx, r, s, db, rep)
			case scenarioFloor:
				err = runFloor(ctx, r, s, db, rep)
			}
			if err != nil {
				benchkit.Progress("[%s] %s failed: %v", db, sc, err)
				rep.Errors = append(rep.Errors, fmt.Sprintf("[%s] %s: %v", db, sc, err))
				failed = true
			}
		}
	}
	return failed
}
