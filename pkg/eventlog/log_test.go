package eventlog_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

func TestMain(m *testing.M) { os.Exit(testrig.RunTests(m)) }

func openLog(t *testing.T, tdb testrig.TestDatabase) *eventlog.Log {
	t.Helper()
	l := eventlog.New(testrig.OpenDatabase(t, tdb))
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func timelineEvent(id, room string) eventlog.IncomingEvent {
	return eventlog.IncomingEvent{
		EventID: id,
		Kind:    eventlog.KindTimeline,
		RoomID:  room,
		Type:    "m.room.message",
		Sender:  "@alice:daarion.test",
		JSON:    fmt.Sprintf(`{"event_id":%q,"room_id":%q,"type":"m.room.message","content":{"body":"hi \u00e9 \"q\""}}`, id, room),
	}
}

func events(prefix string, n int) []eventlog.IncomingEvent {
	evts := make([]eventlog.IncomingEvent, n)
	for i := range evts {
		evts[i] = timelineEvent(fmt.Sprintf("$%s%d", prefix, i), "!room:daarion.test")
	}
	return evts
}

func readAll(t *testing.T, l *eventlog.Log) []*eventlog.Event {
	t.Helper()
	all, err := l.Read(context.Background(), 0, 100000)
	if err != nil {
		t.Fatalf("read log: %v", err)
	}
	return all
}

// listParser reads the bodies mustAppend journals: the events as a JSON
// list, taken as they are (the appservice parser has tests of its own).
func listParser(_ string, body []byte) ([]eventlog.IncomingEvent, error) {
	var evts []eventlog.IncomingEvent
	err := json.Unmarshal(body, &evts)
	return evts, err
}

// appendResult is what one mustAppend stored.
type appendResult struct {
	Stored, Duplicates int
}

// mustAppend stores the events of transaction txnID the production way: it
// journals the transaction's body and indexes the journal. What was stored
// is read off the log's size.
func mustAppend(t *testing.T, l *eventlog.Log, txnID string, evts []eventlog.IncomingEvent) appendResult {
	t.Helper()
	ctx := context.Background()
	before, err := l.Count(ctx)
	if err != nil {
		t.Fatal(err)
	}
	journal(t, l, txnID, evts)
	if _, err = l.IndexPending(ctx, listParser); err != nil {
		t.Fatalf("index %s: %v", txnID, err)
	}
	after, err := l.Count(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stored := int(after - before)
	return appendResult{Stored: stored, Duplicates: len(evts) - stored}
}

// journal records the body of transaction txnID, as the transaction
// handler does; IndexPending turns it into log events.
func journal(t *testing.T, l *eventlog.Log, txnID string, evts []eventlog.IncomingEvent) {
	t.Helper()
	body, err := json.Marshal(evts)
	if err != nil {
		t.Fatal(err)
	}
	if err = l.Journal(context.Background(), txnID, body); err != nil {
		t.Fatalf("journal %s: %v", txnID, err)
	}
}

func TestAppendStoresEventsInOrderByteForByte(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		l := openLog(t, tdb)
		in := events("a", 5)
		in = append(in, eventlog.IncomingEvent{
			EventID: "~edu_1", Kind: eventlog.KindEphemeral, Type: "m.presence", Sender: "@bob:daarion.test",
			JSON: `{"type":"m.presence","sender":"@bob:daarion.test","content":{"presence":"online"}}`,
		})
		res := mustAppend(t, l, "txn1", in)
		if res.Stored != 6 || res.Duplicates != 0 {
			t.Fatalf("append result = %+v, want 6 stored", res)
		}
		out := readAll(t, l)
		if len(out) != len(in) {
			t.Fatalf("log holds %d events, want %d", len(out), len(in))
		}
		for i, evt := range out {
			want := in[i]
			if evt.EventID != want.EventID || evt.Kind != want.Kind || evt.RoomID != want.RoomID ||
				evt.Type != want.Type || evt.Sender != want.Sender || string(evt.JSON) != want.JSON || evt.TxnID != "txn1" {
				t.Errorf("event %d = %+v, want %+v", i, evt, want)
			}
			if i > 0 && evt.Position <= out[i-1].Position {
				t.Errorf("position %d (%d) not after %d", i, evt.Position, out[i-1].Position)
			}
			if time.Since(evt.ReceivedAt) > time.Minute {
				t.Errorf("received_at %v is not now", evt.ReceivedAt)
			}
		}
		head, err := l.Head(context.Background())
		if err != nil || head != out[len(out)-1].Position {
			t.Errorf("head = %d, %v; want %d", head, err, out[len(out)-1].Position)
		}
	})
}

