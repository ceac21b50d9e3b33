package agents

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/synapseadmin"

	"github.com/daarion/matrix-bridge/pkg/config"
	"github.com/daarion/matrix-bridge/pkg/identity"
	"github.com/daarion/matrix-bridge/pkg/internalapi"
	"github.com/daarion/matrix-bridge/pkg/registration"
	"github.com/daarion/matrix-bridge/pkg/rooms"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

const (
	testServer       = "daarion.test"
	testSecret       = "agents-test-internal-secret-01"
	agentsOnlyToken  = "agents-only-token-0123456789a"
	adminOnlyToken   = "admin-only-token-0123456789ab"
	messagingToken   = "messaging-only-token-01234567"
	hsSharedSecret   = "the-homeserver-shared-secret"
	humanPassword    = "correct horse battery staple"
	refusedPassword  = "password-the-homeserver-refuses"
	agentPassword    = "agent-password-never-used"
	tokenPrefix      = "syt_secret_token_"
	botLocalpart     = "daarion-bot"
	avatar           = "mxc://daarion.test/avatar1"
	wrongSecretHuman = "mallory"
)

func TestGhostAgentID(t *testing.T) {
	s := &Service{mapper: identity.Mapper{ServerName: testServer, BotLocalpart: botLocalpart}}
	for _, tc := range []struct {
		in, want string
		status   int // 0 ok, 400 field error, 403 forbidden
	}{
		{"agent:sofia", "sofia", 0},
		{"@agent_sofia:daarion.test", "sofia", 0},
		{"matrix:@agent_sofia:daarion.test", "sofia", 0},
		{"agent:a.b-c_d=e/f", "a.b-c_d=e/f", 0},
		{"@alice:daarion.test", "", 403},
		{"@daarion-bot:daarion.test", "", 403},
		{"@agent_sofia:elsewhere.org", "", 403},
		{"matrix:@bob:elsewhere.org", "", 403},
		{"user:alice", "", 403},
		{"bridge:bot", "", 403},
		{"agent:", "", 400},
		{"agent:Sofia", "", 400},
		{"agent:so fia", "", 400},
		{"@agent_:daarion.test", "", 400},
		{"@agent_Sofia:daarion.test", "", 400},
		{"@agent_sofia", "", 400},
		{"@:daarion.test", "", 400},
		{"matrix:agent_sofia", "", 400},
		{"sofia", "", 400},
		{"robot:sofia", "", 400},
		{"agent:" + strings.Repeat("x", 250), "", 400},
	} {
		got, err := s.GhostAgentID("userId", tc.in)
		var fe *identity.FieldError
		var forbidden *ForbiddenError
		switch tc.status {
		case 0:
			if err != nil || got != tc.want {
				t.Errorf("%q: %q, %v; want %q", tc.in, got, err, tc.want)
			}
		case 400:
			if !errors.As(err, &fe) || fe.Field != "userId" {
				t.Errorf("%q: %q, %v; want a field error naming userId", tc.in, got, err)
			}
		case 403:
			if !errors.As(err, &forbidden) {
				t.Errorf("%q: %q, %v; want forbidden", tc.in, got, err)
			}
		}
	}
}

