package webhook

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// BenchmarkDueQueuesInAnOutage times the outbox search over an outage's
// outbox: 50 queues, each head waiting an hour for its retry, 6,000 rows due
// behind each (300,000 rows).
//
//	go test -run XXX -bench DueQueuesInAnOutage ./pkg/delivery/webhook/
func BenchmarkDueQueuesInAnOutage(b *testing.B) {
	for _, kind := range testrig.DatabaseKinds {
		b.Run(kind, func(b *testing.B) {
			ctx := context.Background()
			db := testrig.OpenDatabase(b, testrig.NewTestDatabase(b, kind))
			s := NewStore(db)
			if err := s.CreateSubscription(ctx, &Subscription{ID: "sub_a", Service: "a", RoomFilter: "*", URL: "https://a.example.org/", Secret: "sa", State: StateActive}); err != nil {
				b.Fatal(err)
			}
			now := time.Now()
			pos := int64(0)
			for q := range 50 {
				batch := make([]*Delivery, 0, 6000)
				for range 6000 {
					pos++
					batch = append(batch, &Delivery{SubscriptionID: "sub_a", Position: pos, RoomID: fmt.Sprintf("!r%d:s", q), EventID: "$e", Body: []byte(`{}`), NextAttemptAt: now})
				}
				if err := s.Enqueue(ctx, batch); err != nil {
					b.Fatal(err)
				}
				if err := s.Failed(ctx, batch[0], false, now.Add(time.Hour), now, "down"); err != nil {
					b.Fatal(err)
				}
			}
			if kind == testrig.Postgres {
				if _, err := db.Exec(ctx, "ANALYZE webhook_delivery"); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for b.Loop() {
				if keys, err := s.DueQueues(ctx, now, 1000); err != nil || len(keys) != 0 {
					b.Fatalf("DueQueues = %v, %v; want none (every head waits)", keys, err)
				}
			}
		})
	}
}
