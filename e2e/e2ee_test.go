package e2e_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

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
func TestEncryptedRoomWithARealClient(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx := context.Background()
		s := newStackWith(t, rig{TestDatabase: tdb, homeserver: testrig.Synapse}, stackOptions{
			extra: encryptionOn + fastRetries, homeserverRateLimits: busyHumans})
		s.bridge.waitForLog("Made an encryption device", 60*time.Second)
		rc := newReceiver(t)
		rc.subscribe(t, s, map[string]any{"room_id": "*"})

		aliceHTTP, err := s.hs.RegisterUser(ctx, "alice", "correct horse battery staple", false)
		if err != nil {
			t.Fatal(err)
		}
		alice := startJSClient(t)
		alice.LoginAs(s.hs, aliceHTTP)
		sofia := id.NewUserID("agent_sofia", serverName)
		room := alice.CreateRoom("encrypted with sofia", true, sofia.String())
		alice.WaitMember(room, sofia.String(), "join", 60*time.Second)

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

		byID := func(eventID string) func() *receivedDTO {
			return func() *receivedDTO {
				for _, d := range rc.received() {
					if d.dto.ID == eventID {
						return &d
					}
				}
				return nil
			}
		}
		wait := func(what, eventID string) receivedDTO {
			t.Helper()
			var got *receivedDTO
			eventually(t, what+" at the webhook", 60*time.Second, func() bool { got = byID(eventID)(); return got != nil })
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
		got := alice.WaitDecrypted(jsWait{Room: room, Sender: sofia.String(), EventID: answer.String(), Timeout: 60 * time.Second})
		if got.WireType != "m.room.encrypted" || got.Content["body"] != "answer to "+marker {
			t.Errorf("alice read the agent's answer as %s %v, want it encrypted with body %q", got.WireType, got.Content, "answer to "+marker)
		}
		echo := wait("the agent's answer", answer.String())
		if echo.dto.Type != mapping.MessageCreated || echo.dto.Data["body"] != "answer to "+marker || echo.dto.Origin == nil || echo.dto.Sender.ID != "agent:sofia" {
			t.Errorf("the agent's answer's DTO: %s %v origin %+v sender %+v", echo.dto.Type, echo.dto.Data, echo.dto.Origin, echo.dto.Sender)
		}
		// On the homeserver the room holds only ciphertext of it.
		evt := fetchEvent(t, aliceHTTP, id.RoomID(room), answer)
		if evt.Type.Type != "m.room.encrypted" || strings.Contains(string(evt.Content.VeryRaw), marker) {
			t.Errorf("the agent's answer is stored as %s %s, want only ciphertext", evt.Type.Type, evt.Content.VeryRaw)
		}
		if res := s.api(t, http.MethodGet, "/internal/matrix/sync?timeout=0", nil); res.status != http.StatusOK {
			t.Errorf("sync: %d %s", res.status, res.body)
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
