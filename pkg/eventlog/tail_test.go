package eventlog_test

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/leader"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// runIndexer runs l's indexer until the test ends.
func runIndexer(t *testing.T, ctx context.Context, l *eventlog.Log) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.RunIndexer(ctx, testParser, eventlog.IndexerOptions{PollInterval: 50 * time.Millisecond})
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// waitForEvents reads l after position until it returns want events (the
// indexer works in the background), or fails the test after 10 s.
func waitForEvents(t *testing.T, l *eventlog.Log, after int64, want int) []*eventlog.Event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		changed := l.Changed()
		got, err := l.Read(context.Background(), after, 100000)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) >= want {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("read %d events after %d, want %d", len(got), after, want)
		}
		select {
		case <-changed:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// The indexing process's readers are served from its in-memory tail, and
// what they get is what the database holds, field for field: positions
// (with the duplicates the insert skipped left out), transaction ids,
// arrival times, bodies. Events indexed before the indexer started (by an
// earlier leader) come from the database, the tail starting at the head.
func TestTailReadsWhatTheDatabaseHolds(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx := context.Background()
		db := testrig.OpenDatabase(t, tdb)
		indexing, fromDB := eventlog.New(db), eventlog.New(db)

		// An earlier leader's events.
		if err := indexing.Journal(ctx, "t0", body("$old1", "$old2")); err != nil {
			t.Fatal(err)
		}
		if _, err := indexing.IndexPending(ctx, testParser); err != nil {
			t.Fatal(err)
		}
		head, err := indexing.Head(ctx)
		if err != nil || head == 0 {
			t.Fatalf("head %d, %v", head, err)
		}

		runIndexer(t, ctx, indexing)
		for _, j := range []struct {
			txn string
			ids []string
		}{
			{"t1", []string{"$a", "$b"}},
			{"t1", []string{"$a", "$b"}},          // resent: nothing new
			{"t2", []string{"$c", "$old1", "$d"}}, // one the log had already
			{"t3", []string{"$e", "$e", "$f"}},    // one id twice
		} {
			if err := indexing.Journal(ctx, j.txn, body(j.ids...)); err != nil {
				t.Fatal(err)
			}
		}
		waitForEvents(t, indexing, head, 6)

		if !indexing.TailCovers(head) {
			t.Fatalf("a read after the head at the indexer's start (%d) is not served from the tail", head)
		}
		if indexing.TailCovers(head - 1) {
			t.Errorf("a read after %d, before the tail's start %d, is served from the tail", head-1, head)
		}
		if fromDB.TailCovers(0) {
			t.Fatal("a log that does not index serves reads from a tail")
		}
		want, err := fromDB.Read(ctx, 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(want) != 8 {
			t.Fatalf("the database holds %d events, want 8", len(want))
		}
		for after := int64(0); after <= want[len(want)-1].Position; after++ {
			for _, limit := range []int{1, 3, 1000} {
				got, err := indexing.Read(ctx, after, limit)
				if err != nil {
					t.Fatal(err)
				}
				exp, err := fromDB.Read(ctx, after, limit)
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != len(exp) {
					t.Fatalf("after %d limit %d: %d events, the database %d", after, limit, len(got), len(exp))
				}
				for i := range got {
					g, e := *got[i], *exp[i]
					if !g.ReceivedAt.Equal(e.ReceivedAt) {
						t.Errorf("after %d: event %s received at %v, the database %v", after, g.EventID, g.ReceivedAt, e.ReceivedAt)
					}
					g.ReceivedAt, e.ReceivedAt = time.Time{}, time.Time{}
					if !reflect.DeepEqual(g, e) {
						t.Errorf("after %d: got %+v\nthe database %+v", after, g, e)
					}
				}
			}
		}
	})
}

// A leader that lost the lease has its indexing refused; its tail, which
// no longer sees every commit (the new leader's go to the database), is
// switched off, and its readers — the internal API serves in every process
// — read the new leader's events from the database instead of a tail that
// says they are caught up.
func TestTailOffAfterAFailedCommit(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx := context.Background()
		db := testrig.OpenDatabase(t, tdb)
		if _, err := db.Exec(ctx, `INSERT INTO leader_lease (name, holder, epoch, expires_at) VALUES ('consumers', 'old', 1, $1)`,
			time.Now().Add(time.Hour).UnixMilli()); err != nil {
			t.Fatal(err)
		}
		old, successor := eventlog.New(db), eventlog.New(db)
		runIndexer(t, leader.WithEpoch(ctx, 1), old)
		if err := old.Journal(ctx, "t1", body("$a")); err != nil {
			t.Fatal(err)
		}
		first := waitForEvents(t, old, 0, 1)
		if !old.TailCovers(first[0].Position) {
			t.Fatal("the leader's reads are not served from its tail")
		}

		// A standby takes over and indexes; the old leader then journals,
		// and its indexer's commit is refused by the fence.
		if _, err := db.Exec(ctx, `UPDATE leader_lease SET epoch = 2, holder = 'new'`); err != nil {
			t.Fatal(err)
		}
		if err := successor.Journal(ctx, "t2", body("$b")); err != nil {
			t.Fatal(err)
		}
		if _, err := successor.IndexPending(leader.WithEpoch(ctx, 2), testParser); err != nil {
			t.Fatal(err)
		}
		if err := old.Journal(ctx, "t3", body("$c")); err != nil {
			t.Fatal(err)
		}
		got := waitForEvents(t, old, first[0].Position, 1)
		if got[0].EventID != "$b" {
			t.Errorf("read %s after the old leader's last event, want the successor's $b", got[0].EventID)
		}
	})
}
