package e2e_test

import (
	"context"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// A client can make the homeserver create a state event whose type holds NUL,
// which the log's columns cannot hold. The homeserver pushes it; refusing its
// transaction would stall every event after it (the homeserver resends it for
// ever), so the bridge stores it, indexed by a storable copy of the type, and
// what comes after arrives. Synapse takes such an event too.
func TestUnstorableEventTypeDoesNotStall(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, r rig) {
		ctx := context.Background()
		s := newStack(t, r)
		s.bridge.waitForLog("Bridge bot registered", 30*time.Second)
		// A known agent (sent as once) in a direct chat carol opens: the
		// homeserver pushes the room's events to the bridge.
		cityID, _ := createCity(t, s, "nul", "NUL", "")
		send(t, s, map[string]any{"room_id": cityID, "sender": "agent:sofia", "body": "hello"})
		carol, err := s.hs.RegisterUser(ctx, "carol", "correct horse battery staple", false)
		if err != nil {
			t.Fatal(err)
		}
		sofia := id.NewUserID("agent_sofia", serverName)
		created, err := carol.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", IsDirect: true, Invite: []id.UserID{sofia}})
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, "the agent to accept carol's direct chat", 30*time.Second, func() bool {
			members, err := carol.JoinedMembers(ctx, created.RoomID)
			_, joined := members.Joined[sofia]
			return err == nil && joined
		})
		nulType := event.Type{Type: "org.example.nul\x00type", Class: event.StateEventType}
		_, nulErr := carol.SendStateEvent(ctx, created.RoomID, nulType, "", map[string]int{"x": 1})
		// Both homeservers take it (Synapse 1.163.2, Dendrite v0.15.2).
		if nulErr != nil {
			t.Fatalf("%s refused a state event type with NUL: %v", r.homeserver, nulErr)
		}
		after, err := carol.SendText(ctx, created.RoomID, "after the NUL")
		if err != nil {
			t.Fatal(err)
		}
		s.waitLogged([]id.EventID{after.EventID}, 30*time.Second)
		events, err := s.log.Read(ctx, 0, 10000)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, evt := range events {
			if evt.RoomID == created.RoomID.String() && evt.Type == "org.example.nul\uFFFDtype" {
				found = true
			}
		}
		if !found {
			t.Error("the NUL-typed state event is not in the log under its storable type")
		}
	})
}

func ptrTo[T any](v T) *T { return &v }
