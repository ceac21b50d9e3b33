package e2e_test

// What only Synapse can show: it sends appservices ephemeral events,
// to-device messages and MSC3202 summaries, redactions, pings them, marks
// them down and backs off. Each test runs on Synapse only, because Dendrite
// does none of it (docs/homeservers.md); the rest of the suite runs on both.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	natsjs "github.com/nats-io/nats.go/jetstream"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/mapping"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

func synapseRig(t *testing.T) rig {
	return rig{TestDatabase: testrig.NewTestDatabase(t, testrig.SQLite), homeserver: testrig.Synapse}
}

// natsDTOs reads the whole DAARION stream.
func natsDTOs(t *testing.T, natsURL string) []mapping.DTO {
	t.Helper()
	js := jetStream(t, natsURL)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []mapping.DTO
	readStream(ctx, js, func(msg natsjs.Msg) {
		var dto mapping.DTO
		if json.Unmarshal(msg.Data(), &dto) == nil {
			out = append(out, dto)
		}
	})
	return out
}

// A real client's typing notification, read receipt, presence change and
// redactions (of a message; of a reaction: messaging.message.deleted, then
// messaging.reaction.removed) reach a webhook and NATS as DTOs, whichever of the two
// ephemeral keys (stable `ephemeral`, unstable
// `de.sorunome.msc2409.ephemeral`) the registration asks Synapse for.
func TestSynapseEphemeralAndRedactionsFromARealClient(t *testing.T) {
	for _, variant := range []struct {
		name, dropLine string
	}{
		{"stable key", "de.sorunome.msc2409.push_ephemeral:"},
		{"unstable key", "receive_ephemeral:"},
	} {
		t.Run(variant.name, func(t *testing.T) {
			ctx := context.Background()
			natsURL := testrig.StartNATS(t, testrig.NATSOptions{}).URL()
			s := newStackWith(t, synapseRig(t), stackOptions{
				extra: "delivery:\n    nats_url: " + natsURL + "\n",
				editRegistration: func(reg string) string {
					var kept []string
					for _, line := range strings.Split(reg, "\n") {
						if !strings.HasPrefix(line, variant.dropLine) {
							kept = append(kept, line)
						}
					}
					return strings.Join(kept, "\n")
				},
			})
			s.bridge.waitForLog("Bridge bot registered", 30*time.Second)
			roomID, alias := createCity(t, s, "plaza", "Plaza", "")
			rc := newReceiver(t)
			rc.subscribe(t, s, map[string]any{"room_id": "*"})
			alice, _ := s.humanJoins("alice", alias)

			if _, err := alice.UserTyping(ctx, roomID, true, 20*time.Second); err != nil {
				t.Fatal(err)
			}
			msg := sendText(t, alice, roomID, "read me, then forget me")
			if err := alice.SendReceipt(ctx, roomID, msg, event.ReceiptTypeRead, nil); err != nil {
				t.Fatal(err)
			}
			if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceUnavailable, StatusMsg: "at lunch"}); err != nil {
				t.Fatal(err)
			}
			// A reaction taken back: the redaction of a reaction the log
			// holds is messaging.message.deleted, then
			// messaging.reaction.removed.
			reaction, err := alice.SendReaction(ctx, roomID, msg, "👍")
			if err != nil {
				t.Fatal(err)
			}
			unreact, err := alice.RedactEvent(ctx, roomID, reaction.EventID, mautrix.ReqRedact{Reason: "misclick"})
			if err != nil {
				t.Fatal(err)
			}
			redaction, err := alice.RedactEvent(ctx, roomID, msg, mautrix.ReqRedact{Reason: "changed my mind"})
			if err != nil {
				t.Fatal(err)
			}
			removedID := mapping.ReactionRemovedID(unreact.EventID.String())

			want := func(dtos []mapping.DTO) []string {
				var missing []string
				found := map[string]bool{}
				at := map[string]int{}
				for i, d := range dtos {
					reactionData, _ := d.Data["reaction"].(map[string]any)
					switch {
					case d.Type == mapping.MessageDeleted && d.ID == unreact.EventID.String() && d.Data["redacted_event_id"] == reaction.EventID.String() &&
						d.Data["redacted_type"] == "m.reaction" && reactionData["target_event_id"] == msg.String() && reactionData["key"] == "👍" &&
						d.Data["reason"] == "misclick":
						found["reaction deleted"], at["reaction deleted"] = true, i
					case d.Type == mapping.ReactionRemoved && d.ID == removedID && d.MatrixEventID == unreact.EventID.String() &&
						d.Sender != nil && d.Sender.ID == "user:alice" && d.Room != nil && d.Room.CitySlug == "plaza" &&
						d.Data["reaction_event_id"] == reaction.EventID.String() && d.Data["target_event_id"] == msg.String() &&
						d.Data["key"] == "👍" && d.Data["reason"] == "misclick":
						found["reaction removed"], at["reaction removed"] = true, i
					case d.Type == mapping.TypingUpdated && strings.Contains(fmt.Sprint(d.Data["typing"]), "user:alice"):
						found["typing"] = true
					case d.Type == mapping.ReadUpdated && strings.Contains(fmt.Sprint(d.Data["receipts"]), msg.String()):
						found["receipt"] = true
					case d.Type == mapping.PresenceUpdated && d.Sender != nil && d.Sender.ID == "user:alice" && d.Data["presence"] == "unavailable":
						found["presence"] = true
					case d.Type == mapping.MessageDeleted && d.ID == redaction.EventID.String() && d.Data["redacted_event_id"] == msg.String():
						found["redaction"] = true
					}
				}
				for _, k := range []string{"typing", "receipt", "presence", "redaction", "reaction deleted", "reaction removed"} {
					if !found[k] {
						missing = append(missing, k)
					}
				}
				if len(missing) == 0 && at["reaction removed"] < at["reaction deleted"] {
					missing = append(missing, "reaction removed after reaction deleted")
				}
				return missing
			}
			var missing []string
			eventually(t, "typing, receipt, presence, redaction and reaction removal DTOs at the webhook", 30*time.Second, func() bool {
				var dtos []mapping.DTO
				for _, r := range rc.received() {
					dtos = append(dtos, r.dto)
				}
				missing = want(dtos)
				return len(missing) == 0
			})
			// Each of the two DTOs of the reaction's redaction arrived once,
			// under its own webhook-id, with the redaction as its event,
			// valid against its schema.
			for _, r := range rc.received() {
				if r.dto.ID != unreact.EventID.String() && r.dto.ID != removedID {
					continue
				}
				if err := mapping.Validate(r.body.DTO); err != nil {
					t.Errorf("DTO %s does not match its JSON Schema: %v", r.dto.Type, err)
				}
				var raw struct {
					EventID string `json:"event_id"`
				}
				if json.Unmarshal(r.body.Event, &raw); raw.EventID != unreact.EventID.String() {
					t.Errorf("DTO %s delivered with event %s, want the redaction %s", r.dto.Type, raw.EventID, unreact.EventID)
				}
			}
			rc.mu.Lock()
			if rc.triesOf[unreact.EventID.String()] != 1 || rc.triesOf[removedID] != 1 {
				t.Errorf("webhook-ids %s and %s tried %d and %d times, want once each",
					unreact.EventID, removedID, rc.triesOf[unreact.EventID.String()], rc.triesOf[removedID])
			}
			rc.mu.Unlock()
			eventually(t, "the same DTOs on NATS", 30*time.Second, func() bool {
				missing = want(natsDTOs(t, natsURL))
				return len(missing) == 0
			})
			if len(missing) > 0 {
				t.Errorf("missing on NATS: %v", missing)
			}
		})
	}
}

