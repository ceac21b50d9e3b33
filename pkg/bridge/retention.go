package bridge

import (
	"context"
	"time"

	"github.com/rs/zerolog"
)

// runRetention prunes, every retention.interval while this process leads,
// what no part of the bridge needs any more: events every consumer passed
// long enough ago, old transaction records, sent-event records and
// completed Idempotency-Keys, and old dead letters. Every delete is fenced.
func (b *Bridge) runRetention(ctx context.Context) {
	log := zerolog.Ctx(ctx).With().Str("component", "retention").Logger()
	r := b.Config.Retention
	ticker := time.NewTicker(r.Every())
	defer ticker.Stop()
	for {
		b.pruneOnce(ctx, log)
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

func (b *Bridge) pruneOnce(ctx context.Context, log zerolog.Logger) {
	r := b.Config.Retention
	now := time.Now()
	if keep := r.EventsFor(); keep > 0 {
		upTo, err := b.EventLog.MinCursor(ctx, b.consumerNames())
		if err == nil {
			var n int64
			for {
				deleted, err := b.EventLog.Prune(ctx, upTo, now.Add(-keep))
				n += deleted
				if err != nil || deleted == 0 || ctx.Err() != nil {
					break
				}
			}
			if n > 0 {
				log.Info().Int64("events", n).Msg("Pruned the event log")
			}
		}
	}
	prune := func(what string, keep time.Duration, fn func(context.Context, time.Time) (int64, error)) {
		if keep <= 0 {
			return
		}
		if n, err := fn(ctx, now.Add(-keep)); err != nil && ctx.Err() == nil {
			log.Warn().Err(err).Str("what", what).Msg("Pruning failed; retrying at the next interval")
		} else if n > 0 {
			log.Info().Int64("rows", n).Str("what", what).Msg("Pruned")
		}
	}
	prune("transaction records", r.TransactionsFor(), b.EventLog.PruneTransactions)
	prune("sent events and idempotency keys", r.SentFor(), b.idempotency.Prune)
	prune("dead letters", r.DeadLettersFor(), b.webhookStore.PruneDeadLetters)
}
