package commands

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mxappservice "maunium.net/go/mautrix/appservice"

	"github.com/daarion/matrix-bridge/pkg/config"
	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/messaging"
	"github.com/daarion/matrix-bridge/pkg/registration"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

const (
	bot      = "@daarion-bot:daarion.test"
	admin    = "@admin:daarion.test"
	someone  = "@bob:daarion.test"
	outsider = "@eve:elsewhere.test"
	city     = "!city:daarion.test"
)

// sent is a message the bot sent to the fake homeserver.
type sent struct {
	room, txn string
	content   map[string]any
}

// fakeHomeserver answers the client-server calls the bot makes.
type fakeHomeserver struct {
	*testrig.FakeHomeserver
	mu     sync.Mutex
	joined map[string]bool // rooms the bot is in
	direct json.RawMessage // the bot's m.direct
	sent   []sent
	txns   map[string]string // txn id → event id, as a homeserver deduplicates
	left   []string
	failAt atomic.Int32 // answer 500 to this many sends
}

func newFakeHomeserver(t *testing.T) *fakeHomeserver {
	hs := &fakeHomeserver{FakeHomeserver: testrig.NewFakeHomeserver(t), joined: map[string]bool{city: true}, txns: map[string]string{}}
	const v3 = "/_matrix/client/v3"
	hs.handle("PUT "+v3+"/rooms/{room}/send/{type}/{txn}", func(w http.ResponseWriter, r *http.Request, body []byte) {
		if hs.failAt.Load() > 0 {
			hs.failAt.Add(-1)
			testrig.WriteMatrixError(w, 500, "M_UNKNOWN", "try again")
			return
		}
		txn := r.PathValue("txn")
		if eventID, ok := hs.txns[txn]; ok {
			testrig.WriteJSON(w, 200, map[string]string{"event_id": eventID})
			return
		}
		var content map[string]any
		_ = json.Unmarshal(body, &content)
		hs.sent = append(hs.sent, sent{room: r.PathValue("room"), txn: txn, content: content})
		eventID := fmt.Sprintf("$sent%d", len(hs.sent))
		hs.txns[txn] = eventID
		testrig.WriteJSON(w, 200, map[string]string{"event_id": eventID})
	})
	hs.handle("GET "+v3+"/rooms/{room}/state/m.room.member/{user}", func(w http.ResponseWriter, r *http.Request, _ []byte) {
		if r.PathValue("user") == bot && hs.joined[r.PathValue("room")] {
			testrig.WriteJSON(w, 200, map[string]string{"membership": "join"})
			return
		}
		testrig.WriteMatrixError(w, 403, "M_FORBIDDEN", "not in room")
	})
	join := func(w http.ResponseWriter, r *http.Request, _ []byte) {
		room := r.PathValue("room")
		hs.joined[room] = true
		testrig.WriteJSON(w, 200, map[string]string{"room_id": room})
	}
	hs.handle("POST "+v3+"/rooms/{room}/join", join)
	hs.handle("POST "+v3+"/join/{room}", join)
	hs.handle("POST "+v3+"/rooms/{room}/leave", func(w http.ResponseWriter, r *http.Request, _ []byte) {
		hs.left = append(hs.left, r.PathValue("room"))
		testrig.WriteJSON(w, 200, map[string]string{})
	})
	hs.handle("PUT "+v3+"/user/"+bot+"/account_data/m.direct", func(w http.ResponseWriter, _ *http.Request, body []byte) {
		hs.direct = body
		testrig.WriteJSON(w, 200, map[string]string{})
	})
	hs.handle("GET "+v3+"/user/"+bot+"/account_data/m.direct", func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		if hs.direct == nil {
			testrig.WriteMatrixError(w, 404, "M_NOT_FOUND", "no such account data")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(hs.direct)
	})
	return hs
}

// handle answers pattern with the request's body read and hs.mu held.
func (hs *fakeHomeserver) handle(pattern string, fn func(w http.ResponseWriter, r *http.Request, body []byte)) {
	hs.Handle(pattern, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		hs.mu.Lock()
		defer hs.mu.Unlock()
		fn(w, r, body)
	})
}

func (hs *fakeHomeserver) messages() []sent {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return append([]sent(nil), hs.sent...)
}

func newTestBot(t *testing.T, hs *fakeHomeserver) *Bot {
	t.Helper()
	cfg := config.Default()
	cfg.Homeserver.ServerName = "daarion.test"
	cfg.Homeserver.URL = hs.URL
	cfg.AppService.ASToken, cfg.AppService.HSToken = "as-token", "hs-token"
	cfg.Permissions = map[string]string{admin: "admin", "daarion.test": "user"}
	as, err := mxappservice.CreateFull(mxappservice.CreateOpts{
		Registration: registration.FromConfig(cfg), HomeserverDomain: "daarion.test", HomeserverURL: hs.URL,
	})
	if err != nil {
		t.Fatal(err)
	}
	as.DefaultHTTPRetries = 0
	return New(Options{Config: cfg, AppService: as, Version: "v-test"})
}

