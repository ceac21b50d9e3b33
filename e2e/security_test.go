package e2e_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/lib/pq"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/config"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// secCall calls the internal API with a raw body and extra headers, and
// checks the answer against docs/openapi.yaml like apiRaw.
func secCall(t *testing.T, s *stack, method, path, token, contentType string, body []byte, header http.Header) apiResult {
	t.Helper()
	req, err := http.NewRequest(method, s.apiURL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	if token != "" {
		req.Header.Set("X-Internal-Service-Token", token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	res := apiResult{status: resp.StatusCode, header: resp.Header, body: data}
	if err = json.Unmarshal(data, &res.json); err != nil {
		t.Errorf("%s %s answered %d with a body that is not a JSON object: %q", method, path, resp.StatusCode, data)
	}
	req.Body = io.NopCloser(bytes.NewReader(body))
	checkOpenAPI(t, req, resp.StatusCode, resp.Header, data)
	return res
}

// secJSON calls the internal API with a JSON body.
func secJSON(t *testing.T, s *stack, token, method, path string, body any) apiResult {
	t.Helper()
	var data []byte
	if body != nil {
		var err error
		if data, err = json.Marshal(body); err != nil {
			t.Fatal(err)
		}
	}
	return secCall(t, s, method, path, token, "application/json", data, nil)
}

// secMultipart is an upload body: an optional agent field and a file part
// with the raw Content-Disposition and Content-Type a client chose.
func secMultipart(t *testing.T, agent, disposition, claimedType string, data []byte) (string, []byte) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	if agent != "" {
		if err := mw.WriteField("agent", agent); err != nil {
			t.Fatal(err)
		}
	}
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", disposition)
	h.Set("Content-Type", claimedType)
	w, err := mw.CreatePart(h)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write(data)
	if err = mw.Close(); err != nil {
		t.Fatal(err)
	}
	return mw.FormDataContentType(), buf.Bytes()
}

// secAppservice calls the appservice port the homeserver uses.
func secAppservice(t *testing.T, s *stack, method, pathAndQuery, bearer string, body []byte) int {
	t.Helper()
	return callAppservice(t, s.cfg.AppService.URL, method, pathAndQuery, bearer, body)
}

// callAppservice calls a bridge process's appservice endpoint at baseURL.
func callAppservice(t *testing.T, baseURL, method, pathAndQuery, bearer string, body []byte) int {
	t.Helper()
	req, err := http.NewRequest(method, baseURL+pathAndQuery, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, pathAndQuery, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// secSubscribe subscribes rc with token and returns the id and secret.
func secSubscribe(t *testing.T, s *stack, token, webhookURL string, rc *receiver, body map[string]any) (string, string) {
	t.Helper()
	body["webhook_url"] = webhookURL
	res := secJSON(t, s, token, http.MethodPost, "/internal/matrix/webhook/subscribe", body)
	if res.status != 200 || res.str("subscription_id") == "" || !strings.HasPrefix(res.str("secret"), "whsec_") {
		t.Fatalf("subscribe %s: %d %s", webhookURL, res.status, res.body)
	}
	if rc != nil {
		rc.mu.Lock()
		rc.secret = res.str("secret")
		rc.mu.Unlock()
	}
	return res.str("subscription_id"), res.str("secret")
}

// secPasswordDatabase makes a PostgreSQL role with a password, owning a new
// database in the shared test cluster, and makes the cluster check that
// role's password (the cluster trusts every other local connection): a
// pg_hba.conf line for the role alone, then a configuration reload. It
// returns the DSN, password included, and the password.
func secPasswordDatabase(t *testing.T) (string, string) {
	t.Helper()
	ctx := context.Background()
	c, err := testrig.SharedPostgres()
	if err != nil {
		t.Fatal(err)
	}
	admin, err := sql.Open("postgres", c.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	suffix := strings.ToLower(rand.Text()[:10])
	role, dbName, password := "sec_role_"+suffix, "sec_db_"+suffix, rand.Text()
	if _, err = admin.ExecContext(ctx, "CREATE ROLE "+pq.QuoteIdentifier(role)+" LOGIN PASSWORD "+pq.QuoteLiteral(password)); err != nil {
		t.Fatal(err)
	}
	if _, err = admin.ExecContext(ctx, "CREATE DATABASE "+pq.QuoteIdentifier(dbName)+" OWNER "+pq.QuoteIdentifier(role)); err != nil {
		t.Fatal(err)
	}
	hbaPath := filepath.Join(c.DataDir, "pg_hba.conf")
	hba, err := os.ReadFile(hbaPath)
	if err != nil {
		t.Fatal(err)
	}
	line := fmt.Sprintf("host all %s 127.0.0.1/32 scram-sha-256\n", role)
	if err = os.WriteFile(hbaPath, append([]byte(line), hba...), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err = admin.ExecContext(ctx, "SELECT pg_reload_conf()"); err != nil {
		t.Fatal(err)
	}
	dsn := fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/%s?sslmode=disable", role, password, c.Port, dbName)
	ping := func(dsn string) error {
		db, err := sql.Open("postgres", dsn)
		if err != nil {
			return err
		}
		defer db.Close()
		return db.PingContext(ctx)
	}
	// The reload is asynchronous: wait until a wrong password is refused.
	wrong := strings.Replace(dsn, password, "not-the-password", 1)
	eventually(t, "PostgreSQL to check the role's password", 10*time.Second, func() bool {
		var pqErr *pq.Error
		err := ping(wrong)
		return errors.As(err, &pqErr) && pqErr.Code == "28P01" // invalid_password
	})
	if err = ping(dsn); err != nil {
		t.Fatalf("the role cannot log in with its password: %v", err)
	}
	return dsn, password
}

// secNATS starts a NATS server that requires a user and password and
// returns it with the URL carrying them.
func secNATS(t *testing.T, user, password string) (*testrig.NATSServer, string) {
	t.Helper()
	srv := testrig.StartNATS(t, testrig.NATSOptions{Username: user, Password: password})
	u, err := url.Parse(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(user, password)
	return srv, u.String()
}

// secAssertNoSecrets fails for every secret (or its first 12 characters, or
// the first 12 after a public "whsec_" prefix) found in logs.
func secAssertNoSecrets(t *testing.T, logs string, secrets map[string]string) {
	t.Helper()
	names := make([]string, 0, len(secrets))
	for name := range secrets {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		secret := secrets[name]
		if len(secret) < 12 {
			t.Errorf("%s is too short (%d characters) to be checked", name, len(secret))
			continue
		}
		needles := []string{secret, secret[:12]}
		if core, ok := strings.CutPrefix(secret, "whsec_"); ok && len(core) >= 12 {
			needles = append(needles, core[:12])
		}
		for _, needle := range needles {
			if i := strings.Index(logs, needle); i >= 0 {
				start := strings.LastIndexByte(logs[:i], '\n') + 1
				end := strings.IndexByte(logs[i:], '\n')
				if end < 0 {
					end = len(logs) - i
				}
				t.Errorf("the bridge's log contains the %s (%d-character match):\n%s", name, len(needle), logs[start:i+end])
				break
			}
		}
	}
}

// No secret reaches the bridge's log, at debug level, through every path
// that handles one: the appservice tokens, INTERNAL_SERVICE_SECRET (from
// the environment), a named service token, the homeserver's registration
// shared secret, register-user's passwords and the access tokens it
// returns, webhook secrets (deliveries, failures, redirects, dead letters),
// the database password (a PostgreSQL role that really needs it), NATS
// credentials (connected, then NATS gone), wrong tokens on both APIs and the
// legacy access_token query parameter.
func TestSecurityNoSecretsInLogs(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, r rig) {
		dsn, dbPassword := secPasswordDatabase(t)
		tdb := rig{TestDatabase: testrig.TestDatabase{Name: testrig.Postgres, Type: "postgres", URI: dsn}, homeserver: r.homeserver}
		svcSecret, namedToken, natsPassword := rand.Text(), rand.Text(), rand.Text()
		natsSrv, natsURL := secNATS(t, "bridge", natsPassword)
		// The environment beats the file's internal_api.service_secret.
		t.Setenv("INTERNAL_SERVICE_SECRET", svcSecret)
		s := newStackWith(t, tdb, stackOptions{
			homeserver: "    registration_shared_secret: " + homeserverSecret,
			appservice: "    allow_query_token: true",
			internalAPI: fmt.Sprintf(`    services:
        - name: city-service
          token: %s
          scopes: [rooms, messaging, agents, subscriptions]`, namedToken),
			extra: fastRetries + "    nats_url: " + natsURL + "\n",
		})
		s.bridge.waitForLog("Bridge bot registered", 30*time.Second)
		s.bridge.waitForLog("Connected to NATS", 30*time.Second)
		hsToken, asToken := s.cfg.AppService.HSToken, s.cfg.AppService.ASToken
		if res := secJSON(t, s, serviceSecret, http.MethodGet, "/internal/matrix/rooms", nil); res.status != 401 {
			t.Fatalf("the file's service secret still works (INTERNAL_SERVICE_SECRET should win): %d", res.status)
		}

		// Rooms, with both tokens.
		res := secJSON(t, s, namedToken, http.MethodPost, "/internal/matrix/rooms/create", map[string]string{"slug": "vault", "name": "Vault", "visibility": "public"})
		if res.status != 200 {
			t.Fatalf("create: %d %s", res.status, res.body)
		}
		roomID, alias := id.RoomID(res.str("matrix_room_id")), id.RoomAlias(res.str("matrix_room_alias"))
		roomPath := "/internal/matrix/rooms/" + url.PathEscape(roomID.String())
		for _, call := range []struct {
			method, path string
			body         any
		}{
			{http.MethodPost, "/internal/matrix/create-room", map[string]string{"name": "Side room"}},
			{http.MethodGet, roomPath, nil},
			{http.MethodGet, "/internal/matrix/rooms?limit=5", nil},
			{http.MethodGet, "/internal/matrix/rooms/find-by-alias?alias=" + url.QueryEscape(alias.String()), nil},
			{http.MethodPut, roomPath + "/topic", map[string]string{"topic": "secrets stay out of logs"}},
		} {
			if res := secJSON(t, s, svcSecret, call.method, call.path, call.body); res.status != 200 {
				t.Errorf("%s %s: %d %s", call.method, call.path, res.status, res.body)
			}
		}
		alice, _ := s.humanJoins("alice", alias)

		// Webhooks: one receiver that takes everything, one that fails, one
		// that redirects, one that refuses connections.
		webhookSecrets := map[string]string{}
		good := newReceiver(t)
		goodID, sec := secSubscribe(t, s, namedToken, good.srv.URL+"/hook", good, map[string]any{"city_slug": "vault"})
		webhookSecrets["webhook secret (delivered)"] = sec
		failing := newReceiver(t)
		failing.setFail(true)
		failingID, sec := secSubscribe(t, s, svcSecret, failing.srv.URL+"/hook", failing, map[string]any{"room_id": roomID.String()})
		webhookSecrets["webhook secret (failing)"] = sec
		redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/", http.StatusFound)
		}))
		t.Cleanup(redirect.Close)
		redirectID, sec := secSubscribe(t, s, svcSecret, redirect.URL+"/hook", nil, map[string]any{"room_id": "*", "events": []string{"m.room.message"}})
		webhookSecrets["webhook secret (redirected)"] = sec
		refusedID, sec := secSubscribe(t, s, svcSecret, "http://127.0.0.1:"+strconv.Itoa(freePort(t))+"/hook", nil, map[string]any{"room_id": roomID.String(), "events": []string{"m.room.message"}})
		webhookSecrets["webhook secret (refused)"] = sec

		// Agents: messages with an Idempotency-Key (a retry and a conflict), a
		// reaction, a redaction, membership.
		sendBody := []byte(`{"room_id":"` + roomID.String() + `","sender":"agent:sofia","body":"idempotent hello"}`)
		key := http.Header{"Idempotency-Key": {"sec-order-1"}}
		first := secCall(t, s, http.MethodPost, "/internal/matrix/send", svcSecret, "application/json", sendBody, key)
		again := secCall(t, s, http.MethodPost, "/internal/matrix/send", svcSecret, "application/json", sendBody, key)
		if first.status != 200 || again.str("event_id") != first.str("event_id") {
			t.Errorf("idempotent send: %d %s / %s", first.status, first.body, again.body)
		}
		if res := secCall(t, s, http.MethodPost, "/internal/matrix/send", svcSecret, "application/json",
			[]byte(`{"room_id":"`+roomID.String()+`","sender":"agent:sofia","body":"other"}`), key); res.status != 409 {
			t.Errorf("reused key: %d %s", res.status, res.body)
		}
		msg := first.str("event_id")
		for _, call := range []struct {
			path string
			body map[string]any
		}{
			{"/internal/matrix/send", map[string]any{"room_id": roomID, "sender": "agent:oleh", "body": "no key"}},
			{"/internal/matrix/send-reaction", map[string]any{"room_id": roomID, "event_id": msg, "reactor": "agent:oleh", "emoji": "🔐"}},
			{"/internal/matrix/invite", map[string]any{"room_id": roomID, "user_id": "agent:nova"}},
			{"/internal/matrix/redact", map[string]any{"room_id": roomID, "event_id": msg, "reason": "test"}},
		} {
			if res := secJSON(t, s, namedToken, http.MethodPost, call.path, call.body); res.status != 200 {
				t.Errorf("%s: %d %s", call.path, res.status, res.body)
			}
		}

		// Upload as an agent, history as the bot and as an agent.
		ct, body := secMultipart(t, "agent:sofia", `form-data; name="file"; filename="pixel.png"`, "text/plain", pixelPNG)
		upload := secCall(t, s, http.MethodPost, "/internal/matrix/upload", svcSecret, ct, body, nil)
		if upload.status != 200 {
			t.Fatalf("upload: %d %s", upload.status, upload.body)
		}
		for _, q := range []string{"?limit=5", "?as=agent:oleh&limit=2", "?from=bogus-token"} {
			secJSON(t, s, svcSecret, http.MethodGet, roomPath+"/messages"+q, nil)
		}

		// Registration: an agent (a password is accepted and unused) and a human
		// (shared secret, password, avatar set with the new user's token).
		agentPassword, humanPassword := rand.Text(), rand.Text()
		nova := secJSON(t, s, svcSecret, http.MethodPost, "/internal/matrix/register-user", map[string]any{
			"username": "agent_vega", "password": agentPassword, "display_name": "Vega"})
		bob := secJSON(t, s, svcSecret, http.MethodPost, "/internal/matrix/register-user", map[string]any{
			"username": "bob", "password": humanPassword, "display_name": "Bob", "avatar_url": upload.str("content_uri")})
		if nova.status != 200 || bob.status != 200 || nova.str("access_token") == "" || bob.str("access_token") == "" || bob.json["warnings"] != nil {
			t.Fatalf("register-user: %d %s / %d %s", nova.status, nova.body, bob.status, bob.body)
		}
		// Refused registrations: a taken name, a scope the named service lacks.
		secJSON(t, s, svcSecret, http.MethodPost, "/internal/matrix/register-user", map[string]any{"username": "bob", "password": humanPassword})
		if res := secJSON(t, s, namedToken, http.MethodPost, "/internal/matrix/register-user", map[string]any{"username": "carol", "password": humanPassword}); res.status != 403 {
			t.Errorf("human registration without admin: %d %s", res.status, res.body)
		}

		// Sync.
		head := secJSON(t, s, namedToken, http.MethodGet, "/internal/matrix/sync?timeout=0", nil).str("next_batch")
		if res := secJSON(t, s, namedToken, http.MethodGet, "/internal/matrix/sync?timeout=0&since=s0&filter="+url.QueryEscape(`{"limit":5}`), nil); res.status != 200 || head == "" {
			t.Errorf("sync: %d %s", res.status, res.body)
		}

		// Wrong tokens on the internal API: unknown, a near miss of the real
		// one (which shares its first 12 characters), and none.
		wrongInternal := rand.Text()
		nearMiss := svcSecret[:len(svcSecret)-1] + "0"
		for _, token := range []string{wrongInternal, nearMiss, ""} {
			if res := secJSON(t, s, token, http.MethodGet, "/internal/matrix/rooms", nil); res.status != 401 {
				t.Errorf("token %q: %d", token, res.status)
			}
		}

		// The appservice port: wrong tokens in the header and in the query, and
		// the legacy access_token query parameter (allowed here).
		wrongHS := rand.Text()
		txn := func(txnID, body string) []byte {
			evt := map[string]any{"event_id": "$" + txnID + ":" + serverName, "room_id": roomID, "sender": alice.UserID, "type": "m.room.message",
				"origin_server_ts": time.Now().UnixMilli(), "content": map[string]any{"msgtype": "m.text", "body": body}}
			data, _ := json.Marshal(map[string]any{"events": []any{evt}})
			return data
		}
		for _, tc := range []struct {
			method, path, bearer string
			body                 []byte
			want                 int
		}{
			{http.MethodPut, "/_matrix/app/v1/transactions/sec-wrong-1", wrongHS, txn("secwrong1", "never stored"), 403},
			{http.MethodPut, "/_matrix/app/v1/transactions/sec-wrong-2?access_token=" + wrongHS, "", txn("secwrong2", "never stored"), 403},
			{http.MethodPut, "/_matrix/app/v1/transactions/sec-none", "", txn("secnone", "never stored"), 401},
			{http.MethodGet, "/_matrix/app/v1/users/" + url.PathEscape("@agent_probe:"+serverName) + "?access_token=" + wrongHS, "", nil, 403},
			{http.MethodPost, "/_matrix/app/v1/ping?access_token=" + hsToken, "", []byte(`{"transaction_id":"sec-ping"}`), 200},
			{http.MethodPut, "/_matrix/app/v1/transactions/sec-query-token?access_token=" + hsToken, "", txn("secquery", "via the legacy query token"), 200},
			// The token is accepted: not 401/403, but 404, as the agents
			// are unknown (only agents the platform made exist).
			{http.MethodGet, "/_matrix/app/v1/users/" + url.PathEscape("@agent_probe:"+serverName) + "?access_token=" + hsToken, "", nil, 404},
			{http.MethodGet, "/users/" + url.PathEscape("@agent_legacy:"+serverName) + "?access_token=" + hsToken, "", nil, 404},
		} {
			if got := secAppservice(t, s, tc.method, tc.path, tc.bearer, tc.body); got != tc.want {
				t.Errorf("%s %s: %d, want %d", tc.method, strings.Split(tc.path, "?")[0], got, tc.want)
			}
		}

		// Deliveries: the good receiver gets the messages; the failing one, the
		// redirect and the refused one end as dead letters, and are redelivered.
		sendText(t, alice, roomID, "for the receivers")
		eventually(t, "deliveries to the good receiver", 30*time.Second, func() bool { return len(good.received()) >= 3 })
		for _, subID := range []string{failingID, redirectID, refusedID} {
			eventually(t, "dead letters of "+subID, 30*time.Second, func() bool {
				letters, _ := secJSON(t, s, svcSecret, http.MethodGet, "/internal/matrix/webhook/subscribe/"+subID+"/dead-letters", nil).json["dead_letters"].([]any)
				return len(letters) > 0
			})
			if res := secJSON(t, s, svcSecret, http.MethodPost, "/internal/matrix/webhook/subscribe/"+subID+"/redeliver", map[string]any{}); res.status != 200 {
				t.Errorf("redeliver %s: %d %s", subID, res.status, res.body)
			}
		}
		for _, path := range []string{"/internal/matrix/webhook/subscriptions", "/internal/matrix/webhook/subscribe/" + goodID} {
			if res := secJSON(t, s, namedToken, http.MethodGet, path, nil); res.status != 200 || strings.Contains(string(res.body), "whsec_") {
				t.Errorf("GET %s: %d %s (the secret is shown only at creation)", path, res.status, res.body)
			}
		}
		good.mu.Lock()
		if good.badSig != 0 {
			t.Errorf("%d deliveries had a bad signature", good.badSig)
		}
		good.mu.Unlock()

		// NATS goes away: the sink's errors (logged at every retry) name the
		// server without its credentials.
		natsSrv.Stop()
		sendText(t, alice, roomID, "while NATS is down")
		s.bridge.waitForLog("not connected to NATS", 30*time.Second)

		if code := s.bridge.terminate(30 * time.Second); code != 0 {
			t.Errorf("the bridge exited with %d", code)
		}
		logs := s.bridge.logs()
		for _, line := range []string{`"level":"debug"`, "Internal API request", "Webhook delivery failed", "dead-letter",
			"Registered a user", "Transaction committed", "Uploaded media", "Connected to NATS", "Consumer failed to handle events"} {
			if !strings.Contains(logs, line) {
				t.Errorf("the bridge's log lacks %q: the path was not exercised at debug level", line)
			}
		}
		secrets := map[string]string{
			"as_token":                        asToken,
			"hs_token":                        hsToken,
			"INTERNAL_SERVICE_SECRET":         svcSecret,
			"named service token":             namedToken,
			"registration_shared_secret":      homeserverSecret,
			"database password":               dbPassword,
			"NATS password":                   natsPassword,
			"agent's register-user password":  agentPassword,
			"human's register-user password":  humanPassword,
			"agent's access token":            nova.str("access_token"),
			"human's access token":            bob.str("access_token"),
			"wrong internal token":            wrongInternal,
			"near miss of the service secret": nearMiss,
			"wrong hs_token":                  wrongHS,
		}
		for name, secret := range webhookSecrets {
			secrets[name] = secret
		}
		secAssertNoSecrets(t, logs, secrets)
		if t.Failed() {
			t.Logf("bridge log tail:\n%s", tail(logs, 30))
		}
	})
}

// secEndpoint is one internal API operation in the scope table: the scopes
// its registration accepts (pkg/*/RegisterRoutes), and a request that the
// operation answers without a 401/403 once the scope is there.
type secEndpoint struct {
	scopes      []string
	path        string
	contentType string
	body        string
}

// Every operation in docs/openapi.yaml, against a token with exactly one
// scope: 403 M_FORBIDDEN where the operation needs another, anything but
// 401/403 (or an unrouted 404/405) where it has it. An operation in the
// document without a row here fails the test, as does a row the document
// lacks or an x-scope that disagrees with the row.
func TestSecurityScopes(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, r rig) {
		const roomNope = "/internal/matrix/rooms/%21nope%3Adaarion.test"
		const sub = "/internal/matrix/webhook/subscribe/sub_000000000000000000000000"
		j := "application/json"
		sc := func(s ...string) []string { return s }
		table := map[string]secEndpoint{
			"POST /internal/matrix/rooms/create":                       {sc("rooms"), "/internal/matrix/rooms/create", j, `{}`},
			"GET /internal/matrix/rooms/find-by-alias":                 {sc("rooms"), "/internal/matrix/rooms/find-by-alias?alias=%23city_nope%3Adaarion.test", "", ""},
			"GET /internal/matrix/rooms":                               {sc("rooms"), "/internal/matrix/rooms", "", ""},
			"POST /internal/matrix/create-room":                        {sc("rooms"), "/internal/matrix/create-room", j, `{"preset":"bogus"}`},
			"GET /internal/matrix/rooms/{roomId}":                      {sc("rooms"), roomNope, "", ""},
			"PUT /internal/matrix/rooms/{roomId}/name":                 {sc("rooms"), roomNope + "/name", j, `{}`},
			"PUT /internal/matrix/rooms/{roomId}/topic":                {sc("rooms"), roomNope + "/topic", j, `{}`},
			"PUT /internal/matrix/rooms/{roomId}/avatar":               {sc("rooms"), roomNope + "/avatar", j, `{}`},
			"POST /internal/matrix/rooms/{roomId}/archive":             {sc("rooms"), roomNope + "/archive", j, ``},
			"POST /internal/matrix/rooms/{roomId}/unarchive":           {sc("rooms"), roomNope + "/unarchive", j, ``},
			"GET /internal/matrix/rooms/{roomId}/confidential":         {sc("rooms"), roomNope + "/confidential", "", ""},
			"PUT /internal/matrix/rooms/{roomId}/confidential":         {sc("rooms"), roomNope + "/confidential", j, `{}`},
			"POST /internal/matrix/rooms/ensure":                       {sc("rooms"), "/internal/matrix/rooms/ensure", j, `{}`},
			"GET /internal/matrix/space":                               {sc("rooms"), "/internal/matrix/space", "", ""},
			"POST /internal/matrix/space/repair":                       {sc("rooms"), "/internal/matrix/space/repair", j, ``},
			"POST /internal/matrix/send":                               {sc("messaging"), "/internal/matrix/send", j, `{}`},
			"POST /internal/matrix/send-reaction":                      {sc("messaging"), "/internal/matrix/send-reaction", j, `{}`},
			"POST /internal/matrix/redact":                             {sc("messaging"), "/internal/matrix/redact", j, `{}`},
			"POST /internal/matrix/invite":                             {sc("messaging"), "/internal/matrix/invite", j, `{}`},
			"POST /internal/matrix/join":                               {sc("messaging"), "/internal/matrix/join", j, `{}`},
			"POST /internal/matrix/leave":                              {sc("messaging"), "/internal/matrix/leave", j, `{}`},
			"POST /internal/matrix/kick":                               {sc("messaging"), "/internal/matrix/kick", j, `{}`},
			"POST /internal/matrix/ban":                                {sc("messaging"), "/internal/matrix/ban", j, `{}`},
			"POST /internal/matrix/unban":                              {sc("messaging"), "/internal/matrix/unban", j, `{}`},
			"POST /internal/matrix/upload":                             {sc("messaging"), "/internal/matrix/upload", j, `{}`},
			"GET /internal/matrix/rooms/{roomId}/messages":             {sc("messaging"), roomNope + "/messages", "", ""},
			"POST /internal/matrix/webhook/subscribe":                  {sc("subscriptions"), "/internal/matrix/webhook/subscribe", j, `{}`},
			"GET /internal/matrix/webhook/subscriptions":               {sc("subscriptions"), "/internal/matrix/webhook/subscriptions", "", ""},
			"GET /internal/matrix/webhook/subscribe/{id}":              {sc("subscriptions"), sub, "", ""},
			"DELETE /internal/matrix/webhook/subscribe/{id}":           {sc("subscriptions"), sub, "", ""},
			"GET /internal/matrix/webhook/subscribe/{id}/dead-letters": {sc("subscriptions"), sub + "/dead-letters", "", ""},
			"POST /internal/matrix/webhook/subscribe/{id}/redeliver":   {sc("subscriptions"), sub + "/redeliver", j, `{}`},
			"POST /internal/matrix/webhook/subscribe/{id}/pause":       {sc("subscriptions"), sub + "/pause", j, ``},
			"POST /internal/matrix/webhook/subscribe/{id}/resume":      {sc("subscriptions"), sub + "/resume", j, ``},
			"GET /internal/matrix/sync":                                {sc("subscriptions"), "/internal/matrix/sync?timeout=0", "", ""},
			"PUT /internal/matrix/users/{userId}/display-name":         {sc("agents"), "/internal/matrix/users/agent:sectest/display-name", j, `{}`},
			"PUT /internal/matrix/users/{userId}/avatar":               {sc("agents"), "/internal/matrix/users/agent:sectest/avatar", j, `{}`},
			"POST /internal/matrix/register-user":                      {sc("agents", "admin"), "/internal/matrix/register-user", j, `{}`},
			"GET /internal/matrix/parked-events":                       {sc("admin"), "/internal/matrix/parked-events", "", ""},
			"POST /internal/matrix/parked-events/{consumer}/retry":     {sc("admin"), "/internal/matrix/parked-events/rooms/retry", j, ``},
		}

		// The table and docs/openapi.yaml list the same operations, with the same scopes.
		doc, err := openapi3.NewLoader().LoadFromFile("../docs/openapi.yaml")
		if err != nil {
			t.Fatal(err)
		}
		documented := map[string]bool{}
		for path, item := range doc.Paths.Map() {
			for method, op := range item.Operations() {
				key := method + " " + path
				if op.Security != nil && len(*op.Security) == 0 {
					if _, ok := table[key]; ok {
						t.Errorf("%s is public in docs/openapi.yaml but has a scope row", key)
					}
					continue // public (GET /healthz)
				}
				documented[key] = true
				row, ok := table[key]
				if !ok {
					t.Errorf("%s is in docs/openapi.yaml but not in the scope table: add a row", key)
					continue
				}
				var xScope string
				switch v := op.Extensions["x-scope"].(type) {
				case string:
					xScope = v
				case json.RawMessage:
					_ = json.Unmarshal(v, &xScope)
				}
				if got := strings.Split(xScope, " or "); !slices.Equal(got, row.scopes) {
					t.Errorf("%s: x-scope %q, but the route accepts %v", key, xScope, row.scopes)
				}
			}
		}
		for key := range table {
			if !documented[key] {
				t.Errorf("%s is in the scope table but not in docs/openapi.yaml", key)
			}
		}
		if t.Failed() {
			t.FailNow()
		}

		services := `    services:
`
		token := func(name string) string { return name + "-token-0123456789abcdef" }
		addService := func(name string, scopes ...string) {
			services += fmt.Sprintf("        - name: %s\n          token: %s\n          scopes: [%s]\n", name, token(name), strings.Join(scopes, ", "))
		}
		for _, scope := range config.Scopes {
			addService("only-"+scope, scope)
		}
		addService("messaging-agents", "messaging", "agents")
		addService("messaging-admin", "messaging", "admin")
		addService("subs-b", "subscriptions")
		addService("subs-admin", "subscriptions", "admin")
		s := newStackWith(t, r, stackOptions{
			homeserver:  "    registration_shared_secret: " + homeserverSecret,
			internalAPI: strings.TrimRight(services, "\n"),
		})
		s.bridge.waitForLog("Bridge bot registered", 30*time.Second)
		// The {roomId} operations get a room the bridge manages (one
		// created through the API), so that the scope is what they check:
		// an unmanaged room is out of reach (TestInternalAPIReachesOnlyManagedRooms).
		made := secJSON(t, s, serviceSecret, http.MethodPost, "/internal/matrix/create-room", map[string]any{"name": "Scopes"})
		if made.status != 200 {
			t.Fatalf("create-room: %d %s", made.status, made.body)
		}
		managedRoom := "/internal/matrix/rooms/" + url.PathEscape(made.str("room_id"))

		keys := make([]string, 0, len(table))
		for key := range table {
			keys = append(keys, key)
		}
		sort.Strings(keys)
		callers := append([]string{}, config.Scopes...)
		callers = append(callers, "every scope")
		for _, caller := range callers {
			tok, scopes := token("only-"+caller), []string{caller}
			if caller == "every scope" {
				tok, scopes = serviceSecret, config.Scopes
			}
			for _, key := range keys {
				row := table[key]
				method := strings.Fields(key)[0]
				res := secCall(t, s, method, strings.Replace(row.path, roomNope, managedRoom, 1), tok, row.contentType, []byte(row.body), nil)
				allowed := slices.ContainsFunc(row.scopes, func(sc string) bool { return slices.Contains(scopes, sc) })
				switch {
				case allowed && (res.status == 401 || res.status == 403):
					t.Errorf("%s with %s: %d %s, want the operation's own answer", key, caller, res.status, res.body)
				case allowed && res.str("error") == "M_UNRECOGNIZED":
					t.Errorf("%s with %s: %d %s: the route is not served", key, caller, res.status, res.body)
				case !allowed && (res.status != 403 || res.str("error") != "M_FORBIDDEN"):
					t.Errorf("%s with only %s: %d %s, want 403 M_FORBIDDEN", key, caller, res.status, res.body)
				}
			}
		}
		if res := secJSON(t, s, "", http.MethodGet, "/healthz", nil); res.status != 200 {
			t.Errorf("GET /healthz without a token: %d %s", res.status, res.body)
		}

		// The rules inside the operations.
		roomID, _ := createCity(t, s, "scopes", "Scopes", "")
		target := send(t, s, map[string]any{"room_id": roomID, "sender": "agent:sofia", "body": "a target"})
		msgBody := func(kv ...any) map[string]any {
			m := map[string]any{"room_id": roomID, "body": "hi"}
			for i := 0; i < len(kv); i += 2 {
				m[kv[i].(string)] = kv[i+1]
			}
			return m
		}
		t.Run("acting as an agent needs agents", func(t *testing.T) {
			for _, tc := range []struct {
				service, path string
				body          map[string]any
				want          int
			}{
				{"only-messaging", "/internal/matrix/send", msgBody("sender", "agent:sofia"), 403},
				{"messaging-admin", "/internal/matrix/send", msgBody("sender", "agent:sofia"), 403},
				{"messaging-agents", "/internal/matrix/send", msgBody("sender", "agent:sofia"), 200},
				{"only-messaging", "/internal/matrix/send-reaction", map[string]any{"room_id": roomID, "event_id": target, "reactor": "agent:sofia", "emoji": "👍"}, 403},
				{"only-messaging", "/internal/matrix/redact", map[string]any{"room_id": roomID, "event_id": target, "redactor": "agent:sofia"}, 403},
				{"only-messaging", "/internal/matrix/join", map[string]any{"room_id": roomID, "user_id": "agent:sofia"}, 403},
				{"only-messaging", "/internal/matrix/invite", map[string]any{"room_id": roomID, "user_id": "agent:oleh", "inviter": "agent:sofia"}, 403},
				{"messaging-agents", "/internal/matrix/join", map[string]any{"room_id": roomID, "user_id": "agent:oleh"}, 200},
			} {
				res := secJSON(t, s, token(tc.service), http.MethodPost, tc.path, tc.body)
				if res.status != tc.want || (tc.want == 403 && res.str("error") != "M_FORBIDDEN") {
					t.Errorf("%s %s %v: %d %s, want %d", tc.service, tc.path, tc.body, res.status, res.body, tc.want)
				}
			}
			ct, body := secMultipart(t, "agent:sofia", `form-data; name="file"; filename="p.png"`, "image/png", pixelPNG)
			if res := secCall(t, s, http.MethodPost, "/internal/matrix/upload", token("only-messaging"), ct, body, nil); res.status != 403 {
				t.Errorf("upload as an agent without agents: %d %s", res.status, res.body)
			}
			if res := secCall(t, s, http.MethodPost, "/internal/matrix/upload", token("messaging-agents"), ct, body, nil); res.status != 200 {
				t.Errorf("upload as an agent with agents: %d %s", res.status, res.body)
			}
			history := "/internal/matrix/rooms/" + url.PathEscape(roomID.String()) + "/messages?as=agent:sofia"
			if res := secJSON(t, s, token("only-messaging"), http.MethodGet, history, nil); res.status != 403 {
				t.Errorf("history as an agent without agents: %d %s", res.status, res.body)
			}
			if res := secJSON(t, s, token("messaging-agents"), http.MethodGet, history, nil); res.status != 200 {
				t.Errorf("history as an agent with agents: %d %s", res.status, res.body)
			}
		})
		t.Run("acting as the bot needs admin", func(t *testing.T) {
			for _, tc := range []struct {
				service, path string
				body          map[string]any
				want          int
			}{
				{"only-messaging", "/internal/matrix/send", msgBody("sender", "bridge:bot"), 403},
				{"messaging-agents", "/internal/matrix/send", msgBody("sender", "bridge:bot"), 403},
				{"messaging-agents", "/internal/matrix/send", msgBody("sender", s.cfg.BotUserID().String()), 403},
				{"messaging-admin", "/internal/matrix/send", msgBody("sender", "bridge:bot"), 200},
				{"only-messaging", "/internal/matrix/redact", map[string]any{"room_id": roomID, "event_id": target, "redactor": "bridge:bot"}, 403},
				{"only-messaging", "/internal/matrix/kick", map[string]any{"room_id": roomID, "user_id": "agent:sofia", "kicker": "bridge:bot"}, 403},
				// Documented exception (docs/security.md): with no actor named,
				// moderation acts as the bot with the messaging scope alone.
				{"only-messaging", "/internal/matrix/redact", map[string]any{"room_id": roomID, "event_id": target}, 200},
			} {
				res := secJSON(t, s, token(tc.service), http.MethodPost, tc.path, tc.body)
				if res.status != tc.want || (tc.want == 403 && res.str("error") != "M_FORBIDDEN") {
					t.Errorf("%s %s %v: %d %s, want %d", tc.service, tc.path, tc.body, res.status, res.body, tc.want)
				}
			}
		})
		t.Run("register-user needs agents for ghosts and admin for humans", func(t *testing.T) {
			for _, tc := range []struct {
				service string
				body    map[string]any
				want    int
			}{
				{"only-agents", map[string]any{"username": "carol", "password": "carol-password-1"}, 403},
				{"only-admin", map[string]any{"username": "agent_x1"}, 403},
				{"only-rooms", map[string]any{"username": "agent_x1"}, 403},
				{"only-agents", map[string]any{"username": "agent_x1", "admin": true}, 400},
				{"only-agents", map[string]any{"username": "agent_x1"}, 200},
				{"only-admin", map[string]any{"username": "carol", "password": "carol-password-1"}, 200},
			} {
				res := secJSON(t, s, token(tc.service), http.MethodPost, "/internal/matrix/register-user", tc.body)
				if res.status != tc.want || (tc.want == 403 && res.str("error") != "M_FORBIDDEN") {
					t.Errorf("%s %v: %d %s, want %d", tc.service, tc.body, res.status, res.body, tc.want)
				}
			}
		})
		t.Run("a service sees only its own subscriptions unless admin", func(t *testing.T) {
			owner, other, admin := token("only-subscriptions"), token("subs-b"), token("subs-admin")
			subID, _ := secSubscribe(t, s, owner, "http://127.0.0.1:9/hook", nil, map[string]any{"room_id": "*", "events": []string{"sectest.none"}})
			base := "/internal/matrix/webhook/subscribe/" + subID
			listed := func(tok string) bool {
				res := secJSON(t, s, tok, http.MethodGet, "/internal/matrix/webhook/subscriptions", nil)
				return res.status == 200 && strings.Contains(string(res.body), subID)
			}
			if !listed(owner) || listed(other) || !listed(admin) {
				t.Errorf("listed to owner %v, other %v, admin %v; want true, false, true", listed(owner), listed(other), listed(admin))
			}
			for _, call := range []struct{ method, path string }{
				{http.MethodGet, base}, {http.MethodGet, base + "/dead-letters"}, {http.MethodPost, base + "/redeliver"},
				{http.MethodPost, base + "/pause"}, {http.MethodPost, base + "/resume"}, {http.MethodDelete, base},
			} {
				if res := secJSON(t, s, other, call.method, call.path, nil); res.status != 404 {
					t.Errorf("another service: %s %s: %d %s, want 404", call.method, call.path, res.status, res.body)
				}
			}
			if res := secJSON(t, s, owner, http.MethodGet, base, nil); res.status != 200 || res.str("state") != "active" {
				t.Errorf("the owner after the other service's tries: %d %s", res.status, res.body)
			}
			for _, call := range []struct{ method, path string }{
				{http.MethodGet, base}, {http.MethodGet, base + "/dead-letters"}, {http.MethodPost, base + "/pause"},
				{http.MethodPost, base + "/resume"}, {http.MethodPost, base + "/redeliver"}, {http.MethodDelete, base},
			} {
				if res := secJSON(t, s, admin, call.method, call.path, nil); res.status != 200 {
					t.Errorf("admin: %s %s: %d %s, want 200", call.method, call.path, res.status, res.body)
				}
			}
			if res := secJSON(t, s, owner, http.MethodGet, base, nil); res.status != 404 {
				t.Errorf("the owner after the admin deleted it: %d %s", res.status, res.body)
			}
		})
	})
}

