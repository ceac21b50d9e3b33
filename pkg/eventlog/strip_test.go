package eventlog_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/daarion/matrix-bridge/pkg/appservice"
	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/mapping"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// The indexer stores the room events of confidential rooms stripped
// (IndexerOptions.Confidential and Strip), and everything else as it came;
// the journal row, the whole transaction, is gone in the same commit. So it
// does for events the transaction path handed off (JournalParsed), without
// changing the transaction path's own copy.
func TestIndexerStripsConfidentialRooms(t *testing.T) {
	t.Run("read back", func(t *testing.T) { testIndexerStripsConfidentialRooms(t, false) })
	t.Run("handed off", func(t *testing.T) { testIndexerStripsConfidentialRooms(t, true) })
}

func testIndexerStripsConfidentialRooms(t *testing.T, handOff bool) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		l := openLog(t, tdb)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		indexed := make(chan []string, 10)
		go func() {
			defer close(done)
			l.RunIndexer(ctx, appservice.ParseTransaction, eventlog.IndexerOptions{
				PollInterval: 50 * time.Millisecond,
				Indexed:      func(ids []string) { indexed <- ids },
				Confidential: func(roomID string) bool { return roomID == "!secret:daarion.test" },
				Strip:        mapping.StripContent,
			})
		}()
		t.Cleanup(func() { cancel(); <-done })

		const marker = "MARKER-31c9"
		body := `{"events":[
			{"event_id":"$s1","room_id":"!secret:daarion.test","type":"m.room.message","sender":"@alice:daarion.test","origin_server_ts":1,"content":{"msgtype":"m.text","body":"` + marker + `"}},
			{"event_id":"$s2","room_id":"!secret:daarion.test","type":"m.room.message","sender":"@alice:daarion.test","origin_server_ts":2,"content":{"msgtype":"m.text","body":"* ` + marker + `","m.new_content":{"msgtype":"m.text","body":"` + marker + `"},"m.relates_to":{"rel_type":"m.replace","event_id":"$s1"}}},
			{"event_id":"$s3","room_id":"!secret:daarion.test","type":"m.room.topic","sender":"@alice:daarion.test","origin_server_ts":3,"state_key":"","content":{"topic":"a topic"}},
			{"event_id":"$c1","room_id":"!clear:daarion.test","type":"m.room.message","sender":"@alice:daarion.test","origin_server_ts":4,"content":{"msgtype":"m.text","body":"` + marker + `"}}
		],"ephemeral":[{"type":"m.typing","room_id":"!secret:daarion.test","content":{"user_ids":["@alice:daarion.test"]}}]}`
		var parsed []eventlog.IncomingEvent
		if handOff {
			var err error
			if parsed, err = appservice.ParseTransaction("txn-1", []byte(body)); err != nil {
				t.Fatal(err)
			}
			waitIndexerStarted(t, l)
			if err = l.JournalParsed(ctx, "txn-1", []byte(body), parsed); err != nil {
				t.Fatal(err)
			}
		} else if err := l.Journal(ctx, "txn-1", []byte(body)); err != nil {
			t.Fatal(err)
		}
		select {
		case <-indexed:
		case <-time.After(20 * time.Second):
			t.Fatal("the transaction was not indexed")
		}
		byID := map[string]*eventlog.Event{}
		for _, evt := range readAll(t, l) {
			byID[evt.EventID] = evt
		}
		for _, eventID := range []string{"$s1", "$s2"} {
			evt := byID[eventID]
			if evt == nil || strings.Contains(string(evt.JSON), marker) || !mapping.IsStripped(evt.JSON) {
				t.Errorf("%s of the confidential room is stored as %s", eventID, evt.JSON)
			}
		}
		if evt := byID["$s2"]; evt != nil && !strings.Contains(string(evt.JSON), `"m.relates_to":{"event_id":"$s1","rel_type":"m.replace"}`) {
			t.Errorf("the edit lost its relation: %s", evt.JSON)
		}
		if evt := byID["$s3"]; evt == nil || !strings.Contains(string(evt.JSON), `"topic":"a topic"`) {
			t.Errorf("the confidential room's state is stored as %s", evt.JSON)
		}
		if evt := byID["$c1"]; evt == nil || !strings.Contains(string(evt.JSON), marker) {
			t.Errorf("the clear room's message is stored as %s", evt.JSON)
		}
		if n, err := l.JournalBacklog(context.Background()); err != nil || n != 0 {
			t.Errorf("the journal holds %d rows (%v)", n, err)
		}
		for _, evt := range parsed {
			if (evt.EventID == "$s1" || evt.EventID == "$s2") && !strings.Contains(evt.JSON, marker) {
				t.Errorf("stripping changed the transaction path's %s: %s", evt.EventID, evt.JSON)
			}
		}
	})
}

// Without both hooks, the parser is the one given.
func TestIndexerOptionsParser(t *testing.T) {
	events, err := eventlog.IndexerOptions{Strip: mapping.StripContent}.Parser(appservice.ParseTransaction)("t",
		[]byte(`{"events":[{"event_id":"$1","room_id":"!r:s","type":"m.room.message","sender":"@a:s","content":{"body":"kept"}}]}`))
	if err != nil || len(events) != 1 || !strings.Contains(events[0].JSON, "kept") {
		t.Errorf("parsed %+v, %v", events, err)
	}
}
