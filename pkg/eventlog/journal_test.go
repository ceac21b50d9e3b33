package eventlog_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// testParser reads bodies of the form {"events":[{"event_id":…}, …]}.
func testParser(txnID string, body []byte) ([]eventlog.IncomingEvent, error) {
	var b struct {
		Events []json.RawMessage `json:"events"`
	}
	if err := json.Unmarshal(body, &b); err != nil {
		return nil, err
	}
	var out []eventlog.IncomingEvent
	for _, raw := range b.Events {
		var e struct {
			EventID string `json:"event_id"`
		}
		_ = json.Unmarshal(raw, &e)
		out = append(out, eventlog.IncomingEvent{EventID: e.EventID, Kind: eventlog.KindTimeline, RoomID: "!r:s", Type: "m.room.message", JSON: string(raw)})
	}
	return out, nil
}

func body(ids ...string) []byte {
	var evts []string
	for _, id := range ids {
		evts = append(evts, fmt.Sprintf(`{"event_id":%q,"type":"m.room.message","content":{}}`, id))
	}
	return []byte(`{"events":[` + strings.Join(evts, ",") + `]}`)
}

func TestJournalThenIndex(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx := context.Background()
		l := openLog(t, tdb)
		for _, j := range []struct {
			txn string
			ids []string
		}{
			{"t1", []string{"$a", "$b"}},
			{"t1", []string{"$a", "$b"}},       // resent
			{"t1", []string{"$a", "$b", "$c"}}, // grown retry (Dendrite)
			{"t2", []string{"$c", "$d"}},       // an event resent in a new transaction
		} {
			if err := l.Journal(ctx, j.txn, body(j.ids...)); err != nil {
				t.Fatal(err)
			}
		}
		if n, _ := l.JournalBacklog(ctx); n != 4 {
			t.Fatalf("backlog = %d, want 4", n)
		}
		if n, _ := l.Count(ctx); n != 0 {
			t.Fatalf("the log has %d events before indexing", n)
		}
		changed := l.Changed()
		moved, err := l.IndexPending(ctx, testParser)
		if err != nil || moved != 4 {
			t.Fatalf("IndexPending = %d, %v", moved, err)
		}
		select {
		case <-changed:
		default:
			t.Error("indexing did not wake readers")
		}
		got := readAll(t, l)
		var ids []string
		for _, e := range got {
			ids = append(ids, e.EventID)
		}
		if fmt.Sprint(ids) != "[$a $b $c $d]" {
			t.Errorf("log = %v, want [$a $b $c $d] once each, in order", ids)
		}
		// One batch held t1 three times: its record folds them (an upsert
		// of t1 three times in one statement would be refused).
		txn, _ := l.Transaction(ctx, "t1")
		if txn == nil || txn.Attempts != 3 || txn.StoredCount != 3 || txn.EventCount != 3 || txn.LastSeenAt.Before(txn.FirstSeenAt) {
			t.Errorf("t1 record = %+v, want 3 attempts, 3 stored, 3 events in the last", txn)
		}
		if txn, _ := l.Transaction(ctx, "t2"); txn == nil || txn.Attempts != 1 || txn.StoredCount != 1 || txn.EventCount != 2 {
			t.Errorf("t2 record = %+v, want 1 attempt, 1 stored ($c was t1's), 2 events", txn)
		}
		if n, _ := l.JournalBacklog(ctx); n != 0 {
			t.Errorf("backlog after indexing = %d", n)
		}
		// Indexing again is a no-op.
		if moved, err = l.IndexPending(ctx, testParser); err != nil || moved != 0 {
			t.Errorf("second IndexPending = %d, %v", moved, err)
		}
	})
}

// A batch's events go in inserts of up to EventsPerInsert rows whatever the
// transactions' sizes: here three transactions of one and a half inserts'
// worth, each split between two inserts and the first two sharing one
// (each insert names the transactions of its rows itself).
func TestIndexingAcrossInserts(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx := context.Background()
		l := openLog(t, tdb)
		size := eventlog.EventsPerInsert * 3 / 2
		var want []string
		for txn := range 3 {
			ids := make([]string, size)
			for i := range ids {
				ids[i] = fmt.Sprintf("$t%d-%d", txn, i)
			}
			want = append(want, ids...)
			if err := l.Journal(ctx, fmt.Sprintf("big%d", txn), body(ids...)); err != nil {
				t.Fatal(err)
			}
		}
		if moved, err := l.IndexPending(ctx, testParser); err != nil || moved != 3 {
			t.Fatalf("IndexPending = %d, %v", moved, err)
		}
		got := readAll(t, l)
		if len(got) != len(want) {
			t.Fatalf("the log has %d events, want %d", len(got), len(want))
		}
		for i, e := range got {
			if wantTxn := fmt.Sprintf("big%d", i/size); e.EventID != want[i] || e.TxnID != wantTxn {
				t.Fatalf("event %d = %s of %s, want %s of %s (in journal order, with its own transaction)", i, e.EventID, e.TxnID, want[i], wantTxn)
			}
		}
		for txn := range 3 {
			if rec, _ := l.Transaction(ctx, fmt.Sprintf("big%d", txn)); rec == nil || rec.Attempts != 1 || rec.StoredCount != size || rec.EventCount != size {
				t.Errorf("big%d record = %+v, want 1 attempt, %d of %d stored", txn, rec, size, size)
			}
		}
	})
}

