package messaging

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"

	"github.com/daarion/matrix-bridge/pkg/agents"
	"github.com/daarion/matrix-bridge/pkg/config"
	"github.com/daarion/matrix-bridge/pkg/identity"
	"github.com/daarion/matrix-bridge/pkg/internalapi"
	"github.com/daarion/matrix-bridge/pkg/registration"
	"github.com/daarion/matrix-bridge/pkg/rooms"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

const (
	testSecret         = "media-test-secret-0123456789"
	testMessagingToken = "media-test-messaging-only-01"
	testServer         = "daarion.test"
)

// A 1x1 PNG.
var tinyPNG = []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89" +
	"\x00\x00\x00\rIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7\x35\x81\x84\x00\x00\x00\x00IEND\xaeB`\x82")

// recordedUpload is what the fake homeserver got for one upload.
type recordedUpload struct {
	contentLength int64
	contentType   string
	fileName      string
	userID        string
	size          int64
	sum           [sha256.Size]byte
}

// fakeHomeserver answers the few client-server calls media and history
// make; any other call fails the test.
type fakeHomeserver struct {
	*testrig.FakeHomeserver
	mu       sync.Mutex
	uploads  []recordedUpload
	queries  []url.Values
	messages func(w http.ResponseWriter, r *http.Request)
	member   func(w http.ResponseWriter, r *http.Request)      // the reader's m.room.member; nil: joined
	upload   func(w http.ResponseWriter, r *http.Request) bool // true: answered
}

func newFakeHomeserver(t *testing.T) *fakeHomeserver {
	fh := &fakeHomeserver{FakeHomeserver: testrig.NewFakeHomeserver(t)}
	fh.Handle("/_matrix/client/v3/register", func(w http.ResponseWriter, r *http.Request) {
		testrig.WriteMatrixError(w, 400, "M_USER_IN_USE", "taken")
	})
	fh.Handle("POST /_matrix/media/v3/upload", fh.serveUpload)
	fh.Handle("/_matrix/client/v3/rooms/{room}/state/m.room.member/{user}", func(w http.ResponseWriter, r *http.Request) {
		if fh.member != nil {
			fh.member(w, r)
			return
		}
		testrig.WriteJSON(w, 200, map[string]string{"membership": "join"})
	})
	fh.Handle("/_matrix/client/v3/rooms/{room}/messages", func(w http.ResponseWriter, r *http.Request) {
		fh.mu.Lock()
		fh.queries = append(fh.queries, r.URL.Query())
		fh.mu.Unlock()
		if fh.messages != nil {
			fh.messages(w, r)
			return
		}
		testrig.WriteJSON(w, 200, map[string]any{"start": "s1", "end": "s2", "chunk": []any{}})
	})
	fh.Handle("/_matrix/client/v3/user/{user}/account_data/m.direct", func(w http.ResponseWriter, r *http.Request) {
		// The bot has no direct chats.
		testrig.WriteMatrixError(w, 404, "M_NOT_FOUND", "no m.direct")
	})
	return fh
}

func (fh *fakeHomeserver) serveUpload(w http.ResponseWriter, r *http.Request) {
	if fh.upload != nil && fh.upload(w, r) {
		return
	}
	// Streamed into a hash: the fake holds no more than the bridge does.
	h := sha256.New()
	n, err := io.Copy(h, r.Body)
	if err != nil {
		testrig.WriteMatrixError(w, 400, "M_UNKNOWN", err.Error())
		return
	}
	rec := recordedUpload{contentLength: r.ContentLength, contentType: r.Header.Get("Content-Type"),
		fileName: r.URL.Query().Get("filename"), userID: r.URL.Query().Get("user_id"), size: n}
	copy(rec.sum[:], h.Sum(nil))
	fh.mu.Lock()
	fh.uploads = append(fh.uploads, rec)
	count := len(fh.uploads)
	fh.mu.Unlock()
	testrig.WriteJSON(w, 200, map[string]string{"content_uri": "mxc://" + testServer + "/media" + strconv.Itoa(count)})
}

func (fh *fakeHomeserver) lastUpload(t *testing.T) recordedUpload {
	t.Helper()
	fh.mu.Lock()
	defer fh.mu.Unlock()
	if len(fh.uploads) == 0 {
		t.Fatal("the homeserver got no upload")
	}
	return fh.uploads[len(fh.uploads)-1]
}

