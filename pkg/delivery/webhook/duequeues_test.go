package webhook

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// The outbox search returns the queues of active subscriptions whose head
// is due, the longest waiting head first: not a queue whose head waits for
// a retry (however many rows behind it are due), not a queue of dead
// letters only, not a paused subscription's.
func TestDueQueuesAreTheDueHeads(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx := context.Background()
		s := NewStore(testrig.OpenDatabase(t, tdb))
		for _, sub := range []*Subscription{
			{ID: "sub_a", Service: "a", RoomFilter: "*", URL: "https://a.example.org/", Secret: "sa", State: StateActive},
			{ID: "sub_b", Service: "b", RoomFilter: "*", URL: "https://b.example.org/", Secret: "sb", State: StateActive},
			{ID: "sub_p", Service: "p", RoomFilter: "*", URL: "https://p.example.org/", Secret: "sp", State: StatePaused},
		} {
			if err := s.CreateSubscription(ctx, sub); err != nil {
				t.Fatal(err)
			}
		}
		now := time.Now()
		row := func(sub, room string, pos int64) *Delivery {
			return &Delivery{SubscriptionID: sub, Position: pos, RoomID: room, EventID: "$e", Body: []byte(`{}`), NextAttemptAt: now}
		}
		rows := []*Delivery{
			row("sub_a", "!due:s", 10),
			row("sub_a", "!waits:s", 5), row("sub_a", "!waits:s", 20), row("sub_a", "!waits:s", 21),
			row("sub_a", "!dead:s", 1), row("sub_a", "!dead:s", 2),
			row("sub_a", "!deadthendue:s", 3), row("sub_a", "!deadthendue:s", 30),
			row("sub_b", "!due:s", 8),
			row("sub_p", "!due:s", 7),
		}
		if err := s.Enqueue(ctx, rows); err != nil {
			t.Fatal(err)
		}
		fail := func(d *Delivery, dead bool, next time.Time) {
			if err := s.Failed(ctx, d, dead, next, now, "refused"); err != nil {
				t.Fatal(err)
			}
		}
		fail(rows[1], false, now.Add(time.Hour)) // the head of !waits waits an hour
		fail(rows[4], true, now)                 // !dead holds dead letters only
		fail(rows[5], true, now)
		fail(rows[6], true, now) // !deadthendue: a dead letter, then a due row

		for _, tc := range []struct {
			name  string
			at    time.Time
			limit int
			want  []queueKey
		}{
			{"now", now, 10, []queueKey{{"sub_b", "!due:s"}, {"sub_a", "!due:s"}, {"sub_a", "!deadthendue:s"}}},
			{"the limit", now, 2, []queueKey{{"sub_b", "!due:s"}, {"sub_a", "!due:s"}}},
			{"once the retry is due", now.Add(2 * time.Hour), 10,
				[]queueKey{{"sub_a", "!waits:s"}, {"sub_b", "!due:s"}, {"sub_a", "!due:s"}, {"sub_a", "!deadthendue:s"}}},
			{"before anything is due", now.Add(-time.Hour), 10, nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got, err := s.DueQueues(ctx, tc.at, tc.limit)
				if err != nil || !slices.Equal(got, tc.want) {
					t.Errorf("DueQueues = %v, %v; want %v", got, err, tc.want)
				}
			})
		}
		if got, err := NewStore(testrig.OpenDatabase(t, testrig.NewTestDatabase(t, tdb.Name))).DueQueues(ctx, now, 10); err != nil || len(got) != 0 {
			t.Errorf("an empty outbox: %v, %v", got, err)
		}
	})
}
