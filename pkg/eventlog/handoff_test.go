package eventlog_test

import (
	"context"
	"testing"
	"time"

	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// waitIndexerStarted waits until l's indexer takes handed-off events.
func waitIndexerStarted(t *testing.T, l *eventlog.Log) {
	t.Helper()
	testrig.Eventually(t, "the indexer to start", 10*time.Second, func() bool {
		active, _ := l.Handing()
		return active
	})
}

// handedEvent is an event that the body journalled with it does not hold:
// which of the two the log stores shows whether the indexer took the
// handed-off events or parsed the body again.
func handedEvent(id string) []eventlog.IncomingEvent {
	return []eventlog.IncomingEvent{{EventID: id, Kind: eventlog.KindTimeline, RoomID: "!r:s", Type: "m.room.message",
		JSON: `{"event_id":"` + id + `","type":"m.room.message","content":{}}`}}
}

// The indexer of the process that journals a transaction indexes the
// events the transaction path parsed, without reading the body back or
// parsing it; it lets go of them once indexed. A transaction journalled by
// another process is read back and parsed.
func TestIndexerTakesHandedOffEvents(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx := context.Background()
		db := testrig.OpenDatabase(t, tdb)
		indexing, other := eventlog.New(db), eventlog.New(db)
		runIndexer(t, ctx, indexing)
		waitIndexerStarted(t, indexing)

		if err := indexing.JournalParsed(ctx, "t1", body("$in-body-1"), handedEvent("$handed-1")); err != nil {
			t.Fatal(err)
		}
		if err := other.JournalParsed(ctx, "t2", body("$in-body-2"), handedEvent("$handed-2")); err != nil {
			t.Fatal(err)
		}
		if active, _ := other.Handing(); active {
			t.Fatal("a log that does not index takes handed-off events")
		}
		got := waitForEvents(t, indexing, 0, 2)
		var ids []string
		for _, evt := range got {
			ids = append(ids, evt.EventID)
		}
		if len(ids) != 2 || ids[0] != "$handed-1" || ids[1] != "$in-body-2" {
			t.Errorf("the log holds %v, want [$handed-1 $in-body-2]: the handed-off events of this process, the body of the other's", ids)
		}
		testrig.Eventually(t, "the indexer to let go of the handed-off row", 10*time.Second, func() bool {
			_, held := indexing.Handing()
			return held == 0
		})
	})
}
