package testrig

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// fakeAppservice is a tiny appservice on 127.0.0.1: it records every request
// and answers transactions with a configurable status (200 {} by default).
type fakeAppservice struct {
	srv *httptest.Server

	mu       sync.Mutex
	requests []asRequest
	statuses []int // consumed one per transaction; then 200
	changed  chan struct{}
}

type asRequest struct {
	At     time.Time
	Method string
	Path   string // escaped path
	Query  url.Values
	Auth   string // Authorization header
	Body   []byte
	Status int
}

type asTransaction struct {
	Events []json.RawMessage `json:"events"`
}

type asEvent struct {
	EventID string          `json:"event_id"`
	Type    string          `json:"type"`
	Sender  string          `json:"sender"`
	RoomID  string          `json:"room_id"`
	Content json.RawMessage `json:"content"`
}

func newFakeAppservice(t testing.TB) *fakeAppservice {
	t.Helper()
	as := &fakeAppservice{changed: make(chan struct{})}
	as.srv = httptest.NewServer(http.HandlerFunc(as.serveHTTP)) // binds 127.0.0.1
	t.Cleanup(as.srv.Close)
	return as
}

func (as *fakeAppservice) serveHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	status := http.StatusOK
	isTxn := r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/transactions/")
	as.mu.Lock()
	if !isTxn {
		status = http.StatusNotFound // no users/aliases exist
	} else if len(as.statuses) > 0 {
		status, as.statuses = as.statuses[0], as.statuses[1:]
	}
	as.requests = append(as.requests, asRequest{
		At: time.Now(), Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.Query(),
		Auth: r.Header.Get("Authorization"), Body: body, Status: status,
	})
	close(as.changed)
	as.changed = make(chan struct{})
	as.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if status == http.StatusNotFound {
		_, _ = w.Write([]byte(`{"errcode":"M_NOT_FOUND","error":"no such thing"}`))
	} else {
		_, _ = w.Write([]byte(`{}`))
	}
}

// failNext makes the next transactions get these statuses.
func (as *fakeAppservice) failNext(statuses ...int) {
	as.mu.Lock()
	defer as.mu.Unlock()
	as.statuses = append(as.statuses, statuses...)
}

func (as *fakeAppservice) snapshot() []asRequest {
	as.mu.Lock()
	defer as.mu.Unlock()
	return append([]asRequest(nil), as.requests...)
}

// waitFor polls the recorded requests until cond returns true.
func (as *fakeAppservice) waitFor(t testing.TB, timeout time.Duration, what string, cond func([]asRequest) bool) []asRequest {
	t.Helper()
	deadline := time.After(timeout)
	for {
		as.mu.Lock()
		reqs := append([]asRequest(nil), as.requests...)
		changed := as.changed
		as.mu.Unlock()
		if cond(reqs) {
			return reqs
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("timed out after %v waiting for the appservice to receive %s; got %d request(s):\n%s",
				timeout, what, len(reqs), describeRequests(reqs))
			return nil
		}
	}
}

func describeRequests(reqs []asRequest) string {
	var b strings.Builder
	for _, r := range reqs {
		fmt.Fprintf(&b, "  %s %s -> %d %s\n", r.Method, r.Path, r.Status, r.Body)
	}
	return b.String()
}

// transactionEvents returns the events of every transaction request, in order.
func transactionEvents(t testing.TB, reqs []asRequest) []asEvent {
	t.Helper()
	var out []asEvent
	for _, r := range reqs {
		if !strings.Contains(r.Path, "/transactions/") {
			continue
		}
		var txn asTransaction
		if err := json.Unmarshal(r.Body, &txn); err != nil {
			t.Fatalf("transaction body %s: %v", r.Body, err)
		}
		for _, raw := range txn.Events {
			var ev asEvent
			if err := json.Unmarshal(raw, &ev); err != nil {
				t.Fatalf("event %s: %v", raw, err)
			}
			out = append(out, ev)
		}
	}
	return out
}