// Ping both ways: at start the bridge asks Synapse to ping it, Synapse calls
// POST /_matrix/app/v1/ping with the bridge's transaction id, and the bridge
// logs Synapse's duration_ms. With a registration whose hs_token is not the
// bridge's, the bridge refuses Synapse's call and logs Synapse's M_BAD_STATUS
// with the status it answered.
func TestSynapsePingBothWays(t *testing.T) {
	t.Run("ok", func(t *testing.T) {
		s := newStack(t, synapseRig(t))
		s.bridge.waitForLog(`"homeserver_ms"`, 30*time.Second)
		logs := s.bridge.logs()
		sent := regexp.MustCompile(`"ping_txn_id":"([^"]+)".*Homeserver pinged the bridge`).FindStringSubmatch(logs)
		if sent == nil {
			t.Fatalf("no ping result with its transaction id:\n%s", tail(logs, 20))
		}
		if !strings.Contains(logs, `"txn_id":"`+sent[1]+`"`) || !strings.Contains(logs, "Pinged by the homeserver") {
			t.Errorf("Synapse did not call the ping endpoint with transaction id %q:\n%s", sent[1], tail(logs, 20))
		}
	})
	t.Run("bad hs_token", func(t *testing.T) {
		s := newStackWith(t, synapseRig(t), stackOptions{editRegistration: func(reg string) string {
			return regexp.MustCompile(`(?m)^hs_token: .*$`).ReplaceAllString(reg, `hs_token: "not-the-bridges-hs-token-0123456789abcdef"`)
		}})
		s.bridge.waitForLog("Homeserver could not ping the bridge", 30*time.Second)
		line := ""
		for _, l := range strings.Split(s.bridge.logs(), "\n") {
			if strings.Contains(l, "Homeserver could not ping the bridge") {
				line = l
			}
		}
		if !strings.Contains(line, `"errcode":"M_BAD_STATUS"`) || !strings.Contains(line, `"bridge_status":403`) {
			t.Errorf("ping failure not reported as Synapse reports it: %s", line)
		}
	})
}

