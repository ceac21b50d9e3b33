package e2e_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	natsjs "github.com/nats-io/nats.go/jetstream"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/mapping"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// A city room is created encrypted; another is marked confidential. A human
// sends a text, a reply and an edit into the confidential room, each with a
// marker, an agent answers (the bridge sends that one, and logs its
// requests), and a control message goes into a clear room: at the webhook, on NATS
// and in sync the confidential room's DTOs and events carry no content (and
// say confidential), while the clear room's do; the confidential marker is
// in no table of the bridge's database and not in its log, while the clear
// marker is in the event log.
func TestConfidentialRooms(t *testing.T) {
	forEachRig(t, func(t *testing.T, tdb rig) {
		ctx := context.Background()
		natsURL := testrig.StartNATS(t, testrig.NATSOptions{}).URL()
		s := newStackWith(t, tdb, stackOptions{extra: "delivery:\n    nats_url: " + natsURL + "\n", homeserverRateLimits: busyHumans})
		s.bridge.waitForLog("Bridge bot registered", 30*time.Second)

		// An encrypted city room: Megolm from its creation, reported as
		// the gateway spec's encryption.
		res := s.api(t, http.MethodPost, "/internal/matrix/rooms/create",
			map[string]any{"slug": "crypt", "name": "Crypt", "visibility": "private", "encrypted": true})
		if res.status != http.StatusOK {
			t.Fatalf("create an encrypted city room: %d %s", res.status, res.body)
		}
		crypt := res.str("matrix_room_id")
		if meta := s.api(t, http.MethodGet, "/internal/matrix/rooms/"+url.PathEscape(crypt), nil); meta.str("encryption") != "m.megolm.v1.aes-sha2" {
			t.Errorf("the encrypted room's metadata: %d %s", meta.status, meta.body)
		}
		if res = s.api(t, http.MethodPost, "/internal/matrix/rooms/create",
			map[string]any{"slug": "crypt2", "name": "Crypt", "visibility": "private", "encrypted": "yes"}); res.status != http.StatusBadRequest || res.str("field") != "encrypted" {
			t.Errorf("encrypted that is not a boolean: %d %s", res.status, res.body)
		}
		created := s.api(t, http.MethodPost, "/internal/matrix/create-room", map[string]any{"name": "Side", "encrypted": true})
		if meta := s.api(t, http.MethodGet, "/internal/matrix/rooms/"+url.PathEscape(created.str("room_id")), nil); meta.str("encryption") != "m.megolm.v1.aes-sha2" {
			t.Errorf("the encrypted room made by create-room: %d %s / %d %s", created.status, created.body, meta.status, meta.body)
		}

		vault, vaultAlias := createCity(t, s, "vault", "Vault", "")
		plaza, plazaAlias := createCity(t, s, "plaza", "Plaza", "")
		confidential := "/internal/matrix/rooms/" + url.PathEscape(vault.String()) + "/confidential"
		if res = s.api(t, http.MethodGet, confidential, nil); res.status != 200 || res.json["confidential"] != false {
			t.Fatalf("before marking: %d %s", res.status, res.body)
		}
		if res = s.api(t, http.MethodPut, confidential, map[string]any{"confidential": true}); res.status != 200 || res.json["confidential"] != true {
			t.Fatalf("marking: %d %s", res.status, res.body)
		}
		if res = s.api(t, http.MethodPut, confidential, map[string]any{"confidential": "on"}); res.status != 400 || res.str("field") != "confidential" {
			t.Errorf("a mark that is not a boolean: %d %s", res.status, res.body)
		}
		if res = s.api(t, http.MethodGet, confidential, nil); res.json["confidential"] != true {
			t.Errorf("after marking: %d %s", res.status, res.body)
		}
		rc := newReceiver(t)
		rc.subscribe(t, s, map[string]any{"room_id": "*"})

		secret, clear := "SECRET-"+randomHex(t), "CLEAR-"+randomHex(t)
		alice, _ := s.humanJoins("alice", vaultAlias)
		if _, err := alice.JoinRoom(ctx, plazaAlias.String(), nil); err != nil {
			t.Fatal(err)
		}
		original := sendText(t, alice, vault, secret+" original")
		reply, err := alice.SendMessageEvent(ctx, vault, event.EventMessage, &event.MessageEventContent{
			MsgType: event.MsgText, Body: "> <@alice> " + secret + " original\n\n" + secret + " reply",
			Format: event.FormatHTML, FormattedBody: "<mx-reply>" + secret + "</mx-reply><b>" + secret + " reply</b>",
			RelatesTo: &event.RelatesTo{InReplyTo: &event.InReplyTo{EventID: original}},
		})
		if err != nil {
			t.Fatal(err)
		}
		edit, err := alice.SendMessageEvent(ctx, vault, event.EventMessage, &event.MessageEventContent{
			MsgType: event.MsgText, Body: "* " + secret + " edited",
			NewContent: &event.MessageEventContent{MsgType: event.MsgText, Body: secret + " edited"},
			RelatesTo:  &event.RelatesTo{Type: event.RelReplace, EventID: original},
		})
		if err != nil {
			t.Fatal(err)
		}
		control := sendText(t, alice, plaza, clear+" in the clear")
		// An agent's answer: the bridge sends it, and logs its requests.
		answer := send(t, s, map[string]any{"room_id": vault, "sender": "agent:sofia", "body": secret + " from sofia"})
		ids := []string{original.String(), reply.EventID.String(), edit.EventID.String(), control.String(), answer.String()}

		// The webhook: every DTO arrives; the confidential ones are stripped.
		byID := map[string]receivedDTO{}
		eventually(t, "the four DTOs at the webhook", 60*time.Second, func() bool {
			for _, d := range rc.received() {
				byID[d.dto.ID] = d
			}
			return hasAll(byID, ids)
		})
		checkConfidentialDTOs(t, "webhook", func(eventID string) []byte { return byID[eventID].body.DTO }, original, reply.EventID, edit.EventID, control, secret, clear)
		for _, d := range rc.received() {
			if strings.Contains(string(d.body.DTO), secret) {
				t.Errorf("webhook: a DTO carries the confidential room's text: %s", d.body.DTO)
			}
		}

		// NATS: the same.
		js := jetStream(t, natsURL)
		onNATS := map[string][]byte{}
		eventually(t, "the four DTOs on NATS", 60*time.Second, func() bool {
			readCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			readStream(readCtx, js, func(msg natsjs.Msg) {
				var dto struct {
					ID string `json:"id"`
				}
				_ = json.Unmarshal(msg.Data(), &dto)
				onNATS[dto.ID] = msg.Data()
			})
			return hasAll(onNATS, ids)
		})
		checkConfidentialDTOs(t, "NATS", func(eventID string) []byte { return onNATS[eventID] }, original, reply.EventID, edit.EventID, control, secret, clear)
		for _, raw := range onNATS {
			if strings.Contains(string(raw), secret) {
				t.Errorf("NATS: a DTO carries the confidential room's text: %s", raw)
			}
		}

		// Sync: the confidential room's messages stripped, with their
		// relations; its state and the clear room whole.
		synced := map[string]json.RawMessage{}
		eventually(t, "the four events in sync", 30*time.Second, func() bool {
			filter := url.QueryEscape(fmt.Sprintf(`{"rooms":[%q,%q],"limit":100}`, vault, plaza))
			res := s.api(t, http.MethodGet, "/internal/matrix/sync?since=s0&timeout=0&filter="+filter, nil)
			var body struct {
				Rooms struct {
					Join map[string]struct {
						Timeline struct {
							Events []json.RawMessage `json:"events"`
						} `json:"timeline"`
					} `json:"join"`
				} `json:"rooms"`
			}
			_ = json.Unmarshal(res.body, &body)
			for _, room := range body.Rooms.Join {
				for _, raw := range room.Timeline.Events {
					var evt struct {
						EventID string `json:"event_id"`
					}
					_ = json.Unmarshal(raw, &evt)
					synced[evt.EventID] = raw
				}
			}
			return hasAll(synced, ids)
		})
		for _, eventID := range append(ids[:3:3], answer.String()) {
			if raw := string(synced[eventID]); strings.Contains(raw, secret) || !mapping.IsStripped(synced[eventID]) {
				t.Errorf("sync answered the confidential room's %s as %s", eventID, raw)
			}
		}
		if raw := string(synced[reply.EventID.String()]); !strings.Contains(raw, `"m.in_reply_to":{"event_id":"`+original.String()+`"}`) {
			t.Errorf("sync's reply lost its relation: %s", raw)
		}
		if raw := string(synced[edit.EventID.String()]); !strings.Contains(raw, `"rel_type":"m.replace"`) {
			t.Errorf("sync's edit lost its relation: %s", raw)
		}
		if raw := string(synced[control.String()]); !strings.Contains(raw, clear) {
			t.Errorf("sync answered the clear room's message without its body: %s", raw)
		}

		// The database: the secret is in no table, the clear marker is (the
		// event log holds the control message).
		tables := dumpTables(t, s)
		var holdsClear []string
		for table, text := range tables {
			if strings.Contains(text, secret) {
				t.Errorf("table %s holds the confidential room's text", table)
			}
			if strings.Contains(text, clear) {
				holdsClear = append(holdsClear, table)
			}
		}
		if !slices.Contains(holdsClear, "event_log") {
			t.Errorf("the clear room's message is in no table but %v: the search finds nothing", holdsClear)
		}
		// The log, at debug.
		if logs := s.bridge.logs(); strings.Contains(logs, secret) {
			t.Errorf("the bridge's log holds the confidential room's text")
		}
	})
}