func TestRegisterUserValidation(t *testing.T) {
	s := &Service{mapper: identity.Mapper{ServerName: testServer, BotLocalpart: botLocalpart}}
	str := func(v string) *string { return &v }
	for _, tc := range []struct {
		name    string
		req     RegisterUserRequest
		isAgent bool
		field   string
	}{
		{"human", RegisterUserRequest{Username: "alice", Password: humanPassword}, false, ""},
		{"human with all", RegisterUserRequest{Username: "a.l-i_c=e/1+", Password: "12345678", DisplayName: str("Alice ✨"), AvatarURL: str(avatar), Admin: true}, false, ""},
		{"agent", RegisterUserRequest{Username: "agent_nova"}, true, ""},
		{"agent with password", RegisterUserRequest{Username: "agent_nova", Password: agentPassword}, true, ""},
		{"no username", RegisterUserRequest{Password: humanPassword}, false, "username"},
		{"upper case", RegisterUserRequest{Username: "Alice", Password: humanPassword}, false, "username"},
		{"user id", RegisterUserRequest{Username: "@alice:daarion.test", Password: humanPassword}, false, "username"},
		{"space", RegisterUserRequest{Username: "al ice", Password: humanPassword}, false, "username"},
		{"colon", RegisterUserRequest{Username: "al:ice", Password: humanPassword}, false, "username"},
		{"too long", RegisterUserRequest{Username: strings.Repeat("a", 250), Password: humanPassword}, false, "username"},
		{"empty agent id", RegisterUserRequest{Username: "agent_"}, true, "username"},
		{"bad agent id", RegisterUserRequest{Username: "agent_Nova"}, true, "username"},
		{"the bot", RegisterUserRequest{Username: botLocalpart, Password: humanPassword}, false, "username"},
		{"human without password", RegisterUserRequest{Username: "alice"}, false, "password"},
		{"short password", RegisterUserRequest{Username: "alice", Password: "1234567"}, false, "password"},
		{"short multibyte password", RegisterUserRequest{Username: "alice", Password: "пароль"}, false, "password"},
		{"long password", RegisterUserRequest{Username: "alice", Password: strings.Repeat("p", 73)}, false, "password"},
		{"longest password", RegisterUserRequest{Username: "alice", Password: strings.Repeat("p", 72)}, false, ""},
		{"long multibyte password", RegisterUserRequest{Username: "alice", Password: strings.Repeat("я", 37)}, false, "password"},
		{"NUL in password", RegisterUserRequest{Username: "alice", Password: "pass\x00word"}, false, "password"},
		{"short agent password", RegisterUserRequest{Username: "agent_nova", Password: "short"}, true, "password"},
		{"blank display name", RegisterUserRequest{Username: "alice", Password: humanPassword, DisplayName: str("  ")}, false, "display_name"},
		{"long display name", RegisterUserRequest{Username: "alice", Password: humanPassword, DisplayName: str(strings.Repeat("я", 257))}, false, "display_name"},
		{"control in display name", RegisterUserRequest{Username: "alice", Password: humanPassword, DisplayName: str("a\nb")}, false, "display_name"},
		{"http avatar", RegisterUserRequest{Username: "alice", Password: humanPassword, AvatarURL: str("https://x/y.png")}, false, "avatar_url"},
		{"empty avatar", RegisterUserRequest{Username: "alice", Password: humanPassword, AvatarURL: str("")}, false, "avatar_url"},
		{"avatar without media id", RegisterUserRequest{Username: "alice", Password: humanPassword, AvatarURL: str("mxc://daarion.test/")}, false, "avatar_url"},
		{"avatar with a path", RegisterUserRequest{Username: "alice", Password: humanPassword, AvatarURL: str("mxc://daarion.test/a/../b")}, false, "avatar_url"},
		{"admin agent", RegisterUserRequest{Username: "agent_nova", Admin: true}, true, "admin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, isAgent, err := s.classifyUsername(tc.req.Username)
			if err == nil {
				if isAgent != tc.isAgent {
					t.Errorf("isAgent = %v", isAgent)
				}
				err = tc.req.validate(isAgent)
			}
			var fe *identity.FieldError
			switch {
			case tc.field == "" && err != nil:
				t.Errorf("unexpected error %v", err)
			case tc.field != "" && (!errors.As(err, &fe) || fe.Field != tc.field):
				t.Errorf("error %v, want one naming %s", err, tc.field)
			}
		})
	}
}

// The MAC mautrix's synapseadmin signs registrations with is Synapse's.
func TestSharedSecretMAC(t *testing.T) {
	// Computed independently (Python hmac/hashlib).
	for _, tc := range []struct {
		username string
		admin    bool
		want     string
	}{
		{"alice", false, "000b314199b119b93a4281296b7b05eb07c6f5d7"},
		{"root", true, "9141761af127e323d2c860ea13ba361ee7aee7ea"},
	} {
		req := synapseadmin.ReqSharedSecretRegister{Nonce: "abc123", Username: tc.username, Password: "correct horse", Admin: tc.admin}
		if got := req.Sign("s3cret"); got != tc.want {
			t.Errorf("mac of %s (admin %v) = %s, want %s", tc.username, tc.admin, got, tc.want)
		}
	}
}

