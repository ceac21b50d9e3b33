package eventlog_test

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// wakeWatch runs an indexer that never polls (1 h) on a Log of its own, as
// the leader process would, with the journal listener on, and watches it.
type wakeWatch struct {
	indexed    chan string
	listens    atomic.Int64
	mu         sync.Mutex
	waits      int
	lastWaitAt time.Time
}

func startListeningIndexer(t *testing.T, tdb testrig.TestDatabase) *wakeWatch {
	t.Helper()
	l := openLog(t, tdb)
	w := &wakeWatch{indexed: make(chan string, 100)}
	l.OnIndexerWaiting(func() {
		w.mu.Lock()
		w.waits++
		w.lastWaitAt = time.Now()
		w.mu.Unlock()
	})
	l.OnJournalListening(func() { w.listens.Add(1) })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.RunIndexer(ctx, testParser, eventlog.IndexerOptions{
			PollInterval: time.Hour,
			ListenDSN:    tdb.URI,
			Indexed: func(ids []string) {
				for _, id := range ids {
					w.indexed <- id
				}
			},
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	return w
}

// settle waits until the listener has started to listen `listens` times and
// the indexer has then been idle for a while: from here on, with the poll
// at 1 h, only a wake-up indexes what is journalled.
func (w *wakeWatch) settle(t *testing.T, listens int64) {
	t.Helper()
	testrig.Eventually(t, fmt.Sprintf("the journal listener to listen (%d)", listens), 20*time.Second,
		func() bool { return w.listens.Load() >= listens })
	testrig.Eventually(t, "the indexer to be idle", 20*time.Second, func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.waits > 0 && time.Since(w.lastWaitAt) > 300*time.Millisecond
	})
}

func (w *wakeWatch) wantIndexed(t *testing.T, txnID string, within time.Duration) {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case id := <-w.indexed:
			if id == txnID {
				return
			}
		case <-deadline:
			t.Fatalf("transaction %s was not indexed within %s", txnID, within)
		}
	}
}

// A transaction journalled by one process (a front door) wakes the indexer
// of another (the leader) on the same PostgreSQL at once, not at its poll.
func TestAnotherProcessesJournalWakesTheIndexer(t *testing.T) {
	tdb := testrig.NewTestDatabase(t, testrig.Postgres)
	front := openLog(t, tdb) // a pool of its own: another process
	w := startListeningIndexer(t, tdb)
	for i := range 2 {
		w.settle(t, 1)
		txnID := fmt.Sprintf("front%d", i)
		start := time.Now()
		if err := front.Journal(context.Background(), txnID, body("$"+txnID)); err != nil {
			t.Fatal(err)
		}
		w.wantIndexed(t, txnID, 5*time.Second)
		t.Logf("%s indexed by the other process %v after its journal", txnID, time.Since(start))
	}
}

// The listener's connection killed: it reconnects, the indexer reads the
// journal once for what it may have missed meanwhile, and a later journal
// still wakes it.
func TestJournalListenerReconnects(t *testing.T) {
	tdb := testrig.NewTestDatabase(t, testrig.Postgres)
	front := openLog(t, tdb)
	w := startListeningIndexer(t, tdb)
	w.settle(t, 1)

	admin, err := sql.Open("postgres", tdb.URI)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	ctx := context.Background()
	listenerPID := func() (pid int) {
		err := admin.QueryRowContext(ctx, `SELECT pid FROM pg_stat_activity
			WHERE datname = current_database() AND query = 'LISTEN "`+eventlog.JournalChannel+`"'`).Scan(&pid)
		if err != nil {
			t.Fatalf("finding the journal listener's connection: %v", err)
		}
		return pid
	}
	killed := listenerPID()
	// A row whose notification never comes, as if sent while the listener
	// was away: only the read after the reconnect (or the poll) finds it.
	if _, err = admin.ExecContext(ctx, `INSERT INTO txn_journal (txn_id, received_at, body) VALUES ($1, $2, $3)`,
		"missed", time.Now().UnixMilli(), string(body("$missed"))); err != nil {
		t.Fatal(err)
	}
	var terminated bool
	if err = admin.QueryRowContext(ctx, `SELECT pg_terminate_backend($1)`, killed).Scan(&terminated); err != nil || !terminated {
		t.Fatalf("pg_terminate_backend(%d) = %v, %v", killed, terminated, err)
	}
	w.wantIndexed(t, "missed", 10*time.Second)

	w.settle(t, 2)
	if pid := listenerPID(); pid == killed {
		t.Fatalf("the listener still uses the killed connection %d", pid)
	}
	if err = front.Journal(ctx, "after", body("$after")); err != nil {
		t.Fatal(err)
	}
	w.wantIndexed(t, "after", 5*time.Second)
}
