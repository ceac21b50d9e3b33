package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/mapping"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// encryptionOn is the config of a bridge with end-to-bridge encryption, whose
// agents accept a local user's invite into any room (the client's own
// encrypted room) and are provisioned on first invite.
const encryptionOn = `encryption:
    enabled: true
    pickle_key: e2e-pickle-key-0123456789
    give_up_after: 20s
agents:
    provision_unknown: ["sofia"]
    accept_invites_into: [any]
`

// A matrix-js-sdk client with its own (Rust) E2EE talks to an agent in an
// encrypted room on Synapse: its encrypted text, HTML, reply, edit, reaction
// and file reach a webhook as the same DTOs a clear room gives, with the
// right content; the agent's answer, sent through the internal API, is
// encrypted by the bridge with the agent's own device, and the client
// decrypts it.
// encryptedRig is a Synapse and an encrypting bridge, a webhook receiver
// for every room, and alice on a js client in an encrypted room with the
// agent sofia.
type encryptedRig struct {
	s         *stack
	rc        *receiver
	alice     *jsClient
	aliceHTTP *mautrix.Client
	sofia     id.UserID
	room      string
}

func newEncryptedRig(t *testing.T, tdb testrig.TestDatabase) *encryptedRig {
	t.Helper()
	return newEncryptedRigWith(t, tdb, stackOptions{extra: encryptionOn + fastRetries})
}

// newEncryptedRigWith is newEncryptedRig with the stack's options (the
// encryption config among them).
func newEncryptedRigWith(t *testing.T, tdb testrig.TestDatabase, opts stackOptions) *encryptedRig {
	t.Helper()
	opts.homeserverRateLimits = busyHumans
	s := newStackWith(t, rig{TestDatabase: tdb, homeserver: testrig.Synapse}, opts)
	s.bridge.waitForLog("Made an encryption device", 60*time.Second)
	logE2EEOnFailure(t, s)
	r := &encryptedRig{s: s, rc: newReceiver(t), sofia: id.NewUserID("agent_sofia", serverName)}
	r.rc.subscribe(t, s, map[string]any{"room_id": "*"})
	var err error
	if r.aliceHTTP, err = s.hs.RegisterUser(context.Background(), "alice", "correct horse battery staple", false); err != nil {
		t.Fatal(err)
	}
	r.alice = startJSClient(t)
	r.alice.LoginAs(s.hs, r.aliceHTTP)
	r.room = r.alice.CreateRoom("encrypted with sofia", true, r.sofia.String())
	r.alice.WaitMember(r.room, r.sofia.String(), "join", 60*time.Second)
	return r
}

// dto is the DTO with id eventID at the webhook, nil while there is none.
func (r *encryptedRig) dto(eventID string) *receivedDTO {
	for _, d := range r.rc.received() {
		if d.dto.ID == eventID {
			return &d
		}
	}
	return nil
}

