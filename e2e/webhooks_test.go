package e2e_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"

	"github.com/daarion/matrix-bridge/pkg/delivery/webhook"
	"github.com/daarion/matrix-bridge/pkg/mapping"
)

// receiver is a webhook endpoint on loopback that checks every signature.
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	mu     sync.Mutex
	secret string
	fail   bool // answer 500
	got    []receivedDTO
	badSig int
	tries  int
	// triesOf counts the requests per webhook-id.
	triesOf map[string]int
}

type receivedDTO struct {
	body webhook.Body
	dto  mapping.DTO
	raw  map[string]any
}

func newReceiver(t *testing.T) *receiver {
	rc := &receiver{t: t, triesOf: map[string]int{}}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		defer rc.mu.Unlock()
		rc.tries++
		rc.triesOf[r.Header.Get("webhook-id")]++
		ts, _ := strconv.ParseInt(r.Header.Get("webhook-timestamp"), 10, 64)
		if !webhook.Verify(rc.secret, r.Header.Get("webhook-id"), ts, body, r.Header.Get("webhook-signature")) {
			rc.badSig++
		}
		if rc.fail {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		var got receivedDTO
		if err := json.Unmarshal(body, &got.body); err != nil {
			t.Errorf("webhook body is not JSON: %s", body)
		}
		_ = json.Unmarshal(got.body.DTO, &got.dto)
		_ = json.Unmarshal(got.body.DTO, &got.raw)
		if got.dto.ID != r.Header.Get("webhook-id") {
			t.Errorf("webhook-id %q is not the DTO id %q", r.Header.Get("webhook-id"), got.dto.ID)
		}
		rc.got = append(rc.got, got)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) setFail(fail bool) {
	rc.mu.Lock()
	rc.fail = fail
	rc.mu.Unlock()
}

func (rc *receiver) received() []receivedDTO {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]receivedDTO(nil), rc.got...)
}

func (rc *receiver) subscribe(t *testing.T, s *stack, body map[string]any) string {
	t.Helper()
	body["webhook_url"] = rc.srv.URL + "/hook"
	res := s.api(t, http.MethodPost, "/internal/matrix/webhook/subscribe", body)
	if res.status != 200 || res.str("subscription_id") == "" || res.str("secret") == "" {
		t.Fatalf("subscribe: %d %s", res.status, res.body)
	}
	rc.mu.Lock()
	rc.secret = res.str("secret")
	rc.mu.Unlock()
	return res.str("subscription_id")
}

const fastRetries = "delivery:\n    webhook_retry_window: 4s\n    webhook_max_backoff: 300ms\n"

