package webhook

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// The store's rows round-trip on both databases: event types as JSON, an
// outbox enqueued over several INSERTs with repeats skipped, dead letters
// and their redelivery.
func TestStore(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx := context.Background()
		s := NewStore(testrig.OpenDatabase(t, tdb))
		if sub, err := s.Subscription(ctx, "nope"); sub != nil || err != nil {
			t.Fatalf("unknown subscription = %+v, %v", sub, err)
		}
		for _, sub := range []*Subscription{
			{ID: "sub_a", Service: "a", RoomFilter: "*", URL: "https://a.example.org/", EventTypes: []string{"m.room.message", "messaging.message.created"}, Secret: "sa", State: StateActive},
			{ID: "sub_b", Service: "b", RoomFilter: "city:plaza", URL: "https://b.example.org/", Secret: "sb", State: StatePaused},
		} {
			if err := s.CreateSubscription(ctx, sub); err != nil {
				t.Fatal(err)
			}
		}
		a, err := s.Subscription(ctx, "sub_a")
		if err != nil || a == nil || !slices.Equal(a.EventTypes, []string{"m.room.message", "messaging.message.created"}) ||
			a.URL != "https://a.example.org/" || a.Secret != "sa" || a.State != StateActive || time.Since(a.CreatedAt) > time.Minute {
			t.Fatalf("sub_a = %+v, %v", a, err)
		}
		if b, err := s.Subscription(ctx, "sub_b"); err != nil || b == nil || len(b.EventTypes) != 0 || b.RoomFilter != "city:plaza" {
			t.Fatalf("sub_b = %+v, %v", b, err)
		}
		if err := s.SetState(ctx, "sub_b", StateDisabled, "gone"); err != nil {
			t.Fatal(err)
		}
		list, err := s.Subscriptions(ctx, "b")
		if err != nil || len(list) != 1 || list[0].State != StateDisabled || list[0].StateReason != "gone" {
			t.Fatalf("subscriptions of b = %+v, %v", list, err)
		}
		if n, err := s.CountSubscriptions(ctx, "a"); n != 1 || err != nil {
			t.Fatalf("count of a = %d, %v", n, err)
		}

		now := time.Now()
		var deliveries []*Delivery
		for pos := int64(1); pos <= 2*enqueueChunk+1; pos++ {
			deliveries = append(deliveries, &Delivery{SubscriptionID: "sub_a", Position: pos, RoomID: fmt.Sprintf("!r%d:s", pos%3),
				EventID: fmt.Sprint("$e", pos), Body: []byte(fmt.Sprintf(`{"n":%d}`, pos)), NextAttemptAt: now})
		}
		for range 2 { // the second time, every delivery is already there
			if err := s.Enqueue(ctx, deliveries); err != nil {
				t.Fatal(err)
			}
		}
		if pending, dead, err := s.Counts(ctx, "sub_a"); pending != int64(len(deliveries)) || dead != 0 || err != nil {
			t.Fatalf("counts = %d, %d, %v", pending, dead, err)
		}
		keys, err := s.DueQueues(ctx, now, 10)
		if err != nil || len(keys) != 3 || keys[0] != (queueKey{"sub_a", "!r1:s"}) {
			t.Fatalf("due queues = %+v, %v", keys, err)
		}
		head, err := s.QueueHead(ctx, keys[0], 2)
		if err != nil || len(head) != 2 || head[0].Position != 1 || head[1].Position != 4 || string(head[0].Body) != `{"n":1}` ||
			head[0].State != "pending" || head[0].Attempts != 0 || !head[0].FirstFailedAt.IsZero() || head[0].NextAttemptAt.UnixMilli() != now.UnixMilli() {
			t.Fatalf("queue head = %+v, %v", head, err)
		}
		if err := s.Failed(ctx, head[0], true, now, now, "refused"); err != nil {
			t.Fatal(err)
		}
		if err := s.Delivered(ctx, "sub_a", []int64{2, 3}); err != nil {
			t.Fatal(err)
		}
		dead, err := s.DeadLetters(ctx, "sub_a", 10)
		if err != nil || len(dead) != 1 || dead[0].Position != 1 || dead[0].Attempts != 1 || dead[0].LastError != "refused" ||
			dead[0].FirstFailedAt.UnixMilli() != now.UnixMilli() {
			t.Fatalf("dead letters = %+v, %v", dead, err)
		}
		if pending, dead, err := s.Totals(ctx); pending != int64(len(deliveries)-3) || dead != 1 || err != nil {
			t.Fatalf("totals = %d, %d, %v", pending, dead, err)
		}
		// Each state is counted up to the cap.
		if pending, dead, err := s.TotalsUpTo(ctx, 1); pending != 1 || dead != 1 || err != nil {
			t.Fatalf("totals up to 1 = %d, %d, %v; want 1, 1", pending, dead, err)
		}
		if n, err := s.Redeliver(ctx, "sub_a", "$e1"); n != 1 || err != nil {
			t.Fatalf("redeliver = %d, %v", n, err)
		}
		if dead, err := s.DeadLetters(ctx, "sub_a", 10); len(dead) != 0 || err != nil {
			t.Fatalf("dead letters after redelivery = %+v, %v", dead, err)
		}
		if err := s.DeleteSubscription(ctx, "sub_a"); err != nil {
			t.Fatal(err)
		}
		if pending, dead, err := s.Totals(ctx); pending != 0 || dead != 0 || err != nil {
			t.Fatalf("totals after delete = %d, %d, %v", pending, dead, err)
		}
	})
}