func (fh *fakeHomeserver) uploadCount() int {
	fh.mu.Lock()
	defer fh.mu.Unlock()
	return len(fh.uploads)
}

func (fh *fakeHomeserver) lastQuery(t *testing.T) url.Values {
	t.Helper()
	fh.mu.Lock()
	defer fh.mu.Unlock()
	if len(fh.queries) == 0 {
		t.Fatal("the homeserver got no /messages request")
	}
	return fh.queries[len(fh.queries)-1]
}

type mediaFixture struct {
	api *internalapi.API
	hs  *fakeHomeserver
	svc *Service
}

// newMediaFixture is the messaging service against a fake homeserver, with
// an upload limit of maxUpload bytes, and agents in an SQLite database.
func newMediaFixture(t *testing.T, maxUpload int64) *mediaFixture {
	t.Helper()
	fh := newFakeHomeserver(t)
	cfg := config.Default()
	cfg.Homeserver.URL = fh.URL
	cfg.Homeserver.ServerName = testServer
	cfg.AppService.ASToken, cfg.AppService.HSToken = "as-token", "hs-token"
	cfg.Media.MaxUploadBytes = maxUpload
	as, err := appservice.CreateFull(appservice.CreateOpts{
		Registration: registration.FromConfig(cfg), HomeserverDomain: testServer, HomeserverURL: fh.URL,
	})
	if err != nil {
		t.Fatal(err)
	}
	as.DefaultHTTPRetries = 0
	tdb := testrig.NewTestDatabase(t, testrig.SQLite)
	db := testrig.OpenDatabase(t, tdb)
	mapper := identity.NewMapper(cfg)
	roomStore := rooms.NewStore(db)
	roomSvc, err := rooms.NewService(roomStore, as.BotIntent(), testServer, cfg.Rooms)
	if err != nil {
		t.Fatal(err)
	}
	// The room the tests read is one the bridge manages.
	if err := roomStore.MarkManaged(context.Background(), "!room:"+testServer, rooms.OriginCreated, ""); err != nil {
		t.Fatal(err)
	}
	svc := NewService(Options{AppService: as, Agents: agents.NewService(agents.NewStore(db), roomStore, as, mapper, cfg.Agents), Rooms: roomSvc, Mapper: mapper, Config: cfg,
		Idempotency: NewIdempotencyStore(db)})
	api, err := internalapi.New(internalapi.Options{
		Services:  []config.ServiceToken{{Name: "messenger", Token: testMessagingToken, Scopes: []string{"messaging"}}},
		Secret:    testSecret,
		RateLimit: config.RateLimit{RequestsPerSecond: 0},
	})
	if err != nil {
		t.Fatal(err)
	}
	svc.RegisterMediaRoutes(api)
	svc.RegisterRoutes(api)
	return &mediaFixture{api: api, hs: fh, svc: svc}
}

type formPart struct {
	name, fileName, contentType string
	disposition                 string // overrides the Content-Disposition built from name and fileName
	body                        []byte
}

// multipartBody builds a multipart/form-data body.
func multipartBody(t *testing.T, parts ...formPart) (string, []byte) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		h := textproto.MIMEHeader{}
		switch {
		case p.disposition != "":
			h.Set("Content-Disposition", p.disposition)
		case p.fileName != "":
			h.Set("Content-Disposition", fmt.Sprintf(`form-data; name=%q; filename=%q`, p.name, p.fileName))
		default:
			h.Set("Content-Disposition", fmt.Sprintf(`form-data; name=%q`, p.name))
		}
		if p.contentType != "" {
			h.Set("Content-Type", p.contentType)
		}
		w, err := mw.CreatePart(h)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.Write(p.body)
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return mw.FormDataContentType(), buf.Bytes()
}

type result struct {
	status int
	body   map[string]any
	raw    string
}

func (f *mediaFixture) do(t *testing.T, token, method, target, contentType string, body io.Reader, length int64) result {
	t.Helper()
	req := httptest.NewRequest(method, target, body)
	req.ContentLength = length
	if length < 0 {
		req.Header.Del("Content-Length")
	}
	req.Header.Set(internalapi.HeaderToken, token)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	rec := httptest.NewRecorder()
	f.api.ServeHTTP(rec, req)
	res := result{status: rec.Code, raw: rec.Body.String()}
	if err := json.Unmarshal(rec.Body.Bytes(), &res.body); err != nil {
		t.Fatalf("%s %s: answer is not a JSON object: %q", method, target, rec.Body)
	}
	return res
}

