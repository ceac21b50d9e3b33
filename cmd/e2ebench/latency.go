package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/daarion/matrix-bridge/internal/benchkit"
	"github.com/daarion/matrix-bridge/pkg/clock"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// Delivery channels of the latency scenario.
const (
	chWebhook = "webhook"
	chNATS    = "NATS"
	chSync    = "sync"
)

// latencyResult is the latency scenario's account, for the JSON.
type latencyResult struct {
	DB       string                   `json:"db"`
	Rate     float64                  `json:"sent_events_per_s"`
	Late     int                      `json:"late_transactions"`
	Answers  latency                  `json:"answer"`
	Channels map[string]channelResult `json:"channels"`
	CPU      cpuUse                   `json:"cpu"`
	BadSigs  int64                    `json:"bad_signatures"`
}

// runLatency: a steady -rate events/s as -latency-batch-event transactions
// on a fixed clock (one in flight; a late answer makes the next one go at
// once), into a bridge with one signed webhook subscription to "*" (the
// receiver in its own process), NATS (a core subscriber on daarion.> of
// the in-process server) and a waiting sync long-poll; each channel's
// latency from origin_server_ts and from the send, and whether every event
// arrived in per-room order.
func runLatency(ctx context.Context, r *rig, s *settings, db string, rep *report) error {
	b, err := r.startBridge(ctx, db, "latency")
	if err != nil {
		return err
	}
	defer b.stopKeep(s.keep)
	batch := s.latencyBatch
	interval := time.Duration(float64(time.Second) * float64(batch) / float64(s.rate))
	ticks := int(s.latencyDuration / interval)
	warmTicks := max(1, int(s.warmup/interval))
	g := newPayloadGen(uint64(time.Now().UnixNano()), r.tag, s.rooms)
	plan := g.roomPlan(ticks * batch)
	names := []string{chSync}
	if s.latencyWebhook {
		names = append(names, chWebhook)
	}
	if b.natsSrv != nil {
		names = append(names, chNATS)
	}
	tr := newTracker(g.idPrefix('l'), g.idPrefix('w'), plan, s.rooms, names...)

	badSigs := func() int64 { return 0 }
	if s.latencyWebhook {
		recv, err := subscribeReceiver(ctx, b, func(id string, at time.Time) { tr.observe(chWebhook, id, at) })
		if err != nil {
			return err
		}
		defer recv.stop()
		badSigs = recv.badSig.Load
	}
	if b.natsSrv != nil {
		nc, err := nats.Connect(b.natsURL)
		if err != nil {
			return fmt.Errorf("connecting the NATS subscriber: %w", err)
		}
		defer nc.Close()
		ns, err := nc.Subscribe("daarion.>", func(m *nats.Msg) { tr.observe(chNATS, m.Header.Get(nats.MsgIdHdr), time.Now()) })
		if err != nil {
			return err
		}
		_ = ns.SetPendingLimits(-1, -1) // never drop: a drop would read as a lost event
		if err := nc.Flush(); err != nil {
			return err
		}
	}
	syncCtx, stopSync := context.WithCancel(ctx)
	syncDone, err := startSyncClient(syncCtx, b.api, func(id string, at time.Time) { tr.observe(chSync, id, at) })
	if err != nil {
		stopSync()
		return err
	}
	defer func() { stopSync(); <-syncDone }()

	ts := newTxnSender(b.asURL, r.hsToken, "e2b-"+r.tag+"-l-")
	defer ts.close()
	// Warm-up at the same pace (its events are not counted), then wait
	// until it is through, so that the measured phase starts on a warm,
	// idle pipeline.
	benchkit.Progress("[%s] latency: %d events/s as %d-event transactions every %s for %s", db, s.rate, batch, interval, s.latencyDuration)
	warm := paced(ctx, ts, g, 'w', batch, interval, warmTicks, nil, nil)
	if warm.lastID != "" {
		_, _, _, _ = b.watch.through(ctx, warm.lastID, s.drainTimeout)
	}
	clock.Sleep(ctx, 500*time.Millisecond)
	m0, _ := scrape(ctx, b.metricsURL)
	cpu0 := r.readCPU()
	profiled := b.profile(ctx, s.bridgeProfile, scenarioLatency, s.latencyDuration)
	res := paced(ctx, ts, g, 'l', batch, interval, ticks, plan, tr)
	if msg := profiled(); msg != "" {
		rep.Note("[%s] latency: %s", db, msg)
	}
	sent := res.events
	deadline := time.Now().Add(s.drainTimeout)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		all := true
		for _, name := range names {
			all = all && tr.received(name, sent) >= sent
		}
		if all {
			break
		}
		clock.Sleep(ctx, 20*time.Millisecond)
	}
	clock.Sleep(ctx, 100*time.Millisecond) // late duplicates, if any
	cpu := cpuBetween(cpu0, r.readCPU())
	m1, _ := scrape(ctx, b.metricsURL)
	if err := ctx.Err(); err != nil {
		return err
	}

	out := latencyResult{DB: db, Rate: res.rate(), Late: res.late, Answers: toLatency(benchkit.Summarize(res.answers)),
		Channels: map[string]channelResult{}, CPU: cpu, BadSigs: badSigs()}
	rep.Rows = append(rep.Rows, answerRow(db, fmt.Sprintf("latency: paced %d events/s, %d-event txns", s.rate, batch), res.loadResult))
	for _, name := range []string{chWebhook, chNATS, chSync} {
		if _, ok := tr.channels[name]; !ok {
			continue
		}
		cr := tr.result(name, sent)
		out.Channels[name] = cr
		what := map[string]string{chWebhook: "webhook (receiver process)", chNATS: "NATS subscriber", chSync: "sync long-poll"}[name]
		errs := cr.Expected - cr.Received + cr.OutOfOrder
		rep.Rows = append(rep.Rows,
			benchkit.NewRow(db, "latency: "+what, "origin_server_ts → receipt", cr.FromOTS.summary, errs, float64(cr.Received)/res.end.Sub(res.first).Seconds(), "events/s"),
			benchkit.NewRow(db, "latency: "+what, "send → receipt", cr.FromSend.summary, errs, float64(cr.Received)/res.end.Sub(res.first).Seconds(), "events/s"))
		rep.Checks = append(rep.Checks, benchkit.Check{DB: db,
			Target: fmt.Sprintf("%s latency at %d events/s: p50 ≤ 20 ms, p99 ≤ 100 ms (origin_server_ts → receipt), every event, per-room order", name, s.rate),
			Got:    fmt.Sprintf("p50 %.1f ms, p99 %.1f ms, max %.1f ms; %s", cr.FromOTS.P50, cr.FromOTS.P99, cr.FromOTS.Max, cr.describe()),
			Pass:   cr.complete() && cr.FromOTS.P50 <= 20 && cr.FromOTS.P99 <= 100})
	}
	// The stages, by their p50 from the send: the answer (journal commit),
	// the sync long-poll (woken as the indexer appends: the event is in the
	// log), NATS (the nats consumer read and published it), the webhook (the
	// fan-out consumer wrote its outbox row and the deliverer posted it).
	stages := []string{fmt.Sprintf("answer %.1f", out.Answers.P50)}
	for _, name := range []string{chSync, chNATS, chWebhook} {
		if cr, ok := out.Channels[name]; ok {
			stages = append(stages, fmt.Sprintf("%s %.1f", name, cr.FromSend.P50))
		}
	}
	rep.Note("[%s] latency: p50 ms from the send, by stage: %s", db, strings.Join(stages, ", "))
	if out.BadSigs > 0 {
		rep.Note("[%s] latency: %d webhook deliveries failed the signature check", db, out.BadSigs)
	}
	if res.late > 0 || res.errors > 0 {
		rep.Note("[%s] latency: %d of %d transactions went more than %s late (answers behind the clock), %d failed%s",
			db, res.late, res.txns, interval, res.errors, lastErrNote(res.lastErr))
	}
	rep.Note("[%s] latency: %s", db, cpu.describe(sent))
	rep.Note("[%s] latency: %s", db, bridgeTimes(m0, m1))
	if n, last := b.warnings(); n > 0 {
		rep.Note("[%s] latency: the bridge logged %d warnings/errors; last: %s", db, n, last)
	}
	rep.Latency = append(rep.Latency, out)
	return nil
}

