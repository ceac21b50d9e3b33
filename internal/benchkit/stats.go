package benchkit

import (
	"slices"
	"time"
)

// Summary is the distribution of a set of latencies.
type Summary struct {
	N                       int
	P50, P90, P99, Max, Min time.Duration
	Mean                    time.Duration
}

// Summarize sorts a copy of samples and reads its distribution.
func Summarize(samples []time.Duration) Summary {
	if len(samples) == 0 {
		return Summary{}
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	var total time.Duration
	for _, d := range s {
		total += d
	}
	return Summary{
		N: len(s), Min: s[0], Max: s[len(s)-1], Mean: total / time.Duration(len(s)),
		P50: Percentile(s, 50), P90: Percentile(s, 90), P99: Percentile(s, 99),
	}
}

// Percentile is the nearest-rank percentile of sorted samples: always one
// of the samples, never an interpolation between two.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(p/100*float64(len(sorted)) + 0.999999)
	rank = max(1, min(rank, len(sorted)))
	return sorted[rank-1]
}

// MS is d in milliseconds, the unit of every report.
func MS(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