func TestAppendDeduplicates(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx := context.Background()
		l := openLog(t, tdb)
		first := events("d", 3)
		mustAppend(t, l, "t1", first)

		// The same transaction id resent, unchanged.
		if res := mustAppend(t, l, "t1", first); res.Stored != 0 || res.Duplicates != 3 {
			t.Errorf("resent transaction: %+v, want 0 stored, 3 duplicates", res)
		}
		// The same transaction id retried with more events (as Dendrite does).
		more := append(events("d", 3), timelineEvent("$dnew", "!room:daarion.test"))
		if res := mustAppend(t, l, "t1", more); res.Stored != 1 || res.Duplicates != 3 {
			t.Errorf("grown retry: %+v, want 1 stored, 3 duplicates", res)
		}
		// The same events resent in a new transaction (as Synapse does), plus a
		// duplicate inside one transaction.
		again := append(events("d", 2), timelineEvent("$dx", "!room:daarion.test"), timelineEvent("$dx", "!room:daarion.test"))
		if res := mustAppend(t, l, "t2", again); res.Stored != 1 || res.Duplicates != 3 {
			t.Errorf("resent events: %+v, want 1 stored, 3 duplicates", res)
		}

		got := readAll(t, l)
		wantIDs := []string{"$d0", "$d1", "$d2", "$dnew", "$dx"}
		if len(got) != len(wantIDs) {
			t.Fatalf("log holds %d events, want %d", len(got), len(wantIDs))
		}
		for i, id := range wantIDs {
			if got[i].EventID != id {
				t.Errorf("event %d = %s, want %s", i, got[i].EventID, id)
			}
		}
		txn, err := l.Transaction(ctx, "t1")
		if err != nil || txn == nil {
			t.Fatalf("transaction t1: %v, %v", txn, err)
		}
		if txn.Attempts != 3 || txn.EventCount != 4 || txn.StoredCount != 4 {
			t.Errorf("t1 record = %+v, want 3 attempts, 4 events, 4 stored", txn)
		}
		if missing, err := l.Transaction(ctx, "never"); err != nil || missing != nil {
			t.Errorf("unknown transaction = %v, %v; want nil, nil", missing, err)
		}
	})
}

func TestConcurrentAppendsOfOneTransactionStoreOnce(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx := context.Background()
		l := openLog(t, tdb)
		evts := events("c", 50)
		// Ten copies of one transaction arrive at once (a homeserver retrying
		// while the first is in flight); the indexer stores them once.
		var wg sync.WaitGroup
		for range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				body, err := json.Marshal(evts)
				if err == nil {
					err = l.Journal(ctx, "same", body)
				}
				if err != nil {
					t.Errorf("journal: %v", err)
				}
			}()
		}
		wg.Wait()
		if _, err := l.IndexPending(ctx, listParser); err != nil {
			t.Fatal(err)
		}
		txn, err := l.Transaction(ctx, "same")
		if err != nil || txn == nil {
			t.Fatalf("transaction record: %v, %v", txn, err)
		}
		if txn.Attempts != 10 || txn.StoredCount != 50 {
			t.Errorf("the 10 copies: %d attempts stored %d events in total, want 10 and 50", txn.Attempts, txn.StoredCount)
		}
		if n := len(readAll(t, l)); n != 50 {
			t.Errorf("log holds %d events, want 50", n)
		}
	})
}

