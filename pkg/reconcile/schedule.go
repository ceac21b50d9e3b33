package reconcile

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Triggers of a reconcile, as reports and metrics name them.
const (
	TriggerStart          = "start"
	TriggerInterval       = "interval"
	TriggerTransactionGap = "transaction_gap"
	TriggerHomeserverBack = "homeserver_back"
	TriggerCommand        = "command"
)

// Schedule says when the leader reconciles the city by itself; a zero
// duration turns that trigger off.
type Schedule struct {
	// AfterStart: once, this long after Run starts (the process became the
	// leader), time for the homeserver to replay what it held back.
	AfterStart time.Duration
	// Interval: every this long as well.
	Interval time.Duration
	// MinInterval: the least time between two automatic reconciles; a
	// trigger sooner waits for it (several become one).
	MinInterval time.Duration
	// OnTransactionGap: a gap in Synapse's transaction ids triggers one.
	OnTransactionGap bool
}

// Trigger asks the running schedule for a reconcile of the city, for
// reason (one of the Trigger names). It never blocks: a trigger while one
// is already waiting joins it. Without a running schedule (a process that
// is not the leader) it waits for one.
func (r *Reconciler) Trigger(reason string) {
	select {
	case r.triggers <- reason:
	default:
	}
}

// ObserveTransactions is the indexer's report of the transaction ids it
// stored, in the order the homeserver sent them; with
// Schedule.OnTransactionGap, a skipped id triggers a reconcile.
func (r *Reconciler) ObserveTransactions(txnIDs []string) {
	if !r.opts.Schedule.OnTransactionGap {
		return
	}
	if from, to, ok := r.gaps.observe(txnIDs); ok {
		r.opts.Logger.Warn().Int64("after", from).Int64("next", to).
			Msg("The homeserver's transaction ids skipped; reconciling the city rooms")
		r.Trigger(TriggerTransactionGap)
	}
}

// Run reconciles on opts.Schedule until ctx ends; the bridge runs it in
// the leader process only.
func (r *Reconciler) Run(ctx context.Context) {
	sched := r.opts.Schedule
	log := zerolog.Ctx(ctx).With().Str("component", "reconcile").Logger()
	ctx = log.WithContext(ctx)

	var (
		startC, tickC, deferredC <-chan time.Time
		deferred                 string
		last                     time.Time
	)
	if sched.AfterStart > 0 {
		t := time.NewTimer(sched.AfterStart)
		defer t.Stop()
		startC = t.C
	}
	if sched.Interval > 0 {
		t := time.NewTicker(sched.Interval)
		defer t.Stop()
		tickC = t.C
	}
	run := func(reason string) {
		last = time.Now()
		if _, err := r.City(ctx, reason); err != nil && ctx.Err() == nil {
			log.Err(err).Str("trigger", reason).Msg("Failed to reconcile the city rooms")
		}
	}
	// due runs reason now, or once MinInterval has passed since the last.
	due := func(reason string) {
		wait := time.Until(last.Add(sched.MinInterval))
		if last.IsZero() || wait <= 0 {
			run(reason)
			return
		}
		if deferredC == nil {
			deferred, deferredC = reason, time.After(wait)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-startC:
			due(TriggerStart)
		case <-tickC:
			due(TriggerInterval)
		case reason := <-r.triggers:
			due(reason)
		case <-deferredC:
			deferredC = nil
			run(deferred)
		}
	}
}

// synapseTxnIDLimit tells Synapse's transaction ids (one sequence, counting
// from 1) from Dendrite's (the event's time in nanoseconds, about 1.8e18,
// or "<ts>_<count>"): only ids below it are watched for gaps.
const synapseTxnIDLimit = 1_000_000_000_000_000

// gapWatch follows the numeric transaction ids the log has stored. Synapse
// numbers its transactions from one sequence for every appservice, so a
// skipped id is either another appservice's or one Synapse never sent; a
// reconcile tells which.
type gapWatch struct {
	mu   sync.Mutex
	last int64
}

// observe returns the first gap in txnIDs after the last id seen: the last
// id before it and the one after. Ids at or below the last (a resend, or a
// held-back transaction arriving late) and ids that are not Synapse's are
// skipped; the first id seen starts the watch.
func (w *gapWatch) observe(txnIDs []string) (from, to int64, gap bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, txnID := range txnIDs {
		n, err := strconv.ParseInt(txnID, 10, 64)
		if err != nil || n <= 0 || n >= synapseTxnIDLimit || n <= w.last {
			continue
		}
		if w.last != 0 && n > w.last+1 && !gap {
			from, to, gap = w.last, n, true
		}
		w.last = n
	}
	return from, to, gap
}
