package internalapi

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/daarion/matrix-bridge/pkg/config"
)

const (
	roomsToken     = "rooms-token-0123456789abcdef"
	messagingToken = "messaging-token-0123456789abc"
	secretToken    = "the-internal-secret-0123456789"
	wrongToken     = "not-a-configured-token-01234567"
)

var allTokens = []string{roomsToken, messagingToken, secretToken, wrongToken}

// syncBuffer is a log sink safe for concurrent requests.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lines returns the log's JSON lines.
func (b *syncBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		out = append(out, m)
	}
	return out
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type fixture struct {
	api   *API
	log   *syncBuffer
	clock *fakeClock
}

func testServices() []config.ServiceToken {
	return []config.ServiceToken{
		{Name: "roomsvc", Token: roomsToken, Scopes: []string{"rooms"}},
		{Name: "messenger", Token: messagingToken, Scopes: []string{"messaging", "subscriptions"}},
	}
}

type decodeTarget struct {
	Name string `json:"name"`
	A    struct {
		B int `json:"b"`
	} `json:"a"`
	Count uint8 `json:"count"`
}

// newFixture builds an API with test routes; edit changes the options first.
func newFixture(t *testing.T, edit func(*Options)) *fixture {
	t.Helper()
	f := &fixture{log: &syncBuffer{}, clock: &fakeClock{now: time.Unix(1_700_000_000, 0)}}
	opts := Options{
		Services:     testServices(),
		Secret:       secretToken,
		RateLimit:    config.RateLimit{RequestsPerSecond: 1000, Burst: 1000},
		MaxBodyBytes: 1024,
		Logger:       zerolog.New(f.log).Level(zerolog.DebugLevel),
		Now:          f.clock.Now,
	}
	if edit != nil {
		edit(&opts)
	}
	api, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	whoami := func(w http.ResponseWriter, r *http.Request) error {
		svc := ServiceFrom(r.Context())
		room, _ := PathVar(r, "roomId")
		zerolog.Ctx(r.Context()).Info().Msg("handler ran")
		WriteJSON(w, http.StatusOK, map[string]any{
			"service": svc.Name, "scopes": svc.Scopes, "request_id": RequestIDFrom(r.Context()), "room": room,
		})
		return nil
	}
	api.Handle(http.MethodGet, "/v1/rooms/{roomId}", ScopeRooms, whoami)
	api.Handle(http.MethodGet, "/v1/admin", ScopeAdmin, whoami)
	api.Handle(http.MethodPost, "/v1/messages", ScopeMessaging, func(w http.ResponseWriter, r *http.Request) error {
		var body decodeTarget
		if err := DecodeJSON(r, &body); err != nil {
			return err
		}
		WriteJSON(w, http.StatusOK, body)
		return nil
	})
	api.HandlePublic(http.MethodGet, "/healthz", func(w http.ResponseWriter, r *http.Request) {
		if ServiceFrom(r.Context()) != nil {
			t.Error("a public route has a service")
		}
		WriteJSON(w, http.StatusOK, map[string]string{"status": "ok", "request_id": RequestIDFrom(r.Context())})
	})
	api.HandlePublic(http.MethodPost, "/decode", Errors(func(w http.ResponseWriter, r *http.Request) error {
		var body decodeTarget
		if err := DecodeJSON(r, &body); err != nil {
			return err
		}
		WriteJSON(w, http.StatusOK, body)
		return nil
	}))
	api.HandlePublic(http.MethodGet, "/panic", func(http.ResponseWriter, *http.Request) {
		panic("boom")
	})
	api.HandlePublic(http.MethodGet, "/panic-late", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusAccepted)
		panic("late boom")
	})
	f.api = api
	return f
}

type request struct {
	method, path, token, body string
	header                    map[string]string
}