func (f *mediaFixture) upload(t *testing.T, token string, parts ...formPart) result {
	t.Helper()
	ct, body := multipartBody(t, parts...)
	return f.do(t, token, http.MethodPost, "/internal/matrix/upload", ct, bytes.NewReader(body), int64(len(body)))
}

func (r result) str(key string) string { s, _ := r.body[key].(string); return s }

func TestSanitizeFileName(t *testing.T) {
	long := strings.Repeat("ж", 200) // 400 bytes
	for _, tc := range []struct{ in, want string }{
		{"cat.png", "cat.png"},
		{"../../etc/passwd", "passwd"},
		{`C:\Users\me\cat.png`, "cat.png"},
		{"..", ""},
		{".", ""},
		{"", ""},
		{".htaccess", "htaccess"},
		{"~root.png", "root.png"},
		{"  cat .png. ", "cat .png"},
		{"a\x00b\x1fc\x7f.png", "abc.png"},
		{"line\nbreak\r.txt", "linebreak.txt"},
		{"tab\there.txt", "tabhere.txt"},
		{"evil\u202Egnp.exe", "evilgnp.exe"},           // right-to-left override
		{"zero\u200Bwidth\uFEFF.txt", "zerowidth.txt"}, // zero-width space, BOM
		{"sep\u2028arator.txt", "separator.txt"},
		{"bad\xff\xfeutf8.txt", "badutf8.txt"},
		{"replacement\uFFFD.txt", "replacement\uFFFD.txt"}, // a real U+FFFD is a character
		{"nbsp\u00A0name.txt", "nbsp name.txt"},
		{"котик 🐱.png", "котик 🐱.png"},
		{long + ".png", strings.Repeat("ж", 125) + ".png"},
		{long, strings.Repeat("ж", 127)}, // 254 bytes: a character is not split
		{strings.Repeat("a", 300) + "." + strings.Repeat("b", 20), strings.Repeat("a", 255)},
	} {
		got := sanitizeFileName(tc.in)
		if got != tc.want {
			t.Errorf("sanitizeFileName(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if len(got) > maxFileNameBytes || strings.ContainsAny(got, "/\\\x00") {
			t.Errorf("sanitizeFileName(%q) = %q is not safe", tc.in, got)
		}
	}
}

func TestParseHistoryQuery(t *testing.T) {
	for _, tc := range []struct {
		query string
		want  historyQuery
		field string
	}{
		{"", historyQuery{Dir: mautrix.DirectionBackward, Limit: 10}, ""},
		{"dir=b&from=t1&limit=5", historyQuery{From: "t1", Dir: mautrix.DirectionBackward, Limit: 5}, ""},
		{"dir=f&from=t1", historyQuery{From: "t1", Dir: mautrix.DirectionForward, Limit: 10}, ""},
		{"limit=1000", historyQuery{Dir: mautrix.DirectionBackward, Limit: 100}, ""},
		{"limit=100", historyQuery{Dir: mautrix.DirectionBackward, Limit: 100}, ""},
		{"limit=0", historyQuery{Dir: mautrix.DirectionBackward, Limit: 1}, ""},
		{"limit=-7", historyQuery{Dir: mautrix.DirectionBackward, Limit: 1}, ""},
		{"limit=99999999999999999999999", historyQuery{Dir: mautrix.DirectionBackward, Limit: 100}, ""},
		{"limit=-99999999999999999999999", historyQuery{Dir: mautrix.DirectionBackward, Limit: 1}, ""},
		{"as=agent:sofia", historyQuery{Dir: mautrix.DirectionBackward, Limit: 10, As: "agent:sofia"}, ""},
		{"limit=ten", historyQuery{}, "limit"},
		{"limit=1.5", historyQuery{}, "limit"},
		{"limit=", historyQuery{Dir: mautrix.DirectionBackward, Limit: 10}, ""},
		{"dir=backwards", historyQuery{}, "dir"},
		{"dir=B", historyQuery{}, "dir"},
		{"dir=f", historyQuery{}, "from"},
		{"from=" + strings.Repeat("t", maxTokenBytes+1), historyQuery{}, "from"},
	} {
		q, _ := url.ParseQuery(tc.query)
		got, err := parseHistoryQuery(q)
		var fe *identity.FieldError
		switch {
		case tc.field != "":
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Errorf("%q: error %v, want one naming %s", tc.query, err, tc.field)
			}
		case err != nil:
			t.Errorf("%q: %v", tc.query, err)
		case got != tc.want:
			t.Errorf("%q: %+v, want %+v", tc.query, got, tc.want)
		}
	}
}

