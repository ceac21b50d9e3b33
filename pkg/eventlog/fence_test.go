package eventlog_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/leader"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// A leader whose epoch no longer holds the lease (it froze, and a standby
// took over) writes nothing: its cursor saves and its journal indexing are
// refused by the fence, in their own transactions; the current epoch's go
// through.
func TestStaleLeaderWritesNothing(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		db := testrig.OpenDatabase(t, tdb)
		l := eventlog.New(db)
		ctx := context.Background()
		// The lease is at epoch 2: epoch 1 is a leader that was replaced.
		if _, err := db.Exec(ctx, `INSERT INTO leader_lease (name, holder, epoch, expires_at) VALUES ('consumers', 'new', 2, $1)`,
			time.Now().Add(time.Hour).UnixMilli()); err != nil {
			t.Fatal(err)
		}
		stale, current := leader.WithEpoch(ctx, 1), leader.WithEpoch(ctx, 2)

		if err := l.SaveCursor(current, "webhooks", 10); err != nil {
			t.Fatal(err)
		}
		if err := l.SaveCursor(stale, "webhooks", 5); !errors.Is(err, leader.ErrFenced) {
			t.Errorf("stale cursor save: %v, want ErrFenced", err)
		}
		if pos, err := l.Cursor(ctx, "webhooks"); err != nil || pos != 10 {
			t.Errorf("cursor %d (%v), want 10: the stale leader moved it", pos, err)
		}

		if err := l.Journal(ctx, "t1", []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		if _, err := l.IndexPending(stale, testParser); !errors.Is(err, leader.ErrFenced) {
			t.Errorf("stale indexing: %v, want ErrFenced", err)
		}
		if n, err := l.JournalBacklog(ctx); err != nil || n != 1 {
			t.Errorf("journal backlog %d (%v) after the stale leader's indexing, want 1", n, err)
		}
		if moved, err := l.IndexPending(current, testParser); err != nil || moved != 1 {
			t.Errorf("current leader's indexing: %d %v", moved, err)
		}
	})
}
