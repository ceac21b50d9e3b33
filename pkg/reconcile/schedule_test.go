package reconcile

import (
	"context"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"
)

func TestGapWatch(t *testing.T) {
	for _, tc := range []struct {
		name     string
		batches  [][]string
		from, to int64 // the gap of the last batch; 0 for none
	}{
		{"the first id starts the watch", [][]string{{"41"}}, 0, 0},
		{"consecutive ids", [][]string{{"1", "2"}, {"3", "4"}}, 0, 0},
		{"a skipped id", [][]string{{"30"}, {"32", "33"}}, 30, 32},
		{"a skip inside a batch", [][]string{{"7", "8", "10"}}, 8, 10},
		{"the first gap of a batch", [][]string{{"7", "9", "12"}}, 7, 9},
		{"a resend is not a gap", [][]string{{"5", "6"}, {"6"}, {"5", "7"}}, 0, 0},
		{"a late transaction is not a gap", [][]string{{"30", "32"}, {"31", "33"}}, 0, 0},
		{"Dendrite's nanosecond ids are not watched", [][]string{{"1796301584278086291"}, {"1796301584278999999"}}, 0, 0},
		{"Dendrite's fallback ids are not watched", [][]string{{"1700000000000_3"}, {"1700000000999_1"}}, 0, 0},
		{"the bridge's own recovered transactions", [][]string{{"4"}, {TxnPrefix + "17.1"}, {"5"}}, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var w gapWatch
			var from, to int64
			for _, batch := range tc.batches {
				from, to, _ = w.observe(batch)
			}
			if from != tc.from || to != tc.to {
				t.Fatalf("gap %d→%d, want %d→%d", from, to, tc.from, tc.to)
			}
		})
	}
}

type noRooms struct{}

func (noRooms) CityRoomIDs(context.Context) ([]id.RoomID, error) { return nil, nil }

// runs reports each reconcile's trigger.
type runs chan string

func (r runs) ObserveReconcile(trigger string, _, _, _ int, _ time.Duration) { r <- trigger }

func (r runs) next(t *testing.T, want string) {
	t.Helper()
	select {
	case got := <-r:
		if got != want {
			t.Fatalf("a reconcile ran for %q, want %q", got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no reconcile for %q", want)
	}
}

func startSchedule(t *testing.T, sched Schedule) (*Reconciler, runs) {
	ran := make(runs, 4)
	rec := New(nil, noRooms{}, nil, Options{Observer: ran, Schedule: sched})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		rec.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return rec, ran
}

func TestScheduleRunsOnTriggers(t *testing.T) {
	rec, ran := startSchedule(t, Schedule{AfterStart: 10 * time.Millisecond, OnTransactionGap: true, MinInterval: 300 * time.Millisecond})
	ran.next(t, TriggerStart)
	start := time.Now()
	rec.ObserveTransactions([]string{"10", "11"})
	rec.ObserveTransactions([]string{"13"})
	ran.next(t, TriggerTransactionGap)
	if waited := time.Since(start); waited < 200*time.Millisecond {
		t.Fatalf("the gap's reconcile ran %v after the start's, within min_interval", waited)
	}
	rec.Trigger(TriggerHomeserverBack)
	ran.next(t, TriggerHomeserverBack)
}

func TestScheduleIgnoresGapsWhenOff(t *testing.T) {
	rec, ran := startSchedule(t, Schedule{})
	rec.Trigger(TriggerCommand)
	ran.next(t, TriggerCommand)
	rec.ObserveTransactions([]string{"10"})
	rec.ObserveTransactions([]string{"12"})
	// A gap's trigger would be queued first, and this one join it.
	rec.Trigger(TriggerInterval)
	ran.next(t, TriggerInterval)
}