func (f *fixture) do(t *testing.T, req request) *httptest.ResponseRecorder {
	t.Helper()
	if req.method == "" {
		req.method = http.MethodGet
	}
	var body io.Reader
	if req.body != "" {
		body = strings.NewReader(req.body)
	}
	r := httptest.NewRequest(req.method, req.path, body)
	if req.token != "" {
		r.Header.Set(HeaderToken, req.token)
	}
	for k, v := range req.header {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	f.api.ServeHTTP(w, r)
	return w
}

type errorResponse struct {
	Error        string  `json:"error"`
	Message      string  `json:"message"`
	Field        *string `json:"field"`
	RetryAfterMS int64   `json:"retry_after_ms"`
}

func decodeError(t *testing.T, w *httptest.ResponseRecorder) errorResponse {
	t.Helper()
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var e errorResponse
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil {
		t.Fatalf("error body %q: %v", w.Body.String(), err)
	}
	if e.Error == "" || e.Message == "" {
		t.Errorf("error body %q lacks error or message", w.Body.String())
	}
	return e
}

func TestAuth(t *testing.T) {
	f := newFixture(t, nil)
	tests := []struct {
		name        string
		req         request
		wantStatus  int
		wantErr     string
		wantService string
		wantInMsg   string
	}{
		{name: "missing token", req: request{path: "/v1/rooms/r1"}, wantStatus: 401, wantErr: ErrMissingToken},
		{name: "wrong token", req: request{path: "/v1/rooms/r1", token: wrongToken}, wantStatus: 401, wantErr: ErrUnknownToken},
		{name: "prefix of a token", req: request{path: "/v1/rooms/r1", token: roomsToken[:10]}, wantStatus: 401, wantErr: ErrUnknownToken},
		{name: "token with a suffix", req: request{path: "/v1/rooms/r1", token: roomsToken + "x"}, wantStatus: 401, wantErr: ErrUnknownToken},
		{name: "right token", req: request{path: "/v1/rooms/r1", token: roomsToken}, wantStatus: 200, wantService: "roomsvc"},
		{name: "right token, wrong scope", req: request{path: "/v1/admin", token: roomsToken}, wantStatus: 403, wantErr: ErrForbidden, wantInMsg: `"admin"`},
		{name: "second service, its scope", req: request{method: "POST", path: "/v1/messages", token: messagingToken, body: `{"name":"x"}`}, wantStatus: 200},
		{name: "second service, other scope", req: request{path: "/v1/rooms/r1", token: messagingToken}, wantStatus: 403, wantErr: ErrForbidden, wantInMsg: `"rooms"`},
		{name: "secret on rooms", req: request{path: "/v1/rooms/r1", token: secretToken}, wantStatus: 200, wantService: config.SecretServiceName},
		{name: "secret on admin", req: request{path: "/v1/admin", token: secretToken}, wantStatus: 200, wantService: config.SecretServiceName},
		{name: "public route without token", req: request{path: "/healthz"}, wantStatus: 200},
		{name: "public route ignores a wrong token", req: request{path: "/healthz", token: wrongToken}, wantStatus: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := f.do(t, tt.req)
			if w.Code != tt.wantStatus {
				t.Fatalf("status = %d, want %d; body %s", w.Code, tt.wantStatus, w.Body)
			}
			if tt.wantErr != "" {
				e := decodeError(t, w)
				if e.Error != tt.wantErr {
					t.Errorf("error = %q, want %q", e.Error, tt.wantErr)
				}
				if !strings.Contains(e.Message, tt.wantInMsg) {
					t.Errorf("message %q does not contain %q", e.Message, tt.wantInMsg)
				}
			}
			if tt.wantService != "" {
				var got struct{ Service string }
				if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || got.Service != tt.wantService {
					t.Errorf("service = %q (%v), want %q", got.Service, err, tt.wantService)
				}
			}
		})
	}
}

// The service secret has every scope but any_room, which must be given to a
// named service by name.
func TestSecretHasEveryScopeButAnyRoomAndTimestamps(t *testing.T) {
	f := newFixture(t, nil)
	w := f.do(t, request{path: "/v1/admin", token: secretToken})
	var got struct{ Scopes []string }
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	want := slices.DeleteFunc(slices.Clone(config.Scopes), func(s string) bool { return s == string(ScopeAnyRoom) || s == string(ScopeTimestamps) })
	if !slices.Equal(got.Scopes, want) || !slices.Equal(want, config.SecretScopes) {
		t.Errorf("secret scopes = %v, want %v", got.Scopes, want)
	}

	// Without a secret there is no such service.
	f = newFixture(t, func(o *Options) { o.Secret = "" })
	if w := f.do(t, request{path: "/v1/admin", token: secretToken}); w.Code != 401 {
		t.Errorf("status = %d with no secret configured, want 401", w.Code)
	}
}