// The indexer never polls here (an hour), and the transactions are
// journalled once it waits: only the wake-up of Journal can index them.
func TestIndexerRunsPromptlyAndParksUnparseableRows(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		l := openLog(t, tdb)
		parse := func(txnID string, b []byte) ([]eventlog.IncomingEvent, error) {
			if txnID == "poison" {
				return nil, errors.New("no longer parses")
			}
			return testParser(txnID, b)
		}
		waiting := make(chan struct{}, 1)
		l.OnIndexerWaiting(func() {
			select {
			case waiting <- struct{}{}:
			default:
			}
		})
		done := make(chan struct{})
		go func() { defer close(done); l.RunIndexer(ctx, parse, eventlog.IndexerOptions{PollInterval: time.Hour}) }()
		select {
		case <-waiting:
		case <-time.After(5 * time.Second):
			t.Fatal("the indexer did not start waiting")
		}
		changed := l.Changed()
		for i, txn := range []string{"x1", "poison", "x2"} {
			if err := l.Journal(ctx, txn, body(fmt.Sprintf("$p%d", i))); err != nil {
				t.Fatal(err)
			}
		}
		select {
		case <-changed:
		case <-time.After(5 * time.Second):
			t.Fatal("the indexer did not index a journalled transaction")
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			n, _ := l.Count(context.Background())
			backlog, _ := l.JournalBacklog(context.Background())
			if n == 2 && backlog == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("log has %d events and the journal %d rows; want 2 and 0", n, backlog)
			}
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
		<-done
		// The row that no longer parses is kept, not dropped.
		parked, err := l.ParkedTransactions(context.Background())
		if err != nil || len(parked) != 1 || parked[0].TxnID != "poison" ||
			parked[0].Body != string(body("$p1")) || !strings.Contains(parked[0].Error, "no longer parses") {
			t.Errorf("parked = %+v, %v; want the poison transaction whole", parked, err)
		}
	})
}

// After a commit the indexer waits up to GroupCommit for more to take into
// its next one: here a minute, cut short once this process has handed off a
// full commit (2,000 events), so b and the rest of a full commit
// in c go in one commit (without the wait, b is indexed the moment it is
// journalled). An
// idle indexer indexes at once (a, with nothing committed before it); and
// the wait ends by itself (d, with 50 ms: the indexer never polls here).
func TestIndexerGroupsCommits(t *testing.T) {
	for _, tc := range []struct {
		name        string
		groupCommit time.Duration
	}{{"a minute", time.Minute}, {"50ms", 50 * time.Millisecond}} {
		t.Run(tc.name, func(t *testing.T) {
			testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
				ix := startGroupingIndexer(t, tdb, tc.groupCommit)
				ix.journal("a", "$a")
				ix.next("[a]")
				if tc.groupCommit == time.Minute {
					ix.journal("b", "$b")
					many := make([]string, eventlog.IndexBatchEvents-1)
					for i := range many {
						many[i] = fmt.Sprintf("$c%d", i)
					}
					ix.journal("c", many...)
					ix.next("[b c]")
				} else {
					ix.journal("d", "$d")
					ix.next("[d]")
				}
			})
		})
	}
}

// The group commit spaces the batches' reads, not the commits: a batch that
// took longer than GroupCommit (2 s here) to commit finds the next one
// waiting and indexes it at once, so a backlog's long commits are not
// slowed. Waiting GroupCommit after each commit instead makes b wait 2 s.
func TestIndexerDoesNotWaitAfterALongCommit(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		const groupCommit = 2 * time.Second
		ix := startGroupingIndexer(t, tdb, groupCommit)
		committing := make(chan struct{}, 1)
		first := true
		ix.log.OnIndexerCommitting(func() {
			if first {
				first = false
				committing <- struct{}{}
				time.Sleep(groupCommit + 500*time.Millisecond)
			}
		})
		go ix.journal("a", "$a")
		<-committing
		// On SQLite this waits for a's commit (its one writer), on
		// PostgreSQL it goes in during it; either way b is in the journal
		// by the time a's commit ends, or right after.
		go ix.journal("b", "$b")
		ix.next("[a]")
		start := time.Now()
		ix.next("[b]")
		if waited := time.Since(start); waited > groupCommit/2 {
			t.Errorf("b was indexed %v after a's long commit, want at once", waited)
		}
	})
}

