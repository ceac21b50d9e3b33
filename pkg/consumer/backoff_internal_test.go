package consumer

import (
	"testing"
	"time"
)

// Waits double from min with jitter and never pass max.
func TestBackoffStaysWithinItsBounds(t *testing.T) {
	const min, max = 100 * time.Millisecond, 2 * time.Second
	b := newBackoff(min, max)
	for round := 0; round < 3; round++ {
		var last time.Duration
		for i := 0; i < 12; i++ {
			wait := b.exp.NextBackOff()
			if wait > max || wait < time.Duration(float64(min)*(1-jitter)) {
				t.Fatalf("round %d wait %d = %v, outside [%v, %v]", round, i, wait, time.Duration(float64(min)*(1-jitter)), max)
			}
			if i == 0 && wait > time.Duration(float64(min)*(1+jitter))+1 {
				t.Fatalf("round %d first wait %v, want about %v", round, wait, min)
			}
			last = wait
		}
		if last < max/2 {
			t.Errorf("round %d: after 12 failures the wait is %v, want near %v", round, last, max)
		}
		b.reset()
	}
}