// fakeHomeserver answers registration and profile calls (and, with rooms
// set, room calls); any other call fails the test.
type fakeHomeserver struct {
	*testrig.FakeHomeserver
	t      *testing.T
	secret string

	mu           sync.Mutex
	users        map[id.UserID]bool
	displayNames map[id.UserID]string
	avatars      map[id.UserID]string
	asRegisters  []map[string]any
	sharedBodies []map[string]any
	tokens       map[string]id.UserID
	nonces       int
	// rooms, when set, serves the room endpoints (invites_test.go); true
	// when it answered.
	rooms func(w http.ResponseWriter, r *http.Request, caller id.UserID) bool
}

func newFakeHomeserver(t *testing.T, secret string) *fakeHomeserver {
	fh := &fakeHomeserver{FakeHomeserver: testrig.NewFakeHomeserver(t), t: t, secret: secret,
		users:        map[id.UserID]bool{"@" + botLocalpart + ":" + testServer: true},
		displayNames: map[id.UserID]string{}, avatars: map[id.UserID]string{}, tokens: map[string]id.UserID{}}
	fh.handle("POST /_matrix/client/v3/register", fh.serveASRegister)
	fh.handle("GET /_synapse/admin/v1/register", fh.serveNonce)
	fh.handle("POST /_synapse/admin/v1/register", fh.serveSharedSecretRegister)
	fh.handle("/_matrix/client/v3/profile/", fh.serveProfile)
	// mautrix downloads an avatar before setting it (some homeservers want
	// it fetched first) and ignores the answer: there is no media here.
	fh.handle("GET /_matrix/client/v1/media/download/{server}/{media}", func(w http.ResponseWriter, _ *http.Request, _ map[string]any) {
		matrixErr(w, 404, "M_NOT_FOUND")
	})
	fh.handle("/_matrix/client/v3/rooms/", fh.serveRooms)
	fh.handle("GET /_matrix/client/v3/joined_rooms", fh.serveRooms)
	return fh
}

// handle answers pattern with h, under fh.mu, with the request's JSON body
// decoded (nil when there is none).
func (fh *fakeHomeserver) handle(pattern string, h func(w http.ResponseWriter, r *http.Request, body map[string]any)) {
	fh.Handle(pattern, func(w http.ResponseWriter, r *http.Request) {
		fh.mu.Lock()
		defer fh.mu.Unlock()
		var body map[string]any
		if r.Body != nil {
			_ = json.NewDecoder(r.Body).Decode(&body)
		}
		h(w, r, body)
	})
}

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func matrixErr(w http.ResponseWriter, status int, code string) {
	reply(w, status, map[string]string{"errcode": code, "error": code})
}

// who is the caller: the appservice (as_token, masquerading with user_id)
// or a user with its own token.
func (fh *fakeHomeserver) who(r *http.Request) (id.UserID, bool) {
	token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	if token == "as-token" {
		if u := r.URL.Query().Get("user_id"); u != "" {
			return id.UserID(u), true
		}
		return id.UserID("@" + botLocalpart + ":" + testServer), true
	}
	u, ok := fh.tokens[token]
	return u, ok
}

func (fh *fakeHomeserver) serveASRegister(w http.ResponseWriter, r *http.Request, body map[string]any) {
	if r.Header.Get("Authorization") != "Bearer as-token" || body["type"] != "m.login.application_service" {
		matrixErr(w, 401, "M_MISSING_TOKEN")
		return
	}
	fh.asRegisters = append(fh.asRegisters, body)
	userID := id.NewUserID(body["username"].(string), testServer)
	if fh.users[userID] {
		matrixErr(w, 400, "M_USER_IN_USE")
		return
	}
	fh.users[userID] = true
	if body["inhibit_login"] == true {
		reply(w, 200, map[string]any{"user_id": userID})
		return
	}
	token := tokenPrefix + userID.Localpart()
	fh.tokens[token] = userID
	reply(w, 200, map[string]any{"user_id": userID, "access_token": token, "device_id": "ASDEVICE"})
}

func (fh *fakeHomeserver) serveNonce(w http.ResponseWriter, _ *http.Request, _ map[string]any) {
	fh.nonces++
	reply(w, 200, map[string]string{"nonce": "nonce" + string(rune('a'+fh.nonces))})
}