// checkConfidentialDTOs checks, on one sink, the DTOs of the text, reply
// and edit of the confidential room and of the clear room's control message
// (dto gives a DTO's JSON by event id).
func checkConfidentialDTOs(t *testing.T, sink string, dto func(eventID string) []byte, original, reply, edit, control id.EventID, secret, clear string) {
	t.Helper()
	type dtoView struct {
		Type         string         `json:"type"`
		Confidential bool           `json:"confidential"`
		Data         map[string]any `json:"data"`
	}
	read := func(eventID id.EventID) dtoView {
		var v dtoView
		raw := dto(eventID.String())
		if err := json.Unmarshal(raw, &v); err != nil {
			t.Errorf("%s: DTO %s is %s", sink, eventID, raw)
		}
		if err := mapping.Validate(raw); err != nil {
			t.Errorf("%s: DTO %s does not match its schema: %v\n%s", sink, eventID, err, raw)
		}
		return v
	}
	for _, eventID := range []id.EventID{original, reply, edit} {
		v := read(eventID)
		raw := string(dto(eventID.String()))
		if strings.Contains(raw, secret) || !v.Confidential {
			t.Errorf("%s: the confidential room's DTO %s", sink, raw)
		}
		for _, key := range []string{"body", "formatted_body", "preview", "format"} {
			if _, ok := v.Data[key]; ok {
				t.Errorf("%s: the confidential room's DTO has %s: %s", sink, key, raw)
			}
		}
	}
	if v := read(original); v.Type != mapping.MessageCreated || v.Data["msgtype"] != "m.text" {
		t.Errorf("%s: the text is %+v", sink, v)
	}
	if v := read(reply); v.Type != mapping.MessageCreated || v.Data["reply_to_event_id"] != original.String() {
		t.Errorf("%s: the reply is %+v", sink, v)
	}
	if v := read(edit); v.Type != mapping.MessageEdited || v.Data["edited_event_id"] != original.String() {
		t.Errorf("%s: the edit is %+v", sink, v)
	}
	if v := read(control); v.Confidential || v.Data["body"] != clear+" in the clear" {
		t.Errorf("%s: the clear room's message is %+v", sink, v)
	}
}

