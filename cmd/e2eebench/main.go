//go:build goolm

// Command e2eebench measures what end-to-bridge encryption (pkg/e2ee) costs
// (issue 13): how fast a human's encrypted messages are decrypted and mapped
// into DTOs, and the latency it adds per event, against the same messages
// in a clear room; and an agent's send into an encrypted room against one
// into a clear room (target: p50 ≤ 1.5 × the clear send).
//
// Everything is real and loopback: the pinned Synapse (pkg/testrig; the
// bridge's encryption needs MSC2409/MSC3202/MSC4190, which Dendrite lacks),
// the bridge binary built from this tree with -tags goolm and run as a
// separate process (as deployed, with the registration from `bridge -g`),
// on SQLite or a throwaway PostgreSQL, with encryption on and a webhook
// receiver in this process subscribed to every room; and a human on a Go
// client with its own E2EE (mautrix's cryptohelper), which creates an
// encrypted and a clear room, both with the agent sofia.
//
// Phases, on each database in -db (a fresh Synapse and bridge each):
//
//  1. the human sends -n messages one after another into the clear room,
//     then into the encrypted room: the end-to-end rate (first send → last
//     DTO at the webhook) and each event's latency (send start → webhook);
//     the bridge's own decrypt time from its metrics;
//  2. the agent sends -m messages through POST /internal/matrix/send into
//     the clear room, then the encrypted room (the bridge encrypts with the
//     agent's device): the call's p50/p90/p99 and the ratio of the p50s.
//
// Examples:
//
//	go run -tags goolm ./cmd/e2eebench                          SQLite, 2000 + 300 messages a room
//	go run -tags goolm ./cmd/e2eebench -db sqlite,postgres
//	go run -tags goolm ./cmd/e2eebench -n 200 -m 50 -keep       a quick look, keeping the logs
//
// Every phase is bounded by its count and by -phase-timeout, every wait is
// capped, and the run is cancelled after -max-runtime; everything it
// started (Synapse, the bridge, PostgreSQL) is stopped by its PID, also on
// failure or ^C, and the kernel kills them if this process dies.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"time"

	"github.com/daarion/matrix-bridge/internal/benchkit"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

func main() { os.Exit(run()) }

func run() int {
	var s settings
	var (
		dbs        = flag.String("db", testrig.SQLite, "comma-separated databases for the bridge: sqlite, postgres")
		bridgeBin  = flag.String("bridge-bin", "", "the bridge binary (built with -tags goolm); default: build ./cmd/bridge into the work directory")
		logLevel   = flag.String("log-level", "info", "the bridge's log level")
		keep       = flag.Bool("keep", false, "keep the work directory (bridge, Synapse and client logs)")
		jsonOut    = flag.Bool("json", false, "print the results as JSON instead of a table")
		cpuprofile = flag.String("cpuprofile", "", "write a CPU profile of this process (the human's client and the receiver) to this file")
		maxRuntime = flag.Duration("max-runtime", 30*time.Minute, "cancel the whole run after this long")
	)
	flag.IntVar(&s.humanMessages, "n", 2000, "messages the human sends into each room")
	flag.IntVar(&s.agentMessages, "m", 300, "messages the agent sends into each room")
	flag.IntVar(&s.warmup, "warmup", 5, "untimed messages before each timed phase")
	flag.DurationVar(&s.phaseTimeout, "phase-timeout", 5*time.Minute, "a phase stops sending after this long")
	flag.DurationVar(&s.drainTimeout, "drain-timeout", 2*time.Minute, "longest wait for a phase's DTOs after its last send")
	flag.DurationVar(&s.quietWait, "quiet-wait", 0, "before each phase, wait up to this long for other processes to use at most -quiet-cores (for shared machines)")
	flag.Float64Var(&s.quietCores, "quiet-cores", 0.3, "see -quiet-wait")
	flag.Parse()
	databases := benchkit.SplitList(*dbs)
	if flag.NArg() > 0 || len(databases) == 0 || s.humanMessages < 1 || s.agentMessages < 1 || s.warmup < 1 {
		fmt.Fprintln(os.Stderr, "invalid arguments: see -h")
		return 2
	}
	if err := benchkit.CheckDatabases(databases); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}

	ctx, dir, done, err := benchkit.StartRun(*maxRuntime, "e2eebench-*", *keep)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer done()
	if *cpuprofile != "" {
		stopProfile, err := benchkit.StartCPUProfile(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer stopProfile()
	}

	bin := *bridgeBin
	if bin == "" {
		benchkit.Progress("building the bridge (-tags goolm)")
		if bin, err = buildBridge(ctx, dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	var pg *testrig.PostgresCluster
	if slices.Contains(databases, testrig.Postgres) {
		benchkit.Progress("starting PostgreSQL (throwaway cluster)")
		if pg, err = testrig.StartPostgres(ctx, dir); err != nil {
			fmt.Fprintln(os.Stderr, "starting PostgreSQL:", err)
			return 1
		}
		defer func() {
			if err := pg.Remove(); err != nil {
				benchkit.Progress("removing PostgreSQL: %v", err)
			}
		}()
	}

	source := benchkit.SourceRevision(func(files []string) string {
		return fmt.Sprintf("%d files of pkg/, database/, cmd/bridge", len(files))
	})
	rep := &report{
		Started: time.Now().UTC(),
		Host: map[string]string{
			"cpus": fmt.Sprint(runtime.NumCPU()), "go": runtime.Version(), "synapse": testrig.SynapseVersion,
			"source": source, "bridge_log_level": *logLevel,
			"settings": fmt.Sprintf("n %d, m %d, warm-up %d", s.humanMessages, s.agentMessages, s.warmup),
		},
	}
	failed := false
	for _, db := range databases {
		if ctx.Err() != nil {
			rep.Errors = append(rep.Errors, fmt.Sprintf("[%s] not run: %v", db, context.Cause(ctx)))
			failed = true
			continue
		}
		benchkit.Progress("[%s] run", db)
		if err := runOne(ctx, runOptions{dir: filepath.Join(dir, db), db: db, bridgeBin: bin, pg: pg, logLevel: *logLevel}, &s, rep); err != nil {
			benchkit.Progress("[%s] failed: %v", db, err)
			rep.Errors = append(rep.Errors, fmt.Sprintf("[%s] %v", db, err))
			failed = true
		}
	}
	for _, c := range rep.Checks {
		failed = failed || !c.Pass
	}
	if *jsonOut {
		if err := benchkit.WriteJSON(os.Stdout, rep); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	} else {
		fmt.Printf("source: %s\n", rep.Host["source"])
		fmt.Printf("e2eebench: %s CPUs, %s, Synapse %s (SQLite); the bridge as its own process, log level %s; %s messages a room from the human, %d from the agent (after %d untimed each)\n",
			rep.Host["cpus"], runtime.Version(), testrig.SynapseVersion, *logLevel, fmt.Sprint(s.humanMessages), s.agentMessages, s.warmup)
		fmt.Println("All traffic is loopback; the human's client (with its own encryption) and the webhook receiver run in this process, on the same cores.")
		fmt.Println()
		rep.Render(os.Stdout, "FAIL")
	}
	if failed {
		return 1
	}
	return 0
}
