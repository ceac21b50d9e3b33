package messaging

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/attachment"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/identity"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

const (
	encryptedRoom = "!room:" + testServer // managed by the fixture; encrypted when the fake says so
	clearRoom     = "!clear:" + testServer
)

// fakeEncryption knows some rooms as encrypted and "encrypts" a send by
// recording it.
type fakeEncryption struct {
	mu        sync.Mutex
	encrypted map[id.RoomID]bool
	err       error // IsEncrypted fails with it
	sent      []*event.MessageEventContent
}

func (f *fakeEncryption) IsEncrypted(_ context.Context, _ id.UserID, roomID id.RoomID) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.encrypted[roomID], f.err
}

func (f *fakeEncryption) Send(ctx context.Context, _ id.UserID, roomID id.RoomID, _ event.Type, content any, _ ...mautrix.ReqSendEvent) (*mautrix.RespSendEvent, bool, error) {
	if enc, err := f.IsEncrypted(ctx, "", roomID); err != nil || !enc {
		return nil, false, err
	}
	raw, _ := json.Marshal(content)
	var c event.MessageEventContent
	_ = json.Unmarshal(raw, &c)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent = append(f.sent, &c)
	return &mautrix.RespSendEvent{EventID: "$encrypted"}, true, nil
}

// newEncryptedFixture is the media fixture with encryptedRoom encrypted and
// clearRoom managed and clear; the homeserver keeps the bytes of uploads.
func newEncryptedFixture(t *testing.T, maxUpload int64) (*mediaFixture, *fakeEncryption, func() []byte) {
	t.Helper()
	f := newMediaFixture(t, maxUpload)
	if err := f.svc.rooms.Store().MarkManaged(context.Background(), clearRoom, "created", ""); err != nil {
		t.Fatal(err)
	}
	enc := &fakeEncryption{encrypted: map[id.RoomID]bool{encryptedRoom: true}}
	f.svc.encryption = enc
	var mu sync.Mutex
	var last []byte
	f.hs.upload = func(w http.ResponseWriter, r *http.Request) bool {
		if r.ContentLength > 1<<20 {
			return false // the streaming test: hashed, not kept
		}
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		last = body
		mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		return false
	}
	return f, enc, func() []byte { mu.Lock(); defer mu.Unlock(); return last }
}

