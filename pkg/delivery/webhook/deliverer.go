package webhook

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// DelivererOptions tune delivery.
type DelivererOptions struct {
	Workers     int
	Timeout     time.Duration
	RetryWindow time.Duration
	MaxBackoff  time.Duration
	Policy      Policy
	UserAgent   string
	// PollInterval is how often the outbox is read without a Wake: what
	// finds work this process did not queue or see fail (a redelivery
	// asked of another process). Retries this process scheduled start on
	// time without it. Default DefaultPollInterval.
	PollInterval time.Duration
}

// DefaultPollInterval is the deliverer's PollInterval when none is set.
// The outbox read is a search of a table that churns at the delivery rate
// (46 ms at 1,000 deliveries/s, with the dead rows autovacuum has not yet
// removed), so it is not made often.
const DefaultPollInterval = time.Second

// Deliverer sends the outbox: each (subscription, room) queue strictly in
// order, several queues at once. A failed delivery is retried with
// exponential backoff and jitter (Retry-After honoured) until the retry
// window ends, then goes to the dead-letter list and the queue moves on.
//
// Which queues have work it learns from the fan-out in memory (Queued),
// from a drain that stopped with rows left, and from the outbox itself
// (DueQueues) every PollInterval and on Wake: the outbox is not searched
// after every drain, which at one or two deliveries per drain cost more of
// the database than the deliveries themselves.
type Deliverer struct {
	store  *Store
	opts   DelivererOptions
	client *http.Client
	wakeCh chan struct{}       // read the outbox for due queues
	kickCh chan struct{}       // start the ready queues (no outbox read)
	now    func() time.Time    // the clock: time.Now, a fake one in tests
	randN  func(n int64) int64 // the jitter: rand.Int64N, fixed in tests

	mu       sync.Mutex
	inflight map[queueKey]bool
	bySub    map[string]int // queues in flight per subscription
	// ready are the queues known to have work, each with when it was
	// found (lower first: the queue waiting longest gets a free worker
	// first); one in flight stays ready and is drained again after.
	ready    map[queueKey]uint64
	readySeq uint64
	// waiting are queues whose head waits for a retry until then: work
	// queued behind it does not make them ready before.
	waiting map[queueKey]time.Time
	stats   Stats
	// outboxRead, when set (by tests), is called after each DueQueues.
	outboxRead func()
	// acks, while Run runs, takes the drains' delivered rows to the acker,
	// which deletes what every drain has handed it meanwhile in one
	// statement (a group commit: one or two deliveries per drain made a
	// delete and a commit per delivery).
	acks chan *ackRequest
}

// ackRequest is one drain's delivered rows, and the answer of their delete.
type ackRequest struct {
	subscriptionID string
	positions      []int64
	done           chan error
}

// Stats count delivery outcomes since start.
type Stats struct {
	Delivered, Failed, DeadLettered, Disabled int64
}

// NewDeliverer returns a deliverer; Run starts it.
func NewDeliverer(store *Store, opts DelivererOptions) *Deliverer {
	if opts.Workers < 1 {
		opts.Workers = 8
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = DefaultPollInterval
	}
	return &Deliverer{
		store: store, opts: opts, client: opts.Policy.Client(opts.Timeout),
		wakeCh: make(chan struct{}, 1), kickCh: make(chan struct{}, 1), now: time.Now, randN: rand.Int64N,
		inflight: map[queueKey]bool{}, bySub: map[string]int{},
		ready: map[queueKey]uint64{}, waiting: map[queueKey]time.Time{},
	}
}

// Wake makes the deliverer read the outbox for due work now: after a
// change the fan-out does not report (a redelivery, a resumed
// subscription).
func (d *Deliverer) Wake() { signal(d.wakeCh) }

// Queued tells the deliverer of deliveries just committed to the outbox
// (the fan-out's hand-off): their queues are started without an outbox read.
func (d *Deliverer) Queued(deliveries []*Delivery) {
	d.mu.Lock()
	now := d.now()
	for _, del := range deliveries {
		d.markReady(queueKey{del.SubscriptionID, del.RoomID}, now)
	}
	d.mu.Unlock()
	signal(d.kickCh)
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// markReady adds a queue to the ready set unless its head waits for a
// retry. With d.mu held.
func (d *Deliverer) markReady(k queueKey, now time.Time) {
	if until, ok := d.waiting[k]; ok {
		if until.After(now) {
			return
		}
		delete(d.waiting, k)
	}
	if _, ok := d.ready[k]; !ok {
		d.readySeq++
		d.ready[k] = d.readySeq
	}
}

// Stats returns the outcome counts.
func (d *Deliverer) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stats
}