// Down and back: the bridge is SIGKILLed while a real client keeps sending;
// Synapse marks the appservice down and backs off (2 s doubling); on restart
// the bridge's ping makes Synapse retry at once, so the bridge is caught up
// well before Synapse's next scheduled retry. Every event is logged once.
func TestSynapseDownAndBack(t *testing.T) {
	s := newStackWith(t, synapseRig(t), stackOptions{homeserverRateLimits: busyHumans})
	s.bridge.waitForLog("Bridge bot registered", 30*time.Second)
	roomID := s.createCityRoom("harbour")
	alice, _ := s.humanJoins("alice", id.NewRoomAlias("city_harbour", serverName))

	var mu sync.Mutex
	sent := 0
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			sendText(t, alice, roomID, fmt.Sprintf("tide %d", i))
			mu.Lock()
			sent++
			mu.Unlock()
			time.Sleep(100 * time.Millisecond)
		}
	}()
	sentSoFar := func() int { mu.Lock(); defer mu.Unlock(); return sent }
	eventually(t, "ten messages before the kill", 30*time.Second, func() bool { return sentSoFar() >= 10 })
	s.bridge.kill()
	// Down long enough for Synapse's recoverer to back off past 10 s
	// (retries after 2, 4, 8 and 16 s): without the ping a restart now
	// would wait for the retry due 30 s after the first failure.
	eventually(t, "Synapse to mark the appservice down", 30*time.Second, func() bool {
		return strings.Contains(readFile(t, s.hs.LogFile), "Starting recoverer for AS ID")
	})
	time.Sleep(15 * time.Second)
	close(stop)
	<-done

	produced := eventsBy(t, alice, roomID)
	restart := time.Now()
	s.bridge = s.startBridge()
	counts := s.waitLogged(produced, 60*time.Second)
	caughtUp := time.Since(restart)
	t.Logf("%d events by alice; restart to caught up: %v", len(produced), caughtUp.Round(time.Millisecond))
	for _, e := range produced {
		if counts[e.String()] != 1 {
			t.Errorf("event %s logged %d times", e, counts[e.String()])
		}
	}
	if caughtUp > 10*time.Second {
		t.Errorf("restart to caught up took %v, want under 10 s (Synapse's backoff, not the ping, decided it)", caughtUp)
	}
}

