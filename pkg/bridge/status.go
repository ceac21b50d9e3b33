package bridge

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/daarion/matrix-bridge/pkg/leader"
	"github.com/daarion/matrix-bridge/pkg/reconcile"
	"github.com/daarion/matrix-bridge/pkg/status"
)

// statusInterval is how often every process samples its status: health,
// the metrics, the bot's status command and the transaction path's hard
// limit read the latest sample, never the database or the homeserver.
const statusInterval = time.Second

// pingTimeout bounds each reachability check of a sample.
const pingTimeout = 2 * time.Second

// Status returns the latest status sample (an empty one before the first).
func (b *Bridge) Status() *status.Snapshot {
	if s := b.status.Load(); s != nil {
		return s
	}
	return &status.Snapshot{}
}

// sampleStatus samples until ctx ends.
func (b *Bridge) sampleStatus(ctx context.Context) {
	ticker := time.NewTicker(statusInterval)
	defer ticker.Stop()
	for {
		b.status.Store(b.takeStatusSample(ctx))
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// takeStatusSample reads every figure once. A figure that cannot be read
// keeps its value from the sample before.
func (b *Bridge) takeStatusSample(ctx context.Context) *status.Snapshot {
	prev := b.Status()
	s := *prev
	s.Consumers = nil
	s.At = time.Now()
	s.Database = ping(ctx, func(ctx context.Context) error { return b.DB.RawDB.PingContext(ctx) })
	s.Homeserver = ping(ctx, func(ctx context.Context) error { _, err := b.AS.BotClient().Versions(ctx); return err })
	if s.Homeserver.Reachable && !prev.Homeserver.Reachable && !prev.At.IsZero() {
		// Events can be lost around a homeserver's restart (synapse#11637).
		b.Reconciler.Trigger(reconcile.TriggerHomeserverBack)
	}

	ctx, cancel := context.WithTimeout(ctx, statusInterval)
	defer cancel()
	if n, err := b.EventLog.JournalBacklog(ctx); err == nil {
		s.JournalBacklog = n
	}
	if head, err := b.EventLog.Head(ctx); err == nil {
		s.LogHead, s.MaxLag = head, 0
		for _, name := range b.consumerNames() {
			pos, err := b.EventLog.Cursor(ctx, name)
			if err != nil {
				s.Consumers = nil
				s.MaxLag = prev.MaxLag
				break
			}
			c := status.Consumer{Name: name, Position: pos, Lag: max(head-pos, 0)}
			s.Consumers = append(s.Consumers, c)
			s.MaxLag = max(s.MaxLag, c.Lag)
		}
	}
	if s.Consumers == nil {
		s.Consumers = prev.Consumers
	}
	if lease, err := leader.Current(ctx, b.DB); err == nil {
		s.LeaderHeld = lease.Held(time.Now())
	}
	s.Leading = b.Leader != nil && b.Leader.Leading()
	if counts, err := b.Parked.Counts(ctx); err == nil {
		s.ParkedEvents = counts
	}
	if n, err := b.EventLog.ParkedTransactionCount(ctx); err == nil {
		s.ParkedTransactions = n
	}
	if b.webhookStore != nil {
		if pending, dead, err := b.webhookStore.Totals(ctx); err == nil {
			s.WebhooksPending, s.WebhooksDead = pending, dead
		}
	}
	s.Encryption = status.Encryption{Enabled: b.E2EE.Enabled(), Unavailable: b.E2EE.Unavailable(), Devices: b.E2EE.Devices(),
		Waiting: prev.Encryption.Waiting}
	if n, err := b.E2EE.Waiting(ctx); err == nil {
		s.Encryption.Waiting = n
	}
	return &s
}

func ping(ctx context.Context, call func(context.Context) error) status.Reachability {
	ctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	start := time.Now()
	if err := call(ctx); err != nil {
		return status.Reachability{Error: err.Error()}
	}
	return status.Reachability{Reachable: true, Ping: time.Since(start)}
}

// overloaded reports whether the journal is past its hard limit.
func (b *Bridge) overloaded() bool {
	limit := b.Config.AppService.MaxJournalBacklog
	return limit > 0 && b.Status().JournalBacklog >= limit
}

// healthThresholds are the config's thresholds of degraded health.
func (b *Bridge) healthThresholds() status.Thresholds {
	return status.Thresholds{MaxJournalBacklog: b.Config.Health.MaxJournalBacklog, MaxConsumerLag: b.Config.Health.MaxConsumerLag}
}

// statusSample holds the latest sample.
type statusSample = atomic.Pointer[status.Snapshot]
