package e2e_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// fetchEvent reads an event as a human's real client, parsed.
func fetchEvent(t *testing.T, cli *mautrix.Client, roomID id.RoomID, eventID id.EventID) *event.Event {
	t.Helper()
	evt, err := cli.GetEvent(context.Background(), roomID, eventID)
	if err != nil {
		t.Fatalf("the human cannot see %s: %v", eventID, err)
	}
	_ = evt.Content.ParseRaw(evt.Type)
	return evt
}

func send(t *testing.T, s *stack, body map[string]any) id.EventID {
	t.Helper()
	res := s.api(t, http.MethodPost, "/internal/matrix/send", body)
	if res.status != 200 || !strings.HasPrefix(res.str("event_id"), "$") {
		t.Fatalf("send %v: %d %s", body, res.status, res.body)
	}
	if _, err := time.Parse(time.RFC3339Nano, res.str("sent_at")); err != nil {
		t.Errorf("sent_at %q: %v", res.str("sent_at"), err)
	}
	return id.EventID(res.str("event_id"))
}

// An agent posts every kind of message; a human on a real client sees each
// with the agent as sender and the right content.
func TestAgentMessaging(t *testing.T) {
	forEachRig(t, func(t *testing.T, tdb rig) {
		ctx := context.Background()
		s := newStack(t, tdb)
		s.bridge.waitForLog("Bridge bot registered", 30*time.Second)
		roomID, alias := createCity(t, s, "agora", "Agora", "")
		alice, _ := s.humanJoins("alice", alias)
		sofia := id.NewUserID("agent_sofia", serverName)

		notice := send(t, s, map[string]any{"room_id": roomID, "sender": "agent:sofia", "body": "Hello from Sofia"})
		text := send(t, s, map[string]any{"city_slug": "agora", "sender": "agent:sofia", "sender_matrix_id": sofia, "msgtype": "m.text", "body": "plain text"})
		html := send(t, s, map[string]any{"room_id": roomID, "sender": "agent:sofia", "msgtype": "m.text", "body": "Hello DAARION",
			"format": "org.matrix.custom.html", "formatted_body": "<p>Hello <strong>DAARION</strong></p>"})
		question := sendText(t, alice, roomID, "what is the weather?")
		reply := send(t, s, map[string]any{"room_id": roomID, "sender": "agent:sofia", "body": "sunny",
			"relates_to": map[string]any{"m.in_reply_to": map[string]string{"event_id": question.String()}},
			"mentions":   map[string]any{"user_ids": []id.UserID{alice.UserID}}})
		thread := send(t, s, map[string]any{"room_id": roomID, "sender": "agent:sofia", "body": "in a thread",
			"relates_to": map[string]any{"rel_type": "m.thread", "event_id": question.String()}})
		edit := send(t, s, map[string]any{"room_id": roomID, "sender": "agent:sofia", "body": "plain text, edited",
			"relates_to": map[string]any{"rel_type": "m.replace", "event_id": text.String()}})
		emote := send(t, s, map[string]any{"room_id": roomID, "sender": "agent:sofia", "msgtype": "m.emote", "body": "waves"})

		for _, tc := range []struct {
			eventID id.EventID
			check   func(c *event.MessageEventContent) bool
		}{
			{notice, func(c *event.MessageEventContent) bool {
				return c.MsgType == event.MsgNotice && c.Body == "Hello from Sofia"
			}},
			{text, func(c *event.MessageEventContent) bool { return c.MsgType == event.MsgText && c.Body == "plain text" }},
			{html, func(c *event.MessageEventContent) bool {
				return c.Format == event.FormatHTML && c.FormattedBody == "<p>Hello <strong>DAARION</strong></p>"
			}},
			{reply, func(c *event.MessageEventContent) bool {
				return c.RelatesTo != nil && c.RelatesTo.InReplyTo != nil && c.RelatesTo.InReplyTo.EventID == question &&
					c.Mentions != nil && len(c.Mentions.UserIDs) == 1 && c.Mentions.UserIDs[0] == alice.UserID
			}},
			{thread, func(c *event.MessageEventContent) bool {
				return c.RelatesTo != nil && c.RelatesTo.Type == event.RelThread && c.RelatesTo.EventID == question && c.RelatesTo.IsFallingBack
			}},
			{edit, func(c *event.MessageEventContent) bool {
				return c.RelatesTo != nil && c.RelatesTo.Type == event.RelReplace && c.RelatesTo.EventID == text &&
					c.NewContent != nil && c.NewContent.Body == "plain text, edited" && c.Body == "* plain text, edited"
			}},
			{emote, func(c *event.MessageEventContent) bool { return c.MsgType == event.MsgEmote }},
		} {
			evt := fetchEvent(t, alice, roomID, tc.eventID)
			if evt.Sender != sofia || evt.Type != event.EventMessage || !tc.check(evt.Content.AsMessage()) {
				t.Errorf("event %s as the human sees it: sender %s, content %s", tc.eventID, evt.Sender, evt.Content.VeryRaw)
			}
		}

		// Reaction and redaction.
		res := s.api(t, http.MethodPost, "/internal/matrix/send-reaction", map[string]any{"room_id": roomID, "event_id": question, "reactor": "agent:sofia", "emoji": "👍"})
		if res.status != 200 {
			t.Fatalf("reaction: %d %s", res.status, res.body)
		}
		reaction := fetchEvent(t, alice, roomID, id.EventID(res.str("event_id")))
		if rc := reaction.Content.AsReaction(); reaction.Sender != sofia || rc.RelatesTo.Key != "👍" || rc.RelatesTo.EventID != question {
			t.Errorf("reaction as seen: %s %s", reaction.Sender, reaction.Content.VeryRaw)
		}
		res = s.api(t, http.MethodPost, "/internal/matrix/redact", map[string]any{"room_id": roomID, "event_id": emote, "reason": "oops"})
		if res.status != 200 || !strings.HasPrefix(res.str("event_id"), "$") {
			t.Fatalf("redact: %d %s", res.status, res.body)
		}
		// Dendrite applies a redaction asynchronously.
		eventually(t, "the redaction to apply", 10*time.Second, func() bool {
			return len(fetchEvent(t, alice, roomID, emote).Content.VeryRaw) <= 2
		})

		// The same Idempotency-Key twice gives one event.
		var ids []string
		for i := 0; i < 2; i++ {
			req, _ := http.NewRequest(http.MethodPost, s.apiURL+"/internal/matrix/send", strings.NewReader(`{"room_id":"`+roomID.String()+`","sender":"agent:sofia","body":"once"}`))
			req.Header.Set("X-Internal-Service-Token", serviceSecret)
			req.Header.Set("Idempotency-Key", "order-42")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var out map[string]string
			_ = jsonDecode(resp, &out)
			ids = append(ids, out["event_id"])
		}
		if ids[0] == "" || ids[0] != ids[1] {
			t.Errorf("Idempotency-Key retries gave %v", ids)
		}
		msgs, err := alice.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, nil, 50)
		if err != nil {
			t.Fatal(err)
		}
		once := 0
		for _, evt := range msgs.Chunk {
			if evt.Type == event.EventMessage && strings.Contains(string(evt.Content.VeryRaw), `"once"`) {
				once++
			}
		}
		if once != 1 {
			t.Errorf("the human sees %d copies of the idempotent message", once)
		}
		// The same key for another request is a conflict.
		req, _ := http.NewRequest(http.MethodPost, s.apiURL+"/internal/matrix/send", strings.NewReader(`{"room_id":"`+roomID.String()+`","sender":"agent:sofia","body":"different"}`))
		req.Header.Set("X-Internal-Service-Token", serviceSecret)
		req.Header.Set("Idempotency-Key", "order-42")
		if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 409 {
			t.Errorf("reused key for another body: %v %v", resp.StatusCode, err)
		}
	})
}

