package messaging

import (
	"context"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// The store's rows on both databases: a reservation, its completion, the
// records of sent events and their pruning.
func TestIdempotencyStore(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx := context.Background()
		s := NewIdempotencyStore(testrig.OpenDatabase(t, tdb))
		if res, err := s.get(ctx, "svc", "k1"); res != nil || err != nil {
			t.Fatalf("unknown key = %+v, %v", res, err)
		}
		for i, want := range []bool{true, false} {
			if won, err := s.reserve(ctx, "svc", "k1", "h1"); won != want || err != nil {
				t.Fatalf("reservation %d = %v, %v; want %v", i, won, err, want)
			}
		}
		if won, err := s.reserve(ctx, "svc", "k2", "h2"); !won || err != nil {
			t.Fatalf("reservation of k2 = %v, %v", won, err)
		}
		if res, err := s.get(ctx, "svc", "k1"); err != nil || res == nil || res.RequestHash != "h1" || res.EventID != "" {
			t.Fatalf("reserved key = %+v, %v", res, err)
		}
		sentAt := time.Now().Add(-time.Minute)
		if err := s.complete(ctx, "svc", "k1", idempotentResult{RequestHash: "h1", EventID: "$a", SentAt: sentAt}); err != nil {
			t.Fatal(err)
		}
		if res, err := s.get(ctx, "svc", "k1"); err != nil || res == nil || res.EventID != "$a" || res.SentAt.UnixMilli() != sentAt.UnixMilli() {
			t.Fatalf("completed key = %+v, %v", res, err)
		}

		for _, rec := range []struct{ eventID, key string }{{"$a", "k1"}, {"$b", ""}, {"$a", "other"}} {
			if err := s.recordSent(ctx, id.EventID(rec.eventID), "svc", rec.key); err != nil {
				t.Fatal(err)
			}
		}
		records, err := s.SentBy(ctx, []string{"$a", "$b", "$unknown"})
		if err != nil || len(records) != 2 || records["$a"] != (SendRecord{"svc", "k1"}) || records["$b"] != (SendRecord{"svc", ""}) {
			t.Fatalf("SentBy = %+v, %v", records, err)
		}
		if records, err = s.SentBy(ctx, nil); records == nil || len(records) != 0 || err != nil {
			t.Fatalf("SentBy(nil) = %+v, %v", records, err)
		}

		// The completed key and both records go; the reservation of k2 stays.
		if n, err := s.Prune(ctx, time.Now().Add(time.Hour)); n != 3 || err != nil {
			t.Fatalf("pruned %d, %v; want 3", n, err)
		}
		if res, err := s.get(ctx, "svc", "k1"); res != nil || err != nil {
			t.Errorf("pruned key = %+v, %v", res, err)
		}
		if res, err := s.get(ctx, "svc", "k2"); res == nil || err != nil {
			t.Errorf("reservation after pruning = %+v, %v", res, err)
		}
		if records, err = s.SentBy(ctx, []string{"$a", "$b"}); len(records) != 0 || err != nil {
			t.Errorf("SentBy after pruning = %+v, %v", records, err)
		}
	})
}