// logEvents builds log events from (type, room, sender, content[, state_key]).
type logEvent struct {
	typ, room, sender string
	content           map[string]any
	stateKey          *string
	age               time.Duration
}

var position atomic.Int64

func toLog(events ...logEvent) []*eventlog.Event {
	var out []*eventlog.Event
	for _, e := range events {
		pos := position.Add(1)
		evtID := fmt.Sprintf("$evt%d", pos)
		raw := map[string]any{"type": e.typ, "room_id": e.room, "sender": e.sender, "event_id": evtID,
			"content": e.content, "origin_server_ts": time.Now().Add(-e.age).UnixMilli()}
		if e.stateKey != nil {
			raw["state_key"] = *e.stateKey
		}
		data, _ := json.Marshal(raw)
		out = append(out, &eventlog.Event{Position: pos, EventID: evtID, Kind: eventlog.KindTimeline, RoomID: e.room,
			Type: e.typ, Sender: e.sender, ReceivedAt: time.Now(), JSON: data})
	}
	return out
}

func text(room, sender, body string) logEvent {
	return logEvent{typ: "m.room.message", room: room, sender: sender, content: map[string]any{"msgtype": "m.text", "body": body}}
}

func invite(room, sender string, direct bool) logEvent {
	key := bot
	return logEvent{typ: "m.room.member", room: room, sender: sender, stateKey: &key,
		content: map[string]any{"membership": "invite", "is_direct": direct}}
}