// pacedResult is a paced loop's account.
type pacedResult struct {
	loadResult
	late int
}

// paced sends ticks transactions of batch events, transaction k at
// start + k×interval, one in flight (a late answer sends the next at
// once). With a tracker it records each event's origin_server_ts and send
// time; plan gives the events' rooms.
func paced(ctx context.Context, s *txnSender, g *payloadGen, phase byte, batch int, interval time.Duration, ticks int, plan []uint8, tr *tracker) pacedResult {
	res := pacedResult{loadResult: loadResult{answers: make([]time.Duration, 0, ticks)}}
	res.first = time.Now()
	for k := 0; k < ticks && ctx.Err() == nil; k++ {
		due := res.first.Add(time.Duration(k) * interval)
		if wait := time.Until(due); wait > 0 {
			time.Sleep(wait)
		} else if -wait > interval {
			res.late++
		}
		first := k * batch
		var rooms []uint8
		if plan != nil {
			rooms = plan[first : first+batch]
		}
		now := time.Now()
		body := g.transaction(phase, first, batch, now, rooms)
		if tr != nil {
			for i := range batch {
				tr.otsMS[first+i], tr.sentNS[first+i] = now.UnixMilli(), now.UnixNano()
			}
		}
		res.events = first + batch // sent so far, failed ones included: they count as missing
		took, err := s.put(ctx, body)
		if err != nil {
			res.errors++
			res.lastErr = err.Error()
			continue
		}
		res.answers = append(res.answers, took)
		res.txns++
		res.lastID = g.eventID(phase, first+batch-1)
	}
	res.end = time.Now()
	return res
}