// A full read (64 rows) says more is waiting: the indexer reads again at
// once instead of waiting out the group commit. The rows here are
// journalled without a hand-off (as by another process), so nothing but the
// full read can cut the second wait short.
func TestIndexerDoesNotWaitAfterAFullRead(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		const groupCommit = 2 * time.Second
		ix := startGroupingIndexer(t, tdb, groupCommit)
		ix.journal("a", "$a")
		ix.next("[a]")
		var first, rest []string
		for i := range 100 {
			txnID := fmt.Sprintf("t%d", i)
			if err := ix.log.Journal(context.Background(), txnID, body("$"+txnID)); err != nil {
				t.Fatal(err)
			}
			if i < 64 {
				first = append(first, txnID)
			} else {
				rest = append(rest, txnID)
			}
		}
		ix.next(fmt.Sprint(first))
		start := time.Now()
		ix.next(fmt.Sprint(rest))
		if waited := time.Since(start); waited > groupCommit/2 {
			t.Errorf("the rest was indexed %v after a full read, want at once", waited)
		}
	})
}

// groupingIndexer is a running indexer with a group commit, and what the
// tests above drive it with.
type groupingIndexer struct {
	t       *testing.T
	log     *eventlog.Log
	batches chan []string
}

func startGroupingIndexer(t *testing.T, tdb testrig.TestDatabase, groupCommit time.Duration) *groupingIndexer {
	ctx, cancel := context.WithCancel(context.Background())
	l := openLog(t, tdb)
	waiting := make(chan struct{}, 1)
	l.OnIndexerWaiting(func() {
		select {
		case waiting <- struct{}{}:
		default:
		}
	})
	ix := &groupingIndexer{t: t, log: l, batches: make(chan []string, 16)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.RunIndexer(ctx, testParser, eventlog.IndexerOptions{PollInterval: time.Hour, GroupCommit: groupCommit,
			Indexed: func(ids []string) { ix.batches <- ids }})
	}()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-waiting:
	case <-time.After(5 * time.Second):
		t.Fatal("the indexer did not start waiting")
	}
	return ix
}

// journal journals a transaction of ids as the transaction path does
// (handing its events off); safe to call from another goroutine.
func (ix *groupingIndexer) journal(txnID string, ids ...string) {
	b := body(ids...)
	evts, err := testParser(txnID, b)
	if err == nil {
		err = ix.log.JournalParsed(context.Background(), txnID, b, evts)
	}
	if err != nil {
		ix.t.Error(err)
	}
}

// next checks the next commit's transactions.
func (ix *groupingIndexer) next(want string) {
	ix.t.Helper()
	select {
	case ids := <-ix.batches:
		if fmt.Sprint(ids) != want {
			ix.t.Fatalf("indexed %v in one commit, want %s", ids, want)
		}
	case <-time.After(5 * time.Second):
		ix.t.Fatalf("nothing indexed in 5 s, want %s", want)
	}
}

// logWatch is a log writer that tells when a line containing text is written.
type logWatch struct {
	text string
	seen chan struct{}
}

func (w *logWatch) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte(w.text)) {
		select {
		case w.seen <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

// A failed indexing is retried by itself (after 100 ms, doubling): nothing
// wakes the indexer after the cause is gone, and it never polls here.
func TestIndexerRetriesAfterAFailure(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		db := testrig.OpenDatabase(t, tdb)
		l := eventlog.New(db)
		t.Cleanup(func() { _ = l.Close() })
		failed := &logWatch{text: "Indexing the journal failed", seen: make(chan struct{}, 1)}
		ctx, cancel := context.WithCancel(zerolog.New(failed).WithContext(context.Background()))
		defer cancel()
		if _, err := db.RawDB.Exec(`ALTER TABLE event_log RENAME TO event_log_away`); err != nil {
			t.Fatal(err)
		}
		// Journalled by another Log (another process): no wake-up here.
		other := eventlog.New(db)
		t.Cleanup(func() { _ = other.Close() })
		if err := other.Journal(ctx, "r1", body("$r1")); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			l.RunIndexer(ctx, testParser, eventlog.IndexerOptions{PollInterval: time.Hour})
		}()
		defer func() { cancel(); <-done }()
		select {
		case <-failed.seen:
		case <-time.After(5 * time.Second):
			t.Fatal("indexing without event_log did not fail")
		}
		if _, err := db.RawDB.Exec(`ALTER TABLE event_log_away RENAME TO event_log`); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			if n, err := l.Count(context.Background()); err == nil && n == 1 {
				break
			}
			if time.Now().After(deadline) {
				backlog, _ := l.JournalBacklog(context.Background())
				t.Fatalf("the journal still holds %d transactions after the failure's cause is gone", backlog)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}