// The bytes decide the content type, the name is sanitised, and the
// homeserver gets the exact length up front (Synapse needs Content-Length).
func TestUploadPassesSniffedTypeExactLengthAndSafeName(t *testing.T) {
	f := newMediaFixture(t, 1<<20)
	res := f.upload(t, testMessagingToken, formPart{
		name: "file", contentType: "text/plain",
		disposition: "form-data; name=\"file\"; filename=\"..\\\\..\\\\evil\u202Egnp.png\"",
		body:        tinyPNG,
	})
	if res.status != 200 {
		t.Fatalf("upload: %d %s", res.status, res.raw)
	}
	if len(res.body) != 3 || res.str("content_uri") != "mxc://daarion.test/media1" || res.str("content_type") != "image/png" ||
		res.body["size"] != float64(len(tinyPNG)) {
		t.Errorf("answer = %s", res.raw)
	}
	up := f.hs.lastUpload(t)
	if up.contentType != "image/png" || up.contentLength != int64(len(tinyPNG)) || up.size != int64(len(tinyPNG)) ||
		up.sum != sha256.Sum256(tinyPNG) {
		t.Errorf("homeserver got %+v", up)
	}
	if up.fileName != "evilgnp.png" {
		t.Errorf("file name sent = %q", up.fileName)
	}
	if up.userID != "@daarion-bot:"+testServer {
		t.Errorf("uploaded as %q, want the bot", up.userID)
	}

	// Text is text whatever the client says; the field order does not matter.
	res = f.upload(t, testSecret,
		formPart{name: "agent", body: nil},
		formPart{name: "file", fileName: "notes", contentType: "image/png", body: []byte("just some words\n")})
	if res.status != 200 || res.str("content_type") != "text/plain; charset=utf-8" || res.body["size"] != float64(16) {
		t.Errorf("text upload: %d %s", res.status, res.raw)
	}
	if up := f.hs.lastUpload(t); up.contentType != "text/plain; charset=utf-8" || up.fileName != "notes" {
		t.Errorf("homeserver got %+v", up)
	}
	// As an agent's ghost.
	res = f.upload(t, testSecret, formPart{name: "agent", body: []byte("agent:sofia")}, formPart{name: "file", fileName: "a.png", body: tinyPNG})
	if up := f.hs.lastUpload(t); res.status != 200 || up.userID != "@agent_sofia:"+testServer {
		t.Errorf("agent upload: %d %s, as %q", res.status, res.raw, up.userID)
	}
	// No file name at all: none is sent.
	res = f.upload(t, testSecret, formPart{name: "file", body: []byte("x")})
	if res.status != 200 || f.hs.lastUpload(t).fileName != "" {
		t.Errorf("nameless upload: %d %s, name %q", res.status, res.raw, f.hs.lastUpload(t).fileName)
	}
}

