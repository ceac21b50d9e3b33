package bridge

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/daarion/matrix-bridge/pkg/leader"
)

// pressureInterval is how often every process samples the journal backlog,
// the consumers' lag and the leader lease: health and the transaction
// path's hard limit read the latest sample, never the database.
const pressureInterval = time.Second

// pressure is the latest sample of how far behind the bridge is.
type pressure struct {
	journalBacklog atomic.Int64 // answered transactions not yet in the log
	maxLag         atomic.Int64 // events the slowest consumer has not handled
	leaderHeld     atomic.Bool  // some process holds the leader lease
	sampled        atomic.Bool  // at least one sample was taken
}

// samplePressure samples until ctx ends.
func (b *Bridge) samplePressure(ctx context.Context) {
	ticker := time.NewTicker(pressureInterval)
	defer ticker.Stop()
	for {
		b.takePressureSample(ctx)
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

func (b *Bridge) takePressureSample(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, pressureInterval)
	defer cancel()
	p := &b.pressure
	if n, err := b.EventLog.JournalBacklog(ctx); err == nil {
		p.journalBacklog.Store(n)
	}
	if head, err := b.EventLog.Head(ctx); err == nil {
		var lag int64
		for _, name := range b.consumerNames() {
			if pos, err := b.EventLog.Cursor(ctx, name); err == nil {
				lag = max(lag, head-pos)
			}
		}
		p.maxLag.Store(lag)
	}
	if lease, err := leader.Current(ctx, b.DB); err == nil {
		p.leaderHeld.Store(lease.Held(time.Now()))
	}
	p.sampled.Store(true)
}

// overloaded reports whether the journal is past its hard limit.
func (b *Bridge) overloaded() bool {
	limit := b.Config.AppService.MaxJournalBacklog
	return limit > 0 && b.pressure.journalBacklog.Load() >= limit
}

// degradation lists why health is degraded ("" when it is not): no
// leader, a journal backlog or a consumer lag past its threshold.
func (b *Bridge) degradation() []string {
	p := &b.pressure
	if !p.sampled.Load() {
		return nil
	}
	var why []string
	if !p.leaderHeld.Load() {
		why = append(why, "no process leads")
	}
	if limit := b.Config.Health.MaxJournalBacklog; limit > 0 && p.journalBacklog.Load() >= limit {
		why = append(why, "journal backlog")
	}
	if limit := b.Config.Health.MaxConsumerLag; limit > 0 && p.maxLag.Load() >= limit {
		why = append(why, "consumer lag")
	}
	return why
}
