package messaging

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/internalapi"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// An interrupted first send (key reserved, no event recorded) whose event
// the homeserver did store: the retry finds it and sends nothing.
func TestRetryAfterAnInterruptedSendFindsTheEvent(t *testing.T) {
	tdb := testrig.NewTestDatabase(t, testrig.SQLite)
	db := testrig.OpenDatabase(t, tdb)

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
	s.reservedWait = 0 // the reservations below are of sends that died
	if _, err := s.idem.reserve(ctx, "svc", "k1", "h"); err != nil {
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
	if _, err = s.idem.reserve(ctx, "svc", "k2", "h"); err != nil {
		t.Fatal(err)
	}
	if eventID, _, err = s.sendOnce(ctx, "k2", "h", send, find); err != nil || eventID != "$second" || sends.Load() != 1 {
		t.Errorf("unfound interrupted send = %s, %v after %d sends; want a send", eventID, err, sends.Load())
	}
}

// Two processes on one PostgreSQL get the same Idempotency-Key at once: the
// reservation is the arbiter, so exactly one sends; the other waits for its
// result and answers the same event. A different request with the key gets
// 409 once the key is taken.
func TestTwoProcessesOneIdempotencyKeyOneSend(t *testing.T) {
	tdb := testrig.NewTestDatabase(t, testrig.Postgres)
	var sends atomic.Int32
	release := make(chan struct{})
	hs := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/send/") {
			n := sends.Add(1)
			<-release // the send is in flight while the other process asks
			_, _ = fmt.Fprintf(w, `{"event_id":"$sent%d"}`, n)
			return
		}
		_, _ = w.Write([]byte(`{"chunk":[],"start":"a","end":"b"}`))
	})
	process := func() (*Service, *Actor) {
		db := testrig.OpenDatabase(t, tdb)
		s, actor := newTestService(t, hs)
		s.idem = NewIdempotencyStore(db)
		s.reservedWait = 30 * time.Second
		return s, actor
	}
	sA, actorA := process()
	sB, actorB := process()
	ctx := internalapi.WithService(context.Background(), &internalapi.Service{Name: "svc"})
	attempt := func(s *Service, actor *Actor, hash string) (id.EventID, error) {
		send := func(txnID string) (id.EventID, error) {
			return s.send(ctx, actor, "!r:s", event.EventMessage, marked(map[string]any{"body": "hi"}, txnID), txnID)
		}
		find := func(txnID string) id.EventID { return s.findMarked(ctx, actor, "!r:s", txnID) }
		eventID, _, err := s.sendOnce(ctx, "k", hash, send, find)
		return eventID, err
	}
	type result struct {
		eventID id.EventID
		err     error
	}
	results := make(chan result, 2)
	for _, p := range []struct {
		s     *Service
		actor *Actor
	}{{sA, actorA}, {sB, actorB}} {
		go func() {
			eventID, err := attempt(p.s, p.actor, "h")
			results <- result{eventID, err}
		}()
	}
	// Let both reach the reservation before the winner's send answers.
	deadline := time.Now().Add(10 * time.Second)
	for sends.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // the loser is waiting now (or sending, which is the bug)
	close(release)
	r1, r2 := <-results, <-results
	if r1.err != nil || r2.err != nil || r1.eventID != r2.eventID || r1.eventID == "" {
		t.Errorf("answers %+v and %+v, want the same event", r1, r2)
	}
	if n := sends.Load(); n != 1 {
		t.Errorf("%d sends, want 1", n)
	}
	if _, err := attempt(sB, actorB, "another request"); err == nil {
		t.Error("a different request with a used key was not refused")
	}
}
