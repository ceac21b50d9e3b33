package appservice

import (
	"testing"

	"github.com/daarion/matrix-bridge/pkg/e2ee"
	"github.com/daarion/matrix-bridge/pkg/eventlog"
)

// The clear events pkg/e2ee journals are read only from its own
// transactions: a homeserver transaction with the same key stores nothing
// of it. They keep their Matrix event id in the JSON and get a log id of
// their own.
func TestParseDecryptedEvents(t *testing.T) {
	body := []byte(`{"` + e2ee.DecryptedField + `":[{"event_id":"$enc:s","room_id":"!r:s","type":"m.room.message","sender":"@a:s","content":{"body":"hi"}}]}`)
	for _, tc := range []struct {
		name, txnID string
		want        int
	}{
		{"e2ee's own transaction", e2ee.DecryptedTxnPrefix + "$enc:s", 1},
		{"a homeserver's transaction", "42", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			events, err := ParseTransaction(tc.txnID, body)
			if err != nil {
				t.Fatal(err)
			}
			if len(events) != tc.want {
				t.Fatalf("%d events, want %d", len(events), tc.want)
			}
			if tc.want == 1 {
				evt := events[0]
				if evt.Kind != eventlog.KindDecrypted || evt.EventID != e2ee.DecryptedLogID("$enc:s") || evt.RoomID != "!r:s" || evt.Type != "m.room.message" {
					t.Errorf("event = %+v", evt)
				}
			}
		})
	}
	// A clear event without an event id is refused, naming it.
	if _, err := ParseTransaction(e2ee.DecryptedTxnPrefix+"$x", []byte(`{"`+e2ee.DecryptedField+`":[{"room_id":"!r:s","type":"m.room.message"}]}`)); err == nil {
		t.Error("a clear event without event_id was accepted")
	}
}
