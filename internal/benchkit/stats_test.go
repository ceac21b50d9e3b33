package benchkit

import (
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ten := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, c := range []struct {
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{nil, 50, 0},
		{[]time.Duration{7}, 0, 7},
		{[]time.Duration{7}, 99, 7},
		{ten, 0, 1}, // rank 0 is raised to the first sample
		{ten, 1, 1},
		{ten, 10, 1},
		{ten, 11, 2}, // nearest rank rounds up, never interpolates
		{ten, 50, 5},
		{ten, 90, 9},
		{ten, 99, 10},
		{ten, 100, 10},
	} {
		if got := Percentile(c.sorted, c.p); got != c.want {
			t.Errorf("Percentile(%v, %v) = %v, want %v", c.sorted, c.p, got, c.want)
		}
	}
}

func TestSummarize(t *testing.T) {
	samples := []time.Duration{5 * time.Millisecond, time.Millisecond, 130 * time.Millisecond,
		12345 * time.Microsecond, 2 * time.Millisecond, 7 * time.Millisecond, 3 * time.Millisecond}
	got := Summarize(samples)
	want := Summary{N: 7, P50: 5 * time.Millisecond, P90: 130 * time.Millisecond, P99: 130 * time.Millisecond,
		Max: 130 * time.Millisecond, Min: time.Millisecond, Mean: 22906428 * time.Nanosecond}
	if got != want {
		t.Errorf("Summarize = %+v, want %+v", got, want)
	}
	if samples[0] != 5*time.Millisecond {
		t.Error("Summarize sorted its caller's samples")
	}
	if (Summarize(nil) != Summary{}) {
		t.Error("Summarize(nil) is not empty")
	}
	if MS(1500*time.Microsecond) != 1.5 {
		t.Error("MS(1.5ms) != 1.5")
	}
}