func TestEncryptedRoomWithARealClient(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		r := newEncryptedRig(t, tdb)
		s, alice, aliceHTTP, sofia, room := r.s, r.alice, r.aliceHTTP, r.sofia, r.room

		marker := fmt.Sprintf("confidential-%d", time.Now().UnixNano())
		text := alice.Send(room, map[string]any{"msgtype": "m.text", "body": "hello " + marker})
		html := alice.Send(room, map[string]any{"msgtype": "m.text", "body": "bold move", "format": "org.matrix.custom.html",
			"formatted_body": "<b>bold</b> move"})
		reply := alice.Send(room, map[string]any{"msgtype": "m.text", "body": "a reply",
			"m.relates_to": map[string]any{"m.in_reply_to": map[string]any{"event_id": text}}})
		edit := alice.Send(room, map[string]any{"msgtype": "m.text", "body": "* hello again",
			"m.new_content": map[string]any{"msgtype": "m.text", "body": "hello again"},
			"m.relates_to":  map[string]any{"rel_type": "m.replace", "event_id": text}})
		reaction := alice.SendEvent(room, "m.reaction", map[string]any{"m.relates_to": map[string]any{
			"rel_type": "m.annotation", "event_id": html, "key": "🔐"}}, jsEncryptAlways)
		fileData := bytes.Repeat([]byte("secret plan "), 100)
		file := alice.UploadFile(room, "plan.txt", "text/plain", fileData)

		wait := func(what, eventID string) receivedDTO {
			t.Helper()
			var got *receivedDTO
			eventually(t, what+" at the webhook", 60*time.Second, func() bool { got = r.dto(eventID); return got != nil })
			if err := mapping.Validate(got.body.DTO); err != nil {
				t.Errorf("%s: %v", what, err)
			}
			return *got
		}
		checks := []struct {
			what, eventID, typ string
			data               map[string]any
		}{
			{"the text", text, mapping.MessageCreated, map[string]any{"body": "hello " + marker}},
			{"the HTML", html, mapping.MessageCreated, map[string]any{"formatted_body": "<b>bold</b> move", "body": "bold move"}},
			{"the reply", reply, mapping.MessageCreated, map[string]any{"reply_to_event_id": text}},
			{"the edit", edit, mapping.MessageEdited, map[string]any{"edited_event_id": text, "body": "hello again"}},
			{"the reaction", reaction, mapping.ReactionAdded, map[string]any{"target_event_id": html, "key": "🔐"}},
			{"the file", file.EventID, mapping.MediaUploaded, map[string]any{"url": file.MXC, "body": "plan.txt"}},
		}
		for _, c := range checks {
			d := wait(c.what, c.eventID)
			if d.dto.Type != c.typ || d.dto.Sender == nil || d.dto.Sender.ID != "user:alice" {
				t.Errorf("%s: %s from %+v, want %s from user:alice", c.what, d.dto.Type, d.dto.Sender, c.typ)
			}
			for k, want := range c.data {
				if got := d.dto.Data[k]; got != want {
					t.Errorf("%s: data.%s = %v, want %v", c.what, k, got, want)
				}
			}
		}
		// The file's DTO carries what decrypts it: the key the client made.
		fileDTO := wait("the file", file.EventID)
		if f, _ := fileDTO.dto.Data["file"].(map[string]any); f == nil || f["iv"] != file.File["iv"] || f["url"] != file.MXC {
			t.Errorf("the file's DTO has file %v, want the client's %v", fileDTO.dto.Data["file"], file.File)
		}

		// The agent answers through the internal API: encrypted on the wire,
		// decrypted by the client, and its echo is a DTO with its origin.
		answer := send(t, s, map[string]any{"room_id": room, "sender": "agent:sofia", "body": "answer to " + marker})
		// The Idempotency-Key guarantee holds in an encrypted room: the same
		// key again answers the same event.
		keyed := func() string {
			body, _ := json.Marshal(map[string]any{"room_id": room, "sender": "agent:sofia", "body": "once only"})
			req, _ := http.NewRequest(http.MethodPost, s.apiURL+"/internal/matrix/send", bytes.NewReader(body))
			req.Header.Set("X-Internal-Service-Token", serviceSecret)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Idempotency-Key", "encrypted-once")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var out struct {
				EventID string `json:"event_id"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("keyed send: %d %v", resp.StatusCode, err)
			}
			return out.EventID
		}
		if first, again := keyed(), keyed(); first == "" || first != again {
			t.Errorf("the same Idempotency-Key sent %q and %q", first, again)
		}
		got := alice.WaitDecrypted(jsWait{Room: room, Sender: sofia.String(), EventID: answer.String(), Timeout: 60 * time.Second})
		if got.WireType != "m.room.encrypted" || got.Content["body"] != "answer to "+marker {
			t.Errorf("alice read the agent's answer as %s %v, want it encrypted with body %q", got.WireType, got.Content, "answer to "+marker)
		}
		echo := wait("the agent's answer", answer.String())
		if echo.dto.Type != mapping.MessageCreated || echo.dto.Data["body"] != "answer to "+marker || echo.dto.Origin == nil || echo.dto.Sender.ID != "agent:sofia" {
			t.Errorf("the agent's answer's DTO: %s %v origin %+v sender %+v", echo.dto.Type, echo.dto.Data, echo.dto.Origin, echo.dto.Sender)
		}
		// Its reply, thread message, edit and reaction are encrypted too, and
		// the client reads each with its relation.
		agentReply := send(t, s, map[string]any{"room_id": room, "sender": "agent:sofia", "body": "a reply",
			"relates_to": map[string]any{"m.in_reply_to": map[string]string{"event_id": text}}})
		agentThread := send(t, s, map[string]any{"room_id": room, "sender": "agent:sofia", "body": "in a thread",
			"relates_to": map[string]any{"rel_type": "m.thread", "event_id": text}})
		agentEdit := send(t, s, map[string]any{"room_id": room, "sender": "agent:sofia", "body": "answer, edited",
			"relates_to": map[string]any{"rel_type": "m.replace", "event_id": answer.String()}})
		res := s.api(t, http.MethodPost, "/internal/matrix/send-reaction", map[string]any{"room_id": room, "event_id": text, "reactor": "agent:sofia", "emoji": "👀"})
		if res.status != http.StatusOK {
			t.Fatalf("agent reaction: %d %s", res.status, res.body)
		}
		for _, c := range []struct {
			what, eventID, relType string
		}{
			{"reply", agentReply.String(), ""}, {"thread message", agentThread.String(), "m.thread"},
			{"edit", agentEdit.String(), "m.replace"}, {"reaction", res.str("event_id"), "m.annotation"},
		} {
			got := alice.WaitDecrypted(jsWait{Room: room, Sender: sofia.String(), EventID: c.eventID, Timeout: 60 * time.Second})
			rel, _ := got.Content["m.relates_to"].(map[string]any)
			if got.WireType != "m.room.encrypted" || rel == nil || (c.relType != "" && rel["rel_type"] != c.relType) {
				t.Errorf("the agent's %s reached alice as %s with m.relates_to %v, want encrypted with %q", c.what, got.WireType, rel, c.relType)
			}
		}
		// On the homeserver the room holds only ciphertext of it.
		evt := fetchEvent(t, aliceHTTP, id.RoomID(room), answer)
		if evt.Type.Type != "m.room.encrypted" || strings.Contains(string(evt.Content.VeryRaw), marker) {
			t.Errorf("the agent's answer is stored as %s %s, want only ciphertext", evt.Type.Type, evt.Content.VeryRaw)
		}
		if res := s.api(t, http.MethodGet, "/internal/matrix/sync?timeout=0", nil); res.status != http.StatusOK {
			t.Errorf("sync: %d %s", res.status, res.body)
		}
		if strings.Contains(s.bridge.logs(), "e2e-pickle-key-0123456789") {
			t.Error("the pickle key is in the bridge's log")
		}
		if n := countLines(s.bridge.logs(), "Failed to decrypt"); n > 0 {
			t.Errorf("%d decryption failures logged", n)
		}
	})
}

// Dendrite has no appservice devices (MSC4190) and pushes no to-device
// events or device lists (MSC2409/MSC3202): with encryption on, the bridge
// says at start, once and clearly, that encryption is unavailable there,
// the bot's status shows why, and everything else keeps working.
func TestEncryptionUnavailableOnDendrite(t *testing.T) {
	s := newStackWith(t, rig{TestDatabase: testrig.NewTestDatabase(t, testrig.SQLite), homeserver: testrig.Dendrite},
		stackOptions{extra: encryptionOn})
	s.bridge.waitForLog("End-to-bridge encryption is unavailable on this homeserver", 60*time.Second)
	for _, line := range strings.Split(s.bridge.logs(), "\n") {
		if strings.Contains(line, "encryption is unavailable") {
			t.Logf("the bridge said: %s", line)
		}
	}
	if n := countLines(s.bridge.logs(), "End-to-bridge encryption is unavailable on this homeserver"); n != 1 {
		t.Errorf("said %d times that encryption is unavailable, want once", n)
	}
	roomID, alias := createCity(t, s, "plain", "Plain", "")
	alice, _ := s.humanJoins("alice", alias)
	msg := sendText(t, alice, roomID, "still works")
	answer := send(t, s, map[string]any{"room_id": roomID, "sender": "agent:sofia", "body": "so do I"})
	s.waitLogged([]id.EventID{msg, answer}, 30*time.Second)
	if res := s.api(t, http.MethodGet, "/healthz", nil); res.status != http.StatusOK {
		t.Errorf("healthz: %d %s", res.status, res.body)
	}
}

// The bridge is SIGKILLed right after the client shared a room key with the
// agent's device (the to-device message in flight in Synapse's transaction)
// and stays down while more is sent: once it is back, every message the
// client sent is decrypted and delivered, none undecryptable.
func TestEncryptionSurvivesASIGKILL(t *testing.T) {
	r := newEncryptedRig(t, testrig.NewTestDatabase(t, testrig.SQLite))
	first := r.alice.Send(r.room, map[string]any{"msgtype": "m.text", "body": "before the kill"})
	r.s.bridge.kill()
	sent := []string{first}
	for i := range 5 {
		sent = append(sent, r.alice.Send(r.room, map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("while down %d", i)}))
	}
	r.s.bridge = r.s.startBridge()
	for _, eventID := range sent {
		eventually(t, "the message "+eventID+" decrypted at the webhook", 90*time.Second, func() bool { return r.dto(eventID) != nil })
		if d := r.dto(eventID); d.dto.Type != mapping.MessageCreated {
			t.Errorf("%s arrived as %s %v, want it decrypted", eventID, d.dto.Type, d.dto.Data)
		}
	}
	for _, d := range r.rc.received() {
		if d.dto.Type == mapping.MessageUndecryptable {
			t.Errorf("undecryptable after the restart: %s %v", d.dto.ID, d.dto.Data)
		}
	}
}

// An encrypted room marked confidential: the decrypted message reaches the
// webhook without its content, and its plaintext is nowhere in the
// bridge's database or log — not even as the clear form of the event.
func TestEncryptedConfidentialRoom(t *testing.T) {
	r := newEncryptedRig(t, testrig.NewTestDatabase(t, testrig.SQLite))
	path := "/internal/matrix/rooms/" + url.PathEscape(r.room) + "/confidential"
	if res := r.s.api(t, http.MethodPut, path, map[string]any{"confidential": true}); res.status != http.StatusOK {
		t.Fatalf("marking the room confidential: %d %s", res.status, res.body)
	}
	secret := fmt.Sprintf("secret-%d", time.Now().UnixNano())
	msg := r.alice.Send(r.room, map[string]any{"msgtype": "m.text", "body": "the plan is " + secret})
	eventually(t, "the message's DTO", 60*time.Second, func() bool { return r.dto(msg) != nil })
	d := r.dto(msg)
	if d.raw["confidential"] != true || d.dto.Type != mapping.MessageCreated || d.dto.Data["body"] != nil || strings.Contains(string(d.body.DTO), secret) {
		t.Errorf("the confidential room's DTO: %s", d.body.DTO)
	}
	if strings.Contains(string(d.body.Event), secret) {
		t.Errorf("the webhook's event carries the plaintext: %s", d.body.Event)
	}
	for table, rows := range dumpTables(t, r.s) {
		if strings.Contains(rows, secret) {
			t.Errorf("table %s holds the confidential room's plaintext", table)
		}
	}
	if strings.Contains(r.s.bridge.logs(), secret) {
		t.Error("the bridge's log holds the confidential room's plaintext")
	}
}

// An encrypted event whose keys are not there when the bridge first reads
// it waits, and is decrypted as soon as they come; one whose keys never
// come is delivered as messaging.message.undecryptable after
// encryption.give_up_after. Synapse's pushes go through a door the test
// closes, so the event (forged into a transaction with the hs_token, as
// Synapse would send it) arrives before its key.
func TestEncryptedEventsWaitForTheirKeys(t *testing.T) {
	door := newDoor(t)
	r := newEncryptedRigWith(t, testrig.NewTestDatabase(t, testrig.SQLite), stackOptions{
		extra:            strings.Replace(encryptionOn, "give_up_after: 20s", "give_up_after: 15s", 1) + fastRetries,
		editRegistration: door.route,
	})
	s := r.s

	door.close()
	late := r.alice.Send(r.room, map[string]any{"msgtype": "m.text", "body": "keys come later"})
	evt := fetchEvent(t, r.aliceHTTP, id.RoomID(r.room), id.EventID(late))
	raw, _ := json.Marshal(evt)
	forged := []byte(`{"events":[` + string(raw) + `]}`)
	if status, errcode := trustAppservice(t, s, http.MethodPut, "/_matrix/app/v1/transactions/late-keys", forged); status != 200 {
		t.Fatalf("forged transaction: %d %s", status, errcode)
	}
	pending := func(eventID string) bool {
		var n int
		_ = s.database.QueryRow(context.Background(), `SELECT COUNT(*) FROM e2ee_pending WHERE event_id = $1`, eventID).Scan(&n)
		return n == 1
	}
	eventually(t, "the event to wait for its keys", 30*time.Second, func() bool { return pending(late) })
	door.open() // Synapse's retry brings the key (the room key to the agent's device)
	eventually(t, "the late event decrypted at the webhook", 60*time.Second, func() bool { return r.dto(late) != nil })
	if d := r.dto(late); d.dto.Type != mapping.MessageCreated || d.dto.Data["body"] != "keys come later" {
		t.Errorf("the late event: %s %v", d.dto.Type, d.dto.Data)
	}
	if pending(late) {
		t.Error("the decrypted event is still waiting")
	}

	// A session the bridge never gets a key for.
	never := map[string]any{"event_id": "$never-decrypted:" + serverName, "room_id": r.room, "sender": r.aliceHTTP.UserID,
		"type": "m.room.encrypted", "origin_server_ts": time.Now().UnixMilli(),
		"content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2", "sender_key": "c2VuZGVya2V5", "device_id": "NOPE",
			"session_id": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "ciphertext": strings.Repeat("A", 120)}}
	body, _ := json.Marshal(map[string]any{"events": []any{never}})
	if status, errcode := trustAppservice(t, s, http.MethodPut, "/_matrix/app/v1/transactions/never", body); status != 200 {
		t.Fatalf("forged transaction: %d %s", status, errcode)
	}
	eventually(t, "the undecryptable DTO", 60*time.Second, func() bool { return r.dto("$never-decrypted:"+serverName) != nil })
	if d := r.dto("$never-decrypted:" + serverName); d.dto.Type != mapping.MessageUndecryptable || d.dto.Data["session_id"] != never["content"].(map[string]any)["session_id"] {
		t.Errorf("the never decrypted event: %s %v", d.dto.Type, d.dto.Data)
	}
}

// door is a TCP proxy between Synapse and the bridge's appservice port that
// a test can close (refusing connections, as a bridge that is down) and
// open again.
type door struct {
	t        *testing.T
	listener net.Listener
	target   string
	mu       sync.Mutex
	closed   bool
	conns    []net.Conn
}

func newDoor(t *testing.T) *door {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &door{t: t, listener: l}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			d.mu.Lock()
			closed, target := d.closed, d.target
			if !closed {
				d.conns = append(d.conns, in)
			}
			d.mu.Unlock()
			if closed || target == "" {
				_ = in.Close()
				continue
			}
			go func() {
				out, err := net.Dial("tcp", target)
				if err != nil {
					_ = in.Close()
					return
				}
				go func() { _, _ = io.Copy(out, in); _ = out.Close() }()
				_, _ = io.Copy(in, out)
				_ = in.Close()
			}()
		}
	}()
	return d
}

// route points the registration's url at the door, which forwards to the
// bridge's listener (the url it had).
func (d *door) route(registration string) string {
	re := regexp.MustCompile(`(?m)^url: *'?(http://127\.0\.0\.1:\d+)'?`)
	m := re.FindStringSubmatch(registration)
	if m == nil {
		d.t.Fatalf("no url in the registration:\n%s", registration)
	}
	d.mu.Lock()
	d.target = strings.TrimPrefix(m[1], "http://")
	d.mu.Unlock()
	return re.ReplaceAllString(registration, "url: 'http://"+d.listener.Addr().String()+"'")
}

func (d *door) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	for _, c := range d.conns {
		_ = c.Close()
	}
	d.conns = nil
}

func (d *door) open() {
	d.mu.Lock()
	d.closed = false
	d.mu.Unlock()
}

// logE2EEOnFailure logs the bridge's encryption lines when the test fails.
func logE2EEOnFailure(t *testing.T, s *stack) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for table, rows := range dumpTables(t, s) {
			if table == "event_log" || table == "webhook_delivery" || table == "e2ee_pending" || table == "txn_journal" || table == "parked_transaction" || table == "consumer_cursor" {
				t.Logf("%s:\n%s", table, tail(rows, 30))
			}
		}
		for _, line := range strings.Split(s.bridge.logs(), "\n") {
			if strings.Contains(line, `"component":"e2ee"`) || strings.Contains(line, "ecrypt") || strings.Contains(line, `"level":"error"`) || strings.Contains(line, `"component":"appservice"`) {
				t.Log(tail(line, 400))
			}
		}
	})
}

// One owner of the crypto state: with two bridge processes on one
// PostgreSQL, only the leader loads the devices; the other answers an
// encrypted send 503 (retry) instead of encrypting with a second copy of the
// Olm state, while its clear sends work as ever.
func TestEncryptionHasOneOwner(t *testing.T) {
	r := newEncryptedRig(t, testrig.NewTestDatabase(t, testrig.Postgres))
	asPortB, apiPortB := freePort(t), freePort(t)
	cfgB := readFile(t, r.s.configPath)
	cfgB = regexp.MustCompile(`(?m)^    listen: 127\.0\.0\.1:\d+$`).ReplaceAllString(cfgB, fmt.Sprintf("    listen: 127.0.0.1:%d", asPortB))
	cfgB = regexp.MustCompile(`(?m)^    port: \d+$`).ReplaceAllString(cfgB, fmt.Sprintf("    port: %d", apiPortB))
	configB := filepath.Join(r.s.dir, "config-b.yaml")
	if err := os.WriteFile(configB, []byte(cfgB), 0o600); err != nil {
		t.Fatal(err)
	}
	follower := r.s.startBridgeWith(configB, fmt.Sprintf("http://127.0.0.1:%d", asPortB))
	t.Cleanup(follower.kill)
	follower.waitForLog("Internal API listening", 30*time.Second)
	if !strings.Contains(r.s.bridge.logs(), "This process leads") {
		t.Fatal("the first process does not lead")
	}
	post := func(apiURL, room, body string) (int, map[string]any) {
		payload, _ := json.Marshal(map[string]any{"room_id": room, "sender": "agent:sofia", "body": body})
		req, _ := http.NewRequest(http.MethodPost, apiURL+"/internal/matrix/send", bytes.NewReader(payload))
		req.Header.Set("X-Internal-Service-Token", serviceSecret)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	followerAPI := fmt.Sprintf("http://127.0.0.1:%d", apiPortB)
	if status, out := post(followerAPI, r.room, "from the follower"); status != http.StatusServiceUnavailable || out["error"] != "matrix_unavailable" {
		t.Errorf("an encrypted send on the follower: %d %v, want 503 matrix_unavailable", status, out)
	}
	if status, out := post(r.s.apiURL, r.room, "from the leader"); status != http.StatusOK {
		t.Errorf("an encrypted send on the leader: %d %v", status, out)
	}
	cityRoom, _ := createCity(t, r.s, "clear", "Clear", "")
	if status, out := post(followerAPI, cityRoom.String(), "clear from the follower"); status != http.StatusOK {
		t.Errorf("a clear send on the follower: %d %v", status, out)
	}
	for _, line := range []string{"Made an encryption device", "Loaded an encryption device"} {
		if strings.Contains(follower.logs(), line) {
			t.Errorf("the follower logged %q: it touched the crypto state", line)
		}
	}
}
