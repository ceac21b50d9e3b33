package consumer

import (
	"context"
	"math/rand/v2"
	"time"
)

// backoff doubles a wait from min to max, with jitter so that consumers that
// failed together do not retry in lockstep.
type backoff struct {
	min, max, next time.Duration
}

func newBackoff(min, max time.Duration) *backoff {
	return &backoff{min: min, max: max, next: min}
}

func (b *backoff) reset() { b.next = b.min }

// sleep waits the next interval; false when ctx ended first.
func (b *backoff) sleep(ctx context.Context) bool {
	wait := b.next/2 + rand.N(b.next/2+1)
	b.next = min(b.next*2, b.max)
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
