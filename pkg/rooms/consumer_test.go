package rooms

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/consumer"
	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

func logStateEvent(roomID id.RoomID, evtType, key string, content map[string]any) *eventlog.Event {
	raw, _ := json.Marshal(map[string]any{"type": evtType, "state_key": key, "room_id": roomID, "content": content,
		"sender": "@admin:daarion.test", "event_id": "$" + evtType})
	return &eventlog.Event{Kind: eventlog.KindTimeline, EventID: "$" + evtType, RoomID: string(roomID), Type: evtType, JSON: raw}
}

func tombstone(roomID, replacement id.RoomID) *eventlog.Event {
	return logStateEvent(roomID, "m.room.tombstone", "", map[string]any{"replacement_room": replacement, "body": "upgraded"})
}

// A tombstone in a city room moves the city room to its replacement: the
// bot joins it, the alias follows, the mapping moves and the old id still
// finds the city room.
func TestTombstoneMovesTheCityRoom(t *testing.T) {
	old := joinRetryDelay
	joinRetryDelay = 0
	t.Cleanup(func() { joinRetryDelay = old })

	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx := context.Background()
		for _, tc := range []struct {
			name string
			// aliasMoved: the homeserver moved the alias itself (Synapse).
			aliasMoved bool
			joinStatus int // the homeserver fails the join
			// versionsDown: the homeserver fails as a whole (transient).
			versionsDown bool
			wantMoved    bool
			wantPark     bool
		}{
			{name: "the bridge moves the alias", wantMoved: true},
			{name: "the homeserver moved the alias", aliasMoved: true, wantMoved: true},
			{name: "the bot may not join the replacement", joinStatus: http.StatusForbidden, wantPark: true},
			{name: "the homeserver fails this join only", joinStatus: http.StatusInternalServerError, wantPark: true},
			{name: "the homeserver fails", joinStatus: http.StatusInternalServerError, versionsDown: true},
		} {
			t.Run(tc.name, func(t *testing.T) {
				svc, hs := newTestService(t, testrig.NewTestDatabase(t, tdb.Name), false)
				cr, err := svc.Create(ctx, CreateRequest{Slug: "harbour", Name: "Harbour", Visibility: "public"})
				if err != nil {
					t.Fatal(err)
				}
				newRoom := id.RoomID("!harbour2:daarion.test")
				hs.addRoom(newRoom, "", 100, nil)
				hs.mu.Lock()
				hs.rooms[newRoom].joined = false // invited, not joined
				if tc.aliasMoved {
					hs.aliases[cr.Alias] = newRoom
				}
				hs.mu.Unlock()
				if tc.joinStatus != 0 {
					hs.setFail("join", tc.joinStatus)
				}
				if tc.versionsDown {
					hs.setFail("versions", http.StatusBadGateway)
				}
				if _, err := svc.Cache().Get(ctx, cr.RoomID); err != nil {
					t.Fatal(err)
				}

				err = svc.HandleEvents(ctx, []*eventlog.Event{tombstone(cr.RoomID, newRoom)})
				if _, cached := svc.Cache().Peek(cr.RoomID); cached {
					t.Error("the old room's metadata is still cached")
				}
				stored, _ := svc.Store().BySlug(ctx, "harbour")
				if !tc.wantMoved {
					if err == nil || consumer.IsPermanent(err) != tc.wantPark {
						t.Fatalf("HandleEvents = %v; want a failure, parked: %v", err, tc.wantPark)
					}
					if stored.RoomID != cr.RoomID || hs.alias(cr.Alias) != cr.RoomID {
						t.Errorf("moved although the join failed: %s, alias at %s", stored.RoomID, hs.alias(cr.Alias))
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if stored.RoomID != newRoom || hs.alias(cr.Alias) != newRoom {
					t.Errorf("city room at %s, alias at %s; want both at %s", stored.RoomID, hs.alias(cr.Alias), newRoom)
				}
				if byOld, _ := svc.Store().ByRoomID(ctx, cr.RoomID); byOld == nil || byOld.Slug != "harbour" {
					t.Errorf("the old room id finds %+v", byOld)
				}
				wantAliasCalls := 1
				if tc.aliasMoved {
					wantAliasCalls = 0
				}
				if got := hs.count("deleteAlias"); got != wantAliasCalls {
					t.Errorf("%d alias deletions, want %d", got, wantAliasCalls)
				}
				// The same tombstone again (the log is read at least once) is done.
				if err := svc.HandleEvents(ctx, []*eventlog.Event{tombstone(cr.RoomID, newRoom)}); err != nil {
					t.Errorf("the tombstone again: %v", err)
				}
			})
		}
	})
}

// What the rooms consumer leaves alone.
func TestRoomsConsumerIgnores(t *testing.T) {
	ctx := context.Background()
	svc, hs := newTestService(t, testrig.NewTestDatabase(t, testrig.SQLite), false)
	cr, err := svc.Create(ctx, CreateRequest{Slug: "harbour", Name: "Harbour", Visibility: "public"})
	if err != nil {
		t.Fatal(err)
	}
	hs.addRoom("!plain:daarion.test", "", 100, map[string]any{"m.room.name": map[string]string{"name": "Plain"}})
	message := logStateEvent(cr.RoomID, "m.room.message", "", nil)
	var raw map[string]any
	_ = json.Unmarshal(message.JSON, &raw)
	delete(raw, "state_key")
	message.JSON, _ = json.Marshal(raw)
	toDevice := tombstone(cr.RoomID, "!new:daarion.test")
	toDevice.Kind = eventlog.KindToDevice

	if _, err := svc.Cache().Get(ctx, cr.RoomID); err != nil {
		t.Fatal(err)
	}
	if err := svc.HandleEvents(ctx, []*eventlog.Event{
		message,                               // not a state event
		toDevice,                              // not in the timeline
		tombstone(cr.RoomID, "not-a-room-id"), // an invalid replacement
		tombstone("!plain:daarion.test", "!new:daarion.test"),                                                      // not a city room
		logStateEvent(cr.RoomID, "m.room.tombstone", "x", map[string]any{"replacement_room": "!new:daarion.test"}), // a state key: no tombstone
	}); err != nil {
		t.Fatal(err)
	}
	if stored, _ := svc.Store().BySlug(ctx, "harbour"); stored.RoomID != cr.RoomID {
		t.Errorf("moved to %s", stored.RoomID)
	}
	if hs.count("join") != 0 {
		t.Errorf("%d joins", hs.count("join"))
	}
	// A state event drops its room's metadata.
	if _, cached := svc.Cache().Peek(cr.RoomID); cached {
		t.Error("a state event left the room's metadata cached")
	}
}
