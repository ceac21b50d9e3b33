package messaging

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"

	"github.com/daarion/matrix-bridge/pkg/homeserver"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/identity"
)

// limitingHomeserver answers sends: the first n with 429 M_LIMIT_EXCEEDED, then
// 200, recording the bodies in the order they were accepted.
type limitingHomeserver struct {
	mu       sync.Mutex
	limit    int
	limited  atomic.Int32
	accepted []string
}

func (f *limitingHomeserver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.Contains(r.URL.Path, "/send/") {
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(`{}`))
		return
	}
	if int(f.limited.Load()) < f.limit {
		f.limited.Add(1)
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = w.Write([]byte(`{"errcode":"M_LIMIT_EXCEEDED","error":"slow down","retry_after_ms":60}`))
		return
	}
	var body struct {
		Body string `json:"body"`
	}
	_ = json.NewDecoder(r.Body).Decode(&body)
	f.mu.Lock()
	f.accepted = append(f.accepted, body.Body)
	n := len(f.accepted)
	f.mu.Unlock()
	_, _ = fmt.Fprintf(w, `{"event_id":"$e%d"}`, n)
}

func newTestService(t *testing.T, hs http.Handler) (*Service, *Actor) {
	t.Helper()
	srv := httptest.NewServer(hs)
	t.Cleanup(srv.Close)
	as, err := appservice.CreateFull(appservice.CreateOpts{
		Registration:     &appservice.Registration{ID: "t", AppToken: "as", ServerToken: "hs", SenderLocalpart: "bot"},
		HomeserverDomain: "s",
		HomeserverURL:    srv.URL,
	})
	if err != nil {
		t.Fatal(err)
	}
	as.DefaultHTTPRetries = 0
	s := &Service{as: as, mapper: identity.Mapper{ServerName: "s", BotLocalpart: "bot"}}
	bot := as.BotIntent()
	return s, &Actor{Entity: s.mapper.FromMatrix(bot.UserID), Intent: bot}
}

func TestSendWaitsOutTheHomeserversRateLimit(t *testing.T) {
	hs := &limitingHomeserver{limit: 2}
	s, actor := newTestService(t, hs)
	start := time.Now()
	eventID, err := s.send(context.Background(), actor, id.RoomID("!r:s"), event.EventMessage,
		&event.MessageEventContent{MsgType: event.MsgText, Body: "after the limit"}, "")
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	if eventID != "$e1" || hs.limited.Load() != 2 {
		t.Errorf("event %s after %d limited answers", eventID, hs.limited.Load())
	}
	if took := time.Since(start); took < 120*time.Millisecond {
		t.Errorf("took %s: retry_after_ms (2×60 ms) was not waited out", took)
	}

	// Still limited after the retries: the error comes back (the handler
	// answers 503 matrix_unavailable).
	always := &limitingHomeserver{limit: 1 << 30}
	s2, actor2 := newTestService(t, always)
	if _, err = s2.send(context.Background(), actor2, "!r:s", event.EventMessage, &event.MessageEventContent{Body: "x"}, ""); err == nil {
		t.Error("a homeserver that never stops limiting did not fail the send")
	} else if _, limited := homeserver.RateLimited(err, maxRateLimitWait); !limited {
		t.Errorf("error %v is not the rate limit", err)
	}
}

// One sender's concurrent sends to one room reach the homeserver one at a
// time, in the order they arrived, even while the first waits out 429s
// (keylock serves the waiters for one key first in, first out).
func TestOneSendersMessagesKeepTheirOrder(t *testing.T) {
	hs := &limitingHomeserver{limit: 3}
	s, actor := newTestService(t, hs)
	var wg sync.WaitGroup
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := fmt.Sprintf("m%d", i)
			if _, err := s.send(context.Background(), actor, "!r:s", event.EventMessage, &event.MessageEventContent{Body: body}, ""); err != nil {
				t.Errorf("send %s: %v", body, err)
			}
		}()
		time.Sleep(5 * time.Millisecond) // arrivals in order m0, m1, …
	}
	wg.Wait()
	want := []string{"m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "m9"}
	if fmt.Sprint(hs.accepted) != fmt.Sprint(want) {
		t.Errorf("the homeserver accepted %v, want %v (arrival order)", hs.accepted, want)
	}
}
