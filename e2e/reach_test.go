package e2e_test

import (
	"context"
	"net/http"
	"net/url"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// The internal API reaches the rooms the bridge manages for DAARION — city
// rooms, rooms created through it, rooms an agent accepted an invite into —
// with a route's scope alone, other rooms the bot is in only with any_room,
// and the bot's direct chats (the admins' command rooms) never: not with
// any_room, not with INTERNAL_SERVICE_SECRET.
func TestInternalAPIReachesOnlyManagedRooms(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, r rig) {
		ctx := context.Background()
		const gw, ops = "gw-token-0123456789abcdef0123", "ops-token-0123456789abcdef012"
		s := newStackWith(t, r, stackOptions{
			extra: commandPermissions,
			internalAPI: `    services:
        - name: gateway
          token: ` + gw + `
          scopes: [rooms, messaging, agents]
        - name: operations
          token: ` + ops + `
          scopes: [rooms, messaging, agents, any_room]`,
		})
		s.bridge.waitForLog("Bridge bot registered", 30*time.Second)
		botID := s.cfg.BotUserID()
		history := func(roomID id.RoomID, as string) string {
			p := "/internal/matrix/rooms/" + url.PathEscape(roomID.String()) + "/messages"
			if as != "" {
				p += "?as=" + as
			}
			return p
		}
		expect := func(what, token, method, path string, body any, status int, field string) {
			t.Helper()
			res := secJSON(t, s, token, method, path, body)
			if res.status != status || (status == 403 && (res.str("error") != "M_FORBIDDEN" || res.str("field") != field)) {
				t.Errorf("%s: %d %s, want %d (field %q)", what, res.status, res.body, status, field)
			}
		}

		// Managed: a city room, and a room created through the API.
		city, _ := createCity(t, s, "reach", "Reach", "")
		expect("send as an agent into a city room", gw, http.MethodPost, "/internal/matrix/send",
			map[string]any{"room_id": city, "sender": "agent:sofia", "body": "hello"}, 200, "")
		created := secJSON(t, s, gw, http.MethodPost, "/internal/matrix/create-room", map[string]any{"name": "Made by the gateway"})
		if created.status != 200 {
			t.Fatalf("create-room: %d %s", created.status, created.body)
		}
		made := id.RoomID(created.str("room_id"))
		expect("send as an agent into a created room", gw, http.MethodPost, "/internal/matrix/send",
			map[string]any{"room_id": made, "sender": "agent:sofia", "body": "hello"}, 200, "")
		expect("history of a created room", gw, http.MethodGet, history(made, ""), nil, 200, "")

		// Not managed: a human's public room the bot joins through any_room.
		carol, err := s.hs.RegisterUser(ctx, "carol", "correct horse battery staple", false)
		if err != nil {
			t.Fatal(err)
		}
		public, err := carol.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Carol's"})
		if err != nil {
			t.Fatal(err)
		}
		other := public.RoomID
		expect("an agent joins an unmanaged room without any_room", gw, http.MethodPost, "/internal/matrix/join",
			map[string]any{"room_id": other, "user_id": "agent:sofia"}, 403, "room_id")
		expect("an agent joins an unmanaged room with any_room", ops, http.MethodPost, "/internal/matrix/join",
			map[string]any{"room_id": other, "user_id": "agent:sofia"}, 200, "")
		expect("history of an unmanaged room without any_room", gw, http.MethodGet, history(other, "agent:sofia"), nil, 403, "roomId")
		expect("history of an unmanaged room with any_room", ops, http.MethodGet, history(other, "agent:sofia"), nil, 200, "")
		expect("send into an unmanaged room without any_room", gw, http.MethodPost, "/internal/matrix/send",
			map[string]any{"room_id": other, "sender": "agent:sofia", "body": "hi"}, 403, "room_id")
		expect("room metadata of an unmanaged room without any_room", gw, http.MethodGet,
			"/internal/matrix/rooms/"+url.PathEscape(other.String()), nil, 403, "roomId")
		expect("the service secret has no any_room", serviceSecret, http.MethodGet, history(other, "agent:sofia"), nil, 403, "roomId")

		// An agent accepts a human's invite into a direct chat: the room is
		// managed from then on.
		dmWithAgent, err := carol.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", IsDirect: true,
			Invite: []id.UserID{id.NewUserID("agent_sofia", serverName)}})
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, "the agent's accepted invite to make the room reachable", 30*time.Second, func() bool {
			return secJSON(t, s, gw, http.MethodGet, history(dmWithAgent.RoomID, "agent:sofia"), nil).status == 200
		})
		expect("send as the agent into the room it accepted", gw, http.MethodPost, "/internal/matrix/send",
			map[string]any{"room_id": dmWithAgent.RoomID, "sender": "agent:sofia", "body": "hi carol"}, 200, "")

		// The admin's direct chat with the bot: never.
		admin, err := s.hs.RegisterUser(ctx, "admin", "correct horse battery staple", false)
		if err != nil {
			t.Fatal(err)
		}
		created2, err := admin.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", IsDirect: true, Invite: []id.UserID{botID}})
		if err != nil {
			t.Fatal(err)
		}
		dm := created2.RoomID
		eventually(t, "the bot to greet in the admin's direct chat", 30*time.Second, func() bool {
			return len(botMessages(t, s, admin, dm)) == 1
		})
		for _, tc := range []struct{ name, token string }{{"gateway", gw}, {"operations (any_room)", ops}, {"the service secret", serviceSecret}} {
			expect(tc.name+": history of the admin's direct chat", tc.token, http.MethodGet, history(dm, ""), nil, 403, "roomId")
			expect(tc.name+": send as an agent into the admin's direct chat", tc.token, http.MethodPost, "/internal/matrix/send",
				map[string]any{"room_id": dm, "sender": "agent:sofia", "body": "!daarion status"}, 403, "room_id")
			expect(tc.name+": kick the admin from their direct chat", tc.token, http.MethodPost, "/internal/matrix/kick",
				map[string]any{"room_id": dm, "user_id": "@admin:daarion.test", "kicker": "agent:sofia"}, 403, "room_id")
			expect(tc.name+": rename the admin's direct chat", tc.token, http.MethodPut,
				"/internal/matrix/rooms/"+url.PathEscape(dm.String())+"/name", map[string]any{"name": "pwned"}, 403, "roomId")
			expect(tc.name+": metadata of the admin's direct chat", tc.token, http.MethodGet,
				"/internal/matrix/rooms/"+url.PathEscape(dm.String()), nil, 403, "roomId")
		}
	})
}
