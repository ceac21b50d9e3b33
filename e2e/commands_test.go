package e2e_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/testrig"
)

const commandPermissions = "permissions:\n    \"@admin:daarion.test\": admin\n    \"*\": user\n"

// botMessages are the bridge bot's messages in a room, oldest first, parsed.
func botMessages(t *testing.T, s *stack, cli *mautrix.Client, roomID id.RoomID) []*event.Event {
	t.Helper()
	resp, err := cli.Messages(context.Background(), roomID, "", "", mautrix.DirectionBackward, nil, 100)
	if err != nil {
		t.Fatalf("reading %s: %v", roomID, err)
	}
	var out []*event.Event
	for i := len(resp.Chunk) - 1; i >= 0; i-- {
		evt := resp.Chunk[i]
		if evt.Sender != s.cfg.BotUserID() || evt.Type != event.EventMessage {
			continue
		}
		_ = evt.Content.ParseRaw(evt.Type)
		out = append(out, evt)
	}
	return out
}

// repliesTo are the bot's answers to one event.
func repliesTo(t *testing.T, s *stack, cli *mautrix.Client, roomID id.RoomID, eventID id.EventID) []*event.MessageEventContent {
	t.Helper()
	var out []*event.MessageEventContent
	for _, evt := range botMessages(t, s, cli, roomID) {
		if c := evt.Content.AsMessage(); c.RelatesTo.GetReplyTo() == eventID {
			out = append(out, c)
		}
	}
	return out
}

// chat is a human talking to the bot in a room.
type chat struct {
	t      *testing.T
	s      *stack
	cli    *mautrix.Client
	room   id.RoomID
	prefix string
}

// run sends a command and waits for the bot's answer: one HTML m.notice
// replying to it, whose text has every want.
func (c *chat) run(command string, want ...string) string {
	c.t.Helper()
	cmd := sendText(c.t, c.cli, c.room, c.prefix+command)
	var replies []*event.MessageEventContent
	deadline := time.Now().Add(30 * time.Second)
	for len(replies) == 0 {
		if time.Now().After(deadline) {
			c.t.Fatalf("the bot never answered %q\nbridge log:\n%s", command, tail(c.s.bridge.logs(), 30))
		}
		time.Sleep(100 * time.Millisecond)
		replies = repliesTo(c.t, c.s, c.cli, c.room, cmd)
	}
	reply := replies[0]
	if len(replies) != 1 {
		c.t.Errorf("%q got %d answers", command, len(replies))
	}
	if reply.MsgType != event.MsgNotice {
		c.t.Errorf("%q: answer is %s, want m.notice", command, reply.MsgType)
	}
	if reply.Format != event.FormatHTML || !strings.Contains(reply.FormattedBody, "<") {
		c.t.Errorf("%q: answer has no HTML body: format %q, formatted_body %q", command, reply.Format, reply.FormattedBody)
	}
	for _, w := range want {
		if !strings.Contains(reply.Body, w) {
			c.t.Errorf("%q: answer does not contain %q:\n%s", command, w, reply.Body)
		}
	}
	return reply.Body
}

