package messaging

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/database"
	"github.com/daarion/matrix-bridge/pkg/internalapi"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// An interrupted first send (key reserved, no event recorded) whose event
// the homeserver did store: the retry finds it and sends nothing.
func TestRetryAfterAnInterruptedSendFindsTheEvent(t *testing.T) {
	tdb := testrig.NewTestDatabase(t, testrig.SQLite)
	db, err := database.Open(context.Background(), database.Target{Type: tdb.Type, URI: tdb.URI}, database.PoolOptions{}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	var sends atomic.Int32
	var marker string
	hs := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.Contains(r.URL.Path, "/send/"):
			sends.Add(1)
			_, _ = w.Write([]byte(`{"event_id":"$second"}`))
		case strings.HasSuffix(r.URL.Path, "/messages"):
			_, _ = fmt.Fprintf(w, `{"chunk":[{"event_id":"$other","sender":"@bot:s","type":"m.room.message","content":{"body":"x"}},
				{"event_id":"$first","sender":"@bot:s","type":"m.room.message","content":{"body":"hi","%s":%q}}],"start":"a","end":"b"}`, TxnMarker, marker)
		default:
			_, _ = w.Write([]byte(`{}`))
		}
	})
	s, actor := newTestService(t, hs)
	s.idem = NewIdempotencyStore(db)
	ctx := internalapi.WithService(context.Background(), &internalapi.Service{Name: "svc"})
	marker = matrixTxnID("svc", "k1")

	// The first attempt reserved the key and died in the middle of its send.
	if err = s.idem.reserve(ctx, "svc", "k1", "h"); err != nil {
		t.Fatal(err)
	}
	send := func(txnID string) (id.EventID, error) {
		return s.send(ctx, actor, "!r:s", event.EventMessage, marked(map[string]any{"body": "hi"}, txnID), txnID)
	}
	find := func(txnID string) id.EventID { return s.findMarked(ctx, actor, "!r:s", txnID) }
	eventID, _, err := s.sendOnce(ctx, "k1", "h", send, find)
	if err != nil || eventID != "$first" || sends.Load() != 0 {
		t.Fatalf("retry = %s, %v after %d sends; want $first and no send", eventID, err, sends.Load())
	}
	// Recorded now: the next retry answers from the record.
	if eventID, _, err = s.sendOnce(ctx, "k1", "h", send, find); err != nil || eventID != "$first" || sends.Load() != 0 {
		t.Errorf("second retry = %s, %v after %d sends", eventID, err, sends.Load())
	}
	// A reserved key whose event is not there is sent, marked.
	if err = s.idem.reserve(ctx, "svc", "k2", "h"); err != nil {
		t.Fatal(err)
	}
	if eventID, _, err = s.sendOnce(ctx, "k2", "h", send, find); err != nil || eventID != "$second" || sends.Load() != 1 {
		t.Errorf("unfound interrupted send = %s, %v after %d sends; want a send", eventID, err, sends.Load())
	}
}