func hasEvent(t testing.TB, eventID id.EventID) func([]asRequest) bool {
	return func(reqs []asRequest) bool {
		for _, ev := range transactionEvents(t, reqs) {
			if ev.EventID == eventID.String() {
				return true
			}
		}
		return false
	}
}

const (
	testASID      = "testrig"
	testASToken   = "as-token-testrig-0123456789"
	testHSToken   = "hs-token-testrig-0123456789"
	testASBot     = "testrigbot"
	testGhostPfx  = "ghost_"
	testAliasPfx  = "ghostroom_"
	testPassword  = "correct horse battery"
	asWaitTimeout = 20 * time.Second
)

// writeTestRegistration writes an appservice registration: ghosts (@ghost_*)
// and aliases (#ghostroom_*) exclusive, every room non-exclusive, so every
// event on the server is interesting to the appservice.
func writeTestRegistration(t testing.TB, dir, asURL, serverName string) string {
	t.Helper()
	domain := strings.ReplaceAll(serverName, ".", `\.`)
	reg := fmt.Sprintf(`id: %s
url: %q
as_token: %s
hs_token: %s
sender_localpart: %s
rate_limited: false
namespaces:
  users:
    - exclusive: true
      regex: '@%s.*:%s'
  aliases:
    - exclusive: true
      regex: '#%s.*:%s'
  rooms:
    - exclusive: false
      regex: '.*'
`, testASID, asURL, testASToken, testHSToken, testASBot, testGhostPfx, domain, testAliasPfx, domain)
	path := filepath.Join(dir, "registration.yaml")
	if err := os.WriteFile(path, []byte(reg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func startWithAppservice(t *testing.T) (*Homeserver, *fakeAppservice) {
	return startKindWithAppservice(t, HomeserverOptions{Kind: Dendrite})
}

func startKindWithAppservice(t *testing.T, opts HomeserverOptions) (*Homeserver, *fakeAppservice) {
	t.Helper()
	as := newFakeAppservice(t)
	opts.Dir = t.TempDir()
	opts.RegistrationFiles = []string{writeTestRegistration(t, t.TempDir(), as.srv.URL, DefaultServerName)}
	start := time.Now()
	hs := StartTestHomeserver(t, opts)
	t.Logf("%s up at %s in %v", hs.Kind, hs.URL, time.Since(start).Round(time.Millisecond))
	return hs, as
}

func TestHomeserverDeliversEventsToAppservice(t *testing.T) {
	ForEachHomeserver(t, func(t *testing.T, kind string) {
		hs, as := startKindWithAppservice(t, HomeserverOptions{Kind: kind})
		testDeliversEventsToAppservice(t, hs, as)
	})
	t.Run("synapse-postgres", func(t *testing.T) {
		db := NewTestDatabase(t, Postgres)
		hs, as := startKindWithAppservice(t, HomeserverOptions{Kind: Synapse, PostgresDSN: db.URI})
		testDeliversEventsToAppservice(t, hs, as)
	})
}

func testDeliversEventsToAppservice(t *testing.T, hs *Homeserver, as *fakeAppservice) {
	ctx := t.Context()

	if !strings.HasPrefix(hs.URL, "http://127.0.0.1:") {
		t.Fatalf("URL = %q, want loopback", hs.URL)
	}

	alice, err := hs.RegisterUser(ctx, "alice", testPassword, false)
	if err != nil {
		t.Fatal(err)
	}
	bob, err := hs.RegisterUser(ctx, "bob", testPassword, true)
	if err != nil {
		t.Fatal(err)
	}
	who, err := alice.Whoami(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if who.UserID != hs.UserID("alice") {
		t.Fatalf("whoami = %s, want %s", who.UserID, hs.UserID("alice"))
	}

	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Preset: "private_chat",
		Name:   "testrig",
		Invite: []id.UserID{bob.UserID},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	sent, err := alice.SendText(ctx, room.RoomID, "hello, appservice")
	if err != nil {
		t.Fatal(err)
	}

	reqs := as.waitFor(t, asWaitTimeout, "alice's message", hasEvent(t, sent.EventID))
	var got *asEvent
	for _, ev := range transactionEvents(t, reqs) {
		if ev.EventID == sent.EventID.String() {
			got = &ev
		}
	}
	if got.Type != "m.room.message" || got.Sender != alice.UserID.String() || got.RoomID != room.RoomID.String() {
		t.Errorf("delivered event = %+v", got)
	}
	var content event.MessageEventContent
	if err := json.Unmarshal(got.Content, &content); err != nil || content.Body != "hello, appservice" {
		t.Errorf("delivered content = %s (%v)", got.Content, err)
	}
	for _, r := range reqs {
		if !strings.HasPrefix(r.Path, "/_matrix/app/v1/transactions/") || r.Method != http.MethodPut {
			t.Errorf("unexpected request %s %s", r.Method, r.Path)
		}
		if r.Auth != "Bearer "+testHSToken {
			t.Errorf("Authorization = %q, want the hs_token as Bearer", r.Auth)
		}
		if r.Query.Has("access_token") {
			t.Errorf("access_token query parameter sent: %s", r.Path)
		}
	}
}

func TestDendriteRestartKeepsUsers(t *testing.T) {
	hs, as := startWithAppservice(t)
	ctx := t.Context()

	carol, err := hs.RegisterUser(ctx, "carol", testPassword, false)
	if err != nil {
		t.Fatal(err)
	}
	room, err := carol.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	url, port := hs.URL, hs.Port

	start := time.Now()
	if err := hs.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("restart took %v", time.Since(start).Round(time.Millisecond))
	if hs.URL != url || hs.Port != port {
		t.Fatalf("after restart URL = %s, want %s", hs.URL, url)
	}

	again, err := hs.Login(ctx, "carol", testPassword)
	if err != nil {
		t.Fatal(err)
	}
	who, err := again.Whoami(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if who.UserID != carol.UserID {
		t.Fatalf("whoami after restart = %s, want %s", who.UserID, carol.UserID)
	}
	// The access token from before the restart still works too.
	if _, err := carol.Whoami(ctx); err != nil {
		t.Fatalf("old access token after restart: %v", err)
	}
	// And appservice delivery resumes.
	sent, err := again.SendText(ctx, room.RoomID, "after restart")
	if err != nil {
		t.Fatal(err)
	}
	as.waitFor(t, asWaitTimeout, "the message sent after the restart", hasEvent(t, sent.EventID))

	if err := hs.Stop(); err != nil {
		t.Fatal(err)
	}
	if hs.Running() {
		t.Fatal("still running after Stop")
	}
	if err := hs.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if _, err := http.Get(hs.URL + "/_matrix/client/versions"); err == nil {
		t.Fatal("homeserver still answers after Stop")
	}
}

func TestDendriteRegisterUserErrors(t *testing.T) {
	hs := StartTestHomeserver(t, HomeserverOptions{})
	ctx := t.Context()
	if _, err := hs.RegisterUser(ctx, "dave", testPassword, false); err != nil {
		t.Fatal(err)
	}
	if _, err := hs.RegisterUser(ctx, "dave", testPassword, false); err == nil {
		t.Fatal("registering the same user twice succeeded")
	}
	wrong := &Homeserver{URL: hs.URL, ServerName: hs.ServerName, SharedSecret: "not-the-secret", httpClient: http.DefaultClient}
	if _, err := wrong.RegisterUser(ctx, "erin", testPassword, false); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("wrong shared secret: err = %v, want HTTP 403", err)
	}
	var httpErr mautrix.HTTPError
	if _, err := hs.Login(ctx, "dave", "wrong password"); !errors.As(err, &httpErr) || !httpErr.IsStatus(http.StatusForbidden) {
		t.Fatalf("login with a wrong password: err = %v", err)
	}
}

// TestDendriteAppserviceQuirks pins the Dendrite behaviours documented in
// docs/homeservers.md, so a Dendrite upgrade that changes any of
// them fails here and the document gets revisited.
func TestDendriteAppserviceQuirks(t *testing.T) {
	hs, as := startWithAppservice(t)
	ctx := t.Context()

	alice, err := hs.RegisterUser(ctx, "alice", testPassword, false)
	if err != nil {
		t.Fatal(err)
	}
	bot, err := hs.Client(hs.UserID(testASBot), testASToken)
	if err != nil {
		t.Fatal(err)
	}
	var reg mautrix.RespRegister
	_, err = bot.MakeRequest(ctx, http.MethodPost, bot.BuildClientURL("v3", "register"),
		map[string]any{"type": "m.login.application_service", "username": testGhostPfx + "one"}, &reg)
	if err != nil {
		t.Fatalf("registering a ghost: %v", err)
	}
	ghost, err := hs.Client(reg.UserID, testASToken)
	if err != nil {
		t.Fatal(err)
	}
	ghost.SetAppServiceUserID = true

	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{ghost.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ghost.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}

	t.Run("masqueraded events come back to the appservice", func(t *testing.T) {
		sent, err := ghost.SendText(ctx, room.RoomID, "from a ghost")
		if err != nil {
			t.Fatal(err)
		}
		as.waitFor(t, asWaitTimeout, "the ghost's own message", hasEvent(t, sent.EventID))
	})

	t.Run("no redactions and no ephemeral events", func(t *testing.T) {
		doomed, err := alice.SendText(ctx, room.RoomID, "to be redacted")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := alice.RedactEvent(ctx, room.RoomID, doomed.EventID); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.UserTyping(ctx, room.RoomID, true, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := alice.SendReceipt(ctx, room.RoomID, doomed.EventID, event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
		// Delivery is in stream order: once the marker is in, anything sent
		// before it that was going to be delivered has been.
		marker, err := alice.SendText(ctx, room.RoomID, "marker")
		if err != nil {
			t.Fatal(err)
		}
		reqs := as.waitFor(t, asWaitTimeout, "the marker message", hasEvent(t, marker.EventID))
		for _, ev := range transactionEvents(t, reqs) {
			if ev.Type == "m.room.redaction" {
				t.Errorf("Dendrite now delivers redactions to appservices: %+v", ev)
			}
		}
		for _, r := range reqs {
			var body map[string]json.RawMessage
			if strings.Contains(r.Path, "/transactions/") && json.Unmarshal(r.Body, &body) == nil {
				for k := range body {
					if k != "events" {
						t.Errorf("transaction has a %q key now (ephemeral/to-device support?): %s", k, r.Body)
					}
				}
			}
		}
	})

	t.Run("no appservice ping endpoint", func(t *testing.T) {
		_, err := bot.MakeRequest(ctx, http.MethodPost, bot.BuildClientURL("v1", "appservice", testASID, "ping"),
			map[string]any{"transaction_id": "testrig"}, nil)
		if !errors.Is(err, mautrix.MUnrecognized) {
			t.Errorf("POST /_matrix/client/v1/appservice/%s/ping: err = %v, want M_UNRECOGNIZED", testASID, err)
		}
	})

	t.Run("spec versions stop at v1.2", func(t *testing.T) {
		v, err := alice.Versions(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if v.ContainsGreaterOrEqual(mautrix.SpecV13) {
			t.Errorf("/versions now advertises %s", v.GetLatest())
		}
	})

	t.Run("only exactly 200 acknowledges a transaction; the retry reuses the txn ID with more events", func(t *testing.T) {
		as.failNext(http.StatusCreated)
		first, err := alice.SendText(ctx, room.RoomID, "answered with 201")
		if err != nil {
			t.Fatal(err)
		}
		reqs := as.waitFor(t, asWaitTimeout, "the message answered with 201", hasEvent(t, first.EventID))
		failed := reqs[len(reqs)-1]
		if failed.Status != http.StatusCreated {
			t.Fatalf("last request %s -> %d, want the 201 one", failed.Path, failed.Status)
		}
		// Sent while Dendrite sleeps through its 2s backoff.
		second, err := alice.SendText(ctx, room.RoomID, "sent during the backoff")
		if err != nil {
			t.Fatal(err)
		}
		reqs = as.waitFor(t, asWaitTimeout, "the retry", func(reqs []asRequest) bool {
			return len(reqs) > 0 && reqs[len(reqs)-1].Path == failed.Path && reqs[len(reqs)-1].Status == http.StatusOK
		})
		retry := reqs[len(reqs)-1]
		if d := retry.At.Sub(failed.At); d < 1500*time.Millisecond || d > 10*time.Second {
			t.Errorf("retry came %v after the failure, want about 2s", d)
		}
		ids := map[string]bool{}
		for _, ev := range transactionEvents(t, []asRequest{retry}) {
			ids[ev.EventID] = true
		}
		if !ids[first.EventID.String()] || !ids[second.EventID.String()] {
			t.Errorf("retry of %s carries %v, want both %s and %s", retry.Path, ids, first.EventID, second.EventID)
		}
	})

	t.Run("exclusive namespaces are only partly enforced", func(t *testing.T) {
		alias := func(local string) id.RoomAlias { return id.NewRoomAlias(testAliasPfx+local, hs.ServerName) }
		if _, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomAliasName: testAliasPfx + "by_alice"}); err != nil {
			t.Errorf("createRoom with an alias in an exclusive namespace: %v (Dendrite used to allow it)", err)
		}
		if _, err := alice.CreateAlias(ctx, alias("put_by_alice"), room.RoomID); !errors.Is(err, mautrix.MExclusive) {
			t.Errorf("PUT /directory/room by a user: err = %v, want M_EXCLUSIVE", err)
		}
		if _, err := ghost.CreateAlias(ctx, alias("put_by_ghost"), room.RoomID); !errors.Is(err, mautrix.MExclusive) {
			t.Errorf("PUT /directory/room by a masqueraded ghost: err = %v, want M_EXCLUSIVE", err)
		}
		if _, err := bot.CreateAlias(ctx, alias("put_by_bot"), room.RoomID); err != nil {
			t.Errorf("PUT /directory/room by the sender_localpart bot: %v", err)
		}
		if _, err := hs.RegisterUser(ctx, testGhostPfx+"by_shared_secret", testPassword, false); err != nil {
			t.Errorf("shared-secret registration inside an exclusive user namespace: %v (Dendrite used to allow it)", err)
		}
		unregistered, err := hs.Client(hs.UserID(testGhostPfx+"never_registered"), testASToken)
		if err != nil {
			t.Fatal(err)
		}
		unregistered.SetAppServiceUserID = true
		if _, err := unregistered.Whoami(ctx); !errors.Is(err, mautrix.MForbidden) {
			t.Errorf("masquerading as an unregistered ghost: err = %v, want M_FORBIDDEN", err)
		}
	})

	t.Run("user and alias queries", func(t *testing.T) {
		if _, err := alice.GetProfile(ctx, hs.UserID(testGhostPfx+"unknown")); err == nil {
			t.Error("profile of an unknown ghost found")
		}
		if _, err := alice.ResolveAlias(ctx, id.NewRoomAlias(testAliasPfx+"unknown", hs.ServerName)); err == nil {
			t.Error("unknown alias resolved")
		}
		wantUser := "/_matrix/app/v1/users/@" + testGhostPfx + "unknown:" + hs.ServerName
		wantAlias := "/_matrix/app/v1/rooms/%23" + testAliasPfx + "unknown:" + hs.ServerName
		seen := map[string]bool{}
		for _, r := range as.snapshot() {
			if r.Method == http.MethodGet {
				seen[r.Path] = true
				if r.Auth != "Bearer "+testHSToken || r.Query.Has("access_token") {
					t.Errorf("%s: Authorization %q, query %v", r.Path, r.Auth, r.Query)
				}
			}
		}
		for _, p := range []string{wantUser, wantAlias} {
			if !seen[p] {
				t.Errorf("no GET %s; saw %v", p, seen)
			}
		}
	})
}