func (fh *fakeHomeserver) serveSharedSecretRegister(w http.ResponseWriter, _ *http.Request, body map[string]any) {
	fh.sharedBodies = append(fh.sharedBodies, body)
	username, _ := body["username"].(string)
	password, _ := body["password"].(string)
	nonce, _ := body["nonce"].(string)
	admin, _ := body["admin"].(bool)
	role := "notadmin"
	if admin {
		role = "admin"
	}
	mac := hmac.New(sha1.New, []byte(fh.secret))
	mac.Write([]byte(nonce + "\x00" + username + "\x00" + password + "\x00" + role))
	if body["mac"] != hex.EncodeToString(mac.Sum(nil)) {
		matrixErr(w, 403, "M_FORBIDDEN")
		return
	}
	if password == refusedPassword {
		matrixErr(w, 400, "M_WEAK_PASSWORD")
		return
	}
	userID := id.NewUserID(username, testServer)
	if fh.users[userID] {
		matrixErr(w, 400, "M_USER_IN_USE")
		return
	}
	fh.users[userID] = true
	if dn, ok := body["displayname"].(string); ok {
		fh.displayNames[userID] = dn
	}
	token := tokenPrefix + username
	fh.tokens[token] = userID
	reply(w, 200, map[string]any{"user_id": userID, "access_token": token, "device_id": "SHAREDDEVICE"})
}

func (fh *fakeHomeserver) serveProfile(w http.ResponseWriter, r *http.Request, body map[string]any) {
	rest := strings.TrimPrefix(r.URL.EscapedPath(), "/_matrix/client/v3/profile/")
	rawUser, field, _ := strings.Cut(rest, "/")
	target, _ := url.PathUnescape(rawUser)
	store := fh.displayNames
	key := "displayname"
	if field == "avatar_url" {
		store, key = fh.avatars, "avatar_url"
	}
	if r.Method == http.MethodGet {
		reply(w, 200, map[string]string{key: store[id.UserID(target)]})
		return
	}
	caller, ok := fh.who(r)
	if !ok || caller != id.UserID(target) || !fh.users[caller] {
		matrixErr(w, 403, "M_FORBIDDEN")
		return
	}
	store[caller], _ = body[key].(string)
	reply(w, 200, map[string]any{})
}

// serveRooms passes the room calls to rooms; a call it does not answer
// fails the test.
func (fh *fakeHomeserver) serveRooms(w http.ResponseWriter, r *http.Request, _ map[string]any) {
	if fh.rooms != nil {
		if caller, ok := fh.who(r); ok && fh.rooms(w, r, caller) {
			return
		}
	}
	fh.t.Errorf("unexpected homeserver call %s %s", r.Method, r.URL.Path)
	matrixErr(w, 404, "M_UNRECOGNIZED")
}

type agentsFixture struct {
	api *internalapi.API
	hs  *fakeHomeserver
	svc *Service
	db  *dbutil.Database
	log *bytes.Buffer
	mu  *sync.Mutex
}

