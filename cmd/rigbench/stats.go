package main

import (
	"slices"
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

// summary is the distribution of a set of latencies.
type summary struct {
	N    int
	P50  time.Duration
	P90  time.Duration
	P99  time.Duration
	Max  time.Duration
	Mean time.Duration
}

func summarize(samples []time.Duration) summary {
	if len(samples) == 0 {
		return summary{}
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	var total time.Duration
	for _, d := range s {
		total += d
	}
	return summary{
		N:    len(s),
		P50:  percentile(s, 50),
		P90:  percentile(s, 90),
		P99:  percentile(s, 99),
		Max:  s[len(s)-1],
		Mean: total / time.Duration(len(s)),
	}
}

// percentile is the nearest-rank percentile of sorted samples.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(p/100*float64(len(sorted)) + 0.999999)
	rank = max(1, min(rank, len(sorted)))
	return sorted[rank-1]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