// An upload for an encrypted room is an encrypted attachment: the
// homeserver gets only ciphertext, as octet-stream and without a name, and
// the answer's file decrypts it to the very bytes.
func TestUploadForAnEncryptedRoomIsAnEncryptedAttachment(t *testing.T) {
	f, _, lastBody := newEncryptedFixture(t, 1<<20)
	plain := bytes.Repeat([]byte("the secret plan, "), 40)
	res := f.upload(t, testSecret,
		formPart{name: "room_id", body: []byte(encryptedRoom)},
		formPart{name: "file", fileName: "plan.txt", contentType: "image/png", body: plain})
	if res.status != 200 {
		t.Fatalf("upload: %d %s", res.status, res.raw)
	}
	var answer uploadResponse
	if err := json.Unmarshal([]byte(res.raw), &answer); err != nil {
		t.Fatal(err)
	}
	if answer.File == nil || answer.ContentURI != "mxc://daarion.test/media1" || string(answer.File.URL) != answer.ContentURI ||
		answer.ContentType != "text/plain; charset=utf-8" || answer.Size != int64(len(plain)) {
		t.Fatalf("answer = %s", res.raw)
	}
	up := f.hs.lastUpload(t)
	if up.contentType != "application/octet-stream" || up.fileName != "" || up.contentLength != int64(len(plain)) || up.size != int64(len(plain)) {
		t.Errorf("homeserver got %+v", up)
	}
	cipher := lastBody()
	if up.sum == sha256.Sum256(plain) || bytes.Contains(cipher, []byte("secret plan")) {
		t.Error("the homeserver got the clear bytes")
	}
	if sum := sha256.Sum256(cipher); answer.File.Hashes.SHA256 != base64.RawStdEncoding.EncodeToString(sum[:]) {
		t.Errorf("hashes.sha256 %s is not the ciphertext's", answer.File.Hashes.SHA256)
	}
	// The answer's file is what a send takes, and what a client decrypts with.
	var raw map[string]any
	_ = json.Unmarshal([]byte(res.raw), &raw)
	fileJSON, _ := json.Marshal(raw["file"])
	parsed, err := parseEncryptedFile(fileJSON)
	if err != nil {
		t.Fatalf("the upload's file is refused by the send: %v (%s)", err, fileJSON)
	}
	got, err := parsed.Decrypt(cipher)
	if err != nil || !bytes.Equal(got, plain) {
		t.Errorf("decrypted %q, %v", got, err)
	}
	for _, k := range []string{"url", "key", "iv", "hashes", "v"} {
		if _, ok := raw["file"].(map[string]any)[k]; !ok {
			t.Errorf("file has no %s: %s", k, fileJSON)
		}
	}

	// Each upload has a key of its own.
	res2 := f.upload(t, testSecret, formPart{name: "file", body: plain}, formPart{name: "room_id", body: []byte(encryptedRoom)})
	var second uploadResponse
	_ = json.Unmarshal([]byte(res2.raw), &second)
	if res2.status != 200 || second.File == nil || second.File.Key.Key == answer.File.Key.Key || second.File.InitVector == answer.File.InitVector {
		t.Errorf("second upload: %d %s", res2.status, res2.raw)
	}

	// A clear room, an empty room_id, or none: the upload is as it was.
	for name, parts := range map[string][]formPart{
		"clear room":    {{name: "room_id", body: []byte(clearRoom)}, {name: "file", fileName: "a.png", body: tinyPNG}},
		"empty room_id": {{name: "room_id"}, {name: "file", fileName: "a.png", body: tinyPNG}},
		"no room_id":    {{name: "file", fileName: "a.png", body: tinyPNG}},
	} {
		res := f.upload(t, testSecret, parts...)
		up := f.hs.lastUpload(t)
		if res.status != 200 || len(res.body) != 3 || res.str("content_type") != "image/png" ||
			up.contentType != "image/png" || up.sum != sha256.Sum256(tinyPNG) || up.fileName != "a.png" {
			t.Errorf("%s: %d %s; homeserver got %+v", name, res.status, res.raw, up)
		}
	}
}