// startSyncClient long-polls GET /internal/matrix/sync from the log's
// current end (the first sync, without since, answers at once with it) as
// a waiting service does: each answer's events are noted as received when
// its body has been read, then it syncs again at once with next_batch.
func startSyncClient(ctx context.Context, api *testrig.APIClient, observe func(id string, at time.Time)) (<-chan struct{}, error) {
	type syncAnswer struct {
		NextBatch string `json:"next_batch"`
		Rooms     struct {
			Join map[string]struct {
				Timeline struct {
					Events []struct {
						EventID string `json:"event_id"`
					} `json:"events"`
				} `json:"timeline"`
			} `json:"join"`
		} `json:"rooms"`
	}
	filter := url.QueryEscape(`{"limit":1000}`)
	var first syncAnswer
	status, raw, err := api.Call(ctx, http.MethodGet, "/internal/matrix/sync?timeout=0&filter="+filter, nil, nil, &first)
	if err != nil || status != http.StatusOK || first.NextBatch == "" {
		return nil, fmt.Errorf("first sync: %d %s %v", status, raw, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		since := first.NextBatch
		for ctx.Err() == nil {
			var a syncAnswer
			status, _, err := api.Call(ctx, http.MethodGet, "/internal/matrix/sync?timeout=10000&since="+url.QueryEscape(since)+"&filter="+filter, nil, nil, &a)
			at := time.Now()
			if err != nil || status != http.StatusOK {
				clock.Sleep(ctx, 100*time.Millisecond)
				continue
			}
			for _, room := range a.Rooms.Join {
				for _, e := range room.Timeline.Events {
					observe(e.EventID, at)
				}
			}
			since = a.NextBatch
		}
	}()
	return done, nil
}

// bridgeTimes reads from the bridge's metrics what its own clocks say of
// the phase: its transaction commit time and the webhook deliveries.
func bridgeTimes(a, b metrics) string {
	if a == nil || b == nil {
		return "bridge metrics: not scraped"
	}
	const commit = "daarion_bridge_transaction_commit_seconds"
	n := b.sum(commit+"_count") - a.sum(commit+"_count")
	sum := b.sum(commit+"_sum") - a.sum(commit+"_sum")
	delivered := b.sum("daarion_bridge_deliveries_total", `sink="webhook"`, `result="delivered"`) - a.sum("daarion_bridge_deliveries_total", `sink="webhook"`, `result="delivered"`)
	failed := b.sum("daarion_bridge_deliveries_total", `sink="webhook"`, `result="failed"`) - a.sum("daarion_bridge_deliveries_total", `sink="webhook"`, `result="failed"`)
	raw, _ := json.Marshal(map[string]float64{"commits": n, "mean_commit_ms": sum / max(n, 1) * 1000, "webhook_delivered": delivered, "webhook_failed": failed})
	return "bridge metrics over the phase: " + string(raw)
}

// answerParts reads from the bridge's metrics where the answers' time went
// over the phase: the commit and the pacing after it, each as its mean and
// the share of transactions past 10 and 20 ms (the answer target).
func answerParts(a, b metrics) string {
	if a == nil || b == nil {
		return "bridge metrics: not scraped"
	}
	part := func(name string) map[string]float64 {
		n := b.sum(name+"_count") - a.sum(name+"_count")
		over := func(le string) float64 {
			in := b.sum(name+"_bucket", `le="`+le+`"`) - a.sum(name+"_bucket", `le="`+le+`"`)
			return (n - in) / max(n, 1) * 100
		}
		return map[string]float64{"n": n, "mean_ms": (b.sum(name+"_sum") - a.sum(name+"_sum")) / max(n, 1) * 1000,
			"over_10ms_pct": over("0.01"), "over_20ms_pct": over("0.02")}
	}
	raw, _ := json.Marshal(map[string]any{"commit": part("daarion_bridge_transaction_commit_seconds"),
		"pace": part("daarion_bridge_transaction_pace_seconds")})
	return "the bridge's answers over the phase: " + string(raw)
}
