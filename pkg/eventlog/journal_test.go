package eventlog_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

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
		txn, _ := l.Transaction(ctx, "t1")
		if txn == nil || txn.Attempts != 3 || txn.StoredCount != 3 {
			t.Errorf("t1 record = %+v, want 3 attempts, 3 stored", txn)
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
		done := make(chan struct{})
		go func() { defer close(done); l.RunIndexer(ctx, parse) }()
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