func encrypted(room, sender string) logEvent {
	return logEvent{typ: "m.room.encrypted", room: room, sender: sender, content: map[string]any{"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "x"}}
}

func body(s sent) string {
	b, _ := s.content["body"].(string)
	return b
}

func TestBotAnswersCommands(t *testing.T) {
	ctx := context.Background()
	hs := newFakeHomeserver(t)
	b := newTestBot(t, hs)

	type step struct {
		name   string
		events []logEvent
		// want are substrings of the answers, one per answer, in order.
		want []string
	}
	for _, st := range []step{
		{"admin pings in a city room", []logEvent{text(city, admin, "!daarion ping")}, []string{"Pong!"}},
		{"prefix alone is help", []logEvent{text(city, admin, "!daarion")}, []string{"DAARION bridge bot commands"}},
		{"no prefix in a city room is chatter", []logEvent{text(city, admin, "ping")}, nil},
		{"the bot's own messages are never commands", []logEvent{text(city, bot, "!daarion ping")}, nil},
		{"agents never command the bot", []logEvent{text(city, "@agent_sofia:daarion.test", "!daarion status")}, nil},
		{"notices are never commands", []logEvent{{typ: "m.room.message", room: city, sender: admin,
			content: map[string]any{"msgtype": "m.notice", "body": "!daarion ping"}}}, nil},
		{"stale commands are skipped", []logEvent{func() logEvent { e := text(city, admin, "!daarion ping"); e.age = 2 * time.Hour; return e }()}, nil},
		{"a user may ping", []logEvent{text(city, someone, "!daarion ping")}, []string{"Pong!"}},
		{"a user is refused status", []logEvent{text(city, someone, "!daarion status")}, []string{"`status` is for bridge admins only"}},
		{"a user is refused archive", []logEvent{text(city, someone, "!daarion archive kyiv")}, []string{"`archive` is for bridge admins only"}},
		{"an outsider is refused everything", []logEvent{text(city, outsider, "!daarion ping"), text(city, outsider, "!daarion nonsense")},
			[]string{"you may not use the bridge bot", "you may not use the bridge bot"}},
		{"unknown command gets the closest", []logEvent{text(city, admin, "!daarion stauts")}, []string{"Did you mean** `!daarion status`?"}},
		{"usage error", []logEvent{text(city, admin, "!daarion room")}, []string{"missing arguments. Usage: `!daarion room <slug|alias|room id>`"}},
		{"bad flag", []logEvent{text(city, admin, "!daarion rooms --force")}, []string{"unknown option `--force`"}},
		{"a room the bot is not in", []logEvent{text("!agents-only:daarion.test", admin, "!daarion ping")}, nil},
		{"a non-admin's invite is rejected", []logEvent{invite("!dm-bob:daarion.test", someone, true)}, nil},
		{"an admin's direct chat", []logEvent{invite("!dm:daarion.test", admin, true)}, []string{"Send `help`"}},
		{"no prefix in the direct chat", []logEvent{text("!dm:daarion.test", admin, "ping"), text("!dm:daarion.test", admin, "hlep")},
			[]string{"Pong!", "Did you mean** `help`?"}},
		{"help in the direct chat lists every command bare", []logEvent{text("!dm:daarion.test", admin, "help")}, []string{"* `status` — "}},
		{"prefix in the direct chat works too", []logEvent{text("!dm:daarion.test", admin, "!daarion ping")}, []string{"Pong!"}},
		{"encrypted messages in the direct chat get a hint", []logEvent{encrypted("!dm:daarion.test", admin)}, []string{"cannot read encrypted messages"}},
		{"encrypted messages elsewhere are ignored", []logEvent{encrypted(city, admin), encrypted("!dm:daarion.test", someone)}, nil},
	} {
		t.Run(st.name, func(t *testing.T) {
			before := len(hs.messages())
			if err := b.HandleEvents(ctx, toLog(st.events...)); err != nil {
				t.Fatal(err)
			}
			got := hs.messages()[before:]
			if len(got) != len(st.want) {
				t.Fatalf("%d answers, want %d: %+v", len(got), len(st.want), got)
			}
			for i, s := range got {
				if !strings.Contains(body(s), st.want[i]) {
					t.Errorf("answer %d = %q, want it to contain %q", i, body(s), st.want[i])
				}
				if s.content["msgtype"] != "m.notice" || s.content["format"] != "org.matrix.custom.html" || s.content["formatted_body"] == "" {
					t.Errorf("answer %d is not an HTML notice: %v", i, s.content)
				}
			}
		})
	}

	hs.mu.Lock()
	defer hs.mu.Unlock()
	if len(hs.left) != 1 || hs.left[0] != "!dm-bob:daarion.test" {
		t.Errorf("rooms left = %v, want the non-admin's direct chat", hs.left)
	}
	if hs.joined["!dm-bob:daarion.test"] {
		t.Error("the bot joined a non-admin's direct chat")
	}
	var direct map[string][]string
	if err := json.Unmarshal(hs.direct, &direct); err != nil || len(direct[admin]) != 1 || direct[admin][0] != "!dm:daarion.test" {
		t.Errorf("m.direct = %s (%v)", hs.direct, err)
	}
}

func TestBotAnswersOnceAcrossRetriesAndRestarts(t *testing.T) {
	ctx := context.Background()
	hs := newFakeHomeserver(t)
	b := newTestBot(t, hs)
	batch := toLog(text(city, admin, "!daarion ping"), text(city, admin, "!daarion help"))

	// The homeserver fails the first answers: they are retried with the same
	// transaction id.
	hs.failAt.Store(2)
	if err := b.HandleEvents(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if got := hs.messages(); len(got) != 2 {
		t.Fatalf("%d answers after failures, want 2", len(got))
	}
	// The runner retries a batch after an error: nothing runs again.
	if err := b.HandleEvents(ctx, batch); err != nil {
		t.Fatal(err)
	}
	// A restarted bridge handles the batch again: the answers have the same
	// transaction ids, so the homeserver keeps one of each.
	restarted := newTestBot(t, hs)
	if err := restarted.HandleEvents(ctx, batch); err != nil {
		t.Fatal(err)
	}
	got := hs.messages()
	if len(got) != 2 {
		t.Fatalf("%d answers, want 2", len(got))
	}
	if got[0].txn != txnID("reply", batch[0].EventID) || got[1].txn != txnID("reply", batch[1].EventID) {
		t.Errorf("transaction ids %s %s are not derived from the command events", got[0].txn, got[1].txn)
	}
	if relates, _ := got[0].content["m.relates_to"].(map[string]any); relates == nil {
		t.Errorf("the answer does not reply to the command: %v", got[0].content)
	}
}

func TestBotRemembersDirectChatsAcrossRestarts(t *testing.T) {
	ctx := context.Background()
	hs := newFakeHomeserver(t)
	if err := newTestBot(t, hs).HandleEvents(ctx, toLog(invite("!dm:daarion.test", admin, true))); err != nil {
		t.Fatal(err)
	}
	restarted := newTestBot(t, hs)
	before := len(hs.messages())
	if err := restarted.HandleEvents(ctx, toLog(text("!dm:daarion.test", admin, "ping"))); err != nil {
		t.Fatal(err)
	}
	if got := hs.messages()[before:]; len(got) != 1 || !strings.Contains(body(got[0]), "Pong!") {
		t.Errorf("after a restart the direct chat got %+v", got)
	}
}

// A DAARION service acting as an admin through double puppeting does not
// command the bot: the bridge marks every message it sends (before the send,
// in the content), so its echo is known even when nothing was recorded.
func TestDoublePuppetedMessagesAreNotCommands(t *testing.T) {
	ctx := context.Background()
	hs := newFakeHomeserver(t)
	b := newTestBot(t, hs)
	b.opts.Config.AppService.DoublePuppet.Enabled = true
	b = New(Options{Config: b.opts.Config, AppService: b.opts.AppService})

	sentByBridge := text(city, admin, "!daarion ping")
	sentByBridge.content[messaging.TxnMarker] = "daarion_once_x"
	events := toLog(sentByBridge, text(city, admin, "!daarion ping"))
	if err := b.HandleEvents(ctx, events); err != nil {
		t.Fatal(err)
	}
	got := hs.messages()
	if len(got) != 1 || got[0].txn != txnID("reply", events[1].EventID) {
		t.Errorf("answers %+v, want one, to the admin's own command", got)
	}
}