func TestUploadRefusals(t *testing.T) {
	const limit = 1000
	f := newMediaFixture(t, limit)
	file := formPart{name: "file", fileName: "a.bin", body: []byte("data")}
	big := func(n int) formPart {
		return formPart{name: "file", fileName: "big.bin", body: bytes.Repeat([]byte{7}, n)}
	}
	for _, tc := range []struct {
		name   string
		token  string
		parts  []formPart
		status int
		errc   string
		field  string
	}{
		{"no file", testSecret, []formPart{{name: "agent", body: []byte("agent:sofia")}}, 400, "M_INVALID_PARAM", "file"},
		{"empty form", testSecret, nil, 400, "M_INVALID_PARAM", "file"},
		{"empty file", testSecret, []formPart{{name: "file", fileName: "e.txt"}}, 400, "M_INVALID_PARAM", "file"},
		{"file twice", testSecret, []formPart{file, file}, 400, "M_INVALID_PARAM", "file"},
		{"unknown field", testSecret, []formPart{file, {name: "caption", body: []byte("hi")}}, 400, "M_INVALID_PARAM", "caption"},
		{"nameless part", testSecret, []formPart{{disposition: "attachment", body: []byte("x")}}, 400, "M_INVALID_PARAM", ""},
		{"agent twice", testSecret, []formPart{{name: "agent", body: []byte("agent:a")}, {name: "agent", body: []byte("agent:b")}, file}, 400, "M_INVALID_PARAM", "agent"},
		{"agent too long", testSecret, []formPart{{name: "agent", body: bytes.Repeat([]byte("a"), maxFieldBytes+1)}, file}, 400, "M_INVALID_PARAM", "agent"},
		{"agent invalid", testSecret, []formPart{{name: "agent", body: []byte("agent:Sofia")}, file}, 400, "M_INVALID_PARAM", "agent"},
		{"agent is a human", testSecret, []formPart{{name: "agent", body: []byte("user:alice")}, file}, 400, "M_INVALID_PARAM", "agent"},
		{"agent is the bot", testSecret, []formPart{{name: "agent", body: []byte("bridge:bot")}, file}, 400, "M_INVALID_PARAM", "agent"},
		{"agent without agents scope", testMessagingToken, []formPart{{name: "agent", body: []byte("agent:sofia")}, file}, 403, "M_FORBIDDEN", ""},
		{"agent after the file, without scope", testMessagingToken, []formPart{file, {name: "agent", body: []byte("agent:sofia")}}, 403, "M_FORBIDDEN", ""},
		{"file one byte over", testSecret, []formPart{big(limit + 1)}, 413, "M_TOO_LARGE", ""},
		{"body over the limit", testSecret, []formPart{big(limit + multipartOverhead + 1)}, 413, "M_TOO_LARGE", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := f.hs.uploadCount()
			res := f.upload(t, tc.token, tc.parts...)
			if res.status != tc.status || res.str("error") != tc.errc || res.str("field") != tc.field {
				t.Errorf("%d %s, want %d %s naming %q", res.status, res.raw, tc.status, tc.errc, tc.field)
			}
			if f.hs.uploadCount() != before {
				t.Error("a refused upload reached the homeserver")
			}
		})
	}

	t.Run("exactly the limit", func(t *testing.T) {
		if res := f.upload(t, testSecret, big(limit)); res.status != 200 || res.body["size"] != float64(limit) {
			t.Errorf("%d %s", res.status, res.raw)
		}
	})
	t.Run("not multipart", func(t *testing.T) {
		res := f.do(t, testSecret, http.MethodPost, "/internal/matrix/upload", "application/json", strings.NewReader(`{}`), 2)
		if res.status != 415 || res.str("error") != "M_INVALID_PARAM" {
			t.Errorf("%d %s", res.status, res.raw)
		}
		res = f.do(t, testSecret, http.MethodPost, "/internal/matrix/upload", "", strings.NewReader(`x`), 1)
		if res.status != 415 {
			t.Errorf("no content type: %d %s", res.status, res.raw)
		}
	})
	t.Run("no boundary", func(t *testing.T) {
		res := f.do(t, testSecret, http.MethodPost, "/internal/matrix/upload", "multipart/form-data", strings.NewReader(`x`), 1)
		if res.status != 400 || res.str("error") != "M_INVALID_PARAM" {
			t.Errorf("%d %s", res.status, res.raw)
		}
	})
	t.Run("truncated body", func(t *testing.T) {
		ct, body := multipartBody(t, file)
		body = body[:len(body)-10]
		res := f.do(t, testSecret, http.MethodPost, "/internal/matrix/upload", ct, bytes.NewReader(body), int64(len(body)))
		if res.status != 400 || res.str("error") != "M_INVALID_PARAM" {
			t.Errorf("%d %s", res.status, res.raw)
		}
	})
	t.Run("too large without Content-Length", func(t *testing.T) {
		ct, body := multipartBody(t, big(limit+multipartOverhead+10))
		res := f.do(t, testSecret, http.MethodPost, "/internal/matrix/upload", ct, io.MultiReader(bytes.NewReader(body)), -1)
		if res.status != 413 || res.str("error") != "M_TOO_LARGE" {
			t.Errorf("%d %s", res.status, res.raw)
		}
	})
	t.Run("the homeserver's own limit", func(t *testing.T) {
		f.hs.upload = func(w http.ResponseWriter, r *http.Request) bool {
			testrig.WriteJSON(w, 413, map[string]string{"errcode": "M_TOO_LARGE", "error": "too big for me"})
			return true
		}
		defer func() { f.hs.upload = nil }()
		if res := f.upload(t, testSecret, file); res.status != 413 || res.str("error") != "M_TOO_LARGE" {
			t.Errorf("%d %s", res.status, res.raw)
		}
	})
	t.Run("homeserver failing", func(t *testing.T) {
		f.hs.upload = func(w http.ResponseWriter, r *http.Request) bool {
			testrig.WriteJSON(w, 500, map[string]string{"errcode": "M_UNKNOWN", "error": "disk full"})
			return true
		}
		defer func() { f.hs.upload = nil }()
		if res := f.upload(t, testSecret, file); res.status != 502 || res.str("error") != "matrix_unavailable" {
			t.Errorf("%d %s", res.status, res.raw)
		}
	})
}