func TestUploadRoomRefusals(t *testing.T) {
	f, enc, _ := newEncryptedFixture(t, 1000)
	file := formPart{name: "file", fileName: "a.bin", body: []byte("data")}
	room := func(v string) formPart { return formPart{name: "room_id", body: []byte(v)} }
	for _, tc := range []struct {
		name   string
		token  string
		parts  []formPart
		status int
		errc   string
		field  string
		encErr error
	}{
		{"not a room id", testSecret, []formPart{room("general"), file}, 400, "M_INVALID_PARAM", "room_id", nil},
		{"room alias", testSecret, []formPart{room("#general:daarion.test"), file}, 400, "M_INVALID_PARAM", "room_id", nil},
		{"room id after the file", testSecret, []formPart{file, room("!a b:daarion.test")}, 400, "M_INVALID_PARAM", "room_id", nil},
		{"room_id twice", testSecret, []formPart{room(encryptedRoom), room(encryptedRoom), file}, 400, "M_INVALID_PARAM", "room_id", nil},
		{"room_id too long", testSecret, []formPart{room("!" + strings.Repeat("a", maxFieldBytes)), file}, 400, "M_INVALID_PARAM", "room_id", nil},
		{"unmanaged room", testSecret, []formPart{room("!elsewhere:daarion.test"), file}, 403, "M_FORBIDDEN", "room_id", nil},
		{"unmanaged room, after the file", testMessagingToken, []formPart{file, room("!elsewhere:daarion.test")}, 403, "M_FORBIDDEN", "room_id", nil},
		{"encryption state unreadable", testSecret, []formPart{room(encryptedRoom), file}, 500, "INTERNAL_ERROR", "", errors.New("state store down")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			enc.mu.Lock()
			enc.err = tc.encErr
			enc.mu.Unlock()
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
	enc.err = nil
	t.Run("the messaging scope alone reaches a managed room", func(t *testing.T) {
		if res := f.upload(t, testMessagingToken, room(encryptedRoom), file); res.status != 200 || res.body["file"] == nil {
			t.Errorf("%d %s", res.status, res.raw)
		}
	})
	t.Run("the homeserver failing", func(t *testing.T) {
		f.hs.upload = func(w http.ResponseWriter, r *http.Request) bool {
			testrig.WriteJSON(w, 500, map[string]string{"errcode": "M_UNKNOWN", "error": "disk full"})
			return true
		}
		if res := f.upload(t, testSecret, room(encryptedRoom), file); res.status != 502 || res.str("error") != "matrix_unavailable" {
			t.Errorf("%d %s", res.status, res.raw)
		}
	})
}

// A large encrypted upload streams from the disk through the cipher: the
// heap grows by far less than the file.
func TestEncryptedUploadStreams(t *testing.T) {
	const size = 24 << 20
	f, _, _ := newEncryptedFixture(t, 32<<20)
	var body bytes.Buffer
	ct, head := multipartBody(t, formPart{name: "room_id", body: []byte(encryptedRoom)})
	// The multipart body without its closing boundary, then the file part
	// from a reader of zeros, then the close.
	boundary := ct[strings.Index(ct, "boundary=")+len("boundary="):]
	body.Write(head[:len(head)-len("--"+boundary+"--\r\n")])
	body.WriteString("--" + boundary + "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n\r\n")
	tail := "\r\n--" + boundary + "--\r\n"
	src := io.MultiReader(bytes.NewReader(body.Bytes()), io.LimitReader(zeros{}, size), strings.NewReader(tail))
	var before, after runtimeMem
	before.read()
	res := f.do(t, testSecret, http.MethodPost, "/internal/matrix/upload", ct, src, -1)
	after.read()
	if res.status != 200 || res.body["size"] != float64(size) || res.body["file"] == nil {
		t.Fatalf("%d %.300s", res.status, res.raw)
	}
	if up := f.hs.lastUpload(t); up.contentLength != size || up.size != size || up.contentType != "application/octet-stream" {
		t.Errorf("homeserver got %+v", up)
	}
	var answer uploadResponse
	_ = json.Unmarshal([]byte(res.raw), &answer)
	if got := f.hs.lastUpload(t).sum; answer.File.Hashes.SHA256 != base64.RawStdEncoding.EncodeToString(got[:]) {
		t.Error("hashes.sha256 is not the hash of what the homeserver got")
	}
	grew := after.total - before.total
	t.Logf("serving a %d MiB encrypted upload allocated %d KiB", size>>20, grew>>10)
	if grew > size/4 {
		t.Errorf("serving a %d MiB encrypted upload allocated %d MiB", size>>20, grew>>20)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// validFile is an upload's file object, as JSON.
func validFile(t *testing.T) json.RawMessage {
	t.Helper()
	ef := attachment.NewEncryptedFile()
	ef.EncryptInPlace([]byte("some bytes"))
	raw, err := json.Marshal(event.EncryptedFileInfo{EncryptedFile: *ef, URL: "mxc://daarion.test/cipher"})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// editFile is the valid file object with edit applied to its decoded form.
func editFile(t *testing.T, edit func(m map[string]any)) json.RawMessage {
	t.Helper()
	var m map[string]any
	_ = json.Unmarshal(validFile(t), &m)
	edit(m)
	raw, _ := json.Marshal(m)
	return raw
}

func TestParseEncryptedFile(t *testing.T) {
	key := func(m map[string]any) map[string]any { return m["key"].(map[string]any) }
	for _, tc := range []struct {
		name  string
		raw   json.RawMessage
		field string // "": accepted
	}{
		{"as the upload answers it", validFile(t), ""},
		{"key_ops in another order", editFile(t, func(m map[string]any) { key(m)["key_ops"] = []string{"decrypt", "encrypt"} }), ""},
		{"not an object", json.RawMessage(`"mxc://s/a"`), "file"},
		{"an array", json.RawMessage(`[1]`), "file"},
		{"too large", editFile(t, func(m map[string]any) { m["url"] = "mxc://s/" + strings.Repeat("a", maxFileObjectBytes) }), "file"},
		{"unknown field", editFile(t, func(m map[string]any) { m["mimetype"] = "text/plain" }), "file"},
		{"unknown key field", editFile(t, func(m map[string]any) { key(m)["use"] = "enc" }), "file"},
		{"unknown hash", editFile(t, func(m map[string]any) { m["hashes"].(map[string]any)["sha512"] = "x" }), "file"},
		{"no url", editFile(t, func(m map[string]any) { delete(m, "url") }), "file.url"},
		{"http url", editFile(t, func(m map[string]any) { m["url"] = "https://daarion.test/cipher" }), "file.url"},
		{"empty url", editFile(t, func(m map[string]any) { m["url"] = "" }), "file.url"},
		{"mxc without media id", editFile(t, func(m map[string]any) { m["url"] = "mxc://daarion.test" }), "file.url"},
		{"no version", editFile(t, func(m map[string]any) { delete(m, "v") }), "file.v"},
		{"version 1", editFile(t, func(m map[string]any) { m["v"] = "v1" }), "file.v"},
		{"no key", editFile(t, func(m map[string]any) { delete(m, "key") }), "file.key"},
		{"key of another type", editFile(t, func(m map[string]any) { key(m)["kty"] = "RSA" }), "file.key.kty"},
		{"another algorithm", editFile(t, func(m map[string]any) { key(m)["alg"] = "A128CTR" }), "file.key.alg"},
		{"not extractable", editFile(t, func(m map[string]any) { key(m)["ext"] = false }), "file.key.ext"},
		{"no decrypt", editFile(t, func(m map[string]any) { key(m)["key_ops"] = []string{"encrypt"} }), "file.key.key_ops"},
		{"unknown key op", editFile(t, func(m map[string]any) { key(m)["key_ops"] = []string{"encrypt", "decrypt", "launch"} }), "file.key.key_ops"},
		{"repeated key op", editFile(t, func(m map[string]any) { key(m)["key_ops"] = []string{"encrypt", "decrypt", "encrypt"} }), "file.key.key_ops"},
		{"short key", editFile(t, func(m map[string]any) { key(m)["k"] = "abc" }), "file.key.k"},
		{"key not base64", editFile(t, func(m map[string]any) { key(m)["k"] = strings.Repeat("!", attachmentKeyChars) }), "file.key.k"},
		{"key in standard base64", editFile(t, func(m map[string]any) { key(m)["k"] = strings.Repeat("+", attachmentKeyChars) }), "file.key.k"},
		{"no iv", editFile(t, func(m map[string]any) { delete(m, "iv") }), "file.iv"},
		{"padded iv", editFile(t, func(m map[string]any) { m["iv"] = m["iv"].(string) + "==" }), "file.iv"},
		{"no hashes", editFile(t, func(m map[string]any) { delete(m, "hashes") }), "file.hashes.sha256"},
		{"no sha256", editFile(t, func(m map[string]any) { m["hashes"] = map[string]any{} }), "file.hashes.sha256"},
		{"short sha256", editFile(t, func(m map[string]any) { m["hashes"] = map[string]any{"sha256": "abc"} }), "file.hashes.sha256"},
		{"two objects", json.RawMessage(string(validFile(t)) + `{}`), "file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseEncryptedFile(tc.raw)
			var fe *identity.FieldError
			switch {
			case tc.field == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.field == "":
				// What is sent is what was given.
				var want, sent map[string]any
				_ = json.Unmarshal(tc.raw, &want)
				out, _ := json.Marshal(got)
				_ = json.Unmarshal(out, &sent)
				if a, b := mustJSON(want), mustJSON(sent); a != b {
					t.Errorf("sent %s, given %s", b, a)
				}
			case !errors.As(err, &fe) || fe.Field != tc.field:
				t.Errorf("error %v, want one naming %s", err, tc.field)
			}
		})
	}
}

func mustJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

func TestMessageContentWithAFile(t *testing.T) {
	file := validFile(t)
	for _, tc := range []struct {
		name  string
		req   sendRequest
		field string
	}{
		{"file for m.file", sendRequest{Body: "plan.txt", MsgType: "m.file", File: file, FileName: "plan.txt"}, ""},
		{"file for m.image", sendRequest{Body: "cat.png", MsgType: "m.image", File: file, Info: json.RawMessage(`{"mimetype":"image/png","size":10}`)}, ""},
		{"file for m.audio", sendRequest{Body: "a.ogg", MsgType: "m.audio", File: file}, ""},
		{"file for m.video", sendRequest{Body: "v.mp4", MsgType: "m.video", File: file}, ""},
		{"null file is none", sendRequest{Body: "x", MsgType: "m.file", URL: "mxc://s/a", File: json.RawMessage(`null`)}, ""},
		{"url and file", sendRequest{Body: "x", MsgType: "m.file", URL: "mxc://s/a", File: file}, "file"},
		{"neither", sendRequest{Body: "x", MsgType: "m.file"}, "url"},
		{"null file and no url", sendRequest{Body: "x", MsgType: "m.file", File: json.RawMessage(`null`)}, "url"},
		{"file for text", sendRequest{Body: "x", File: file}, "file"},
		{"file for a notice", sendRequest{Body: "x", MsgType: "m.notice", File: file}, "file"},
		{"bad file", sendRequest{Body: "x", MsgType: "m.file", File: json.RawMessage(`{"url":"mxc://s/a"}`)}, "file.v"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.req.content(identity.KindAgent)
			var fe *identity.FieldError
			switch {
			case tc.field != "":
				if !errors.As(err, &fe) || fe.Field != tc.field {
					t.Errorf("error %v, want one naming %s", err, tc.field)
				}
			case err != nil:
				t.Errorf("unexpected error %v", err)
			case len(tc.req.File) > 0 && string(tc.req.File) != "null":
				raw, _ := json.Marshal(c)
				var m map[string]any
				_ = json.Unmarshal(raw, &m)
				if _, hasURL := m["url"]; hasURL || m["file"] == nil || m["file"].(map[string]any)["url"] != "mxc://daarion.test/cipher" {
					t.Errorf("content %s", raw)
				}
			}
		})
	}
}

// A send with file goes encrypted into an encrypted room, with the file in
// its content; into a clear room it is refused, naming file.
func TestSendAFile(t *testing.T) {
	f, enc, _ := newEncryptedFixture(t, 1<<20)
	send := func(room string, extra map[string]any) result {
		body := map[string]any{"room_id": room, "sender": "bridge:bot", "msgtype": "m.file", "body": "plan.txt", "filename": "plan.txt"}
		for k, v := range extra {
			body[k] = v
		}
		raw, _ := json.Marshal(body)
		return f.do(t, testSecret, http.MethodPost, "/internal/matrix/send", "application/json", bytes.NewReader(raw), int64(len(raw)))
	}
	file := validFile(t)
	res := send(encryptedRoom, map[string]any{"file": file})
	if res.status != 200 || res.str("event_id") != "$encrypted" {
		t.Fatalf("%d %s", res.status, res.raw)
	}
	enc.mu.Lock()
	sent := enc.sent[len(enc.sent)-1]
	enc.mu.Unlock()
	var want event.EncryptedFileInfo
	_ = json.Unmarshal(file, &want)
	if sent.URL != "" || sent.File == nil || mustJSON(sent.File) != mustJSON(want) || sent.FileName != "plan.txt" {
		t.Errorf("sent %s", mustJSON(sent))
	}

	res = send(clearRoom, map[string]any{"file": file})
	if res.status != 400 || res.str("field") != "file" || !strings.Contains(res.str("message"), "encrypted room") {
		t.Errorf("into a clear room: %d %s", res.status, res.raw)
	}
	f.svc.encryption = nil
	if res = send(encryptedRoom, map[string]any{"file": file}); res.status != 400 || res.str("field") != "file" {
		t.Errorf("without encryption: %d %s", res.status, res.raw)
	}
	f.svc.encryption = enc
	enc.err = errors.New("state store down")
	if res = send(encryptedRoom, map[string]any{"file": file}); res.status != 500 {
		t.Errorf("encryption state unreadable: %d %s", res.status, res.raw)
	}
	enc.err = nil
	if res = send(encryptedRoom, map[string]any{"file": map[string]any{"url": "https://x/y"}}); res.status != 400 || res.str("field") != "file.url" {
		t.Errorf("bad file: %d %s", res.status, res.raw)
	}
	if res = send(encryptedRoom, map[string]any{"file": file, "url": "mxc://daarion.test/a"}); res.status != 400 || res.str("field") != "file" {
		t.Errorf("url and file: %d %s", res.status, res.raw)
	}
}

// runtimeMem is the bytes allocated so far, after a collection.
type runtimeMem struct{ total uint64 }

func (m *runtimeMem) read() {
	runtime.GC()
	var s runtime.MemStats
	runtime.ReadMemStats(&s)
	m.total = s.TotalAlloc
}
