package e2e_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// A 1x1 PNG.
var pixelPNG = []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89" +
	"\x00\x00\x00\rIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7\x35\x81\x84\x00\x00\x00\x00IEND\xaeB`\x82")

// uploadFile posts a multipart upload: a file part (with the name and
// content type the client claims) and, unless agent is "", an agent field.
func uploadFile(t *testing.T, s *stack, agent, fileName, claimedType string, data []byte) apiResult {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	if agent != "" {
		if err := mw.WriteField("agent", agent); err != nil {
			t.Fatal(err)
		}
	}
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", fmt.Sprintf(`form-data; name="file"; filename=%q`, fileName))
	h.Set("Content-Type", claimedType)
	w, err := mw.CreatePart(h)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write(data)
	if err = mw.Close(); err != nil {
		t.Fatal(err)
	}
	return s.apiRaw(t, http.MethodPost, "/internal/matrix/upload", serviceSecret, mw.FormDataContentType(), buf.Bytes())
}

// download fetches media as a Matrix user, with the authenticated media API.
func download(t *testing.T, cli *mautrix.Client, uri id.ContentURIString) (string, []byte) {
	t.Helper()
	mxc := uri.ParseOrIgnore()
	if mxc.IsEmpty() {
		t.Fatalf("not an mxc URI: %q", uri)
	}
	req, _ := http.NewRequest(http.MethodGet, cli.HomeserverURL.String()+"/_matrix/client/v1/media/download/"+mxc.Homeserver+"/"+mxc.FileID, nil)
	req.Header.Set("Authorization", "Bearer "+cli.AccessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("%s downloading %s: %d %s", cli.UserID, uri, resp.StatusCode, data)
	}
	return resp.Header.Get("Content-Type"), data
}

func history(t *testing.T, s *stack, roomID id.RoomID, query string) apiResult {
	t.Helper()
	return s.api(t, http.MethodGet, "/internal/matrix/rooms/"+url.PathEscape(roomID.String())+"/messages"+query, nil)
}

// chunkBodies returns the bodies of the m.room.message events in a page.
func chunkBodies(res apiResult) (bodies []string, events int) {
	chunk, _ := res.json["chunk"].([]any)
	for _, raw := range chunk {
		evt, _ := raw.(map[string]any)
		if evt["type"] == "m.room.message" {
			content, _ := evt["content"].(map[string]any)
			body, _ := content["body"].(string)
			bodies = append(bodies, body)
		}
	}
	return bodies, len(chunk)
}

func whoami(t *testing.T, s *stack, token string) id.UserID {
	t.Helper()
	cli, err := s.hs.Client("", token)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Whoami(context.Background())
	if err != nil {
		t.Fatalf("whoami with the returned token: %v", err)
	}
	return resp.UserID
}

