package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/rs/zerolog"

	"github.com/daarion/matrix-bridge/database"
	"github.com/daarion/matrix-bridge/internal/benchkit"
	"github.com/daarion/matrix-bridge/pkg/appservice"
	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// floorPace is the bridge's default appservice.pace_journal_events: the
// floor paces as the bridge does, so that the journal stays bounded.
const floorPace = 20000

// runFloor measures the event log alone, in this process: the throughput
// scenario's 100-event transactions parsed by the bridge's parser, each
// journalled with its events handed to the indexer (as the transaction
// path does, minus HTTP) and paced, while the indexer moves them into the
// log; no consumer, no HTTP, no leader fence. Reported: the rate from the
// first journal until the journal is empty after the last, and the CPU of
// PostgreSQL and of this process per event — what the database, and the
// bridge's own code, cost for durable storage alone, against mautrix's
// rate in the throughput scenario.
func runFloor(ctx context.Context, r *rig, s *settings, db string, rep *report) error {
	name, dir := r.nextRun(db, scenarioFloor)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	bridgeURL, _, _, err := r.newDatabase(ctx, db, dir, name)
	if err != nil {
		return err
	}
	target, err := database.ParseURL(bridgeURL)
	if err != nil {
		return err
	}
	pool, err := database.Open(ctx, target, database.PoolOptions{}, zerolog.Nop())
	if err != nil {
		return err
	}
	defer pool.Close()
	log := eventlog.New(pool)
	defer log.Close()
	indexCtx, stopIndexer := context.WithCancel(ctx)
	indexed := make(chan struct{})
	go func() {
		defer close(indexed)
		log.RunIndexer(indexCtx, appservice.ParseTransaction, eventlog.IndexerOptions{})
	}()
	defer func() { stopIndexer(); <-indexed }()

	g := newPayloadGen(uint64(time.Now().UnixNano()), r.tag, s.rooms)
	seq := 0
	journal := func(until time.Time) (events int, err error) {
		for time.Now().Before(until) && ctx.Err() == nil {
			body := g.transaction('f', seq, s.batch, time.Now(), nil)
			txnID := "floor-" + strconv.Itoa(seq)
			parsed, err := appservice.ParseTransaction(txnID, body)
			if err != nil {
				return events, fmt.Errorf("parsing a floor transaction: %w", err)
			}
			if err = log.JournalParsed(ctx, txnID, append([]byte(nil), body...), parsed); err != nil {
				return events, err
			}
			log.Pace(ctx, len(parsed), floorPace, time.Second)
			seq += s.batch
			events += len(parsed)
		}
		return events, ctx.Err()
	}
	drained := func() error {
		deadline := time.Now().Add(s.drainTimeout)
		for {
			n, err := log.JournalBacklog(ctx)
			if err != nil || n == 0 {
				return err
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("the journal still held %d transactions %s after the last", n, s.drainTimeout)
			}
			time.Sleep(time.Millisecond)
		}
	}
	if _, err := journal(time.Now().Add(s.warmup)); err != nil {
		return err
	}
	if err := drained(); err != nil {
		return err
	}
	benchkit.Progress("[%s] %s: the event log alone in the bench (journal, hand-off, indexer; no HTTP, no consumers), %d-event transactions for %s", db, scenarioFloor, s.batch, s.duration)
	cpu0 := r.readCPU()
	start := time.Now()
	events, err := journal(start.Add(s.duration))
	if err != nil {
		return err
	}
	sent := time.Since(start)
	if err := drained(); err != nil {
		return err
	}
	through := time.Since(start)
	cpu := cpuBetween(cpu0, r.readCPU())
	rate := float64(events) / through.Seconds()
	rep.Rows = append(rep.Rows, benchkit.Row{DB: db, Variant: fmt.Sprintf("%s: the event log alone, %d-event txns", scenarioFloor, s.batch),
		Latency: "first journal → journal empty (no HTTP, no consumers)", Count: events, Rate: rate, RateUnit: "events/s", NoLatency: true})
	rep.Note("[%s] %s: journalled %d events in %.1fs, through %.2fs after the last; %s (\"bench\" is the log's own Go code here: parse, journal, index)",
		db, scenarioFloor, events, sent.Seconds(), (through - sent).Seconds(), cpu.describe(events))
	if db == testrig.SQLite {
		rep.Note("[%s] %s: SQLite runs in this process: its CPU is in \"bench\"", db, scenarioFloor)
	}
	return nil
}