// An admin opens a direct chat with the bot on a real client and runs every
// command; a non-admin is refused; a restart answers nothing twice.
func TestCommands(t *testing.T) {
	forEachRig(t, func(t *testing.T, tdb rig) {
		ctx := context.Background()
		// One webhook worker: the deliverer takes due queues oldest first,
		// one at a time (what the paused subscription's check relies on).
		s := newStackWith(t, tdb, stackOptions{extra: fastRetries + "    webhook_workers: 1\n" + commandPermissions, homeserverRateLimits: busyHumans})
		s.bridge.waitForLog("Bridge bot registered", 30*time.Second)
		botID := s.cfg.BotUserID()

		// A city room with a human and an agent in it, and a webhook
		// subscription whose receiver fails until both messages are dead.
		roomID, alias := createCity(t, s, "harbour", "Harbour", "Where ships rest")
		alice, _ := s.humanJoins("alice", alias)
		rc := newReceiver(t)
		subID := rc.subscribe(t, s, map[string]any{"room_id": roomID.String(), "events": []string{"m.room.message"}})
		rc.setFail(true)
		agentMsg := send(t, s, map[string]any{"room_id": roomID, "sender": "agent:sofia", "body": "hello from sofia"})
		lost := sendText(t, alice, roomID, "into the void")
		subPath := "/internal/matrix/webhook/subscribe/" + subID
		eventually(t, "two dead letters", 60*time.Second, func() bool {
			letters, _ := s.api(t, http.MethodGet, subPath+"/dead-letters", nil).json["dead_letters"].([]any)
			return len(letters) == 2
		})
		rc.setFail(false)

		// The admin opens a direct chat; the bot joins and greets.
		admin, err := s.hs.RegisterUser(ctx, "admin", "correct horse battery staple", false)
		if err != nil {
			t.Fatal(err)
		}
		created, err := admin.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", IsDirect: true, Invite: []id.UserID{botID}})
		if err != nil {
			t.Fatal(err)
		}
		dm := created.RoomID
		eventually(t, "the bot to join the admin's direct chat", 30*time.Second, func() bool {
			members, err := admin.JoinedMembers(ctx, dm)
			_, joined := members.Joined[botID]
			return err == nil && joined
		})
		eventually(t, "the greeting", 30*time.Second, func() bool {
			msgs := botMessages(t, s, admin, dm)
			return len(msgs) == 1 && strings.Contains(msgs[0].Content.AsMessage().Body, "Send `help`")
		})

		c := &chat{t: t, s: s, cli: admin, room: dm}
		help := c.run("help", "DAARION bridge bot commands")
		// Nothing is missing from the log: one page of the homeserver's
		// timeline tells.
		c.run("reconcile harbour", "Reconciled** 1 room(s)", "0 event(s) recovered", "1 /messages page(s)")
		for _, name := range []string{"help", "ping", "status", "rooms", "room", "create-room", "archive", "unarchive", "confidential", "agents", "agent",
			"set-agent-name", "subscriptions", "failures", "redeliver", "pause", "resume", "parked", "space", "reconcile", "retry-parked"} {
			if !strings.Contains(help, "`"+name) {
				t.Errorf("help does not list %s", name)
			}
		}
		if n := strings.Count(help, "\n* "); n != 21 {
			t.Errorf("help has %d command lines, want 21:\n%s", n, help)
		}
		c.run("ping", "Pong!")
		status := c.run("status", "DAARION bridge", "Uptime:", "Homeserver:** reachable, ping", "Database:** "+map[string]string{testrig.SQLite: "SQLite", testrig.Postgres: "PostgreSQL"}[tdb.Name]+", reachable",
			"Event log:** position", "`rooms`", "`agents`", "`webhooks`", "`commands`", "lag",
			"Webhooks:** 1 subscription", "2 dead letters", "failing: `"+subID+"` (2 dead letters)", "NATS:** not configured")
		if strings.Contains(status, "unreachable") {
			t.Errorf("status reports something unreachable:\n%s", status)
		}

		// Rooms: list, create, look up (by slug, alias, id), archive, unarchive.
		c.run("rooms", "City rooms:** 1", "`harbour` — Harbour", "#city_harbour:daarion.test")
		c.run("create-room lighthouse The Lighthouse", "Created", "`lighthouse` — The Lighthouse", "#city_lighthouse:daarion.test")
		if got := listSlugs(t, s, "?prefix=lighthouse"); len(got) != 1 {
			t.Fatalf("create-room made no city room: %v", got)
		}
		lena, lighthouse := s.humanJoins("lena", id.NewRoomAlias("city_lighthouse", serverName))
		var name event.RoomNameEventContent
		if err = lena.StateEvent(ctx, lighthouse, event.StateRoomName, "", &name); err != nil || name.Name != "DAARION City — The Lighthouse" {
			t.Errorf("the created room is named %q (%v)", name.Name, err)
		}
		c.run("create-room lighthouse Again", "already exists")
		rooms := c.run("rooms light", "City rooms matching `light`:** 1", "`lighthouse`")
		if strings.Contains(rooms, "harbour") {
			t.Errorf("rooms light lists harbour:\n%s", rooms)
		}
		for _, ref := range []string{"harbour", alias.String(), roomID.String()} {
			c.run("room "+ref, "City room `harbour`** — Harbour", "#city_harbour:daarion.test", roomID.String(),
				"Where ships rest", "Members:** 3 joined", alice.UserID.String(), "@agent_sofia:daarion.test",
				"Last event:** `m.room.message`", subID)
		}
		c.run("archive lighthouse season over", "Archived", "`lighthouse`")
		if got := listSlugs(t, s, "?archived=true"); len(got) != 1 || got[0] != "lighthouse" {
			t.Errorf("archived rooms after archive = %v", got)
		}
		c.run("rooms --archived", "Archived city rooms:** 1", "`lighthouse`", "archived")
		c.run("archive lighthouse", "already archived")
		c.run("unarchive lighthouse", "Unarchived", "`lighthouse`")
		if got := listSlugs(t, s, "?archived=true"); len(got) != 0 {
			t.Errorf("archived rooms after unarchive = %v", got)
		}
		c.run("room nowhere", "Error:", "no city room has the slug nowhere")
		// Confidential: tell, mark, unmark (what it does: TestConfidentialRooms).
		c.run("confidential lighthouse", "City room `lighthouse` is **not confidential**.")
		c.run("confidential #city_lighthouse:daarion.test on", "City room `lighthouse` is **confidential** now")
		if res := s.api(t, http.MethodGet, "/internal/matrix/rooms/"+url.PathEscape(lighthouse.String())+"/confidential", nil); res.status != 200 || res.json["confidential"] != true {
			t.Errorf("the API does not see the bot's mark: %d %s", res.status, res.body)
		}
		c.run("confidential lighthouse off", "City room `lighthouse` is **not confidential** any more")
		c.run("confidential lighthouse maybe", "Error:", "must be on or off")

		// Agents: list, look up, rename.
		c.run("agents", "Agents:** 1", "`sofia`", "@agent_sofia:daarion.test")
		c.run("agents nobody", "Agents matching `nobody`:** none")
		c.run("agent sofia", "Agent `sofia`", "@agent_sofia:daarion.test", "Rooms:** 1: `harbour`", "Last post:** in `harbour`", "hello from sofia")
		c.run("set-agent-name agent:sofia Sofia the Navigator", "Renamed", "Sofia the Navigator")
		sofia := id.NewUserID("agent_sofia", serverName)
		if resp, err := alice.GetDisplayName(ctx, sofia); err != nil || resp.DisplayName != "Sofia the Navigator" {
			t.Errorf("the human sees the agent named %+v (%v)", resp, err)
		}
		c.run("agent @agent_sofia:daarion.test", "Agent `sofia`** — Sofia the Navigator")

		// Webhooks: list, dead letters, redeliver, pause, resume.
		c.run("subscriptions", "Webhook subscriptions:** 1", subID, "room `"+roomID.String()+"`", "active", "2 dead letters")
		c.run("failures "+subID, "Dead letters of `"+subID+"`", lost.String(), agentMsg.String(), "receiver answered 500", "redeliver "+subID+" all")
		redelivered := func(evtID id.EventID) func() bool {
			return func() bool {
				got := rc.received()
				return len(got) > 0 && got[len(got)-1].dto.ID == evtID.String()
			}
		}
		c.run("redeliver "+subID+" "+lost.String(), "Queued again", "1 dead letter")
		eventually(t, "the redelivered dead letter at the receiver", 30*time.Second, redelivered(lost))
		if got := c.run("failures "+subID, agentMsg.String()); strings.Contains(got, lost.String()) {
			t.Errorf("the redelivered event is still a dead letter:\n%s", got)
		}
		c.run("redeliver "+subID+" all", "Queued again", "1 dead letter")
		eventually(t, "the other redelivered dead letter at the receiver", 30*time.Second, redelivered(agentMsg))
		c.run("failures "+subID, "none")
		c.run("redeliver "+subID+" all", "no dead letters")
		if got := len(rc.received()); got != 2 {
			t.Errorf("the receiver got %d deliveries, want the 2 redelivered", got)
		}
		c.run("pause "+subID, "Paused")
		if res := s.api(t, http.MethodGet, subPath, nil); res.str("state") != "paused" {
			t.Errorf("after pause the subscription is %s", res.body)
		}
		before := len(rc.received())
		waiting := sendText(t, alice, roomID, "wait for resume")
		// A marker after it: another subscription's delivery of a later
		// event. With one worker taking the oldest queue first, a delivery
		// of the paused subscription would have come before the marker.
		marks := newReceiver(t)
		marks.subscribe(t, s, map[string]any{"room_id": roomID.String(), "events": []string{"m.reaction"}})
		mark, err := alice.SendReaction(ctx, roomID, waiting, "⏳")
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, "the marker at the other subscription's receiver", 30*time.Second, func() bool {
			got := marks.received()
			return len(got) > 0 && got[len(got)-1].dto.ID == mark.EventID.String()
		})
		if len(rc.received()) != before {
			t.Error("a paused subscription was delivered")
		}
		c.run("resume "+subID, "Resumed")
		eventually(t, "the held delivery after resume", 30*time.Second, func() bool {
			got := rc.received()
			return len(got) > before && got[len(got)-1].dto.ID == waiting.String()
		})
		c.run("failures sub_nope", "Error:", "no subscription has the id sub_nope")

		// Typos get the closest command; the prefix works here too.
		c.run("stauts", "Unknown command `stauts`", "Did you mean** `status`?")
		c.run("subscription", "Did you mean** `subscriptions`?")
		c.run("!daarion ping", "Pong!")

		// A non-admin's direct chat is refused: the bot leaves it unanswered.
		bob, err := s.hs.RegisterUser(ctx, "bob", "correct horse battery staple", false)
		if err != nil {
			t.Fatal(err)
		}
		bobDM, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", IsDirect: true, Invite: []id.UserID{botID}})
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, "the bot to reject the non-admin's invite", 30*time.Second, func() bool {
			var member event.MemberEventContent
			err := bob.StateEvent(ctx, bobDM.RoomID, event.StateMember, botID.String(), &member)
			return err == nil && member.Membership == event.MembershipLeave
		})
		// In a city room a non-admin gets a refusal, and nothing happens.
		if _, err = bob.JoinRoom(ctx, alias.String(), nil); err != nil {
			t.Fatal(err)
		}
		b := &chat{t: t, s: s, cli: bob, room: roomID, prefix: "!daarion "}
		if got := b.run("status", "`status` is for bridge admins only"); strings.Contains(got, "Uptime") || strings.Contains(got, "Homeserver") {
			t.Errorf("a non-admin saw the status:\n%s", got)
		}
		b.run("archive harbour", "`archive` is for bridge admins only")
		b.run("create-room intruder Intruder", "`create-room` is for bridge admins only")
		b.run("pause "+subID, "`pause` is for bridge admins only")
		b.run("ping", "Pong!") // a user may ping
		if got := listSlugs(t, s, ""); len(got) != 2 {
			t.Errorf("city rooms after the non-admin's commands = %v", got)
		}
		if got := listSlugs(t, s, "?archived=true"); len(got) != 0 {
			t.Errorf("the non-admin archived %v", got)
		}
		if res := s.api(t, http.MethodGet, subPath, nil); res.str("state") != "active" {
			t.Errorf("the non-admin changed the subscription: %s", res.body)
		}
		// Chatter without the prefix is not a command. The commands consumer
		// answers before its cursor passes an event.
		chatter := sendText(t, bob, roomID, "status")
		waitConsumed(t, s, "commands", chatter)
		if got := repliesTo(t, s, bob, roomID, chatter); len(got) != 0 {
			t.Errorf("the bot answered chatter: %+v", got)
		}

		// Every command was answered once, and the bot's own answers (which
		// come back through the log) were never taken for commands.
		dmMessages := len(botMessages(t, s, admin, dm))
		if want := 1 + len(commandsRun(t, s, admin, dm)); dmMessages != want {
			t.Errorf("the bot sent %d messages in the direct chat, want %d (a greeting and one answer per command)", dmMessages, want)
		}
		cityMessages := len(botMessages(t, s, bob, roomID))

		// A restart that reads the whole log again (the cursor rewound) runs
		// the commands again but answers none of them twice.
		s.bridge.terminate(30 * time.Second)
		if err = s.log.SaveCursor(ctx, "commands", 0); err != nil {
			t.Fatal(err)
		}
		s.bridge = s.startBridge()
		eventually(t, "the commands consumer to read the log again", 60*time.Second, func() bool {
			head, _ := s.log.Head(ctx)
			pos, _ := s.log.Cursor(ctx, "commands")
			return pos > 0 && pos >= head
		})
		if got := len(botMessages(t, s, admin, dm)); got != dmMessages {
			t.Errorf("after the restart the bot has %d messages in the direct chat, had %d", got, dmMessages)
		}
		if got := len(botMessages(t, s, bob, roomID)); got != cityMessages {
			t.Errorf("after the restart the bot has %d messages in the city room, had %d", got, cityMessages)
		}
		// The commands really ran again (and were answered by the homeserver
		// with the first answers).
		if n := countLines(s.bridge.logs(), "Running a command"); n == 0 {
			t.Errorf("no command ran again after the restart:\n%s", tail(s.bridge.logs(), 30))
		}
	})
}