// Synapse resends events it has already delivered when it restarts before
// it has recorded how far it got (synapse#11447). Rewinding its stream
// position while it is stopped makes it do exactly that: every event since
// the room's creation comes again. On PostgreSQL they come under new
// transaction ids; on SQLite Synapse numbers transactions from 1 again after
// a restart (its id generator starts from the highest transaction still
// stored, and delivered ones are deleted), so ids the bridge has seen come
// back with other events. Either way the log holds each event once, and the
// new events in a reused id are stored, not skipped.
func TestSynapseResendsAfterARestart(t *testing.T) {
	for _, hsDB := range []string{testrig.SQLite, testrig.Postgres} {
		t.Run("synapse on "+hsDB, func(t *testing.T) {
			s := newStackWith(t, synapseRig(t), stackOptions{homeserverPostgres: hsDB == testrig.Postgres})
			s.bridge.waitForLog("Bridge bot registered", 30*time.Second)
			roomID := s.createCityRoom("echo")
			alice, _ := s.humanJoins("alice", id.NewRoomAlias("city_echo", serverName))
			for i := 0; i < 5; i++ {
				sendText(t, alice, roomID, fmt.Sprintf("once %d", i))
			}
			produced := eventsBy(t, alice, roomID)
			s.waitLogged(produced, 30*time.Second)
			before := committedTransactions(s.bridge.logs())

			if err := s.hs.Stop(); err != nil {
				t.Fatal(err)
			}
			rewindSynapse(t, s)
			if err := s.hs.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			// Synapse sends the backlog when the next event arrives.
			last := sendText(t, alice, roomID, "after the rewind")
			var after transactionLog
			eventually(t, "Synapse to resend alice's events", 30*time.Second, func() bool {
				after = committedTransactions(s.bridge.logs()[len(before.logs):])
				total := 0
				for _, n := range after.events {
					total += n
				}
				return total > len(produced)
			})
			s.waitLogged([]id.EventID{last}, 30*time.Second)
			counts := s.loggedEvents()
			for _, e := range append(produced, last) {
				if counts[e.String()] != 1 {
					t.Errorf("event %s logged %d times", e, counts[e.String()])
				}
			}
			reused := 0
			for txnID := range after.events {
				if _, seen := before.events[txnID]; seen {
					reused++
				}
			}
			switch hsDB {
			case testrig.SQLite:
				if reused == 0 {
					t.Errorf("Synapse on SQLite gave new transaction ids %v after its restart (before: %v); docs/homeservers.md says it reuses them", after.events, before.events)
				}
			case testrig.Postgres:
				if reused != 0 {
					t.Errorf("Synapse on PostgreSQL reused %d transaction ids after its restart", reused)
				}
			}
		})
	}
}

type transactionLog struct {
	logs   string
	events map[string]int // txn id → events in its latest attempt
}

var committedLine = regexp.MustCompile(`"txn_id":"([^"]+)","events":(\d+)[^\n]*"Transaction committed"`)

// committedTransactions reads the bridge's log of committed transactions.
func committedTransactions(logs string) transactionLog {
	out := transactionLog{logs: logs, events: map[string]int{}}
	for _, m := range committedLine.FindAllStringSubmatch(logs, -1) {
		n, _ := strconv.Atoi(m[2])
		out.events[m[1]] = n
	}
	return out
}

// rewindSynapse sets a stopped Synapse's appservice stream position back to
// the start, as if it had crashed before recording any delivery.
func rewindSynapse(t *testing.T, s *stack) {
	t.Helper()
	res, err := synapseDB(t, s).Exec(`UPDATE appservice_stream_position SET stream_ordering = 0`)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("rewinding Synapse's appservice stream position changed %d rows", n)
	}
}

