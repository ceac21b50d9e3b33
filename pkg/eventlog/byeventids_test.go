package eventlog_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

func TestByEventIDs(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx := context.Background()
		l := openLog(t, tdb)
		// More events than one query asks about, so that a lookup of all of
		// them takes several chunks.
		evts := events("m", 1200)
		reaction := timelineEvent("$reaction", "!other:daarion.test")
		reaction.Type, reaction.Sender = "m.reaction", "@bob:daarion.test"
		reaction.JSON = `{"event_id":"$reaction","room_id":"!other:daarion.test","type":"m.reaction","content":{"m.relates_to":{"rel_type":"m.annotation","event_id":"$m0","key":"👍"}}}`
		typing := eventlog.IncomingEvent{EventID: "~edu_typing", Kind: eventlog.KindEphemeral, RoomID: "!room:daarion.test", Type: "m.typing",
			JSON: `{"type":"m.typing","room_id":"!room:daarion.test","content":{"user_ids":[]}}`}
		mustAppend(t, l, "t1", evts)
		mustAppend(t, l, "t2", []eventlog.IncomingEvent{reaction, typing})

		t.Run("found and not found", func(t *testing.T) {
			got, err := l.ByEventIDs(ctx, []string{"$m3", "$unknown", "$reaction", "~edu_typing", "$m3"})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 3 || got["$unknown"] != nil {
				t.Fatalf("ByEventIDs = %v, want $m3, $reaction and ~edu_typing", got)
			}
			for _, tc := range []struct {
				in       eventlog.IncomingEvent
				position int64
				txnID    string
			}{{evts[3], 4, "t1"}, {reaction, 1201, "t2"}, {typing, 1202, "t2"}} {
				evt := got[tc.in.EventID]
				if evt == nil {
					t.Errorf("%s not found", tc.in.EventID)
					continue
				}
				if evt.Position != tc.position || evt.EventID != tc.in.EventID || evt.Kind != tc.in.Kind || evt.RoomID != tc.in.RoomID ||
					evt.Type != tc.in.Type || evt.Sender != tc.in.Sender || evt.TxnID != tc.txnID || string(evt.JSON) != tc.in.JSON {
					t.Errorf("%s = %+v (JSON %s), want %+v at position %d of %s", tc.in.EventID, evt, evt.JSON, tc.in, tc.position, tc.txnID)
				}
				if time.Since(evt.ReceivedAt) > time.Minute {
					t.Errorf("%s: received_at %v is not now", tc.in.EventID, evt.ReceivedAt)
				}
			}
		})

		t.Run("several chunks", func(t *testing.T) {
			ids := make([]string, 0, 1300)
			for i := range 1300 { // 100 of them unknown
				ids = append(ids, fmt.Sprintf("$m%d", i))
			}
			got, err := l.ByEventIDs(ctx, ids)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1200 {
				t.Fatalf("%d events found, want 1200", len(got))
			}
			for i := range 1200 {
				eventID := fmt.Sprintf("$m%d", i)
				if evt := got[eventID]; evt == nil || evt.Position != int64(i+1) {
					t.Fatalf("%s = %+v, want position %d", eventID, evt, i+1)
				}
			}
		})

		t.Run("no ids", func(t *testing.T) {
			got, err := l.ByEventIDs(ctx, nil)
			if err != nil || len(got) != 0 {
				t.Fatalf("ByEventIDs(nil) = %v, %v", got, err)
			}
		})

		t.Run("a failing database", func(t *testing.T) {
			cancelled, cancel := context.WithCancel(ctx)
			cancel()
			if _, err := l.ByEventIDs(cancelled, []string{"$m1"}); err == nil {
				t.Fatal("ByEventIDs with a cancelled context succeeded")
			}
		})
	})
}