// Uploads: whatever name and type the client claims, the homeserver stores
// the sniffed type and the sanitised name, and no header of the bridge's
// answer repeats anything the client sent.
func TestSecurityUploadNameAndType(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, r rig) {
		ctx := context.Background()
		s := newStack(t, r)
		s.bridge.waitForLog("Bridge bot registered", 30*time.Second)
		viewer, err := s.hs.RegisterUser(ctx, "viewer", "viewer-password-1", false)
		if err != nil {
			t.Fatal(err)
		}
		html := []byte("<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>")
		// A quoted-string with the name's own bytes (strconv.Quote would turn
		// the format characters into \u escapes), and an RFC 2231 value, which
		// carries bytes a header cannot (CR, LF, NUL).
		disp := func(name string) string {
			return `form-data; name="file"; filename="` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(name) + `"`
		}
		enc := func(raw string) string {
			var b strings.Builder
			for i := 0; i < len(raw); i++ {
				if c := raw[i]; c < 0x80 && (c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.') {
					b.WriteByte(c)
				} else {
					fmt.Fprintf(&b, "%%%02X", c)
				}
			}
			return `form-data; name="file"; filename*=UTF-8''` + b.String()
		}
		for _, tc := range []struct {
			name, disposition, claimed string
			data                       []byte
			wantName                   string
			echo                       []string // client data no response header may hold
		}{
			{"path traversal", disp("../../etc/passwd"), "text/html", pixelPNG, "passwd", []string{"passwd", "etc/", "text/html"}},
			{"windows path", disp(`..\..\Windows\win.ini`), "text/html", pixelPNG, "win.ini", []string{"win.ini", "Windows"}},
			{"CRLF", enc("a\r\nX-Injected: yes.png"), "text/html", pixelPNG, "aX-Injected: yes.png", []string{"Injected", "text/html"}},
			{"control characters", enc("ctrl\x00\x01\x1b[31m\x07\x7f.png"), "text/html", pixelPNG, "ctrl[31m.png", []string{"ctrl", "[31m"}},
			{"bidi override", disp("invoice\u202Egnp.exe"), "image/png", html, "invoicegnp.exe", []string{"invoice", "gnp", "image/png"}},
			{"zero width and BOM", disp("\uFEFFre\u200Bport\u2066.pdf"), "application/pdf", html, "report.pdf", []string{"report", "pdf"}},
			{"HTML claimed as PNG", disp("cat.png"), "image/png", html, "cat.png", []string{"cat.png", "image/png"}},
			{"PNG claimed as HTML", disp("page.html"), "text/html; charset=utf-8", pixelPNG, "page.html", []string{"page.html", "text/html"}},
			{"quotes and semicolons", disp(`q";filename="evil.html`), "text/html", pixelPNG, `q";filename="evil.html`, []string{"evil", "text/html"}},
			{"only dots", disp(".."), "application/x-evil", pixelPNG, "", []string{"x-evil"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				ct, body := secMultipart(t, "", tc.disposition, tc.claimed, tc.data)
				badID := "<script>" + tc.name + "</script>"
				res := secCall(t, s, http.MethodPost, "/internal/matrix/upload", serviceSecret, ct, body, http.Header{"X-Request-Id": {badID}})
				want := http.DetectContentType(tc.data)
				if want == tc.claimed {
					t.Fatalf("the case claims the sniffed type %s", want)
				}
				if res.status != 200 || res.str("content_type") != want {
					t.Fatalf("upload: %d %s, want 200 with %s", res.status, res.body, want)
				}
				// The bridge's headers.
				if got := res.header.Get("Content-Type"); !strings.HasPrefix(got, "application/json") {
					t.Errorf("Content-Type of the answer: %q", got)
				}
				if got := res.header.Get("X-Request-Id"); got == badID || !regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`).MatchString(got) {
					t.Errorf("X-Request-Id %q: an invalid id must be replaced", got)
				}
				for key, values := range res.header {
					if strings.EqualFold(key, "Content-Disposition") {
						t.Errorf("the answer has a Content-Disposition header: %q", values)
					}
					if key == "X-Request-Id" {
						continue // checked above: a fresh random id
					}
					for _, v := range values {
						for _, frag := range append(tc.echo, "<script>", tc.claimed) {
							if strings.Contains(v, frag) {
								t.Errorf("response header %s: %q repeats client data %q", key, v, frag)
							}
						}
					}
				}
				// What the homeserver stored, as a user downloads it.
				mxc := id.ContentURIString(res.str("content_uri")).ParseOrIgnore()
				req, _ := http.NewRequest(http.MethodGet, viewer.HomeserverURL.String()+"/_matrix/client/v1/media/download/"+mxc.Homeserver+"/"+mxc.FileID, nil)
				req.Header.Set("Authorization", "Bearer "+viewer.AccessToken)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				data, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || !bytes.Equal(data, tc.data) {
					t.Fatalf("download: %d, %d bytes", resp.StatusCode, len(data))
				}
				if got := resp.Header.Get("Content-Type"); got != want {
					t.Errorf("stored content type %q, want the sniffed %q (the client claimed %q)", got, want, tc.claimed)
				}
				cd := resp.Header.Get("Content-Disposition")
				if got := dispositionFileName(cd); got != tc.wantName {
					t.Errorf("stored file name %q (Content-Disposition %q), want %q", got, cd, tc.wantName)
				}
				if tc.name == "HTML claimed as PNG" {
					t.Logf("the homeserver serves sniffed HTML with Content-Type %q, Content-Disposition %q, Content-Security-Policy %q",
						resp.Header.Get("Content-Type"), cd, resp.Header.Get("Content-Security-Policy"))
				}
			})
		}
		// A valid X-Request-Id is echoed by design: 1-128 of [A-Za-z0-9._-], no
		// room for markup or header injection.
		res := secCall(t, s, http.MethodGet, "/internal/matrix/rooms", serviceSecret, "", nil, http.Header{"X-Request-Id": {"trace-ok_1.2"}})
		if res.header.Get("X-Request-Id") != "trace-ok_1.2" {
			t.Errorf("a valid X-Request-Id was not echoed: %q", res.header.Get("X-Request-Id"))
		}
	})
}

// dispositionFileName reads the file name of a Content-Disposition. Dendrite
// writes names without quotes (filename=a[1].png), which mime refuses for
// the tspecials in them: then the raw value up to the end is the name.
func dispositionFileName(cd string) string {
	if _, params, err := mime.ParseMediaType(cd); err == nil {
		return params["filename"]
	}
	_, raw, ok := strings.Cut(cd, "filename=")
	if !ok {
		return ""
	}
	if unquoted, err := strconv.Unquote(raw); err == nil {
		return unquoted
	}
	return raw
}

// A receiver that answers a redirect gets a failed delivery, never a
// followed one: the redirect target (the metadata address, or a second
// loopback server) gets no request, and the event ends as a dead letter
// whose error is the 3xx. The subscription API refuses the forbidden
// address forms, zoned link-local included.
func TestSecurityWebhookRedirectsAreFailures(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, r rig) {
		s := newStackWith(t, r, stackOptions{extra: fastRetries})
		s.bridge.waitForLog("Bridge bot registered", 30*time.Second)
		roomID, alias := createCity(t, s, "detour", "Detour", "")

		var targetHits atomic.Int64
		target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			targetHits.Add(1)
			w.WriteHeader(http.StatusNoContent)
		}))
		t.Cleanup(target.Close)
		type redirector struct {
			status   int
			location string
			hits     atomic.Int64
			subID    string
		}
		redirectors := []*redirector{
			{status: http.StatusFound, location: "http://169.254.169.254/latest/meta-data/iam/security-credentials/"},
			{status: http.StatusTemporaryRedirect, location: target.URL + "/stolen"},
			{status: http.StatusMovedPermanently, location: target.URL + "/moved"},
		}
		for _, rd := range redirectors {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				rd.hits.Add(1)
				http.Redirect(w, r, rd.location, rd.status)
			}))
			t.Cleanup(srv.Close)
			rd.subID, _ = secSubscribe(t, s, serviceSecret, srv.URL+"/hook", nil, map[string]any{"room_id": roomID.String(), "events": []string{"m.room.message"}})
		}
		alice, _ := s.humanJoins("alice", alias)
		msg := sendText(t, alice, roomID, "follow me").String()
		for _, rd := range redirectors {
			path := "/internal/matrix/webhook/subscribe/" + rd.subID + "/dead-letters"
			var letter map[string]any
			eventually(t, fmt.Sprintf("the %d to %s as a dead letter", rd.status, rd.location), 30*time.Second, func() bool {
				letters, _ := s.api(t, http.MethodGet, path, nil).json["dead_letters"].([]any)
				if len(letters) == 1 {
					letter, _ = letters[0].(map[string]any)
				}
				return letter != nil
			})
			if letter["event_id"] != msg || !strings.Contains(fmt.Sprint(letter["last_error"]), strconv.Itoa(rd.status)) {
				t.Errorf("dead letter for the %d: %v", rd.status, letter)
			}
			if n := rd.hits.Load(); n < 2 {
				t.Errorf("the %d receiver got %d requests: the failure was not retried", rd.status, n)
			}
		}
		if n := targetHits.Load(); n != 0 {
			t.Errorf("the redirect target got %d requests", n)
		}
		for _, u := range []string{
			"http://169.254.169.254/latest/meta-data/",
			"http://[fe80::1%25eth0]/hook",
			"http://[::ffff:169.254.169.254]/hook",
			"http://[::ffff:a9fe:a9fe]/hook",
			"http://[fd00:ec2::254]/hook",
			"http://[::]/hook",
			"http://0.0.0.0:8080/hook",
		} {
			res := s.api(t, http.MethodPost, "/internal/matrix/webhook/subscribe", map[string]any{"room_id": "*", "webhook_url": u})
			if res.status != 400 || res.str("field") != "webhook_url" {
				t.Errorf("subscribe to %s: %d %s, want 400 naming webhook_url", u, res.status, res.body)
			}
		}
	})
}
