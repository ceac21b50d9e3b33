package e2e_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"
)

// Imported history: a service with the timestamps scope sends an agent's
// message as of when it was written; the homeserver stores that time. The
// service secret, without the scope, is refused naming the field.
func TestSendWithTimestamp(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, tdb rig) {
		const importer = "importer-token-0123456789abcdef"
		s := newStackWith(t, tdb, stackOptions{internalAPI: `    services:
        - name: importer
          token: ` + importer + `
          scopes: [messaging, agents, timestamps]`})
		s.bridge.waitForLog("Bridge bot registered", 30*time.Second)
		roomID, _ := createCity(t, s, "archive", "Archive", "")
		then := time.Date(2024, 5, 1, 9, 30, 0, 0, time.UTC).UnixMilli()
		body := map[string]any{"room_id": roomID, "sender": "agent:sofia", "body": "written long ago", "timestamp": then}

		if res := s.api(t, http.MethodPost, "/internal/matrix/send", body); res.status != http.StatusForbidden || res.str("field") != "timestamp" {
			t.Fatalf("the service secret sent a back-dated message: %d %s", res.status, res.body)
		}
		res := s.apiAs(t, importer, http.MethodPost, "/internal/matrix/send", body)
		if res.status != http.StatusOK {
			t.Fatalf("send with a timestamp: %d %s", res.status, res.body)
		}
		evt, err := s.botClient().GetEvent(context.Background(), roomID, id.EventID(res.str("event_id")))
		if err != nil {
			t.Fatal(err)
		}
		if evt.Timestamp != then {
			t.Errorf("the homeserver stored origin_server_ts %d, want %d", evt.Timestamp, then)
		}
	})
}