func TestAppendLargeAndEmptyTransactions(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx := context.Background()
		l := openLog(t, tdb)
		// More rows than one SQLite statement and than the prepared statements cover.
		if res := mustAppend(t, l, "big", events("b", 2500)); res.Stored != 2500 {
			t.Errorf("big transaction stored %d, want 2500", res.Stored)
		}
		if res := mustAppend(t, l, "empty", nil); res.Stored != 0 {
			t.Errorf("empty transaction stored %d", res.Stored)
		}
		txn, err := l.Transaction(ctx, "empty")
		if err != nil || txn == nil || txn.Attempts != 1 || txn.EventCount != 0 {
			t.Errorf("empty transaction record = %+v, %v", txn, err)
		}
		// The record counts every chunk's stored events.
		if big, err := l.Transaction(ctx, "big"); err != nil || big == nil || big.Attempts != 1 || big.EventCount != 2500 || big.StoredCount != 2500 {
			t.Errorf("big transaction record = %+v, %v; want 1 attempt, 2500 events, 2500 stored", big, err)
		}
		got := readAll(t, l)
		if len(got) != 2500 || got[0].EventID != "$b0" || got[2499].EventID != "$b2499" {
			t.Errorf("big transaction not stored in order: %d events", len(got))
		}
		n, err := l.Count(ctx)
		if err != nil || n != 2500 {
			t.Errorf("count = %d, %v", n, err)
		}
	})
}

func TestLogSurvivesReopen(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx := context.Background()
		db1 := testrig.OpenDatabase(t, tdb)
		l1 := eventlog.New(db1)
		mustAppend(t, l1, "r1", events("r", 3))
		if err := l1.SaveCursor(ctx, "c", 2); err != nil {
			t.Fatal(err)
		}
		_ = l1.Close()
		_ = db1.Close()

		l2 := openLog(t, tdb)
		// A resend after the restart is still recognised.
		if res := mustAppend(t, l2, "r1", events("r", 3)); res.Stored != 0 {
			t.Errorf("resend after reopen stored %d events, want 0", res.Stored)
		}
		mustAppend(t, l2, "r2", events("s", 1))
		got := readAll(t, l2)
		if len(got) != 4 || got[3].EventID != "$s0" || got[3].Position <= got[2].Position {
			t.Errorf("after reopen the log is %d events, last %+v", len(got), got[len(got)-1])
		}
		if pos, err := l2.Cursor(ctx, "c"); err != nil || pos != 2 {
			t.Errorf("cursor after reopen = %d, %v; want 2", pos, err)
		}
		if pos, err := l2.Cursor(ctx, "unknown"); err != nil || pos != 0 {
			t.Errorf("unknown cursor = %d, %v; want 0", pos, err)
		}
	})
}

func TestReadPagesAndChangedWakes(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx := context.Background()
		l := openLog(t, tdb)
		changed := l.Changed()
		mustAppend(t, l, "p1", events("p", 5))
		select {
		case <-changed:
		case <-time.After(5 * time.Second):
			t.Fatal("Changed did not fire after an append")
		}
		page1, err := l.Read(ctx, 0, 2)
		if err != nil || len(page1) != 2 {
			t.Fatalf("page 1 = %d events, %v", len(page1), err)
		}
		page2, err := l.Read(ctx, page1[1].Position, 10)
		if err != nil || len(page2) != 3 || page2[0].EventID != "$p2" {
			t.Fatalf("page 2 = %d events, %v", len(page2), err)
		}
		// A pure duplicate append does not wake readers: nothing is new.
		// Indexing wakes before it returns, so there is nothing to wait for.
		changed = l.Changed()
		mustAppend(t, l, "p1", events("p", 5))
		select {
		case <-changed:
			t.Error("Changed fired for an append that stored nothing")
		default:
		}
	})
}