func hasAll[V any](m map[string]V, ids []string) bool {
	for _, eventID := range ids {
		if _, ok := m[eventID]; !ok {
			return false
		}
	}
	return true
}

func randomHex(t *testing.T) string {
	t.Helper()
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// dumpTables returns every table of the bridge's database (PostgreSQL or
// SQLite) with all its rows as text, every column of every row.
func dumpTables(t *testing.T, s *stack) map[string]string {
	t.Helper()
	ctx := context.Background()
	list := `SELECT name FROM sqlite_master WHERE type = 'table'`
	if s.db.Name == testrig.Postgres {
		list = `SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'`
	}
	rows, err := s.database.RawDB.QueryContext(ctx, list)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var name string
		if err = rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, name)
	}
	_ = rows.Close()
	if len(tables) < 10 {
		t.Fatalf("only %d tables: %v", len(tables), tables)
	}
	out := map[string]string{}
	for _, table := range tables {
		rows, err := s.database.RawDB.QueryContext(ctx, `SELECT * FROM "`+table+`"`)
		if err != nil {
			t.Fatalf("reading %s: %v", table, err)
		}
		cols, _ := rows.Columns()
		var sb strings.Builder
		for rows.Next() {
			values := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range values {
				ptrs[i] = &values[i]
			}
			if err = rows.Scan(ptrs...); err != nil {
				t.Fatalf("reading %s: %v", table, err)
			}
			for _, v := range values {
				if b, ok := v.([]byte); ok {
					sb.Write(b)
				} else {
					fmt.Fprint(&sb, v)
				}
				sb.WriteByte('\t')
			}
			sb.WriteByte('\n')
		}
		_ = rows.Close()
		out[table] = sb.String()
	}
	return out
}
