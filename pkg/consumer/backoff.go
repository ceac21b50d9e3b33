package consumer

import (
	"context"
	"time"

	cbackoff "github.com/cenkalti/backoff/v5"

	"github.com/daarion/matrix-bridge/pkg/clock"
)

// backoff is an exponential backoff from min to max with jitter, so that
// consumers that failed together do not retry in lockstep.
type backoff struct {
	exp *cbackoff.ExponentialBackOff
}

// jitter is how far a wait may stray from the doubling interval, either way.
const jitter = 0.25

func newBackoff(min, max time.Duration) *backoff {
	exp := cbackoff.NewExponentialBackOff()
	exp.InitialInterval = min
	exp.Multiplier = 2
	exp.RandomizationFactor = jitter
	// The library caps the interval before jitter; cap it so that a wait
	// with jitter never passes max.
	exp.MaxInterval = time.Duration(float64(max) / (1 + jitter))
	exp.Reset()
	return &backoff{exp: exp}
}

func (b *backoff) reset() { b.exp.Reset() }

// sleep waits the next interval; false when ctx ended first.
func (b *backoff) sleep(ctx context.Context) bool {
	return clock.Sleep(ctx, b.exp.NextBackOff())
}
