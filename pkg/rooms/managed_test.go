package rooms

import (
	"context"
	"errors"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/internalapi"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

func TestManagedRooms(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx := context.Background()
		s := openStore(t, tdb)
		if ok, err := s.Insert(ctx, cityRoom("plaza")); err != nil || !ok {
			t.Fatalf("insert: %v %v", ok, err)
		}
		if err := s.MoveToRoom(ctx, "plaza", "!plaza:s", "!plaza2:s"); err != nil {
			t.Fatal(err)
		}
		if err := s.MarkManaged(ctx, "!made:s", OriginCreated, ""); err != nil {
			t.Fatal(err)
		}
		if err := s.MarkManaged(ctx, "!invited:s", OriginAgentInvite, "helper"); err != nil {
			t.Fatal(err)
		}
		// Marking again keeps the first origin and is no error.
		if err := s.MarkManaged(ctx, "!made:s", OriginAgentInvite, "helper"); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			roomID  id.RoomID
			managed bool
		}{
			{"!plaza2:s", true},  // a city room
			{"!plaza:s", true},   // the room it lived in before an upgrade
			{"!made:s", true},    // created through the API
			{"!invited:s", true}, // an agent accepted an invite
			{"!dm:s", false},
			{"!other:s", false},
		} {
			got, err := s.Managed(ctx, tc.roomID)
			if err != nil || got != tc.managed {
				t.Errorf("Managed(%s) = %v, %v; want %v", tc.roomID, got, err, tc.managed)
			}
		}
	})
}

func TestCheckReach(t *testing.T) {
	s := &Service{store: openStore(t, testrig.NewTestDatabase(t, "sqlite"))}
	// The bot's direct chats as read from m.direct (no homeserver here).
	s.direct = &DirectChats{Refresh: time.Hour, now: time.Now, loadedAt: time.Now(),
		byUser: map[id.UserID][]id.RoomID{"@admin:s": {"!dm:s"}}}
	ctx := context.Background()
	if err := s.store.MarkManaged(ctx, "!made:s", OriginCreated, ""); err != nil {
		t.Fatal(err)
	}
	messaging := internalapi.WithService(ctx, &internalapi.Service{Name: "gw", Scopes: []internalapi.Scope{internalapi.ScopeMessaging}})
	anyRoom := internalapi.WithService(ctx, &internalapi.Service{Name: "ops", Scopes: []internalapi.Scope{internalapi.ScopeMessaging, internalapi.ScopeAnyRoom}})
	for _, tc := range []struct {
		name      string
		ctx       context.Context
		roomID    id.RoomID
		reachable bool
	}{
		{"managed room, messaging", messaging, "!made:s", true},
		{"other room, messaging", messaging, "!other:s", false},
		{"other room, any_room", anyRoom, "!other:s", true},
		{"direct chat, messaging", messaging, "!dm:s", false},
		{"direct chat, any_room", anyRoom, "!dm:s", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.CheckReach(tc.ctx, "room_id", tc.roomID)
			var outOfReach *OutOfReachError
			if tc.reachable && err != nil {
				t.Fatalf("CheckReach = %v, want nil", err)
			} else if !tc.reachable && (!errors.As(err, &outOfReach) || outOfReach.Field != "room_id") {
				t.Fatalf("CheckReach = %v, want an OutOfReachError naming room_id", err)
			}
		})
	}
}
