package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/daarion/matrix-bridge/internal/benchkit"
	"github.com/daarion/matrix-bridge/pkg/config"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// Event ids are $rb<tag>.<phase>.<seq>: the receiver tells the phases
// apart and finds each event's send time by its sequence number.
const (
	phaseThroughput = "t"
	phaseLatency    = "l"
)

// receiver notes when each DTO arrives, whether by webhook (it is the
// loopback webhook receiver: it reads each delivery and answers 204) or
// from NATS (the probe's subscriber hands it each message's id).
type receiver struct {
	srv    *http.Server
	url    string
	start  time.Time
	prefix string

	throughput atomic.Int64 // DTOs of the throughput phase
	latency    []atomic.Int64
	dups       atomic.Int64
	others     atomic.Int64
	latencyMu  sync.RWMutex
}

func newReceiver(prefix string, start time.Time) *receiver {
	return &receiver{start: start, prefix: prefix}
}

// listen serves webhooks on a loopback port.
func (rc *receiver) listen() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	rc.url = "http://" + ln.Addr().String() + "/hook"
	rc.srv = &http.Server{Handler: http.HandlerFunc(rc.serve), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = rc.srv.Serve(ln) }()
	return nil
}

func (rc *receiver) close() {
	if rc.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = rc.srv.Shutdown(ctx)
}

// armLatency prepares the arrival slots of the latency phase.
func (rc *receiver) armLatency(n int) {
	rc.latencyMu.Lock()
	rc.latency = make([]atomic.Int64, n)
	rc.latencyMu.Unlock()
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	w.WriteHeader(http.StatusNoContent)
	rc.observe(r.Header.Get("webhook-id"))
}

// observe notes the arrival of the DTO with this id.
func (rc *receiver) observe(dtoID string) {
	now := time.Since(rc.start).Nanoseconds()
	rest, ok := strings.CutPrefix(dtoID, rc.prefix)
	phase, seqStr, ok2 := strings.Cut(rest, ".")
	seq, err := strconv.Atoi(seqStr)
	switch {
	case !ok || !ok2 || err != nil:
		rc.others.Add(1)
	case phase == phaseThroughput:
		rc.throughput.Add(1)
	case phase == phaseLatency:
		rc.latencyMu.RLock()
		if seq >= 0 && seq < len(rc.latency) {
			if !rc.latency[seq].CompareAndSwap(0, now) {
				rc.dups.Add(1)
			}
		} else {
			rc.others.Add(1)
		}
		rc.latencyMu.RUnlock()
	default:
		rc.others.Add(1)
	}
}

// txnSender pushes transactions to the bridge's appservice endpoint as the
// homeserver would.
type txnSender struct {
	as    *testrig.APIClient // the appservice endpoint, without a service token
	token string             // the homeserver's token
	tag   string
	rooms int
	seq   atomic.Int64
}