// A large upload with no Content-Length streams through without the file
// ever being in memory: the heap grows by far less than the file.
func TestUploadStreamsWithoutBuffering(t *testing.T) {
	const size = 48 << 20
	f := newMediaFixture(t, 64<<20)
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		part, err := mw.CreateFormFile("file", "big.bin")
		if err != nil {
			_ = pw.CloseWithError(err)
			return
		}
		chunk := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
		for written := 0; written < size; written += len(chunk) {
			if _, err = part.Write(chunk); err != nil {
				_ = pw.CloseWithError(err)
				return
			}
		}
		_ = pw.CloseWithError(mw.Close())
	}()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	res := f.do(t, testSecret, http.MethodPost, "/internal/matrix/upload", mw.FormDataContentType(), pr, -1)
	runtime.ReadMemStats(&after)
	if res.status != 200 || res.body["size"] != float64(size) {
		t.Fatalf("%d %s", res.status, res.raw)
	}
	if up := f.hs.lastUpload(t); up.contentLength != size || up.size != size {
		t.Errorf("homeserver got %+v", up)
	}
	// Everything allocated while serving, by the test, the bridge and the
	// fake homeserver together.
	grew := after.TotalAlloc - before.TotalAlloc
	t.Logf("serving a %d MiB upload allocated %d KiB", size>>20, grew>>10)
	if grew > size/4 {
		t.Errorf("serving a %d MiB upload allocated %d MiB", size>>20, grew>>20)
	}
}