// Run delivers until ctx ends, then waits for deliveries in flight.
func (d *Deliverer) Run(ctx context.Context) {
	log := zerolog.Ctx(ctx).With().Str("component", "webhooks").Logger()
	var wg sync.WaitGroup
	defer func() { d.acks = nil }() // after the drains and the acker (deferred first, run last)
	defer wg.Wait()
	ticker := time.NewTicker(d.opts.PollInterval)
	defer ticker.Stop()
	d.acks = make(chan *ackRequest, 2*d.opts.Workers)
	wg.Add(1)
	go func() { defer wg.Done(); d.ackDelivered(ctx) }()
	readOutbox := true
	for ctx.Err() == nil {
		if readOutbox {
			keys, err := d.store.DueQueues(ctx, d.now(), 1000)
			if err != nil && ctx.Err() == nil {
				log.Err(err).Msg("Failed to look for webhook deliveries")
			}
			d.mu.Lock()
			now := d.now()
			for _, k := range keys {
				d.markReady(k, now)
			}
			d.mu.Unlock()
			if d.outboxRead != nil {
				d.outboxRead()
			}
		}
		d.startReady(ctx, &wg, log)
		retry := d.nextRetry()
		select {
		case <-retry.C():
			d.readyRetries()
			readOutbox = false
		case <-ctx.Done():
		case <-d.wakeCh:
			// A redelivery or a resumed subscription may have made a
			// waiting queue's head due.
			d.mu.Lock()
			clear(d.waiting)
			d.mu.Unlock()
			readOutbox = true
		case <-ticker.C:
			readOutbox = true
		case <-d.kickCh:
			readOutbox = false
		}
		retry.Stop()
	}
}

// retryTimer fires when the first waiting queue's retry is due; the zero
// value never fires.
type retryTimer struct{ t *time.Timer }

func (r retryTimer) C() <-chan time.Time {
	if r.t == nil {
		return nil
	}
	return r.t.C
}

func (r retryTimer) Stop() {
	if r.t != nil {
		r.t.Stop()
	}
}

// nextRetry returns a timer for the earliest retry of a waiting queue.
func (d *Deliverer) nextRetry() retryTimer {
	d.mu.Lock()
	defer d.mu.Unlock()
	var first time.Time
	for _, until := range d.waiting {
		if first.IsZero() || until.Before(first) {
			first = until
		}
	}
	if first.IsZero() {
		return retryTimer{}
	}
	return retryTimer{time.NewTimer(max(first.Sub(d.now()), 0))}
}

// readyRetries makes the waiting queues whose retry is due ready.
func (d *Deliverer) readyRetries() {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	for k, until := range d.waiting {
		if !until.After(now) {
			d.markReady(k, now)
		}
	}
}

// startReady starts a drain for each ready queue not in flight, as far as
// the workers and the subscriptions' fair shares allow.
func (d *Deliverer) startReady(ctx context.Context, wg *sync.WaitGroup, log zerolog.Logger) {
	d.mu.Lock()
	defer d.mu.Unlock()
	keys := make([]queueKey, 0, len(d.ready))
	for k := range d.ready {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b queueKey) int { return cmp.Compare(d.ready[a], d.ready[b]) })
	keys = fairOrder(keys)
	share := d.fairShare(keys)
	for _, k := range keys {
		if d.inflight[k] || len(d.inflight) >= d.opts.Workers || d.bySub[k.subscriptionID] >= share {
			continue
		}
		delete(d.ready, k)
		d.inflight[k] = true
		d.bySub[k.subscriptionID]++
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := d.drain(log.WithContext(ctx), k)
			d.mu.Lock()
			delete(d.inflight, k)
			if d.bySub[k.subscriptionID]--; d.bySub[k.subscriptionID] <= 0 {
				delete(d.bySub, k.subscriptionID)
			}
			switch {
			case out.more:
				d.markReady(k, d.now())
			case !out.waitUntil.IsZero():
				d.waiting[k] = out.waitUntil
			}
			d.mu.Unlock()
			signal(d.kickCh)
		}()
	}
}