// Membership through the API, and ghosts made by the homeserver's questions.
func TestAgentMembershipAndGhosts(t *testing.T) {
	forEachRig(t, func(t *testing.T, tdb rig) {
		ctx := context.Background()
		s := newStack(t, tdb)
		s.bridge.waitForLog("Bridge bot registered", 30*time.Second)
		roomID, alias := createCity(t, s, "forum", "Forum", "")
		alice, _ := s.humanJoins("alice", alias)
		member := func(user id.UserID) event.Membership {
			var m event.MemberEventContent
			if err := alice.StateEvent(ctx, roomID, event.StateMember, user.String(), &m); err != nil {
				return ""
			}
			return m.Membership
		}
		mbr := func(action string, body map[string]any, status string) {
			t.Helper()
			body["room_id"] = roomID
			res := s.api(t, http.MethodPost, "/internal/matrix/"+action, body)
			if res.status != 200 || res.str("status") != status {
				t.Fatalf("%s %v: %d %s", action, body, res.status, res.body)
			}
		}
		oleh := id.NewUserID("agent_oleh", serverName)
		mbr("invite", map[string]any{"user_id": "agent:oleh"}, "invited")
		eventually(t, "oleh invited or joined", 10*time.Second, func() bool { m := member(oleh); return m == "invite" || m == "join" })
		mbr("join", map[string]any{"user_id": oleh.String()}, "joined")
		if m := member(oleh); m != event.MembershipJoin {
			t.Errorf("oleh after join: %s", m)
		}
		mbr("kick", map[string]any{"user_id": "agent:oleh", "reason": "test"}, "kicked")
		if m := member(oleh); m != event.MembershipLeave {
			t.Errorf("oleh after kick: %s", m)
		}
		// A kicked agent that posts is joined again first.
		send(t, s, map[string]any{"room_id": roomID, "sender": "agent:oleh", "body": "I am back"})
		if m := member(oleh); m != event.MembershipJoin {
			t.Errorf("oleh after posting: %s", m)
		}
		mbr("leave", map[string]any{"user_id": "agent:oleh"}, "left")
		if m := member(oleh); m != event.MembershipLeave {
			t.Errorf("oleh after leave: %s", m)
		}
		mbr("ban", map[string]any{"user_id": "agent:oleh"}, "banned")
		if m := member(oleh); m != event.MembershipBan {
			t.Errorf("oleh after ban: %s", m)
		}
		mbr("unban", map[string]any{"user_id": "agent:oleh"}, "unbanned")
		if m := member(oleh); m != event.MembershipLeave {
			t.Errorf("oleh after unban: %s", m)
		}

		// A human looks up @agent_new, an agent the platform never made: a
		// 404 on both. Dendrite asks the bridge (user query), which answers
		// 404 and registers nothing (only known agents exist). Synapse asks
		// appservices about users only for membership events and logins,
		// never for a profile.
		newAgent := id.NewUserID("agent_new", serverName)
		_, err := alice.GetProfile(ctx, newAgent)
		if !errors.Is(err, mautrix.MNotFound) && !isHTTPStatus(err, http.StatusNotFound) {
			t.Fatalf("profile of @agent_new on %s: %v, want a 404", tdb.homeserver, err)
		}
		// An invalid agent id is not a user.
		if _, err := alice.GetProfile(ctx, id.UserID("@agent_BAD:"+serverName)); err == nil {
			t.Error("@agent_BAD has a profile")
		}

		// The human (power level 0) invites @agent_other, an agent the
		// platform never made: the invite is ignored and registers nothing,
		// whatever her level. Synapse creates rooms with invite at level 50
		// (Dendrite: 0), so there she may not invite at all until the bot
		// lowers it.
		other := id.NewUserID("agent_other", serverName)
		if tdb.homeserver == testrig.Synapse {
			if _, err := alice.InviteUser(ctx, roomID, &mautrix.ReqInviteUser{UserID: other}); !isForbidden(err) {
				t.Fatalf("Synapse let a level-0 human invite: %v", err)
			}
			var pl event.PowerLevelsEventContent
			_ = s.botClient().StateEvent(ctx, roomID, event.StatePowerLevels, "", &pl)
			zero := 0
			pl.InvitePtr = &zero
			if _, err := s.botClient().SendStateEvent(ctx, roomID, event.StatePowerLevels, "", &pl); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := alice.InviteUser(ctx, roomID, &mautrix.ReqInviteUser{UserID: other}); err != nil {
			t.Fatalf("alice invites @agent_other: %v", err)
		}
		s.bridge.waitForLog("Ignoring an invite of an unknown agent", 15*time.Second)
		if m := member(other); m != event.MembershipInvite {
			t.Errorf("@agent_other after the invite: %s, want invite (neither joined nor declined)", m)
		}
		// Raised to 50, her next invite is still ignored.
		var pl event.PowerLevelsEventContent
		_ = s.botClient().StateEvent(ctx, roomID, event.StatePowerLevels, "", &pl)
		pl.SetUserLevel(alice.UserID, 50)
		if _, err := s.botClient().SendStateEvent(ctx, roomID, event.StatePowerLevels, "", &pl); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.InviteUser(ctx, roomID, &mautrix.ReqInviteUser{UserID: other}); err != nil {
			t.Fatalf("alice invites @agent_other again: %v", err)
		}
		// Dendrite makes a new invite event, which the bridge ignores too;
		// Synapse answers with the invite it has, making no new event.
		if tdb.homeserver == testrig.Dendrite {
			eventually(t, "the second invite of @agent_other to be ignored", 15*time.Second, func() bool {
				return countLines(s.bridge.logs(), "Ignoring an invite of an unknown agent") >= 2
			})
		} else if countLines(s.bridge.logs(), "Ignoring an invite of an unknown agent") != 1 {
			t.Errorf("Synapse made a second invite event")
		}
		if m := member(other); m != event.MembershipInvite {
			t.Errorf("@agent_other after the second invite: %s, want invite", m)
		}
	})
}

func isHTTPStatus(err error, status int) bool {
	var httpErr mautrix.HTTPError
	return errors.As(err, &httpErr) && httpErr.Response != nil && httpErr.Response.StatusCode == status
}

// Acting as someone: scopes, the double-puppeting namespace, matching ids.
func TestActingAsSomeone(t *testing.T) {
	forEachRig(t, func(t *testing.T, tdb rig) {
		s := newStackWith(t, tdb, stackOptions{internalAPI: `    services:
        - name: messenger
          token: messenger-token-0123456789abcdef
          scopes: [messaging]
        - name: agents-only
          token: agents-only-token-0123456789abcdef
          scopes: [agents]`})
		s.bridge.waitForLog("Bridge bot registered", 30*time.Second)
		roomID, alias := createCity(t, s, "square", "Square", "")
		s.humanJoins("alice", alias)
		base := map[string]any{"room_id": roomID, "body": "hi"}
		with := func(kv ...any) map[string]any {
			m := map[string]any{}
			for k, v := range base {
				m[k] = v
			}
			for i := 0; i < len(kv); i += 2 {
				m[kv[i].(string)] = kv[i+1]
			}
			return m
		}
		for _, tc := range []struct {
			name, token string
			body        map[string]any
			status      int
			errcode     string
			field       string
		}{
			{"human without the namespace", serviceSecret, with("sender", "user:alice"), 403, "M_FORBIDDEN", ""},
			{"agent without the agents scope", "messenger-token-0123456789abcdef", with("sender", "agent:sofia"), 403, "M_FORBIDDEN", ""},
			{"bot without admin", "messenger-token-0123456789abcdef", with("sender", "bridge:bot"), 403, "M_FORBIDDEN", ""},
			{"remote user", serviceSecret, with("sender", "matrix:@x:elsewhere.org"), 403, "M_FORBIDDEN", ""},
			{"no messaging scope", "agents-only-token-0123456789abcdef", with("sender", "agent:sofia"), 403, "M_FORBIDDEN", ""},
			{"mismatched matrix id", serviceSecret, with("sender", "agent:sofia", "sender_matrix_id", "@agent_oleh:"+serverName), 400, "", "sender_matrix_id"},
			{"invalid agent id", serviceSecret, with("sender", "agent:Sofia!"), 400, "", "sender"},
			{"missing sender", serviceSecret, with(), 400, "", "sender"},
			{"missing body", serviceSecret, with("sender", "agent:sofia", "body", ""), 400, "", "body"},
			{"bad msgtype", serviceSecret, with("sender", "agent:sofia", "msgtype", "m.location"), 400, "", "msgtype"},
			{"image without url", serviceSecret, with("sender", "agent:sofia", "msgtype", "m.image"), 400, "", "url"},
			{"html without format", serviceSecret, with("sender", "agent:sofia", "formatted_body", "<b>x</b>"), 400, "", "format"},
			{"bad relation", serviceSecret, with("sender", "agent:sofia", "relates_to", map[string]any{"rel_type": "m.annotation", "event_id": "$x"}), 400, "", "relates_to.rel_type"},
			{"bad reply target", serviceSecret, with("sender", "agent:sofia", "relates_to", map[string]any{"m.in_reply_to": map[string]any{"event_id": "nope"}}), 400, "", "relates_to.m.in_reply_to.event_id"},
			{"room and slug", serviceSecret, with("sender", "agent:sofia", "city_slug", "square"), 400, "", "city_slug"},
			{"unknown slug", serviceSecret, map[string]any{"city_slug": "nowhere", "sender": "agent:sofia", "body": "x"}, 404, "M_NOT_FOUND", ""},
			{"bad room id", serviceSecret, with("sender", "agent:sofia", "room_id", "general"), 400, "", "room_id"},
		} {
			res := s.apiAs(t, tc.token, http.MethodPost, "/internal/matrix/send", tc.body)
			if res.status != tc.status || (tc.errcode != "" && res.str("error") != tc.errcode) || (tc.field != "" && res.str("field") != tc.field) {
				t.Errorf("%s: %d %s, want %d %s %s", tc.name, res.status, res.body, tc.status, tc.errcode, tc.field)
			}
		}
		for _, tc := range []struct {
			path  string
			body  map[string]any
			field string
		}{
			{"/internal/matrix/send-reaction", map[string]any{"room_id": roomID, "event_id": "x", "reactor": "agent:sofia", "emoji": "👍"}, "event_id"},
			{"/internal/matrix/send-reaction", map[string]any{"room_id": roomID, "event_id": "$x", "reactor": "agent:sofia"}, "emoji"},
			{"/internal/matrix/redact", map[string]any{"room_id": roomID}, "event_id"},
			{"/internal/matrix/invite", map[string]any{"room_id": roomID}, "user_id"},
			{"/internal/matrix/invite", map[string]any{"room_id": roomID, "user_id": "agent:UPPER"}, "user_id"},
			{"/internal/matrix/kick", map[string]any{"room_id": roomID, "user_id": "@x"}, "user_id"},
			{"/internal/matrix/join", map[string]any{"user_id": "agent:a"}, "room_id"},
		} {
			if res := s.api(t, http.MethodPost, tc.path, tc.body); res.status != 400 || res.str("field") != tc.field {
				t.Errorf("%s %v: %d %s, want 400 naming %s", tc.path, tc.body, res.status, res.body, tc.field)
			}
		}
		// Joining as a human without the namespace is refused too.
		if res := s.api(t, http.MethodPost, "/internal/matrix/join", map[string]any{"room_id": roomID, "user_id": "@alice:" + serverName}); res.status != 403 {
			t.Errorf("join as a human: %d %s", res.status, res.body)
		}
	})
}

// With the double-puppeting namespace on, a service may post as a human.
func TestDoublePuppeting(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, r rig) {
		s := newStackWith(t, r, stackOptions{appservice: "    double_puppet:\n        enabled: true\n"})
		s.bridge.waitForLog("Bridge bot registered", 30*time.Second)
		roomID, alias := createCity(t, s, "plaza", "Plaza", "")
		alice, _ := s.humanJoins("alice", alias)
		eventID := send(t, s, map[string]any{"room_id": roomID, "sender": "user:alice", "body": "posted for alice"})
		evt := fetchEvent(t, alice, roomID, eventID)
		if evt.Sender != alice.UserID || evt.Content.AsMessage().MsgType != event.MsgText {
			t.Errorf("double-puppeted message: sender %s, %s", evt.Sender, evt.Content.VeryRaw)
		}
	})
}