// A human and an agent act in a city room; the webhook receiver gets the
// right DTOs with entity ids, the city slug and valid signatures.
func TestWebhookDTOs(t *testing.T) {
	forEachRig(t, func(t *testing.T, tdb rig) {
		ctx := context.Background()
		s := newStackWith(t, tdb, stackOptions{extra: fastRetries})
		s.bridge.waitForLog("Bridge bot registered", 30*time.Second)
		roomID, alias := createCity(t, s, "harbour", "Harbour", "")
		rc := newReceiver(t)
		subID := rc.subscribe(t, s, map[string]any{"city_slug": "harbour"})

		alice, _ := s.humanJoins("alice", alias)
		msg := sendText(t, alice, roomID, "hello harbour")
		agentMsg := send(t, s, map[string]any{"room_id": roomID, "sender": "agent:sofia", "body": "hi alice"})
		if _, err := alice.SendReaction(ctx, roomID, agentMsg, "👍"); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.SendMessageEvent(ctx, roomID, event.EventMessage, &event.MessageEventContent{
			MsgType: event.MsgText, Body: "* hello harbour!", NewContent: &event.MessageEventContent{MsgType: event.MsgText, Body: "hello harbour!"},
			RelatesTo: &event.RelatesTo{Type: event.RelReplace, EventID: msg},
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.LeaveRoom(ctx, roomID); err != nil {
			t.Fatal(err)
		}

		want := map[string]func(d receivedDTO) bool{
			mapping.MemberJoined: func(d receivedDTO) bool {
				return d.dto.Sender.ID == "user:alice" && d.raw["data"].(map[string]any)["target"].(map[string]any)["id"] == "user:alice"
			},
			mapping.MessageCreated: func(d receivedDTO) bool { return d.dto.Sender.ID == "user:alice" || d.dto.Sender.ID == "agent:sofia" },
			mapping.ReactionAdded: func(d receivedDTO) bool {
				return d.dto.Data["target_event_id"] == agentMsg.String() && d.dto.Data["key"] == "👍"
			},
			mapping.MessageEdited: func(d receivedDTO) bool {
				return d.dto.Data["edited_event_id"] == msg.String() && d.dto.Data["body"] == "hello harbour!"
			},
			mapping.MemberLeft: func(d receivedDTO) bool { return d.dto.Sender.ID == "user:alice" },
		}
		eventually(t, "every DTO type at the receiver", 30*time.Second, func() bool {
			seen := map[string]bool{}
			for _, d := range rc.received() {
				if check, ok := want[d.dto.Type]; ok && check(d) {
					seen[d.dto.Type] = true
				}
			}
			return len(seen) == len(want)
		})
		var agentEcho bool
		for _, d := range rc.received() {
			if d.dto.Room == nil || d.dto.Room.CitySlug != "harbour" || d.dto.Room.MatrixRoomAlias != alias.String() || d.body.SubscriptionID != subID {
				t.Errorf("DTO %s lacks the city room or subscription: %+v %s", d.dto.Type, d.dto.Room, d.body.SubscriptionID)
			}
			if d.dto.ID == agentMsg.String() {
				agentEcho = d.dto.Origin != nil && d.dto.Origin.Bridge && d.dto.Origin.Service == "internal" && d.dto.Sender.Type == "agent"
			}
			if err := mapping.Validate(d.body.DTO); err != nil {
				t.Errorf("DTO %s does not match its JSON Schema: %v", d.dto.Type, err)
			}
			if d.dto.Version != mapping.Version || len(d.body.Event) == 0 {
				t.Errorf("DTO %s: version %d, event %s", d.dto.ID, d.dto.Version, d.body.Event)
			}
		}
		if !agentEcho {
			t.Error("the agent's own message was not delivered marked with its origin")
		}
		rc.mu.Lock()
		if rc.badSig != 0 {
			t.Errorf("%d deliveries had a bad signature", rc.badSig)
		}
		rc.mu.Unlock()

		// The subscription is listed, and can be removed.
		if res := s.api(t, http.MethodGet, "/internal/matrix/webhook/subscribe/"+subID, nil); res.status != 200 || res.str("city_slug") != "harbour" {
			t.Errorf("get subscription: %d %s", res.status, res.body)
		}
		if res := s.api(t, http.MethodDelete, "/internal/matrix/webhook/subscribe/"+subID, nil); res.status != 200 || res.str("status") != "unsubscribed" {
			t.Errorf("unsubscribe: %d %s", res.status, res.body)
		}
	})
}

// The receiver fails for a while: every DTO still arrives, in room order.
// Then it never recovers: deliveries go to the dead-letter list and are
// redelivered through the API.
func TestWebhookRetriesAndDeadLetters(t *testing.T) {
	forEachRig(t, func(t *testing.T, tdb rig) {
		s := newStackWith(t, tdb, stackOptions{extra: fastRetries, homeserverRateLimits: busyHumans})
		s.bridge.waitForLog("Bridge bot registered", 30*time.Second)
		roomID, alias := createCity(t, s, "quay", "Quay", "")
		alice, _ := s.humanJoins("alice", alias)
		rc := newReceiver(t)
		subID := rc.subscribe(t, s, map[string]any{"room_id": roomID.String(), "events": []string{"m.room.message"}})

		rc.setFail(true)
		var sent []string
		for i := 0; i < 10; i++ {
			sent = append(sent, sendText(t, alice, roomID, "msg "+strconv.Itoa(i)).String())
		}
		// The head of the room's queue fails and is retried (every 300ms
		// here); the rows behind it wait.
		eventually(t, "the first message's third attempt", 30*time.Second, func() bool {
			rc.mu.Lock()
			defer rc.mu.Unlock()
			return rc.triesOf[sent[0]] >= 3
		})
		rc.setFail(false)
		eventually(t, "all 10 messages after recovery", 30*time.Second, func() bool { return len(rc.received()) >= 10 })
		got := rc.received()
		if len(got) != 10 {
			t.Fatalf("received %d deliveries, want exactly 10", len(got))
		}
		for i, d := range got {
			if d.dto.ID != sent[i] {
				t.Fatalf("delivery %d is %s, want %s: room order lost", i, d.dto.ID, sent[i])
			}
		}
		rc.mu.Lock()
		tries := rc.tries
		rc.mu.Unlock()
		if tries <= 10 {
			t.Errorf("the receiver saw %d tries: the failures were never retried", tries)
		}

		// Never recovers: dead letters after the retry window.
		rc.setFail(true)
		lost := sendText(t, alice, roomID, "into the void").String()
		path := "/internal/matrix/webhook/subscribe/" + subID
		eventually(t, "the dead letter", 30*time.Second, func() bool {
			res := s.api(t, http.MethodGet, path+"/dead-letters", nil)
			letters, _ := res.json["dead_letters"].([]any)
			return len(letters) == 1 && letters[0].(map[string]any)["event_id"] == lost
		})
		if res := s.api(t, http.MethodGet, path, nil); res.json["dead_letters"] != float64(1) {
			t.Errorf("subscription counts: %s", res.body)
		}
		rc.setFail(false)
		if res := s.api(t, http.MethodPost, path+"/redeliver", map[string]any{}); res.status != 200 || res.json["redelivered"] != float64(1) {
			t.Fatalf("redeliver: %d %s", res.status, res.body)
		}
		eventually(t, "the redelivered event", 30*time.Second, func() bool {
			got := rc.received()
			return len(got) == 11 && got[10].dto.ID == lost
		})
		if res := s.api(t, http.MethodGet, path+"/dead-letters", nil); len(res.json["dead_letters"].([]any)) != 0 {
			t.Errorf("dead letters left after redelivery: %s", res.body)
		}
	})
}

func TestWebhookSubscribeRefusals(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, r rig) {
		s := newStack(t, r)
		for _, tc := range []struct {
			body  map[string]any
			field string
		}{
			{map[string]any{"webhook_url": "http://127.0.0.1:9/x"}, "room_id"},
			{map[string]any{"room_id": "*"}, "webhook_url"},
			{map[string]any{"room_id": "*", "webhook_url": "ftp://127.0.0.1/x"}, "webhook_url"},
			{map[string]any{"room_id": "*", "webhook_url": "http://169.254.169.254/latest/meta-data"}, "webhook_url"},
			{map[string]any{"room_id": "*", "webhook_url": "http://[fe80::1]/x"}, "webhook_url"},
			{map[string]any{"room_id": "*", "webhook_url": "http://user:pw@127.0.0.1/x"}, "webhook_url"},
			{map[string]any{"room_id": "general", "webhook_url": "http://127.0.0.1/x"}, "room_id"},
			{map[string]any{"city_slug": "Bad!", "webhook_url": "http://127.0.0.1/x"}, "city_slug"},
			{map[string]any{"room_id": "*", "city_slug": "a", "webhook_url": "http://127.0.0.1/x"}, "city_slug"},
			{map[string]any{"room_id": "*", "webhook_url": "http://127.0.0.1/x", "events": []string{""}}, "events[0]"},
		} {
			if res := s.api(t, http.MethodPost, "/internal/matrix/webhook/subscribe", tc.body); res.status != 400 || res.str("field") != tc.field {
				t.Errorf("%v: %d %s, want 400 naming %s", tc.body, res.status, res.body, tc.field)
			}
		}
		if res := s.api(t, http.MethodGet, "/internal/matrix/webhook/subscribe/sub_nope", nil); res.status != 404 {
			t.Errorf("unknown subscription: %d", res.status)
		}
	})
}