// ackDelivered deletes the drains' delivered rows until ctx ends: each
// statement takes every request waiting when it starts.
func (d *Deliverer) ackDelivered(ctx context.Context) {
	for {
		var batch []*ackRequest
		select {
		case <-ctx.Done():
			return
		case req := <-d.acks:
			batch = append(batch, req)
		}
		rows := len(batch[0].positions)
	more:
		for rows < maxAckRows {
			select {
			case req := <-d.acks:
				batch = append(batch, req)
				rows += len(req.positions)
			default:
				break more
			}
		}
		bySub := map[string][]int64{}
		for _, req := range batch {
			bySub[req.subscriptionID] = append(bySub[req.subscriptionID], req.positions...)
		}
		err := d.store.DeliveredRows(ctx, bySub)
		for _, req := range batch {
			req.done <- err
		}
	}
}

// maxAckRows bounds the rows of one delete (its parameters).
const maxAckRows = 2000

// markDelivered deletes a drain's delivered rows, through the acker while
// Run runs (a drain called alone deletes them itself), and returns when
// they are deleted.
func (d *Deliverer) markDelivered(ctx context.Context, subscriptionID string, positions []int64) error {
	if d.acks == nil {
		return d.store.Delivered(ctx, subscriptionID, positions)
	}
	req := &ackRequest{subscriptionID: subscriptionID, positions: slices.Clone(positions), done: make(chan error, 1)}
	select {
	case d.acks <- req:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// fairOrder interleaves due queues by subscription: each subscription's
// oldest queue first, then each one's second, and so on, so that one
// subscription with a queue per room (a "*" subscriber) does not take every
// free worker ahead of the others.
func fairOrder(keys []queueKey) []queueKey {
	bySub := map[string][]queueKey{}
	var order []string
	for _, k := range keys {
		if _, seen := bySub[k.subscriptionID]; !seen {
			order = append(order, k.subscriptionID)
		}
		bySub[k.subscriptionID] = append(bySub[k.subscriptionID], k)
	}
	out := make([]queueKey, 0, len(keys))
	for round := 0; len(out) < len(keys); round++ {
		for _, sub := range order {
			if round < len(bySub[sub]) {
				out = append(out, bySub[sub][round])
			}
		}
	}
	return out
}

// fairShare is how many workers one subscription may hold: the workers
// split evenly among the subscriptions with work (due now or in flight),
// at least one each. With d.mu held.
func (d *Deliverer) fairShare(due []queueKey) int {
	subs := map[string]bool{}
	for _, k := range due {
		subs[k.subscriptionID] = true
	}
	for sub := range d.bySub {
		subs[sub] = true
	}
	return max(1, d.opts.Workers/max(1, len(subs)))
}

// drained is how a drain ended: more when the queue still has due rows
// (it gave its worker back), waitUntil when its head waits for a retry.
type drained struct {
	more      bool
	waitUntil time.Time
}

// drain delivers a queue's due head in order, until a delivery fails (the
// queue then waits for its retry), the queue is empty, or it has held its
// worker for an attempt's timeout (it goes back in line, so that a slow
// receiver cannot keep a worker from the other subscriptions for longer). Delivered rows are
// removed in one statement per head read, not one commit per delivery: a
// crash in between only delivers them again, which at-least-once allows.
func (d *Deliverer) drain(ctx context.Context, k queueKey) (out drained) {
	log := zerolog.Ctx(ctx).With().Str("subscription_id", k.subscriptionID).Str("room_id", k.roomID).Logger()
	var delivered []int64
	flush := func() bool {
		if len(delivered) == 0 {
			return true
		}
		if err := d.markDelivered(ctx, k.subscriptionID, delivered); err != nil {
			log.Err(err).Int("deliveries", len(delivered)).Msg("Delivered, but failed to mark them; they will be delivered again")
			return false
		}
		d.count(func(s *Stats) { s.Delivered += int64(len(delivered)) })
		delivered = delivered[:0]
		return true
	}
	defer flush()
	yieldAt := d.now().Add(d.opts.Timeout)
	for ctx.Err() == nil {
		sub, head, err := d.store.queueHeadForDelivery(ctx, k, queueHeadBatch)
		if err != nil {
			log.Err(err).Msg("Failed to read a webhook queue")
			return out
		}
		if len(head) == 0 {
			return out
		}
		if sub.State != StateActive {
			// Paused or disabled: new rows do not make it ready until a
			// Wake (a resume) or the next outbox read, which skips it
			// while it is not active.
			return drained{waitUntil: d.now().Add(d.opts.PollInterval)}
		}
		for _, del := range head {
			now := d.now()
			if del.NextAttemptAt.After(now) {
				return drained{waitUntil: del.NextAttemptAt}
			}
			if d.opts.Timeout > 0 && now.After(yieldAt) {
				return drained{more: true}
			}
			ok, goOn, retryAt := d.attempt(ctx, sub, del)
			if ok {
				delivered = append(delivered, del.Position)
			}
			if !goOn {
				return drained{waitUntil: retryAt}
			}
		}
		if !flush() {
			return out
		}
		if len(head) < queueHeadBatch {
			// The whole queue was read: what is queued after this read
			// is handed over by Queued (or found by DueQueues).
			return out
		}
	}
	return out
}

// queueHeadBatch is how many deliveries of a queue are read at once.
const queueHeadBatch = 200

// attempt delivers once. delivered says the receiver took it; goOn says
// the queue may go on to its next row; retryAt, when it may not, is when
// the row is tried again (zero: not by itself).
func (d *Deliverer) attempt(ctx context.Context, sub *Subscription, del *Delivery) (delivered, goOn bool, retryAt time.Time) {
	log := zerolog.Ctx(ctx).With().Str("event_id", del.EventID).Logger()
	status, retryAfter, err := d.post(ctx, sub, del)
	now := d.now()
	switch {
	case err == nil && status >= 200 && status < 300:
		return true, true, time.Time{}
	case err == nil && status == http.StatusGone:
		// The receiver is gone for good: stop, keep what is queued.
		_ = d.store.SetState(ctx, sub.ID, StateDisabled, "receiver answered 410 Gone")
		d.count(func(s *Stats) { s.Disabled++ })
		log.Warn().Msg("Webhook receiver answered 410 Gone; subscription disabled")
		return false, false, time.Time{}
	}
	reason := fmt.Sprintf("receiver answered %d", status)
	if err != nil {
		reason = err.Error()
	}
	firstFailed := del.FirstFailedAt
	if firstFailed.IsZero() {
		firstFailed = now
	}
	deadline := firstFailed.Add(d.opts.RetryWindow)
	dead := !now.Before(deadline)
	next := now.Add(max(d.backoff(del.Attempts), retryAfter))
	if next.After(deadline) {
		next = deadline // one last try at the end of the window
	}
	if err = d.store.Failed(ctx, del, dead, next, firstFailed, reason); err != nil {
		log.Err(err).Msg("Failed to record a failed webhook delivery")
		return false, false, time.Time{}
	}
	if dead {
		d.count(func(s *Stats) { s.DeadLettered++ })
		log.Warn().Str("reason", reason).Int("attempts", del.Attempts+1).Msg("Webhook delivery moved to the dead-letter list")
		return false, true, time.Time{} // the queue moves on; the dead letter can be redelivered
	}
	d.count(func(s *Stats) { s.Failed++ })
	log.Debug().Str("reason", reason).Time("next_attempt_at", next).Msg("Webhook delivery failed; will retry")
	return false, false, next
}

func (d *Deliverer) count(f func(*Stats)) {
	d.mu.Lock()
	f(&d.stats)
	d.mu.Unlock()
}

// backoff is 1 s doubling per attempt up to MaxBackoff, with ±20% jitter.
func (d *Deliverer) backoff(attempts int) time.Duration {
	wait := time.Second << min(attempts, 30)
	if wait <= 0 || wait > d.opts.MaxBackoff {
		wait = d.opts.MaxBackoff
	}
	jitter := time.Duration(d.randN(int64(wait)/5*2+1)) - wait/5
	return wait + jitter
}

// post sends one delivery, signed per Standard Webhooks.
func (d *Deliverer) post(ctx context.Context, sub *Subscription, del *Delivery) (status int, retryAfter time.Duration, err error) {
	ts := d.now().Unix()
	sig, err := Sign(sub.Secret, del.EventID, ts, del.Body)
	if err != nil {
		return 0, 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, sub.URL, bytes.NewReader(del.Body))
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", d.opts.UserAgent)
	req.Header.Set("webhook-id", del.EventID)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("webhook-signature", sig)
	resp, err := d.client.Do(req)
	if err != nil {
		return 0, 0, fmt.Errorf("delivery failed: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, parseRetryAfter(resp.Header.Get("Retry-After"), d.now()), nil
}

// parseRetryAfter reads seconds or an HTTP date (counted from now); 0 when
// absent or invalid.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil && secs > 0 {
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0)
	}
	return 0
}