// Uploads as an agent and as the bot, downloaded by a human; history of a
// city room; agent profiles seen by the human; registration of an agent and
// of a human, whose credentials work and never reach the bridge's log.
func TestAgentsMediaHistoryAndRegistration(t *testing.T) {
	const limit = 4096
	forEachRig(t, func(t *testing.T, tdb rig) {
		ctx := context.Background()
		s := newStackWith(t, tdb, stackOptions{
			homeserver:           "    registration_shared_secret: " + homeserverSecret,
			extra:                fmt.Sprintf("media:\n    max_upload_bytes: %d\n", limit),
			homeserverRateLimits: busyHumans,
		})
		s.bridge.waitForLog("Bridge bot registered", 30*time.Second)
		roomID, alias := createCity(t, s, "media", "Media", "")
		alice, _ := s.humanJoins("alice", alias)

		// Uploads: the type comes from the bytes, not from the client.
		asAgent := uploadFile(t, s, "agent:sofia", "../../etc/avatar.txt", "text/plain", pixelPNG)
		asBot := uploadFile(t, s, "", "pixel.png", "application/x-evil", pixelPNG)
		for name, res := range map[string]apiResult{"agent": asAgent, "bot": asBot} {
			if res.status != 200 || res.str("content_type") != "image/png" || res.json["size"] != float64(len(pixelPNG)) ||
				!strings.HasPrefix(res.str("content_uri"), "mxc://"+serverName+"/") {
				t.Fatalf("upload as %s: %d %s", name, res.status, res.body)
			}
			contentType, data := download(t, alice, id.ContentURIString(res.str("content_uri")))
			if !bytes.Equal(data, pixelPNG) || contentType != "image/png" {
				t.Errorf("the human downloaded %d bytes of %s (upload as %s)", len(data), contentType, name)
			}
		}
		text := uploadFile(t, s, "", "notes.png", "image/png", []byte("plain words, whatever the name says\n"))
		if text.status != 200 || text.str("content_type") != "text/plain; charset=utf-8" {
			t.Errorf("text upload: %d %s", text.status, text.body)
		}
		if res := uploadFile(t, s, "", "full.bin", "application/octet-stream", bytes.Repeat([]byte{1}, limit)); res.status != 200 ||
			res.json["size"] != float64(limit) || res.str("content_type") != "application/octet-stream" {
			t.Errorf("upload of exactly the limit: %d %s", res.status, res.body)
		}
		if res := uploadFile(t, s, "agent:sofia", "big.bin", "application/octet-stream", bytes.Repeat([]byte{1}, limit+1)); res.status != 413 || res.str("error") != "M_TOO_LARGE" {
			t.Errorf("upload over the limit: %d %s", res.status, res.body)
		}
		if res := s.apiRaw(t, http.MethodPost, "/internal/matrix/upload", serviceSecret, "application/json", []byte(`{"file":"x"}`)); res.status != 415 {
			t.Errorf("JSON upload: %d %s", res.status, res.body)
		}

		// History: the human's messages, newest first, clamped to 100 a page.
		const sent = 105
		for i := 1; i <= sent; i++ {
			sendText(t, alice, roomID, fmt.Sprintf("message %d", i))
		}
		page := history(t, s, roomID, "?limit=1000")
		bodies, events := chunkBodies(page)
		if page.status != 200 || events != 100 || len(bodies) != 100 || bodies[0] != fmt.Sprintf("message %d", sent) || page.str("end") == "" {
			t.Fatalf("limit=1000: %d, %d events, first %v", page.status, events, bodies[:min(len(bodies), 1)])
		}
		page = history(t, s, roomID, "")
		if bodies, events = chunkBodies(page); events != 10 || bodies[9] != fmt.Sprintf("message %d", sent-9) {
			t.Errorf("default page: %d events %v", events, bodies)
		}
		next := history(t, s, roomID, "?limit=2&from="+url.QueryEscape(page.str("end")))
		if bodies, _ = chunkBodies(next); len(bodies) != 2 || bodies[0] != fmt.Sprintf("message %d", sent-10) {
			t.Errorf("next page: %v", bodies)
		}
		forward := history(t, s, roomID, "?dir=f&limit=1&from="+url.QueryEscape(next.str("start")))
		if bodies, _ = chunkBodies(forward); forward.status != 200 || len(bodies) != 1 {
			t.Errorf("forward page: %d %v", forward.status, forward.body)
		}
		if res := history(t, s, roomID, "?dir=sideways"); res.status != 400 || res.str("field") != "dir" {
			t.Errorf("bad dir: %d %s", res.status, res.body)
		}
		if res := history(t, s, roomID, "?from=not-a-token"); res.status != 400 || res.str("field") != "from" {
			t.Errorf("bad token: %d %s", res.status, res.body)
		}
		if res := history(t, s, roomID, "?limit=many"); res.status != 400 || res.str("field") != "limit" {
			t.Errorf("bad limit: %d %s", res.status, res.body)
		}
		private, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		// A room the bridge does not manage is out of reach before the bot's
		// membership is even asked (TestInternalAPIReachesOnlyManagedRooms).
		if res := history(t, s, private.RoomID, ""); res.status != 403 || res.str("error") != "M_FORBIDDEN" || res.str("field") != "roomId" {
			t.Errorf("a room the bridge does not manage: %d %s", res.status, res.body)
		}
		if res := history(t, s, roomID, "?as=agent:sofia"); res.status != 404 {
			t.Errorf("as an agent not in the room: %d %s", res.status, res.body)
		}

		// Agent profiles, as a human sees them.
		sofia := id.NewUserID("agent_sofia", serverName)
		if res := s.api(t, http.MethodPut, "/internal/matrix/users/agent:sofia/display-name", map[string]string{"display_name": "Sofia (DAARION)"}); res.status != 200 || res.str("status") != "updated" {
			t.Fatalf("display name: %d %s", res.status, res.body)
		}
		if res := s.api(t, http.MethodPut, "/internal/matrix/users/"+url.PathEscape(sofia.String())+"/avatar", map[string]string{"avatar_url": asAgent.str("content_uri")}); res.status != 200 {
			t.Fatalf("avatar: %d %s", res.status, res.body)
		}
		profile, err := alice.GetProfile(ctx, sofia)
		if err != nil || profile.DisplayName != "Sofia (DAARION)" || profile.AvatarURL.CUString() != id.ContentURIString(asAgent.str("content_uri")) {
			t.Errorf("the human sees %+v (%v)", profile, err)
		}
		if res := s.api(t, http.MethodPut, "/internal/matrix/users/"+url.PathEscape(alice.UserID.String())+"/display-name", map[string]string{"display_name": "Not Alice"}); res.status != 403 || res.str("error") != "M_FORBIDDEN" {
			t.Errorf("changing a human's name: %d %s", res.status, res.body)
		}
		if res := s.api(t, http.MethodPut, "/internal/matrix/users/agent:Sofia/avatar", map[string]string{"avatar_url": asAgent.str("content_uri")}); res.status != 400 || res.str("field") != "userId" {
			t.Errorf("invalid agent id: %d %s", res.status, res.body)
		}
		if res := s.api(t, http.MethodPut, "/internal/matrix/users/agent:sofia/avatar", map[string]string{"avatar_url": "https://example.org/a.png"}); res.status != 400 || res.str("field") != "avatar_url" {
			t.Errorf("http avatar: %d %s", res.status, res.body)
		}

		// Registration: an agent through the appservice, with a login.
		const agentPassword, humanPassword = "agent-pass-7f1c2e9a", "human-pass-3b8d4a61"
		nova := s.api(t, http.MethodPost, "/internal/matrix/register-user", map[string]any{
			"username": "agent_nova", "password": agentPassword, "display_name": "Nova",
		})
		novaID := id.NewUserID("agent_nova", serverName)
		if nova.status != 200 || nova.str("user_id") != novaID.String() || nova.str("access_token") == "" || nova.str("device_id") == "" {
			t.Fatalf("register agent: %d %s", nova.status, nova.body)
		}
		if got := whoami(t, s, nova.str("access_token")); got != novaID {
			t.Errorf("the agent's token is %s's", got)
		}
		if p, err := alice.GetProfile(ctx, novaID); err != nil || p.DisplayName != "Nova" {
			t.Errorf("the human sees the new agent as %+v (%v)", p, err)
		}
		if res := s.api(t, http.MethodPost, "/internal/matrix/register-user", map[string]any{"username": "agent_nova"}); res.status != 409 || res.str("error") != "M_USER_IN_USE" {
			t.Errorf("agent again: %d %s", res.status, res.body)
		}
		// ... and a human through the homeserver's shared secret.
		bob := s.api(t, http.MethodPost, "/internal/matrix/register-user", map[string]any{
			"username": "bob", "password": humanPassword, "display_name": "Bob", "avatar_url": asBot.str("content_uri"),
		})
		bobID := id.NewUserID("bob", serverName)
		if bob.status != 200 || bob.str("user_id") != bobID.String() || bob.str("access_token") == "" || bob.json["warnings"] != nil {
			t.Fatalf("register human: %d %s", bob.status, bob.body)
		}
		if got := whoami(t, s, bob.str("access_token")); got != bobID {
			t.Errorf("the human's token is %s's", got)
		}
		if _, err = s.hs.Login(ctx, "bob", humanPassword); err != nil {
			t.Errorf("bob cannot log in with his password: %v", err)
		}
		if p, err := alice.GetProfile(ctx, bobID); err != nil || p.DisplayName != "Bob" || p.AvatarURL.CUString() != id.ContentURIString(asBot.str("content_uri")) {
			t.Errorf("the human sees bob as %+v (%v)", p, err)
		}
		if res := s.api(t, http.MethodPost, "/internal/matrix/register-user", map[string]any{"username": "bob", "password": humanPassword}); res.status != 409 || res.str("error") != "M_USER_IN_USE" {
			t.Errorf("human again: %d %s", res.status, res.body)
		}
		if res := s.api(t, http.MethodPost, "/internal/matrix/register-user", map[string]any{"username": "carol", "password": "short"}); res.status != 400 || res.str("field") != "password" {
			t.Errorf("short password: %d %s", res.status, res.body)
		}

		logs := s.bridge.logs()
		if !strings.Contains(logs, "Registered a user") {
			t.Fatalf("the bridge did not log the registrations:\n%s", tail(logs, 20))
		}
		for what, secret := range map[string]string{
			"agent password": agentPassword, "human password": humanPassword,
			"agent token": nova.str("access_token"), "human token": bob.str("access_token"), "shared secret": homeserverSecret,
		} {
			if strings.Contains(logs, secret) {
				t.Errorf("the bridge's log contains the %s", what)
			}
		}
	})
}

// Without homeserver.registration_shared_secret humans cannot be
// registered; agents still can.
func TestRegisterUserWithoutSharedSecret(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, r rig) {
		s := newStack(t, r)
		s.bridge.waitForLog("Bridge bot registered", 30*time.Second)
		res := s.api(t, http.MethodPost, "/internal/matrix/register-user", map[string]any{"username": "dave", "password": "dave-password-1"})
		if res.status != 501 || res.str("error") != "M_UNRECOGNIZED" || !strings.Contains(res.str("message"), "registration_shared_secret is not configured") {
			t.Errorf("human: %d %s", res.status, res.body)
		}
		if res = s.api(t, http.MethodPost, "/internal/matrix/register-user", map[string]any{"username": "agent_echo"}); res.status != 200 {
			t.Errorf("agent: %d %s", res.status, res.body)
		}
	})
}
