package main

import (
	"context"
	"sync"
	"time"
)

// recorder collects latencies from several goroutines.
type recorder struct {
	mu      sync.Mutex
	samples []time.Duration
	errors  int
	lastErr string
}

func (r *recorder) add(d time.Duration) {
	r.mu.Lock()
	r.samples = append(r.samples, d)
	r.mu.Unlock()
}

func (r *recorder) fail(err string) {
	r.mu.Lock()
	r.errors++
	r.lastErr = err
	r.mu.Unlock()
}

// merge adds a goroutine's own samples (cheaper than locking per sample).
func (r *recorder) merge(samples []time.Duration, errors int, lastErr string) {
	r.mu.Lock()
	r.samples = append(r.samples, samples...)
	r.errors += errors
	if lastErr != "" {
		r.lastErr = lastErr
	}
	r.mu.Unlock()
}

// failurePause is how long a closed-loop client waits after a failed send or
// a request that got no answer, so that a part that is down is not hammered.
const failurePause = 10 * time.Millisecond

// closedLoop runs op back to back in workers goroutines until duration has
// passed or ctx ends, and returns what they recorded and how long it took.
// op is given its goroutine's number and how many calls that goroutine
// made before; each goroutine keeps its own samples until the end.
func closedLoop(ctx context.Context, workers int, duration time.Duration, op func(worker, n int) (time.Duration, error)) (*recorder, time.Duration) {
	rec := &recorder{}
	start := time.Now()
	deadline := start.Add(duration)
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			samples := make([]time.Duration, 0, 4096)
			errs, lastErr := 0, ""
			for n := 0; ctx.Err() == nil && time.Now().Before(deadline); n++ {
				d, err := op(i, n)
				if err != nil {
					errs, lastErr = errs+1, err.Error()
					continue
				}
				samples = append(samples, d)
			}
			rec.merge(samples, errs, lastErr)
		}()
	}
	wg.Wait()
	return rec, time.Since(start)
}
