package eventlog_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// On SQLite, a transaction journalled while the indexer's commit holds the
// write lock waits for it in the process, not in SQLite's busy handler
// (which polls, sleeping up to 100 ms between tries). The pool's two
// connections have no busy timeout here, so a journal insert that reached
// SQLite while the lock was taken would fail at once with "database is
// locked".
func TestJournalWaitsForTheIndexersCommitInTheProcess(t *testing.T) {
	ctx := context.Background()
	db := testrig.OpenDatabase(t, testrig.NewTestDatabase(t, testrig.SQLite))
	db.RawDB.SetMaxOpenConns(2)
	conns := make([]interface{ Close() error }, 0, 2)
	for range 2 {
		c, err := db.RawDB.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err = c.ExecContext(ctx, `PRAGMA busy_timeout = 0`); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		_ = c.Close() // back to the pool, busy timeout 0
	}

	l := eventlog.New(db)
	inside, release := make(chan struct{}), make(chan struct{})
	var once, released sync.Once
	letGo := func() { released.Do(func() { close(release) }) }
	l.OnIndexerCommitting(func() {
		once.Do(func() {
			close(inside)
			<-release
		})
	})
	runIndexer(t, ctx, l)
	t.Cleanup(letGo) // before the indexer's stop (cleanups run last first)
	waitIndexerStarted(t, l)

	if err := l.JournalParsed(ctx, "t$w1", body("$w1"), handedEvent("$w1")); err != nil {
		t.Fatal(err)
	}
	<-inside // the indexer's transaction holds SQLite's write lock

	// A wait for the writer ends with its context: the answer's commit
	// timeout holds while the indexer commits.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	gaveUp := make(chan error, 1)
	go func() { gaveUp <- l.JournalParsed(short, "t$w0", body("$w0"), handedEvent("$w0")) }()
	select {
	case err := <-gaveUp:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("journalling with a context that ended while the indexer committed: %v, want its deadline", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a journal insert whose context ended kept waiting for the indexer's commit")
	}

	journalled := make(chan error, 1)
	go func() { journalled <- l.JournalParsed(ctx, "t$w2", body("$w2"), handedEvent("$w2")) }()
	select {
	case err := <-journalled:
		t.Fatalf("the journal insert returned (%v) while the indexer held the write lock; want it to wait", err)
	case <-time.After(100 * time.Millisecond):
	}
	letGo()
	if err := <-journalled; err != nil {
		t.Fatalf("journalling after the indexer's commit: %v", err)
	}
	if got := waitForEvents(t, l, 0, 2); got[0].EventID != "$w1" || got[1].EventID != "$w2" {
		t.Errorf("log %s, %s; want $w1, $w2", got[0].EventID, got[1].EventID)
	}
}