// waitConsumed waits until evtID is in the bridge's event log and the
// consumer's cursor has passed it: what the consumer does with the event is
// done by then.
func waitConsumed(t *testing.T, s *stack, consumer string, evtID id.EventID) {
	t.Helper()
	ctx := context.Background()
	var pos int64
	eventually(t, evtID.String()+" in the event log", 30*time.Second, func() bool {
		all, err := s.log.Read(ctx, 0, 100_000)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range all {
			if e.EventID == evtID.String() {
				pos = e.Position
			}
		}
		return pos > 0
	})
	eventually(t, "the "+consumer+" consumer to pass "+evtID.String(), 30*time.Second, func() bool {
		cursor, err := s.log.Cursor(ctx, consumer)
		return err == nil && cursor >= pos
	})
}

// commandsRun lists the admin's messages in the direct chat.
func commandsRun(t *testing.T, s *stack, cli *mautrix.Client, roomID id.RoomID) []string {
	t.Helper()
	resp, err := cli.Messages(context.Background(), roomID, "", "", mautrix.DirectionBackward, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, evt := range resp.Chunk {
		if evt.Sender == cli.UserID && evt.Type == event.EventMessage {
			out = append(out, evt.ID.String())
		}
	}
	return out
}

// A service with only the messaging scope posts "!daarion status" as an
// admin through double puppeting and hangs up mid-send: whether or not the
// answer reached it, the bridge marked the message before sending it, so
// the bot knows its own echo and never runs it as the admin's command —
// while the admin's own command, typed in a real client, is answered.
func TestBridgeSentCommandsDoNotRun(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, r rig) {
		s := newStackWith(t, r, stackOptions{
			appservice:  "    double_puppet:\n        enabled: true\n",
			internalAPI: "    services:\n        - name: messenger\n          token: messenger-token-0123456789abc\n          scopes: [messaging]",
			extra:       commandPermissions,
		})
		s.bridge.waitForLog("Bridge bot registered", 30*time.Second)
		ctx := context.Background()
		roomID, alias := createCity(t, s, "council", "Council", "")
		admin, _ := s.humanJoins("admin", alias)

		// The service's request, cut off soon after it is sent; later each
		// time until the homeserver has the message (an earlier cut stops
		// the send before it reaches the homeserver).
		hasServiceMessage := func() bool {
			resp, err := admin.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, nil, 50)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range resp.Chunk {
				if e.Sender == admin.UserID && strings.Contains(string(e.Content.VeryRaw), "!daarion status") {
					return true
				}
			}
			return false
		}
		for wait := 5 * time.Millisecond; !hasServiceMessage(); wait *= 2 {
			if wait > 5*time.Second {
				t.Fatal("the service's message never reached the homeserver")
			}
			reqCtx, cancel := context.WithCancel(ctx)
			body := fmt.Sprintf(`{"room_id":%q,"sender":"user:admin","body":"!daarion status"}`, roomID)
			req, _ := http.NewRequestWithContext(reqCtx, http.MethodPost, s.apiURL+"/internal/matrix/send", strings.NewReader(body))
			req.Header.Set("X-Internal-Service-Token", "messenger-token-0123456789abc")
			req.Header.Set("Content-Type", "application/json")
			time.AfterFunc(wait, cancel)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
			cancel()
		}
		// The admin's own command comes after it.
		own := sendText(t, admin, roomID, "!daarion ping")

		// Wait until the commands consumer has handled the admin's command
		// (and so everything before it).
		waitConsumed(t, s, "commands", own)
		eventually(t, "the answer to the admin's own command", 30*time.Second, func() bool {
			return len(repliesTo(t, s, admin, roomID, own)) == 1
		})
		for _, e := range eventsBy(t, admin, roomID) {
			if e == own {
				continue
			}
			if replies := repliesTo(t, s, admin, roomID, e); len(replies) != 0 {
				t.Errorf("the bot answered %s, a message the bridge sent as the admin: %q", e, replies[0].Body)
			}
		}
	})
}
