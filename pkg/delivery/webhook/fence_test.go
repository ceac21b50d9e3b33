package webhook

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/daarion/matrix-bridge/pkg/leader"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// A replaced leader's outbox changes are refused by the fence: it cannot
// enqueue, mark delivered or record failures over its successor's work.
func TestStaleLeaderCannotChangeTheOutbox(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx := context.Background()
		db := testrig.OpenDatabase(t, tdb)
		if _, err := db.Exec(ctx, `INSERT INTO leader_lease (name, holder, epoch, expires_at) VALUES ('consumers', 'new', 2, $1)`,
			time.Now().Add(time.Hour).UnixMilli()); err != nil {
			t.Fatal(err)
		}
		stale, current := leader.WithEpoch(ctx, 1), leader.WithEpoch(ctx, 2)
		store := NewStore(db)
		sub := &Subscription{ID: "sub_fence", Service: "svc", URL: "http://127.0.0.1:1/hook", Secret: "whsec_x", RoomFilter: "*", State: StateActive}
		if err := store.CreateSubscription(ctx, sub); err != nil {
			t.Fatal(err)
		}
		d := &Delivery{SubscriptionID: sub.ID, Position: 1, RoomID: "!r:s", EventID: "$1", Body: []byte(`{}`), NextAttemptAt: time.Now()}
		if err := store.Enqueue(stale, []*Delivery{d}); !errors.Is(err, leader.ErrFenced) {
			t.Errorf("stale enqueue: %v, want ErrFenced", err)
		}
		if pending, _, _ := store.Counts(ctx, sub.ID); pending != 0 {
			t.Errorf("%d pending after the stale enqueue", pending)
		}
		if err := store.Enqueue(current, []*Delivery{d}); err != nil {
			t.Fatal(err)
		}
		if err := store.Failed(stale, d, true, time.Now(), time.Now(), "x"); !errors.Is(err, leader.ErrFenced) {
			t.Errorf("stale failure record: %v, want ErrFenced", err)
		}
		if err := store.Delivered(stale, sub.ID, []int64{1}); !errors.Is(err, leader.ErrFenced) {
			t.Errorf("stale delivered: %v, want ErrFenced", err)
		}
		if pending, dead, _ := store.Counts(ctx, sub.ID); pending != 1 || dead != 0 {
			t.Errorf("pending %d dead %d after the stale changes, want 1 and 0", pending, dead)
		}
		if err := store.Delivered(current, sub.ID, []int64{1}); err != nil {
			t.Fatal(err)
		}
	})
}