func (ts *txnSender) body(phase string, firstSeq, n int) []byte {
	var b bytes.Buffer
	b.Grow(n * 330)
	b.WriteString(`{"events":[`)
	now := time.Now().UnixMilli()
	for i := range n {
		seq := firstSeq + i
		room := seq % ts.rooms
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"event_id":"$rb%s.%s.%d","room_id":"!rbfan%d-%s:%s","type":"m.room.message","sender":"@rbuser%d:%s",`+
			`"origin_server_ts":%d,"content":{"msgtype":"m.text","body":"rigbench fan-out message %d"},"unsigned":{"age":0}}`,
			ts.tag, phase, seq, room, ts.tag, serverName, room%5, serverName, now, seq)
	}
	b.WriteString(`]}`)
	return b.Bytes()
}

func (ts *txnSender) put(ctx context.Context, body []byte) error {
	txnID := fmt.Sprintf("rb-%s-%d", ts.tag, ts.seq.Add(1))
	status, data, err := ts.as.Raw(ctx, http.MethodPut, "/_matrix/app/v1/transactions/"+txnID,
		map[string]string{"Authorization": "Bearer " + ts.token}, bytes.NewReader(body), nil)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("transaction answered %d: %s", status, data)
	}
	return nil
}

// subscribe subscribes the receiver to every room.
func subscribe(ctx context.Context, br *bridgeRun, url string) (string, error) {
	var out struct {
		ID string `json:"subscription_id"`
	}
	status, raw, err := br.api.Call(ctx, http.MethodPost, "/internal/matrix/webhook/subscribe", nil,
		map[string]string{"room_id": "*", "webhook_url": url}, &out)
	if err != nil || status != http.StatusOK || out.ID == "" {
		return "", fmt.Errorf("subscribing: %d %s %v", status, raw, err)
	}
	return out.ID, nil
}

func unsubscribe(ctx context.Context, br *bridgeRun, subID string) error {
	status, raw, err := br.api.Call(ctx, http.MethodDelete, "/internal/matrix/webhook/subscribe/"+subID, nil, nil, nil)
	if err != nil || status != http.StatusOK {
		return fmt.Errorf("unsubscribing: %d %s %v", status, raw, err)
	}
	return nil
}

// pending is how many deliveries of a subscription wait in the outbox.
func pending(ctx context.Context, br *bridgeRun, subID string) int64 {
	var out struct {
		Pending int64 `json:"pending"`
	}
	if status, _, err := br.api.Call(ctx, http.MethodGet, "/internal/matrix/webhook/subscribe/"+subID, nil, nil, &out); err != nil || status != http.StatusOK {
		return -1
	}
	return out.Pending
}

// consumerLag is how far a consumer is behind the log.
func consumerLag(ctx context.Context, br *bridgeRun, name string) (int64, error) {
	head, err := br.b.EventLog.Head(ctx)
	if err != nil {
		return 0, err
	}
	if br.b.Consumers == nil {
		return head, nil
	}
	for _, runner := range br.b.Consumers.Runners() {
		if runner.Name() == name {
			return head - runner.Position(), nil
		}
	}
	return 0, fmt.Errorf("no %s consumer", name)
}

// waitUntil polls cond every 20 ms until it holds or timeout passes.
func waitUntil(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// Sinks the fanout scenario measures.
const (
	sinkWebhook = "webhook"
	sinkNATS    = "NATS"
)

// runFanout measures the webhook sink, then (with -nats) the NATS sink, each
// on its own fresh bridge and database.
func runFanout(ctx context.Context, r *rig, s *settings, db string, rep *scenarioReport) error {
	if err := fanoutSink(ctx, r, s, db, sinkWebhook, rep); err != nil {
		return err
	}
	if !s.nats {
		return nil
	}
	return fanoutSink(ctx, r, s, db, sinkNATS, rep)
}

// fanoutSink: a receiver for the sink (a loopback webhook receiver
// subscribed to "*", or a subscriber of an in-process nats-server the
// bridge's delivery.nats_url points at); transactions of s.fanoutBatch
// synthetic m.room.message events pushed to the appservice endpoint as fast
// as they are acknowledged (throughput), then paced at s.fanoutRate
// events/s in transactions of 10 (latency from sending a transaction to
// receiving each of its events' DTOs).
func fanoutSink(ctx context.Context, r *rig, s *settings, db, sink string, rep *scenarioReport) error {
	start := time.Now()
	tag := r.runID + db + strings.ToLower(sink[:1])
	rc := newReceiver("$rb"+tag+".", start)
	defer rc.close()
	var probe *natsProbe
	// The bridge listens for transactions on a port of its own: the
	// homeserver (still sending what the other scenarios caused) cannot
	// reach it, so only rigbench's transactions come in.
	port, err := testrig.FreePort()
	if err != nil {
		return err
	}
	listen := fmt.Sprintf("127.0.0.1:%d", port)
	mutate := func(cfg *config.Config) { cfg.AppService.Listen = listen }
	consumerName := "webhooks"
	if sink == sinkWebhook {
		if err := rc.listen(); err != nil {
			return err
		}
	} else {
		if probe, err = startNATSProbe(filepath.Join(r.dir, "nats-"+db), rc.observe); err != nil {
			return fmt.Errorf("starting the in-process nats-server: %w", err)
		}
		defer probe.close()
		mutate = func(cfg *config.Config) {
			cfg.AppService.Listen = listen
			cfg.Delivery.NATSURL = probe.url
		}
		consumerName = "nats"
	}
	br, err := r.startBridge(ctx, db, "fanout-"+strings.ToLower(sink), rep, mutate)
	if err != nil {
		return err
	}
	defer br.stop()
	as := testrig.NewAPIClient(br.asURL, "", 256, 60*time.Second)
	defer as.Close()
	ts := &txnSender{as: as, token: br.hsToken, tag: tag, rooms: s.fanoutRooms}

	var subID string
	if sink == sinkWebhook {
		rep.Note("[%s] %s", db, commitFloor(ctx, br, br.cfg.Delivery.WebhookWorkers, time.Second))
		if subID, err = subscribe(ctx, br, rc.url); err != nil {
			return err
		}
	} else if !waitUntil(ctx, 10*time.Second, func() bool { return probe.srv.NumClients() > 1 }) {
		rep.Note("[%s] NATS: not wired into pkg/bridge: with delivery.nats_url pointing at an in-process nats-server, the bridge never connected; not measured", db)
		return nil
	}
	// The bridge's consumers start with the leader (at once on SQLite,
	// after the advisory lock on PostgreSQL).
	if !waitUntil(ctx, 15*time.Second, func() bool { return br.b.Leader.Leading() }) {
		return errors.New("the bridge never became leader, so its consumers never started")
	}

	if err := fanoutThroughput(ctx, s, db, sink, consumerName, br, rc, ts, subID, rep); err != nil {
		return err
	}
	if sink == sinkWebhook {
		if err := unsubscribe(ctx, br, subID); err != nil {
			return err
		}
	}
	// Start the latency phase with the sink's consumer caught up, so no
	// backlog of the first phase is in front of it.
	if !waitUntil(ctx, s.drainTimeout, func() bool { lag, err := consumerLag(ctx, br, consumerName); return err == nil && lag == 0 }) {
		lag, _ := consumerLag(ctx, br, consumerName)
		rep.Note("[%s] %s: the %s consumer was still %d events behind the log after %s; the latency phase starts behind it",
			db, sink, consumerName, lag, s.drainTimeout)
	}
	if sink == sinkWebhook {
		if subID, err = subscribe(ctx, br, rc.url); err != nil {
			return err
		}
	}
	if err := fanoutLatency(ctx, s, db, sink, br, rc, ts, subID, rep); err != nil {
		return err
	}
	if probe != nil && br.b.NATS != nil {
		st := br.b.NATS.Stats()
		rep.Note("[%s] NATS: the sink reports %d DTOs stored in JetStream, %d duplicates, %d failed batches",
			db, st.Published, st.Duplicates, st.FailedBatches)
	}
	if d := rc.dups.Load(); d > 0 {
		rep.Note("[%s] %s: %d DTOs received twice", db, sink, d)
	}
	if d := rc.others.Load(); d > 0 {
		rep.Note("[%s] %s: %d other DTOs received (not rigbench's: events the homeserver itself sent to the bridge)", db, sink, d)
	}
	return nil
}

func fanoutThroughput(ctx context.Context, s *settings, db, sink, consumerName string, br *bridgeRun, rc *receiver, ts *txnSender,
	subID string, rep *scenarioReport) error {
	endPhase := s.phase("throughput-" + strings.ToLower(sink))
	var acks recorder
	sent, throttledFor := 0, time.Duration(0)
	warmup := min(time.Second, s.duration/5)
	t0 := time.Now()
	warmEnd, deadline := t0.Add(warmup), t0.Add(s.duration)
	// Arrivals are counted over [warmEnd, deadline]: the steady rate, with
	// the pipeline's start-up left out.
	var atWarm, atEnd int64
	var snaps sync.WaitGroup
	snaps.Add(1)
	go func() {
		defer snaps.Done()
		time.Sleep(time.Until(warmEnd))
		atWarm = rc.throughput.Load()
		time.Sleep(time.Until(deadline))
		atEnd = rc.throughput.Load()
	}()
	for ctx.Err() == nil && time.Now().Before(deadline) {
		if int64(sent)-rc.throughput.Load() > int64(s.maxBacklog) {
			time.Sleep(2 * time.Millisecond)
			throttledFor += 2 * time.Millisecond
			continue
		}
		body := ts.body(phaseThroughput, sent, s.fanoutBatch)
		t := time.Now()
		if err := ts.put(ctx, body); err != nil {
			acks.fail(err.Error())
			time.Sleep(10 * time.Millisecond)
			continue
		}
		acks.add(time.Since(t))
		sent += s.fanoutBatch
	}
	pushed := time.Since(t0)
	snaps.Wait()
	endPhase()
	if err := ctx.Err(); err != nil {
		return err
	}
	lag, _ := consumerLag(ctx, br, consumerName)
	queued := int64(-1)
	if subID != "" {
		queued = pending(ctx, br, subID)
	}
	// Let the DTOs in flight arrive (bounded), for the totals.
	drained := waitUntil(ctx, s.drainTimeout, func() bool { return rc.throughput.Load() >= int64(sent) })
	drainedAt := time.Since(t0)

	window := deadline.Sub(warmEnd).Seconds()
	rate := float64(atEnd-atWarm) / window
	ackSum := benchkit.Summarize(acks.samples)
	what := "delivered to the receiver"
	target := "webhook fan-out ≥ 5,000 DTOs/s"
	if sink == sinkNATS {
		what = "published, seen by a subscriber"
		target = "NATS ≥ 5,000 DTOs/s (the webhook target, for comparison)"
	}
	rep.Rows = append(rep.Rows,
		newRow(db, fmt.Sprintf("%s: ingest, %d-event txns, closed loop", sink, s.fanoutBatch), "txn ack (PUT → 200); n = txns",
			ackSum, acks.errors, pushed, float64(sent)/pushed.Seconds(), "events/s"),
		benchkit.Row{DB: db, Variant: fmt.Sprintf("%s: %s, %d rooms", sink, what, s.fanoutRooms),
			Latency: fmt.Sprintf("DTOs received in [%s, %s]", warmup, s.duration),
			Count:   int(atEnd - atWarm), Rate: rate, RateUnit: "DTOs/s", NoLatency: true}.Timed(window, 0))
	rep.Checks = append(rep.Checks, benchkit.Check{DB: db, Target: target,
		Got:  fmt.Sprintf("%.0f DTOs/s (ingest acked %.0f events/s)", rate, float64(sent)/pushed.Seconds()),
		Pass: rate >= 5000})
	if throttledFor > 0 {
		rep.Note("[%s] %s throughput: sending paused for %s in all, while more than %d events were sent but not yet received (-max-backlog)",
			db, sink, throttledFor.Round(time.Millisecond), s.maxBacklog)
	}
	if queued >= 0 {
		rep.Note("[%s] %s throughput: when sending ended: %s consumer %d events behind the log, %d deliveries queued in the outbox, %d of %d received",
			db, sink, consumerName, lag, queued, atEnd, sent)
	} else {
		rep.Note("[%s] %s throughput: when sending ended: %s consumer %d events behind the log, %d of %d received",
			db, sink, consumerName, lag, atEnd, sent)
	}
	if drained {
		rep.Note("[%s] %s throughput: all %d DTOs received %.1fs after the first transaction (%.0f DTOs/s overall)",
			db, sink, sent, drainedAt.Seconds(), float64(sent)/drainedAt.Seconds())
	} else {
		rep.Note("[%s] %s throughput: %d of %d DTOs received when the drain wait (%s) ended", db, sink, rc.throughput.Load(), sent, s.drainTimeout)
	}
	if acks.errors > 0 {
		rep.Note("[%s] %s throughput: %d failed transactions, last: %s", db, sink, acks.errors, acks.lastErr)
	}
	return nil
}

func fanoutLatency(ctx context.Context, s *settings, db, sink string, br *bridgeRun, rc *receiver, ts *txnSender, subID string, rep *scenarioReport) error {
	const batch = 10
	interval := time.Duration(float64(time.Second) * batch / float64(s.fanoutRate))
	ticks := int(s.duration / interval)
	n := ticks * batch
	rc.armLatency(n)
	sentAt := make([]int64, n) // ns since rc.start; 0: never sent
	var acks recorder
	sem := make(chan struct{}, 128)
	skipped := 0
	var wg sync.WaitGroup
	endPhase := s.phase("latency-" + strings.ToLower(sink))
	probeDone := make(chan struct{})
	probeResult := make(chan string, 1)
	go func() { probeResult <- writeProbe(ctx, br, 50*time.Millisecond, probeDone) }()
	t0 := time.Now()
	for tick := 0; tick < ticks && ctx.Err() == nil; tick++ {
		time.Sleep(time.Until(t0.Add(time.Duration(tick) * interval)))
		select {
		case sem <- struct{}{}:
		default:
			skipped++ // 128 transactions unacknowledged: the bridge does not keep up
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			first := tick * batch
			body := ts.body(phaseLatency, first, batch)
			t := time.Now()
			at := t.Sub(rc.start).Nanoseconds()
			for i := range batch {
				sentAt[first+i] = at
			}
			if err := ts.put(ctx, body); err != nil {
				acks.fail(err.Error())
				return
			}
			acks.add(time.Since(t))
		}()
	}
	wg.Wait()
	sendTime := time.Since(t0)
	if err := ctx.Err(); err != nil {
		return err
	}
	expected := 0
	for _, at := range sentAt {
		if at != 0 {
			expected++
		}
	}
	arrived := func() int {
		got := 0
		for i := range rc.latency {
			if rc.latency[i].Load() != 0 {
				got++
			}
		}
		return got
	}
	waitUntil(ctx, s.drainTimeout, func() bool { return arrived() >= expected })
	close(probeDone)
	rep.Note("[%s] %s latency: %s", db, sink, <-probeResult)
	endPhase()
	var lat []time.Duration
	missing := 0
	for i, at := range sentAt {
		if at == 0 {
			continue
		}
		if got := rc.latency[i].Load(); got != 0 {
			lat = append(lat, time.Duration(got-at))
		} else {
			missing++
		}
	}
	if s.dumpLatency != "" {
		dumpLatencies(s.dumpLatency, db, sink, sentAt, rc)
	}
	sum := benchkit.Summarize(lat)
	received := "webhook received"
	target := fmt.Sprintf("webhook latency p99 ≤ 100 ms at %d events/s", s.fanoutRate)
	if sink == sinkNATS {
		received = "NATS subscriber received"
		target = fmt.Sprintf("NATS latency p99 ≤ 100 ms at %d events/s (the webhook target, for comparison)", s.fanoutRate)
	}
	rep.Rows = append(rep.Rows, newRow(db, fmt.Sprintf("%s: latency, paced %d events/s (%d-event txns every %s)", sink, s.fanoutRate, batch, interval),
		"txn sent → "+received, sum, missing+acks.errors, sendTime, float64(expected)/sendTime.Seconds(), "events/s"))
	rep.Checks = append(rep.Checks, benchkit.Check{DB: db, Target: target,
		Got:  fmt.Sprintf("p99 %.1f ms (p50 %.1f ms, max %.1f ms; %d of %d received)", benchkit.MS(sum.P99), benchkit.MS(sum.P50), benchkit.MS(sum.Max), sum.N, expected),
		Pass: missing == 0 && skipped == 0 && acks.errors == 0 && sum.N > 0 && sum.P99 <= 100*time.Millisecond})
	ackSum := benchkit.Summarize(acks.samples)
	rep.Note("[%s] %s latency: transaction acks p50 %.1f ms, p99 %.1f ms", db, sink, benchkit.MS(ackSum.P50), benchkit.MS(ackSum.P99))
	if skipped > 0 {
		rep.Note("[%s] %s latency: %d of %d transactions not sent: 128 were already waiting for their ack", db, sink, skipped, ticks)
	}
	if missing > 0 {
		queued := ""
		if subID != "" {
			queued = fmt.Sprintf(" (%d still queued in the outbox)", pending(ctx, br, subID))
		}
		rep.Note("[%s] %s latency: %d events never arrived within %s after sending ended%s", db, sink, missing, s.drainTimeout, queued)
	}
	if acks.errors > 0 {
		rep.Note("[%s] %s latency: %d failed transactions, last: %s", db, sink, acks.errors, acks.lastErr)
	}
	return nil
}

// commitFloor measures what one write commit costs on the bridge's own
// database (fsync on, as the bridge runs it): the webhook deliverer commits
// once per delivered DTO (Store.Delivered), so this bounds its rate. It
// updates throwaway subscription rows (never delivered to: paused), one
// autocommit at a time, then from workers goroutines at once.
func commitFloor(ctx context.Context, br *bridgeRun, workers int, d time.Duration) string {
	db := br.b.DB
	now := time.Now().UnixMilli()
	for i := range workers {
		if _, err := db.Exec(ctx, `INSERT INTO webhook_subscription (id, service, room_filter, webhook_url, event_types, secret, state, state_reason, created_at, updated_at)
			VALUES ($1, 'rigbench', '!none:rigbench', 'http://127.0.0.1:9/', '[]', 'x', 'paused', '', $2, $2)`, fmt.Sprintf("rbprobe%d", i), now); err != nil {
			return "commit floor: " + err.Error()
		}
	}
	defer func() {
		for i := range workers {
			_, _ = db.Exec(ctx, `DELETE FROM webhook_subscription WHERE id = $1`, fmt.Sprintf("rbprobe%d", i))
		}
	}()
	update := func(i int) error {
		_, err := db.Exec(ctx, `UPDATE webhook_subscription SET updated_at = $2 WHERE id = $1`, fmt.Sprintf("rbprobe%d", i), time.Now().UnixNano())
		return err
	}
	var seq []time.Duration
	for end := time.Now().Add(d); time.Now().Before(end); {
		t := time.Now()
		if err := update(0); err != nil {
			return "commit floor: " + err.Error()
		}
		seq = append(seq, time.Since(t))
	}
	var commits atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) && update(i) == nil {
				commits.Add(1)
			}
		}()
	}
	wg.Wait()
	sum := benchkit.Summarize(seq)
	return fmt.Sprintf("commit floor of the bridge's database (one-row autocommit UPDATE): sequential p50 %.2f ms, p99 %.2f ms (%.0f commits/s); %d at once: %.0f commits/s",
		benchkit.MS(sum.P50), benchkit.MS(sum.P99), float64(sum.N)/d.Seconds(), workers, float64(commits.Load())/time.Since(start).Seconds())
}

// dumpLatencies writes "seq sent_ms latency_ms" per event of the latency
// phase (latency -1: never arrived), for plotting where the tail comes from.
func dumpLatencies(prefix, db, sink string, sentAt []int64, rc *receiver) {
	var b strings.Builder
	for i, at := range sentAt {
		if at == 0 {
			continue
		}
		lat := -1.0
		if got := rc.latency[i].Load(); got != 0 {
			lat = float64(got-at) / 1e6
		}
		fmt.Fprintf(&b, "%d %.3f %.3f\n", i, float64(at)/1e6, lat)
	}
	path := fmt.Sprintf("%s-%s-%s.txt", prefix, db, strings.ToLower(sink))
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		benchkit.Progress("dump-latency: %v", err)
	}
}

// writeProbe makes a one-row write on the bridge's own database (through its
// pool and driver, so with the same locking and busy handling) every
// interval until done is closed: how long a trivial write waits while the
// bridge works shows the write-lock contention every writer meets.
func writeProbe(ctx context.Context, br *bridgeRun, interval time.Duration, done <-chan struct{}) string {
	db := br.b.DB
	const probeID = "rbwriteprobe"
	if _, err := db.Exec(ctx, `INSERT INTO webhook_subscription (id, service, room_filter, webhook_url, event_types, secret, state, state_reason, created_at, updated_at)
		VALUES ($1, 'rigbench', '!none:rigbench', 'http://127.0.0.1:9/', '[]', 'x', 'paused', '', 0, 0)`, probeID); err != nil {
		return "write probe: " + err.Error()
	}
	defer func() {
		_, _ = db.Exec(context.WithoutCancel(ctx), `DELETE FROM webhook_subscription WHERE id = $1`, probeID)
	}()
	var samples []time.Duration
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-done:
			sum := benchkit.Summarize(samples)
			return fmt.Sprintf("a one-row write on the bridge's database every %s during the phase took p50 %.2f ms, p99 %.1f ms, max %.1f ms (%d writes)",
				interval, benchkit.MS(sum.P50), benchkit.MS(sum.P99), benchkit.MS(sum.Max), sum.N)
		case <-ctx.Done():
			return "write probe: " + ctx.Err().Error()
		case <-tick.C:
		}
		t := time.Now()
		if _, err := db.Exec(ctx, `UPDATE webhook_subscription SET updated_at = $2 WHERE id = $1`, probeID, t.UnixNano()); err != nil {
			return "write probe: " + err.Error()
		}
		samples = append(samples, time.Since(t))
	}
}