func TestNewRejectsBadServices(t *testing.T) {
	tests := []struct {
		name     string
		services []config.ServiceToken
		secret   string
		want     string
	}{
		{"duplicate name", []config.ServiceToken{
			{Name: "a", Token: "token-a-0123456789", Scopes: []string{"rooms"}},
			{Name: "a", Token: "token-b-0123456789", Scopes: []string{"rooms"}},
		}, "", `"a" is used twice`},
		{"name of the secret's service", []config.ServiceToken{
			{Name: config.SecretServiceName, Token: "token-a-0123456789", Scopes: []string{"rooms"}},
		}, secretToken, `"internal" is used twice`},
		{"no name", []config.ServiceToken{{Token: "token-a-0123456789", Scopes: []string{"rooms"}}}, "", "no name"},
		{"no token", []config.ServiceToken{{Name: "a", Scopes: []string{"rooms"}}}, "", `"a" has no token`},
		{"no scopes", []config.ServiceToken{{Name: "a", Token: "token-a-0123456789"}}, "", `"a" has no scopes`},
		{"unknown scope", []config.ServiceToken{{Name: "a", Token: "token-a-0123456789", Scopes: []string{"rooms", "root"}}}, "", `unknown scope "root"`},
		{"shared token", []config.ServiceToken{
			{Name: "a", Token: "token-a-0123456789", Scopes: []string{"rooms"}},
			{Name: "b", Token: "token-a-0123456789", Scopes: []string{"rooms"}},
		}, "", `"b" has the same token as service "a"`},
		{"token equal to the secret", []config.ServiceToken{
			{Name: "a", Token: secretToken, Scopes: []string{"rooms"}},
		}, secretToken, `the service secret has the same token as service "a"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(Options{Services: tt.services, Secret: tt.secret})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New error = %v, want it to contain %q", err, tt.want)
			}
			for _, s := range tt.services {
				if s.Token != "" && strings.Contains(err.Error(), s.Token) {
					t.Errorf("error %q reveals a token", err)
				}
			}
		})
	}
}

func TestHandleRejectsUnknownScope(t *testing.T) {
	api, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if recover() == nil {
			t.Error("Handle with an unknown scope did not panic")
		}
	}()
	api.Handle(http.MethodGet, "/x", "root", func(http.ResponseWriter, *http.Request) error { return nil })
}

func TestTokenEqual(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"secret-token", "secret-token", true},
		{"", "", true},
		{"secret-token", "secret-tokem", false},
		{"secret-token", "secret-token-longer", false},
		{"secret-token", "secret", false},
		{"secret-token", "", false},
		{"Secret-token", "secret-token", false},
	}
	for _, tt := range tests {
		if got := tokenEqual(tt.a, tt.b); got != tt.want {
			t.Errorf("tokenEqual(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestFindToken(t *testing.T) {
	mk := func(names ...string) []serviceToken {
		var out []serviceToken
		for _, n := range names {
			out = append(out, serviceToken{hash: hashToken(n), service: &Service{Name: n}})
		}
		return out
	}
	tests := []struct {
		name   string
		tokens []serviceToken
		token  string
		want   int
	}{
		{"none configured", nil, "a", -1},
		{"first", mk("a", "b", "c"), "a", 0},
		{"middle", mk("a", "b", "c"), "b", 1},
		{"last", mk("a", "b", "c"), "c", 2},
		{"no match", mk("a", "b", "c"), "d", -1},
		{"empty never matches a token", mk("a"), "", -1},
		{"first of duplicates", mk("x", "a", "a"), "a", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := findToken(tt.token, tt.tokens); got != tt.want {
				t.Errorf("findToken(%q) = %d, want %d", tt.token, got, tt.want)
			}
		})
	}
}

func TestRateLimit(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.RateLimit = config.RateLimit{RequestsPerSecond: 20, Burst: 2} })
	rooms := request{path: "/v1/rooms/r1", token: roomsToken}

	// Unauthenticated requests are rejected before they take from a bucket.
	for range 5 {
		if w := f.do(t, request{path: "/v1/rooms/r1", token: wrongToken}); w.Code != 401 {
			t.Fatalf("wrong token: status %d, want 401", w.Code)
		}
	}
	for i := range 2 {
		if w := f.do(t, rooms); w.Code != 200 {
			t.Fatalf("request %d: status %d, want 200", i+1, w.Code)
		}
	}
	w := f.do(t, rooms)
	if w.Code != http.StatusTooManyRequests {
		t.Fatalf("request 3: status %d, want 429", w.Code)
	}
	e := decodeError(t, w)
	if e.Error != ErrLimitExceeded || e.RetryAfterMS != 50 {
		t.Errorf("429 body = %+v, want M_LIMIT_EXCEEDED with retry_after_ms 50", e)
	}
	if got := w.Header().Get("Retry-After"); got != "1" {
		t.Errorf("Retry-After = %q, want 1", got)
	}

	// Another service has its own bucket.
	if w := f.do(t, request{method: "POST", path: "/v1/messages", token: messagingToken, body: "{}"}); w.Code != 200 {
		t.Errorf("other service: status %d, want 200", w.Code)
	}

	// Not quite long enough, then long enough.
	f.clock.Advance(30 * time.Millisecond)
	if w := f.do(t, rooms); w.Code != 429 {
		t.Errorf("after 30ms: status %d, want 429", w.Code)
	} else if e := decodeError(t, w); e.RetryAfterMS != 20 {
		t.Errorf("after 30ms: retry_after_ms %d, want 20", e.RetryAfterMS)
	}
	f.clock.Advance(20 * time.Millisecond)
	if w := f.do(t, rooms); w.Code != 200 {
		t.Errorf("after 50ms: status %d, want 200", w.Code)
	}
	if w := f.do(t, rooms); w.Code != 429 {
		t.Errorf("right after: status %d, want 429", w.Code)
	}
}

func TestRateLimitRealTime(t *testing.T) {
	f := newFixture(t, func(o *Options) {
		o.RateLimit = config.RateLimit{RequestsPerSecond: 20, Burst: 2}
		o.Now = nil
	})
	srv := httptest.NewServer(f.api)
	defer srv.Close()
	get := func() *http.Response {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/rooms/r1", nil)
		req.Header.Set(HeaderToken, roomsToken)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp
	}
	var limited *http.Response
	for range 10 {
		if resp := get(); resp.StatusCode == 429 {
			limited = resp
			break
		}
	}
	if limited == nil {
		t.Fatal("10 requests in a row were never limited at 20/s burst 2")
	}
	if limited.Header.Get("Retry-After") != "1" {
		t.Errorf("Retry-After = %q, want 1", limited.Header.Get("Retry-After"))
	}
	time.Sleep(60 * time.Millisecond)
	if resp := get(); resp.StatusCode != 200 {
		t.Errorf("after waiting: status %d, want 200", resp.StatusCode)
	}
}

func TestRetryAfterRounding(t *testing.T) {
	tests := []struct {
		wait       time.Duration
		wantHeader string
		wantMS     int64
	}{
		{time.Microsecond, "1", 1},
		{50 * time.Millisecond, "1", 50},
		{999*time.Millisecond + time.Microsecond, "1", 1000},
		{1001 * time.Millisecond, "2", 1001},
		{2500 * time.Millisecond, "3", 2500},
	}
	for _, tt := range tests {
		w := httptest.NewRecorder()
		WriteError(w, httptest.NewRequest(http.MethodGet, "/", nil), RateLimited(tt.wait))
		e := decodeError(t, w)
		if got := w.Header().Get("Retry-After"); got != tt.wantHeader || e.RetryAfterMS != tt.wantMS {
			t.Errorf("wait %v: Retry-After %q, retry_after_ms %d; want %q, %d", tt.wait, got, e.RetryAfterMS, tt.wantHeader, tt.wantMS)
		}
	}
}

func TestRequestID(t *testing.T) {
	f := newFixture(t, nil)
	long := strings.Repeat("a", 128)
	tests := []struct {
		name string
		in   string
		keep bool
	}{
		{"none", "", false},
		{"simple", "req-123_abc.DEF", true},
		{"one char", "x", true},
		{"128 chars", long, true},
		{"129 chars", long + "a", false},
		{"space", "req 123", false},
		{"slash", "req/123", false},
		{"colon", "req:123", false},
		{"non-ascii", "réq", false},
		{"log injection", "x\",\"service\":\"admin", false},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := request{path: "/healthz"}
			if tt.in != "" {
				req.header = map[string]string{HeaderRequestID: tt.in}
			}
			w := f.do(t, req)
			got := w.Header().Get(HeaderRequestID)
			var body struct {
				RequestID string `json:"request_id"`
			}
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
				t.Fatal(err)
			}
			if body.RequestID != got {
				t.Errorf("RequestIDFrom = %q, header %q", body.RequestID, got)
			}
			if tt.keep {
				if got != tt.in {
					t.Errorf("request id = %q, want %q kept", got, tt.in)
				}
				return
			}
			if got == tt.in || !validRequestID(got) {
				t.Errorf("request id = %q, want a new valid one", got)
			}
			if seen[got] {
				t.Errorf("request id %q generated twice", got)
			}
			seen[got] = true
		})
	}

	// Error responses carry it too.
	if w := f.do(t, request{path: "/v1/rooms/r1"}); w.Header().Get(HeaderRequestID) == "" {
		t.Error("401 has no X-Request-Id")
	}
}

func TestContextLogger(t *testing.T) {
	f := newFixture(t, nil)
	f.do(t, request{path: "/v1/rooms/r1", token: roomsToken, header: map[string]string{HeaderRequestID: "rid-1"}})
	for _, line := range f.log.lines(t) {
		if line["message"] != "handler ran" {
			continue
		}
		want := map[string]any{"request_id": "rid-1", "service": "roomsvc", "route": "/v1/rooms/{roomId}"}
		for k, v := range want {
			if line[k] != v {
				t.Errorf("handler log %s = %v, want %v", k, line[k], v)
			}
		}
		return
	}
	t.Fatalf("handler's log line not found in %s", f.log)
}

func TestAccessLog(t *testing.T) {
	f := newFixture(t, nil)
	f.do(t, request{path: "/v1/rooms/%21abc%3Aexample.org", token: roomsToken, header: map[string]string{HeaderRequestID: "rid-2"}})
	f.do(t, request{path: "/panic"})
	f.do(t, request{path: "/nowhere"})
	var access []map[string]any
	for _, line := range f.log.lines(t) {
		if line["message"] == "Internal API request" {
			access = append(access, line)
		}
	}
	if len(access) != 3 {
		t.Fatalf("%d access lines, want 3: %s", len(access), f.log)
	}
	first := access[0]
	want := map[string]any{
		"level": "debug", "method": "GET", "route": "/v1/rooms/{roomId}", "status": float64(200),
		"service": "roomsvc", "request_id": "rid-2",
	}
	for k, v := range want {
		if first[k] != v {
			t.Errorf("access log %s = %v, want %v", k, first[k], v)
		}
	}
	if _, ok := first["duration"]; !ok {
		t.Error("access log has no duration")
	}
	if strings.Contains(f.log.String(), "abc") {
		t.Error("the access log has the raw path")
	}
	if access[1]["level"] != "error" || access[1]["status"] != float64(500) || access[1]["route"] != "/panic" {
		t.Errorf("panic access line = %v, want error level, 500, /panic", access[1])
	}
	if access[2]["route"] != "unmatched" || access[2]["status"] != float64(404) {
		t.Errorf("404 access line = %v", access[2])
	}
}

func TestNoTokensInLogs(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.RateLimit = config.RateLimit{RequestsPerSecond: 1, Burst: 1} })
	for _, tok := range allTokens {
		for _, path := range []string{"/v1/rooms/" + tok, "/v1/admin?token=" + tok, "/nowhere/" + tok, "/panic?t=" + tok} {
			for range 2 { // the second is rate limited
				f.do(t, request{path: path, token: tok, header: map[string]string{
					"Authorization": "Bearer " + tok, HeaderRequestID: "rid",
				}})
			}
		}
		f.do(t, request{path: "/healthz", token: tok})
		f.do(t, request{method: "POST", path: "/v1/messages", token: tok, body: `{"name":"` + tok + `"}`})
	}
	out := f.log.String()
	if !strings.Contains(out, "Internal API request") || !strings.Contains(out, "boom") {
		t.Fatalf("nothing logged: %s", out)
	}
	for _, tok := range allTokens {
		if strings.Contains(out, tok) {
			t.Errorf("token %q appears in the log", tok)
		}
		if strings.Contains(out, tok[:12]) {
			t.Errorf("part of token %q appears in the log", tok)
		}
	}
}

func TestBodyLimit(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.MaxBodyBytes = 64 })
	fits := `{"name":"` + strings.Repeat("x", 64-len(`{"name":""}`)) + `"}`
	over := `{"name":"` + strings.Repeat("x", 100) + `"}`
	tests := []struct {
		name    string
		body    string
		chunked bool // no Content-Length: only the MaxBytesReader sees it
		want    int
	}{
		{"at the limit", fits, false, 200},
		{"over, with Content-Length", over, false, 413},
		{"over, chunked", over, true, 413},
		{"at the limit, chunked", fits, true, 200},
		{"over by trailing whitespace, chunked", `{"name":"x"}` + strings.Repeat(" ", 100), true, 413},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/decode", strings.NewReader(tt.body))
			if tt.chunked {
				r.ContentLength = -1
			}
			w := httptest.NewRecorder()
			f.api.ServeHTTP(w, r)
			if w.Code != tt.want {
				t.Fatalf("status %d, want %d; body %s", w.Code, tt.want, w.Body)
			}
			if tt.want == 413 {
				if e := decodeError(t, w); e.Error != ErrTooLarge || !strings.Contains(e.Message, "64 bytes") {
					t.Errorf("413 body = %+v", e)
				}
			}
		})
	}
}

func TestDecodeJSON(t *testing.T) {
	f := newFixture(t, nil)
	tests := []struct {
		name        string
		body        string
		contentType string
		wantStatus  int
		wantErr     string
		wantField   string // "" means no field in the body
		wantInMsg   string
	}{
		{name: "valid", body: `{"name":"x","a":{"b":1}}`, contentType: "application/json", wantStatus: 200},
		{name: "valid, charset", body: `{"name":"x"}`, contentType: "application/json; charset=utf-8", wantStatus: 200},
		{name: "valid, no content type", body: `{"name":"x"}`, wantStatus: 200},
		{name: "wrong content type", body: `{"name":"x"}`, contentType: "text/plain", wantStatus: 415, wantErr: ErrNotJSON},
		{name: "form content type", body: `name=x`, contentType: "application/x-www-form-urlencoded", wantStatus: 415, wantErr: ErrNotJSON},
		{name: "bad content type", body: `{}`, contentType: "application/json;;", wantStatus: 415, wantErr: ErrNotJSON},
		{name: "empty body", body: "", wantStatus: 400, wantErr: ErrNotJSON, wantInMsg: "request body is required"},
		{name: "whitespace body", body: " \n ", wantStatus: 400, wantErr: ErrNotJSON, wantInMsg: "request body is required"},
		{name: "malformed", body: `{"name":}`, wantStatus: 400, wantErr: ErrNotJSON},
		{name: "truncated", body: `{"name":"x"`, wantStatus: 400, wantErr: ErrNotJSON},
		{name: "wrong type", body: `{"name":1}`, wantStatus: 400, wantErr: ErrBadJSON, wantField: "name", wantInMsg: "name: must be a string, got number"},
		{name: "wrong nested type", body: `{"a":{"b":"x"}}`, wantStatus: 400, wantErr: ErrBadJSON, wantField: "a.b", wantInMsg: "a.b: must be an integer"},
		{name: "object for a scalar", body: `{"name":{}}`, wantStatus: 400, wantErr: ErrBadJSON, wantField: "name"},
		{name: "out of range", body: `{"count":300}`, wantStatus: 400, wantErr: ErrBadJSON, wantField: "count"},
		{name: "not an object", body: `[1,2]`, wantStatus: 400, wantErr: ErrBadJSON, wantInMsg: "must be an object"},
		{name: "unknown field", body: `{"name":"x","colour":"red"}`, wantStatus: 400, wantErr: ErrBadJSON, wantField: "colour", wantInMsg: "colour: unknown field"},
		{name: "unknown nested field", body: `{"a":{"c":1}}`, wantStatus: 400, wantErr: ErrBadJSON, wantField: "c"},
		{name: "trailing object", body: `{"name":"x"}{"name":"y"}`, wantStatus: 400, wantErr: ErrNotJSON, wantInMsg: "single JSON value"},
		{name: "trailing garbage", body: `{"name":"x"} x`, wantStatus: 400, wantErr: ErrNotJSON},
		{name: "trailing whitespace is fine", body: "{\"name\":\"x\"}\n\n", wantStatus: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := request{method: "POST", path: "/decode", body: tt.body}
			if tt.contentType != "" {
				req.header = map[string]string{"Content-Type": tt.contentType}
			}
			w := f.do(t, req)
			if w.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d; body %s", w.Code, tt.wantStatus, w.Body)
			}
			if tt.wantErr == "" {
				return
			}
			e := decodeError(t, w)
			if e.Error != tt.wantErr {
				t.Errorf("error %q, want %q (message %q)", e.Error, tt.wantErr, e.Message)
			}
			switch {
			case tt.wantField == "" && e.Field != nil:
				t.Errorf("field = %q, want none", *e.Field)
			case tt.wantField != "" && (e.Field == nil || *e.Field != tt.wantField):
				t.Errorf("field = %v, want %q (message %q)", e.Field, tt.wantField, e.Message)
			}
			if !strings.Contains(e.Message, tt.wantInMsg) {
				t.Errorf("message %q does not contain %q", e.Message, tt.wantInMsg)
			}
		})
	}
}

func TestDecodeJSONWithoutBody(t *testing.T) {
	// A handler called outside the API, with no body at all.
	r := httptest.NewRequest(http.MethodPost, "/", nil)
	w := httptest.NewRecorder()
	var v decodeTarget
	err := DecodeJSON(r, &v)
	if err == nil {
		t.Fatal("DecodeJSON accepted no body")
	}
	WriteError(w, r, err)
	if e := decodeError(t, w); w.Code != 400 || e.Error != ErrNotJSON {
		t.Errorf("got %d %+v, want 400 M_NOT_JSON", w.Code, e)
	}
}

func TestNotFoundAndMethodNotAllowed(t *testing.T) {
	f := newFixture(t, nil)
	tests := []struct {
		name string
		req  request
		want int
	}{
		{"unknown path", request{path: "/v1/nothing"}, 404},
		{"unknown path with a token", request{path: "/v1/nothing", token: roomsToken}, 404},
		{"wrong method, public", request{method: "POST", path: "/healthz"}, 405},
		{"wrong method, authenticated", request{method: "DELETE", path: "/v1/rooms/r1", token: roomsToken}, 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := f.do(t, tt.req)
			if w.Code != tt.want {
				t.Fatalf("status %d, want %d", w.Code, tt.want)
			}
			if e := decodeError(t, w); e.Error != ErrUnrecognized {
				t.Errorf("error %q, want %q", e.Error, ErrUnrecognized)
			}
			if w.Header().Get(HeaderRequestID) == "" {
				t.Error("no X-Request-Id")
			}
		})
	}
}

func TestPanicRecovery(t *testing.T) {
	f := newFixture(t, nil)
	srv := httptest.NewServer(f.api)
	defer srv.Close()

	resp, err := srv.Client().Get(srv.URL + "/panic")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != 500 || strings.TrimSpace(string(body)) != `{"error":"INTERNAL_ERROR","message":"internal error"}` {
		t.Errorf("panic answered %d %s", resp.StatusCode, body)
	}
	if resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("Content-Type = %q", resp.Header.Get("Content-Type"))
	}

	// A panic after the status went out keeps that status.
	resp, err = srv.Client().Get(srv.URL + "/panic-late")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Errorf("late panic: status %d, want 202", resp.StatusCode)
	}

	// The server still serves.
	resp, err = srv.Client().Get(srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("after the panics: status %d", resp.StatusCode)
	}

	var panics int
	for _, line := range f.log.lines(t) {
		if line["message"] != "Internal API handler panicked" {
			continue
		}
		panics++
		stack, _ := line["stack"].(string)
		if line["level"] != "error" || !strings.Contains(line["panic"].(string), "boom") || !strings.Contains(stack, "goroutine") {
			t.Errorf("panic log line = %v", line)
		}
	}
	if panics != 2 {
		t.Errorf("%d panic log lines, want 2", panics)
	}
}

func TestPathVar(t *testing.T) {
	f := newFixture(t, nil)
	tests := []struct{ path, want string }{
		{"/v1/rooms/plain", "plain"},
		{"/v1/rooms/%21abc%3Aexample.org", "!abc:example.org"},
		{"/v1/rooms/%23city_kyiv%3Aexample.org", "#city_kyiv:example.org"},
		{"/v1/rooms/a%2Fb", "a/b"},
	}
	for _, tt := range tests {
		w := f.do(t, request{path: tt.path, token: roomsToken})
		var got struct{ Room string }
		if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || got.Room != tt.want {
			t.Errorf("%s: room = %q (%v, status %d), want %q", tt.path, got.Room, err, w.Code, tt.want)
		}
	}
}

func TestResponseHelpers(t *testing.T) {
	t.Run("WriteJSON", func(t *testing.T) {
		w := httptest.NewRecorder()
		WriteJSON(w, http.StatusCreated, map[string]int{"n": 1})
		if w.Code != 201 || w.Header().Get("Content-Type") != "application/json" || strings.TrimSpace(w.Body.String()) != `{"n":1}` {
			t.Errorf("got %d %q %q", w.Code, w.Header().Get("Content-Type"), w.Body)
		}
	})
	t.Run("WriteJSON unencodable", func(t *testing.T) {
		w := httptest.NewRecorder()
		WriteJSON(w, http.StatusOK, map[string]any{"f": func() {}})
		if e := decodeError(t, w); w.Code != 500 || e.Error != ErrInternal {
			t.Errorf("got %d %+v", w.Code, e)
		}
	})
	t.Run("WriteError", func(t *testing.T) {
		w := httptest.NewRecorder()
		WriteError(w, httptest.NewRequest(http.MethodGet, "/", nil), NotFound("no such room"))
		if strings.TrimSpace(w.Body.String()) != `{"error":"M_NOT_FOUND","message":"no such room"}` || w.Code != 404 {
			t.Errorf("got %d %s", w.Code, w.Body)
		}
	})
	t.Run("InvalidField", func(t *testing.T) {
		w := httptest.NewRecorder()
		WriteError(w, httptest.NewRequest(http.MethodGet, "/", nil), InvalidField("slug", "must be lowercase"))
		want := `{"error":"M_INVALID_PARAM","message":"slug: must be lowercase","field":"slug"}`
		if strings.TrimSpace(w.Body.String()) != want || w.Code != 400 {
			t.Errorf("got %d %s, want 400 %s", w.Code, w.Body, want)
		}
	})
	t.Run("internal error", func(t *testing.T) {
		var buf syncBuffer
		logger := zerolog.New(&buf)
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r = r.WithContext(logger.WithContext(r.Context()))
		w := httptest.NewRecorder()
		WriteError(w, r, io.ErrClosedPipe)
		if e := decodeError(t, w); w.Code != 500 || e.Error != ErrInternal || strings.Contains(w.Body.String(), "closed pipe") {
			t.Errorf("got %d %s", w.Code, w.Body)
		}
		if !strings.Contains(buf.String(), "closed pipe") {
			t.Errorf("error not logged: %s", buf.String())
		}
	})
}
