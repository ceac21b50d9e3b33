package eventlog_test

import (
	"context"
	"testing"
	"time"

	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// appendLock is eventlog's appendLockKey: a session holding it keeps the
// indexer from committing.
const appendLock = 0x44414152494f4e

// Pace holds the answer back while the indexer is limit events or more
// behind, and lets it go once they are in the log; or after maxWait. The
// indexer is held up by another session holding the append lock
// (PostgreSQL).
func TestPaceWaitsForTheIndexer(t *testing.T) {
	tdb := testrig.NewTestDatabase(t, testrig.Postgres)
	ctx := context.Background()
	db := testrig.OpenDatabase(t, tdb)
	l := eventlog.New(db)
	runIndexer(t, ctx, l)
	waitIndexerStarted(t, l)
	if waited := l.Pace(ctx, 1, 1, time.Minute); waited != 0 {
		t.Fatalf("waited %v with nothing to index", waited)
	}

	blocker, err := db.RawDB.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Close()
	hold := func() {
		t.Helper()
		if _, err := blocker.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, int64(appendLock)); err != nil {
			t.Fatal(err)
		}
	}
	release := func() {
		if _, err := blocker.ExecContext(ctx, `SELECT pg_advisory_unlock($1)`, int64(appendLock)); err != nil {
			t.Error(err)
		}
	}

	// Held up: two events behind, limit 2, released after 300 ms.
	hold()
	for _, id := range []string{"$p1", "$p2"} {
		if err := l.JournalParsed(ctx, "t"+id, body(id), handedEvent(id)); err != nil {
			t.Fatal(err)
		}
	}
	go func() { time.Sleep(300 * time.Millisecond); release() }()
	waited := l.Pace(ctx, 1, 2, time.Minute)
	// Below the limit again: one of the two indexed at least (the indexer
	// may have read the first alone, before the second was journalled).
	if got, err := l.Read(ctx, 0, 10); err != nil || len(got) == 0 {
		t.Fatalf("Pace returned (after %v) with %d events in the log (%v), want the backlog below the limit", waited, len(got), err)
	}
	waitForEvents(t, l, 0, 2)
	if waited < 200*time.Millisecond {
		t.Errorf("waited %v, want about the 300 ms the indexer was held up", waited)
	}
	// Below the limit: no wait.
	if waited := l.Pace(ctx, 1, 2, time.Minute); waited != 0 {
		t.Errorf("waited %v below the limit", waited)
	}

	// Held up for longer than maxWait: the answer goes after maxWait.
	hold()
	defer release()
	for _, id := range []string{"$q1", "$q2"} {
		if err := l.JournalParsed(ctx, "t"+id, body(id), handedEvent(id)); err != nil {
			t.Fatal(err)
		}
	}
	if waited := l.Pace(ctx, 1, 2, 200*time.Millisecond); waited < 200*time.Millisecond || waited > 5*time.Second {
		t.Errorf("waited %v, want maxWait (200 ms)", waited)
	}
	if active, held := l.Handing(); !active || held != 2 {
		t.Errorf("after maxWait: handing %v, %d rows held, want the two not yet indexed", active, held)
	}
}

// A limit of 0 never waits.
func TestPaceOff(t *testing.T) {
	l := eventlog.New(testrig.OpenDatabase(t, testrig.NewTestDatabase(t, testrig.SQLite)))
	if waited := l.Pace(context.Background(), 100, 0, time.Minute); waited != 0 {
		t.Errorf("waited %v", waited)
	}
}