type lockedBuffer struct {
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (b lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// newAgentsFixture is the agents service against a fake homeserver, with
// an SQLite database; secret is homeserver.registration_shared_secret.
func newAgentsFixture(t *testing.T, secret string) *agentsFixture {
	t.Helper()
	return newAgentsFixtureWith(t, secret, config.Default().Agents)
}

// newAgentsFixtureWith is newAgentsFixture with an agents config.
func newAgentsFixtureWith(t *testing.T, secret string, agents config.Agents) *agentsFixture {
	t.Helper()
	fh := newFakeHomeserver(t, hsSharedSecret)
	cfg := config.Default()
	cfg.Agents = agents
	cfg.Homeserver.URL = fh.URL
	cfg.Homeserver.ServerName = testServer
	cfg.Homeserver.RegistrationSharedSecret = secret
	cfg.AppService.ASToken, cfg.AppService.HSToken = "as-token", "hs-token"
	as, err := appservice.CreateFull(appservice.CreateOpts{
		Registration: registration.FromConfig(cfg), HomeserverDomain: testServer, HomeserverURL: fh.URL,
	})
	if err != nil {
		t.Fatal(err)
	}
	as.DefaultHTTPRetries = 0
	f := &agentsFixture{hs: fh, log: &bytes.Buffer{}, mu: &sync.Mutex{}}
	logger := zerolog.New(lockedBuffer{f.mu, f.log}).Level(zerolog.TraceLevel)
	as.Log = logger
	tdb := testrig.NewTestDatabase(t, testrig.SQLite)
	db := testrig.OpenDatabase(t, tdb)
	f.db = db
	f.svc = NewService(NewStore(db), rooms.NewStore(db), as, identity.NewMapper(cfg), cfg.Agents)
	f.api, err = internalapi.New(internalapi.Options{
		Services: []config.ServiceToken{
			{Name: "agents", Token: agentsOnlyToken, Scopes: []string{"agents"}},
			{Name: "admin", Token: adminOnlyToken, Scopes: []string{"admin"}},
			{Name: "messenger", Token: messagingToken, Scopes: []string{"messaging"}},
		},
		Secret: testSecret,
		Logger: logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.svc.RegisterRoutes(f.api, cfg.Homeserver)
	return f
}

func (f *agentsFixture) logs() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.log.String()
}

type result struct {
	status int
	body   map[string]any
	raw    string
}

func (r result) str(key string) string { s, _ := r.body[key].(string); return s }

func (f *agentsFixture) do(t *testing.T, token, method, target string, body any) result {
	t.Helper()
	var data []byte
	switch b := body.(type) {
	case nil:
	case string:
		data = []byte(b)
	default:
		data, _ = json.Marshal(b)
	}
	req := httptest.NewRequest(method, target, bytes.NewReader(data))
	req.Header.Set(internalapi.HeaderToken, token)
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	f.api.ServeHTTP(rec, req)
	res := result{status: rec.Code, raw: rec.Body.String()}
	if err := json.Unmarshal(rec.Body.Bytes(), &res.body); err != nil {
		t.Fatalf("%s %s: answer is not a JSON object: %q", method, target, rec.Body)
	}
	return res
}

func TestSetProfile(t *testing.T) {
	f := newAgentsFixture(t, "")
	ctx := context.Background()
	sofia := id.UserID("@agent_sofia:" + testServer)
	for _, path := range []string{"agent:sofia", "%40agent_sofia%3Adaarion.test", "@agent_sofia:daarion.test"} {
		res := f.do(t, agentsOnlyToken, http.MethodPut, "/internal/matrix/users/"+path+"/display-name", map[string]string{"display_name": "Sofia " + path})
		if res.status != 200 || res.raw != `{"status":"updated"}`+"\n" {
			t.Fatalf("%s: %d %s", path, res.status, res.raw)
		}
		if got := f.hs.displayNames[sofia]; got != "Sofia "+path {
			t.Errorf("the homeserver has display name %q", got)
		}
	}
	res := f.do(t, agentsOnlyToken, http.MethodPut, "/internal/matrix/users/agent:sofia/avatar", map[string]string{"avatar_url": avatar})
	if res.status != 200 || f.hs.avatars[sofia] != avatar {
		t.Errorf("avatar: %d %s; homeserver has %q", res.status, res.raw, f.hs.avatars[sofia])
	}
	if a, err := f.svc.Store().Get(ctx, "sofia"); err != nil || a == nil || a.AvatarURL != avatar || !strings.HasPrefix(a.DisplayName, "Sofia ") {
		t.Errorf("stored agent = %+v, %v", a, err)
	}

	for _, tc := range []struct {
		name, token, path string
		body              any
		status            int
		errc, field       string
	}{
		{"a human", testSecret, "%40alice%3Adaarion.test/display-name", map[string]string{"display_name": "x"}, 403, "M_FORBIDDEN", ""},
		{"a human's DAARION id", testSecret, "user:alice/avatar", map[string]string{"avatar_url": avatar}, 403, "M_FORBIDDEN", ""},
		{"the bot", testSecret, "bridge:bot/display-name", map[string]string{"display_name": "x"}, 403, "M_FORBIDDEN", ""},
		{"a remote ghost look-alike", testSecret, "@agent_x:evil.org/display-name", map[string]string{"display_name": "x"}, 403, "M_FORBIDDEN", ""},
		{"invalid agent id", testSecret, "agent:Sofia/display-name", map[string]string{"display_name": "x"}, 400, "M_INVALID_PARAM", "userId"},
		{"not an id", testSecret, "sofia/display-name", map[string]string{"display_name": "x"}, 400, "M_INVALID_PARAM", "userId"},
		{"no scope", messagingToken, "agent:sofia/display-name", map[string]string{"display_name": "x"}, 403, "M_FORBIDDEN", ""},
		{"admin is not agents", adminOnlyToken, "agent:sofia/display-name", map[string]string{"display_name": "x"}, 403, "M_FORBIDDEN", ""},
		{"missing value", testSecret, "agent:sofia/display-name", map[string]string{}, 400, "M_INVALID_PARAM", "display_name"},
		{"null value", testSecret, "agent:sofia/display-name", `{"display_name":null}`, 400, "M_INVALID_PARAM", "display_name"},
		{"wrong type", testSecret, "agent:sofia/display-name", `{"display_name":5}`, 400, "M_BAD_JSON", ""},
		{"other key", testSecret, "agent:sofia/display-name", map[string]string{"display_name": "x", "displayname": "y"}, 400, "M_BAD_JSON", ""},
		{"blank name", testSecret, "agent:sofia/display-name", map[string]string{"display_name": " "}, 400, "M_INVALID_PARAM", "display_name"},
		{"long name", testSecret, "agent:sofia/display-name", map[string]string{"display_name": strings.Repeat("n", 257)}, 400, "M_INVALID_PARAM", "display_name"},
		{"http avatar", testSecret, "agent:sofia/avatar", map[string]string{"avatar_url": "https://example.org/a.png"}, 400, "M_INVALID_PARAM", "avatar_url"},
		{"empty avatar", testSecret, "agent:sofia/avatar", map[string]string{"avatar_url": ""}, 400, "M_INVALID_PARAM", "avatar_url"},
		{"avatar under another key", testSecret, "agent:sofia/avatar", map[string]string{"url": avatar}, 400, "M_BAD_JSON", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := f.do(t, tc.token, http.MethodPut, "/internal/matrix/users/"+tc.path, tc.body)
			if res.status != tc.status || res.str("error") != tc.errc || res.str("field") != tc.field {
				t.Errorf("%d %s, want %d %s naming %q", res.status, res.raw, tc.status, tc.errc, tc.field)
			}
		})
	}
	if _, ok := f.hs.displayNames["@alice:"+testServer]; ok {
		t.Error("a human's profile was changed")
	}
}

func TestRegisterUser(t *testing.T) {
	f := newAgentsFixture(t, hsSharedSecret)
	ctx := context.Background()

	// An agent: an appservice registration that logs in.
	res := f.do(t, agentsOnlyToken, http.MethodPost, "/internal/matrix/register-user", map[string]any{
		"username": "agent_nova", "password": agentPassword, "display_name": "Nova", "avatar_url": avatar,
	})
	nova := id.UserID("@agent_nova:" + testServer)
	if res.status != 200 || res.str("user_id") != nova.String() || res.str("access_token") != tokenPrefix+"agent_nova" ||
		res.str("device_id") != "ASDEVICE" || len(res.body) != 3 {
		t.Fatalf("agent: %d %s", res.status, res.raw)
	}
	if reg := f.hs.asRegisters[len(f.hs.asRegisters)-1]; reg["inhibit_login"] == true || reg["password"] != nil || reg["username"] != "agent_nova" {
		t.Errorf("appservice registration body = %v", reg)
	}
	if f.hs.displayNames[nova] != "Nova" || f.hs.avatars[nova] != avatar {
		t.Errorf("ghost profile = %q, %q", f.hs.displayNames[nova], f.hs.avatars[nova])
	}
	if a, err := f.svc.Store().Get(ctx, "nova"); err != nil || a == nil || a.UserID != nova || a.DisplayName != "Nova" {
		t.Errorf("stored agent = %+v, %v", a, err)
	}
	res = f.do(t, agentsOnlyToken, http.MethodPost, "/internal/matrix/register-user", map[string]any{"username": "agent_nova"})
	if res.status != 409 || res.str("error") != "M_USER_IN_USE" {
		t.Errorf("agent again: %d %s", res.status, res.raw)
	}

	// A human: shared-secret registration.
	res = f.do(t, adminOnlyToken, http.MethodPost, "/internal/matrix/register-user", map[string]any{
		"username": "alice", "password": humanPassword, "display_name": "Alice", "avatar_url": avatar, "admin": true,
	})
	alice := id.UserID("@alice:" + testServer)
	if res.status != 200 || res.str("user_id") != alice.String() || res.str("access_token") != tokenPrefix+"alice" || res.str("device_id") != "SHAREDDEVICE" {
		t.Fatalf("human: %d %s", res.status, res.raw)
	}
	if body := f.hs.sharedBodies[len(f.hs.sharedBodies)-1]; body["admin"] != true || body["displayname"] != "Alice" {
		t.Errorf("shared-secret body = %v", body)
	}
	if f.hs.displayNames[alice] != "Alice" || f.hs.avatars[alice] != avatar {
		t.Errorf("human profile = %q, %q", f.hs.displayNames[alice], f.hs.avatars[alice])
	}

	for _, tc := range []struct {
		name, token string
		body        any
		status      int
		errc, field string
	}{
		{"human again", testSecret, map[string]any{"username": "alice", "password": humanPassword}, 409, "M_USER_IN_USE", ""},
		{"human without admin scope", agentsOnlyToken, map[string]any{"username": "bob", "password": humanPassword}, 403, "M_FORBIDDEN", ""},
		{"agent without agents scope", adminOnlyToken, map[string]any{"username": "agent_x"}, 403, "M_FORBIDDEN", ""},
		{"neither scope", messagingToken, map[string]any{"username": "agent_x"}, 403, "M_FORBIDDEN", ""},
		{"weak password", testSecret, map[string]any{"username": "bob", "password": refusedPassword}, 400, "M_INVALID_PARAM", "password"},
		{"bad username", testSecret, map[string]any{"username": "Bob", "password": humanPassword}, 400, "M_INVALID_PARAM", "username"},
		{"short password", testSecret, map[string]any{"username": "bob", "password": "short"}, 400, "M_INVALID_PARAM", "password"},
		{"bad avatar", testSecret, map[string]any{"username": "bob", "password": humanPassword, "avatar_url": "avatar.png"}, 400, "M_INVALID_PARAM", "avatar_url"},
		{"unknown field", testSecret, map[string]any{"username": "bob", "password": humanPassword, "email": "b@x"}, 400, "M_BAD_JSON", "email"},
		{"not JSON", testSecret, "username=bob", 400, "M_NOT_JSON", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := f.do(t, tc.token, http.MethodPost, "/internal/matrix/register-user", tc.body)
			if res.status != tc.status || res.str("error") != tc.errc || res.str("field") != tc.field {
				t.Errorf("%d %s, want %d %s naming %q", res.status, res.raw, tc.status, tc.errc, tc.field)
			}
		})
	}
	if f.hs.users["@bob:"+testServer] {
		t.Error("a refused registration made a user")
	}

	// A wrong shared secret is the homeserver refusing: 502.
	f.hs.mu.Lock()
	f.hs.secret = "not-the-one-the-bridge-has"
	f.hs.mu.Unlock()
	res = f.do(t, testSecret, http.MethodPost, "/internal/matrix/register-user", map[string]any{"username": wrongSecretHuman, "password": humanPassword})
	if res.status != 502 || res.str("error") != "matrix_unavailable" || !strings.Contains(res.str("detail"), "403") {
		t.Errorf("wrong secret: %d %s", res.status, res.raw)
	}

	// Nothing secret is ever logged, at any level.
	logs := f.logs()
	if !strings.Contains(logs, "Registered a user") {
		t.Fatalf("the test logger saw nothing:\n%s", logs)
	}
	for _, secret := range []string{humanPassword, agentPassword, refusedPassword, tokenPrefix, hsSharedSecret} {
		if strings.Contains(logs, secret) {
			t.Errorf("the log contains %q:\n%s", secret, logs)
		}
	}
}

func TestRegisterUserWithoutSharedSecret(t *testing.T) {
	f := newAgentsFixture(t, "")
	res := f.do(t, testSecret, http.MethodPost, "/internal/matrix/register-user", map[string]any{"username": "alice", "password": humanPassword})
	if res.status != 501 || res.str("error") != "M_UNRECOGNIZED" || !strings.Contains(res.str("message"), "registration_shared_secret is not configured") {
		t.Errorf("%d %s", res.status, res.raw)
	}
	if f.hs.nonces != 0 {
		t.Error("the homeserver was asked for a nonce")
	}
	// Agents do not need it.
	if res = f.do(t, testSecret, http.MethodPost, "/internal/matrix/register-user", map[string]any{"username": "agent_nova"}); res.status != 200 {
		t.Errorf("agent: %d %s", res.status, res.raw)
	}
}