func TestHistory(t *testing.T) {
	f := newMediaFixture(t, 1<<20)
	const room = "/internal/matrix/rooms/%21room%3Adaarion.test/messages"
	// Events come back exactly as the homeserver gave them, unknown keys too.
	f.hs.messages = func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"start":"t9","end":"t7","state":[],"chunk":[
			{"type":"m.room.message","event_id":"$e2","sender":"@alice:daarion.test","content":{"msgtype":"m.text","body":"two"},"origin_server_ts":2,"unsigned":{"age":5},"x.custom":[1,{"a":null}]},
			{"type":"m.room.member","event_id":"$e1","sender":"@alice:daarion.test","state_key":"@alice:daarion.test","content":{"membership":"join"},"origin_server_ts":1}]}`)
	}
	res := f.do(t, testMessagingToken, http.MethodGet, room+"?limit=1000&from=t9", "", nil, 0)
	if res.status != 200 || res.str("start") != "t9" || res.str("end") != "t7" || len(res.body) != 3 {
		t.Fatalf("%d %s", res.status, res.raw)
	}
	var got struct{ Chunk []json.RawMessage }
	_ = json.Unmarshal([]byte(res.raw), &got)
	if len(got.Chunk) != 2 || !strings.Contains(string(got.Chunk[0]), `"x.custom":[1,{"a":null}]`) || !strings.Contains(string(got.Chunk[0]), `"unsigned":{"age":5}`) {
		t.Errorf("chunk = %s", res.raw)
	}
	q := f.hs.lastQuery(t)
	if q.Get("limit") != "100" || q.Get("dir") != "b" || q.Get("from") != "t9" || q.Get("user_id") != "@daarion-bot:"+testServer {
		t.Errorf("homeserver query = %v", q)
	}

	// Defaults, and the end of the timeline (no end token).
	f.hs.messages = func(w http.ResponseWriter, r *http.Request) {
		testrig.WriteJSON(w, 200, map[string]any{"start": "t1", "chunk": []any{}})
	}
	res = f.do(t, testMessagingToken, http.MethodGet, room, "", nil, 0)
	if res.status != 200 || res.raw != `{"start":"t1","chunk":[]}`+"\n" {
		t.Errorf("%d %s", res.status, res.raw)
	}
	if q := f.hs.lastQuery(t); q.Get("limit") != "10" || q.Get("dir") != "b" || q.Has("from") {
		t.Errorf("homeserver query = %v", q)
	}
	res = f.do(t, testMessagingToken, http.MethodGet, room+"?dir=f&from=t1&limit=0", "", nil, 0)
	if q := f.hs.lastQuery(t); res.status != 200 || q.Get("dir") != "f" || q.Get("limit") != "1" {
		t.Errorf("%d %s; query %v", res.status, res.raw, q)
	}

	for _, tc := range []struct {
		name, target, token string
		hs                  func(w http.ResponseWriter, r *http.Request)
		status              int
		errc, field         string
		member              func(w http.ResponseWriter, r *http.Request)
	}{
		{"bad room id", "/internal/matrix/rooms/room/messages", testSecret, nil, 400, "M_INVALID_PARAM", "roomId", nil},
		{"bad dir", room + "?dir=up", testSecret, nil, 400, "M_INVALID_PARAM", "dir", nil},
		{"bad limit", room + "?limit=lots", testSecret, nil, 400, "M_INVALID_PARAM", "limit", nil},
		{"forward without from", room + "?dir=f", testSecret, nil, 400, "M_INVALID_PARAM", "from", nil},
		{"as agent without scope", room + "?as=agent:sofia", testMessagingToken, nil, 403, "M_FORBIDDEN", "", nil},
		{"as an invalid id", room + "?as=nobody", testSecret, nil, 400, "M_INVALID_PARAM", "as", nil},
		{"bot not in the room", room, testSecret, nil, 404, "M_NOT_FOUND", "", func(w http.ResponseWriter, r *http.Request) {
			testrig.WriteJSON(w, 403, map[string]string{"errcode": "M_FORBIDDEN", "error": "not in room"})
		}},
		{"bot left the room", room, testSecret, nil, 404, "M_NOT_FOUND", "", func(w http.ResponseWriter, r *http.Request) {
			testrig.WriteJSON(w, 200, map[string]string{"membership": "leave"})
		}},
		{"bot only invited", room, testSecret, nil, 404, "M_NOT_FOUND", "", func(w http.ResponseWriter, r *http.Request) {
			testrig.WriteJSON(w, 200, map[string]string{"membership": "invite"})
		}},
		{"membership unreadable", room, testSecret, nil, 502, "matrix_unavailable", "", func(w http.ResponseWriter, r *http.Request) {
			testrig.WriteJSON(w, 500, map[string]string{"errcode": "M_UNKNOWN", "error": "oops"})
		}},
		{"homeserver refuses the read", room, testSecret, func(w http.ResponseWriter, r *http.Request) {
			testrig.WriteJSON(w, 403, map[string]string{"errcode": "M_FORBIDDEN", "error": "not in room"})
		}, 404, "M_NOT_FOUND", "", nil},
		{"no such room", room, testSecret, func(w http.ResponseWriter, r *http.Request) {
			testrig.WriteJSON(w, 404, map[string]string{"errcode": "M_NOT_FOUND", "error": "unknown room"})
		}, 404, "M_NOT_FOUND", "", nil},
		{"bad token", room + "?from=garbage", testSecret, func(w http.ResponseWriter, r *http.Request) {
			testrig.WriteJSON(w, 400, map[string]string{"errcode": "M_INVALID_PARAM", "error": "bad token"})
		}, 400, "M_INVALID_PARAM", "from", nil},
		{"homeserver failing", room, testSecret, func(w http.ResponseWriter, r *http.Request) {
			testrig.WriteJSON(w, 500, map[string]string{"errcode": "M_UNKNOWN", "error": "oops"})
		}, 502, "matrix_unavailable", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.hs.messages, f.hs.member = tc.hs, tc.member
			res := f.do(t, tc.token, http.MethodGet, tc.target, "", nil, 0)
			if res.status != tc.status || res.str("error") != tc.errc || res.str("field") != tc.field {
				t.Errorf("%d %s, want %d %s naming %q", res.status, res.raw, tc.status, tc.errc, tc.field)
			}
		})
	}
}