// Ghosts: registered through the appservice with inhibit_login (no device, no
// access token: works where /login is gone, as with Synapse's next-generation
// auth), not rate limited (the registration says rate_limited: false), while
// a homeserver limit that does apply is waited out (retry_after_ms).
func TestSynapseGhostsAndRateLimits(t *testing.T) {
	t.Run("not limited", func(t *testing.T) {
		s := newStack(t, synapseRig(t))
		s.bridge.waitForLog("Bridge bot registered", 30*time.Second)
		roomID, _ := createCity(t, s, "agora", "Agora", "")
		// Well past a default Synapse's burst of 10 messages.
		for i := 0; i < 25; i++ {
			send(t, s, map[string]any{"room_id": roomID, "sender": "agent:sofia", "body": fmt.Sprintf("unthrottled %d", i)})
		}
		if n := strings.Count(readFile(t, s.hs.LogFile), " 429 "); n != 0 {
			t.Errorf("Synapse answered 429 %d times to the bridge's ghost", n)
		}
		// inhibit_login: the ghost has no device.
		var devices mautrix.RespDevicesInfo
		cli := s.botClient()
		cli.SetAppServiceUserID = true
		cli.UserID = id.NewUserID("agent_sofia", serverName)
		if _, err := cli.MakeRequest(context.Background(), http.MethodGet, cli.BuildClientURL("v3", "devices"), nil, &devices); err != nil {
			t.Fatal(err)
		}
		if len(devices.Devices) != 0 {
			t.Errorf("the ghost has devices %v; registration should inhibit login", devices.Devices)
		}
	})
	t.Run("limited registration waits out 429", func(t *testing.T) {
		s := newStackWith(t, synapseRig(t), stackOptions{
			editRegistration:     func(reg string) string { return strings.Replace(reg, "rate_limited: false", "rate_limited: true", 1) },
			homeserverRateLimits: "rc_message:\n  per_second: 2\n  burst_count: 3",
		})
		s.bridge.waitForLog("Bridge bot registered", 30*time.Second)
		roomID, _ := createCity(t, s, "queue", "Queue", "")
		var sent []id.EventID
		for i := 0; i < 8; i++ {
			sent = append(sent, send(t, s, map[string]any{"room_id": roomID, "sender": "agent:sofia", "body": fmt.Sprintf("patient %d", i)}))
		}
		if n := strings.Count(readFile(t, s.hs.LogFile), " 429 "); n == 0 {
			t.Error("Synapse never answered 429: the limit did not apply")
		}
		s.waitLogged(sent, 30*time.Second)
	})
}

// The to-device messages and MSC3202 device lists Synapse sends when they
// are enabled are accepted and stored in the log (for the end-to-bridge
// encryption): a human sends a to-device message to the bot's device, and
// logs in a second device, which changes her device list.
func TestSynapseToDeviceAndDeviceLists(t *testing.T) {
	s := newStack(t, synapseRig(t))
	s.bridge.waitForLog("Bridge bot registered", 30*time.Second)
	ctx := context.Background()
	_, alias := createCity(t, s, "vault", "Vault", "")
	// The bot gets a device by an appservice login.
	bot := s.botClient()
	login, err := bot.Login(ctx, &mautrix.ReqLogin{
		Type:       mautrix.AuthTypeAppservice,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: s.cfg.BotUserID().String()},
	})
	if err != nil {
		t.Fatal(err)
	}
	alice, _ := s.humanJoins("alice", alias)
	if _, err = alice.SendToDevice(ctx, event.Type{Type: "org.daarion.test.ping", Class: event.ToDeviceEventType}, &mautrix.ReqSendToDevice{
		Messages: map[id.UserID]map[id.DeviceID]*event.Content{
			s.cfg.BotUserID(): {login.DeviceID: {Raw: map[string]any{"hello": "bot"}}},
		},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err = s.hs.Login(ctx, "alice", "correct horse battery staple"); err != nil {
		t.Fatal(err)
	}
	var toDevice, deviceLists *eventlog.Event
	var seen []string
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("non-room events in the log: %s", strings.Join(seen, "\n"))
		}
	})
	eventually(t, "the to-device message and alice's device list change in the log", 30*time.Second, func() bool {
		all, err := s.log.Read(ctx, 0, 10000)
		if err != nil {
			t.Fatal(err)
		}
		seen = seen[:0]
		for _, e := range all {
			if e.Kind != eventlog.KindTimeline {
				seen = append(seen, fmt.Sprintf("%s %s %s", e.Kind, e.Type, e.JSON))
			}
			switch {
			case e.Kind == eventlog.KindToDevice && e.Type == "org.daarion.test.ping":
				toDevice = e
			case e.Kind == eventlog.KindDeviceSummary && e.Type == "device_lists" && strings.Contains(string(e.JSON), alice.UserID.String()):
				deviceLists = e
			}
		}
		return toDevice != nil && deviceLists != nil
	})
	var msg struct {
		Sender     string         `json:"sender"`
		ToUserID   string         `json:"to_user_id"`
		ToDeviceID string         `json:"to_device_id"`
		Content    map[string]any `json:"content"`
	}
	if err = json.Unmarshal(toDevice.JSON, &msg); err != nil || msg.Sender != alice.UserID.String() ||
		msg.ToUserID != s.cfg.BotUserID().String() || msg.ToDeviceID != login.DeviceID.String() || msg.Content["hello"] != "bot" {
		t.Errorf("to-device message stored as %s (%v)", toDevice.JSON, err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
