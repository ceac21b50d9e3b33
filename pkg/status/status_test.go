package status

import (
	"slices"
	"testing"
	"time"
)

func TestDegradationAndLeader(t *testing.T) {
	limits := Thresholds{MaxJournalBacklog: 10, MaxConsumerLag: 100}
	for _, tc := range []struct {
		name   string
		s      *Snapshot
		why    []string
		leader string
	}{
		{"before the first sample", &Snapshot{}, nil, "unknown"},
		{"healthy, leading", &Snapshot{At: time.Now(), LeaderHeld: true, Leading: true}, nil, "this process"},
		{"another process leads", &Snapshot{At: time.Now(), LeaderHeld: true}, nil, "another process"},
		{"nobody leads", &Snapshot{At: time.Now()}, []string{"no process leads"}, "none"},
		{"backlog at the threshold", &Snapshot{At: time.Now(), LeaderHeld: true, JournalBacklog: 10}, []string{"journal backlog"}, "another process"},
		{"lag past the threshold", &Snapshot{At: time.Now(), LeaderHeld: true, MaxLag: 101}, []string{"consumer lag"}, "another process"},
		{"everything", &Snapshot{At: time.Now(), JournalBacklog: 11, MaxLag: 100}, []string{"no process leads", "journal backlog", "consumer lag"}, "none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.s.Degradation(limits); !slices.Equal(got, tc.why) {
				t.Errorf("Degradation = %q, want %q", got, tc.why)
			}
			if got := tc.s.Leader(); got != tc.leader {
				t.Errorf("Leader = %q, want %q", got, tc.leader)
			}
		})
	}
	// No thresholds: only leadership degrades.
	if got := (&Snapshot{At: time.Now(), LeaderHeld: true, JournalBacklog: 1 << 40, MaxLag: 1 << 40}).Degradation(Thresholds{}); got != nil {
		t.Errorf("without thresholds: %q", got)
	}
}
