package e2e_test

// The driver of e2e/jsclient/client.mjs: a real Matrix client with its own
// end-to-end encryption (matrix-js-sdk 43.0.0, Rust crypto, in memory), so
// that a test can talk to the bridge in encrypted rooms the way a user's
// client does. The client is a long-lived Node process speaking JSON lines
// (the protocol is at the top of client.mjs). Its stdin and stdout are FIFOs
// in the test's temporary directory (testrig.StartProcess hands the child
// only a log file); its stderr is a log file whose tail is written to the
// test log when the test fails.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// jsClientLifetime bounds every client process (client.mjs exits by itself
// after it); $JSCLIENT_MAX_LIFETIME overrides it.
const jsClientLifetime = 5 * time.Minute

// jsCallTimeout bounds a command that has no timeout of its own.
const jsCallTimeout = 45 * time.Second

var jsClientInstall struct {
	once sync.Once
	dir  string
	err  error
}

// jsClientDir returns the absolute e2e/jsclient directory once its npm
// packages are installed: `npm ci` runs (once per test binary, under a flock
// shared with other test binaries) when node_modules has no stamp newer than
// package-lock.json, the same rule as `make jsclient`.
func jsClientDir(t *testing.T) string {
	t.Helper()
	dir, err := installJSClientOnce()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func installJSClientOnce() (string, error) {
	jsClientInstall.once.Do(func() {
		jsClientInstall.dir, jsClientInstall.err = installJSClient()
	})
	return jsClientInstall.dir, jsClientInstall.err
}

func installJSClient() (string, error) {
	dir, err := filepath.Abs("jsclient")
	if err != nil {
		return "", err
	}
	if _, err := exec.LookPath("node"); err != nil {
		return "", fmt.Errorf("jsclient: node is not installed (Node 20 or later is needed for the E2EE tests): %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".npm-ci.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("jsclient: locking %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) //nolint:errcheck

	stamp := filepath.Join(dir, "node_modules", ".npm-ci-stamp")
	if stampNewer(stamp, filepath.Join(dir, "package-lock.json")) {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", "matrix-js-sdk", "package.json")); err == nil {
			return dir, nil
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund")
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("jsclient: npm ci in %s (make jsclient): %w\n%s", dir, err, testrig.LastLines(out.String(), 30))
	}
	if err := os.WriteFile(stamp, nil, 0o644); err != nil {
		return "", err
	}
	return dir, nil
}

// stampNewer reports whether path exists and is not older than ref.
func stampNewer(path, ref string) bool {
	pi, err := os.Stat(path)
	if err != nil {
		return false
	}
	ri, err := os.Stat(ref)
	if err != nil {
		return false
	}
	return !pi.ModTime().Before(ri.ModTime())
}

// jsClient is one client.mjs process: one Matrix device once logged in.
// Its methods call t.Fatal on failure and must be called from the test's
// goroutine; Call and TryWaitDecrypted return errors instead (Call is safe
// from any goroutine).
type jsClient struct {
	t       *testing.T
	name    string
	proc    *testrig.Process
	logPath string
	in      *os.File // the client's stdin (FIFO)

	writeMu sync.Mutex

	mu       sync.Mutex
	nextID   int
	pending  map[int]chan jsAnswer
	readDone chan struct{} // closed when stdout is closed (the client exited)
	readErr  error         // why reading stopped; valid after readDone

	// Set by Login/Register.
	UserID, DeviceID string
}

type jsAnswer struct {
	OK    bool   `json:"ok"`
	Error string `json:"error"`
	raw   json.RawMessage
}

// startJSClient starts a client process (not logged in yet); it is stopped
// when the test ends.
func startJSClient(t *testing.T) *jsClient {
	t.Helper()
	dir := jsClientDir(t)
	tmp := t.TempDir()
	inPath, outPath := filepath.Join(tmp, "stdin.fifo"), filepath.Join(tmp, "stdout.fifo")
	for _, p := range []string{inPath, outPath} {
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			t.Fatalf("jsclient: mkfifo %s: %v", p, err)
		}
	}
	// Read-write, so that opening does not wait for the reader; the client
	// sees EOF on stdin when this is closed (no writer is left).
	in, err := os.OpenFile(inPath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	c := &jsClient{t: t, name: "jsclient", logPath: filepath.Join(tmp, "jsclient.log"), in: in,
		pending: map[int]chan jsAnswer{}, readDone: make(chan struct{})}
	args := []string{"-c", `exec node "$1" "$@" <"$IN" >"$OUT"`, "sh", filepath.Join(dir, "client.mjs")}
	if os.Getenv("JSCLIENT_MAX_LIFETIME") == "" {
		args = append(args, "--max-lifetime", fmt.Sprintf("%dms", jsClientLifetime.Milliseconds()))
	}
	c.proc, err = testrig.StartProcess(testrig.ProcessOptions{
		Path:    "/bin/sh",
		Args:    args,
		Dir:     dir,
		Env:     append(os.Environ(), "IN="+inPath, "OUT="+outPath),
		LogFile: c.logPath,
	})
	if err != nil {
		in.Close()
		t.Fatal(err)
	}
	// Opening the read end waits for the client to open its stdout.
	opened := make(chan *os.File, 1)
	go func() {
		f, err := os.OpenFile(outPath, os.O_RDONLY, 0)
		if err != nil {
			f = nil
		}
		opened <- f
	}()
	var out *os.File
	select {
	case out = <-opened:
	case <-c.proc.Done():
	case <-time.After(30 * time.Second):
	}
	if out == nil {
		// Unblock the opener, if it still waits, and give up.
		if f, err := os.OpenFile(outPath, os.O_RDWR, 0); err == nil {
			f.Close()
		}
		c.proc.Kill()
		in.Close()
		t.Fatalf("jsclient did not start:\n%s", testrig.TailFile(c.logPath, 0, 40))
	}
	go c.read(out)
	t.Cleanup(func() {
		c.shutdown()
		if t.Failed() {
			t.Logf("last lines of %s (%s):\n%s", c.logPath, c.label(), testrig.TailFile(c.logPath, 0, 60))
		}
	})
	// Smoke test: node and the SDK load.
	if err := c.Call(context.Background(), "ping", nil, nil); err != nil {
		t.Fatalf("jsclient: %v\n%s", err, testrig.TailFile(c.logPath, 0, 40))
	}
	return c
}

func (c *jsClient) label() string {
	if c.UserID != "" {
		return c.UserID + " " + c.DeviceID
	}
	return c.name
}

// read dispatches the answers on the client's stdout until it closes.
func (c *jsClient) read(out *os.File) {
	defer out.Close()
	r := bufio.NewReaderSize(out, 64*1024)
	var err error
	for {
		var line []byte
		line, err = r.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			var head struct {
				ID *int `json:"id"`
			}
			if jerr := json.Unmarshal(line, &head); jerr != nil || head.ID == nil {
				c.t.Logf("jsclient %s: unexpected output: %.300s", c.label(), line)
			} else {
				var a jsAnswer
				_ = json.Unmarshal(line, &a)
				a.raw = append(json.RawMessage(nil), line...)
				c.mu.Lock()
				ch := c.pending[*head.ID]
				delete(c.pending, *head.ID)
				c.mu.Unlock()
				if ch != nil {
					ch <- a
				}
			}
		}
		if err != nil {
			break
		}
	}
	c.mu.Lock()
	c.readErr = err
	c.mu.Unlock()
	close(c.readDone)
}

// Call sends one command (args are its fields besides id and cmd) and
// decodes the answer's fields into out (if not nil). An answer with ok:false
// is an error carrying the client's message.
func (c *jsClient) Call(ctx context.Context, cmd string, args map[string]any, out any) error {
	msg := map[string]any{}
	for k, v := range args {
		msg[k] = v
	}
	c.mu.Lock()
	c.nextID++
	id := c.nextID
	ch := make(chan jsAnswer, 1)
	c.pending[id] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}()
	msg["id"], msg["cmd"] = id, cmd
	line, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	select {
	case <-c.readDone:
		return c.exitedErr(cmd)
	default:
	}
	c.writeMu.Lock()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.in.SetWriteDeadline(dl)
	} else {
		_ = c.in.SetWriteDeadline(time.Now().Add(jsCallTimeout))
	}
	_, err = c.in.Write(append(line, '\n'))
	c.writeMu.Unlock()
	if err != nil {
		return fmt.Errorf("jsclient %s: writing %s: %w", c.label(), cmd, err)
	}
	var a jsAnswer
	select {
	case a = <-ch:
	case <-ctx.Done():
		return fmt.Errorf("jsclient %s: %s: %w", c.label(), cmd, ctx.Err())
	case <-c.readDone:
		select {
		case a = <-ch:
		default:
			return c.exitedErr(cmd)
		}
	}
	if !a.OK {
		return fmt.Errorf("jsclient %s: %s: %s", c.label(), cmd, a.Error)
	}
	if out != nil {
		if err := json.Unmarshal(a.raw, out); err != nil {
			return fmt.Errorf("jsclient %s: %s: decoding %.300s: %w", c.label(), cmd, a.raw, err)
		}
	}
	return nil
}

func (c *jsClient) exitedErr(cmd string) error {
	<-c.proc.Done()
	return fmt.Errorf("jsclient %s: %s: the client exited (%v); last lines of its log:\n%s",
		c.label(), cmd, c.proc.Err(), testrig.TailFile(c.logPath, 0, 20))
}

// call is Call with a timeout, failing the test on error.
func (c *jsClient) call(timeout time.Duration, cmd string, args map[string]any, out any) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := c.Call(ctx, cmd, args, out); err != nil {
		c.t.Fatal(err)
	}
}

type jsLoginResult struct {
	UserID      string `json:"user_id"`
	DeviceID    string `json:"device_id"`
	AccessToken string `json:"access_token"`
}

// Login starts the client as an existing device (e.g. from
// testrig.Homeserver.RegisterUser) and returns after its first sync, once
// the homeserver has the device's keys.
func (c *jsClient) Login(baseURL, userID, accessToken, deviceID string) {
	c.t.Helper()
	var r jsLoginResult
	c.call(60*time.Second, "login", map[string]any{"baseUrl": baseURL, "userId": userID, "accessToken": accessToken, "deviceId": deviceID}, &r)
	c.UserID, c.DeviceID = r.UserID, r.DeviceID
}

// LoginAs is Login with a client from testrig.Homeserver.RegisterUser or
// Login (the js client takes over that device).
func (c *jsClient) LoginAs(hs *testrig.Homeserver, cli *mautrix.Client) {
	c.t.Helper()
	c.Login(hs.URL, cli.UserID.String(), cli.AccessToken, cli.DeviceID.String())
}

// Register creates an account through the client-server API
// (m.login.dummy: the homeserver must allow open registration) and starts
// the client as its device; it returns the access token.
func (c *jsClient) Register(baseURL, username, password string) string {
	c.t.Helper()
	var r jsLoginResult
	c.call(60*time.Second, "register", map[string]any{"baseUrl": baseURL, "username": username, "password": password}, &r)
	c.UserID, c.DeviceID = r.UserID, r.DeviceID
	return r.AccessToken
}

// CreateRoom creates a private room (with m.room.encryption when encrypted)
// inviting the users; it returns once the client's sync has the room.
func (c *jsClient) CreateRoom(name string, encrypted bool, invite ...string) string {
	c.t.Helper()
	var r struct {
		RoomID string `json:"room_id"`
	}
	args := map[string]any{"invite": append([]string{}, invite...), "encrypted": encrypted}
	if name != "" {
		args["name"] = name
	}
	c.call(jsCallTimeout, "createRoom", args, &r)
	return r.RoomID
}

// JoinRoom joins a room (id or alias); it returns the room id once the
// client's sync has the room as joined.
func (c *jsClient) JoinRoom(room string) string {
	c.t.Helper()
	var r struct {
		RoomID string `json:"room_id"`
	}
	c.call(jsCallTimeout, "joinRoom", map[string]any{"room": room}, &r)
	return r.RoomID
}

// WaitMember waits until the client's view of the room has user with that
// membership ("join", "invite", "leave"…).
func (c *jsClient) WaitMember(room, user, membership string, timeout time.Duration) {
	c.t.Helper()
	c.call(timeout+10*time.Second, "waitMember", map[string]any{"room": room, "user": user, "membership": membership, "timeoutMs": timeout.Milliseconds()}, nil)
}

// jsEncrypt is how a send treats encryption: jsEncryptSDK is what
// matrix-js-sdk (Element Web) does, which sends m.reaction in the clear in
// an encrypted room; jsEncryptAlways encrypts any type in an encrypted room
// (as matrix-rust-sdk clients such as Element X do); jsEncryptNever sends
// in the clear.
type jsEncrypt int

const (
	jsEncryptSDK jsEncrypt = iota
	jsEncryptAlways
	jsEncryptNever
)

func (e jsEncrypt) arg(args map[string]any) map[string]any {
	switch e {
	case jsEncryptAlways:
		args["encrypt"] = true
	case jsEncryptNever:
		args["encrypt"] = false
	}
	return args
}

// Send sends an m.room.message with this content (any msgtype, replies,
// edits, threads…), encrypted in an encrypted room; it returns the event id.
func (c *jsClient) Send(room string, content map[string]any) string {
	c.t.Helper()
	var r struct {
		EventID string `json:"event_id"`
	}
	c.call(jsCallTimeout, "send", map[string]any{"room": room, "content": content}, &r)
	return r.EventID
}

// SendEvent sends a room event of any type (e.g. m.reaction).
func (c *jsClient) SendEvent(room, eventType string, content map[string]any, enc jsEncrypt) string {
	c.t.Helper()
	var r struct {
		EventID string `json:"event_id"`
	}
	c.call(jsCallTimeout, "sendEvent", enc.arg(map[string]any{"room": room, "type": eventType, "content": content}), &r)
	return r.EventID
}

// jsUpload is an encrypted attachment that was sent.
type jsUpload struct {
	EventID string         `json:"event_id"`
	MXC     string         `json:"mxc"`
	File    map[string]any `json:"file"` // the message's `file` (EncryptedFile)
}

// UploadFile encrypts data as a Matrix encrypted attachment, uploads the
// ciphertext and sends an m.file message carrying `file`.
func (c *jsClient) UploadFile(room, name, mimetype string, data []byte) jsUpload {
	c.t.Helper()
	var r jsUpload
	c.call(jsCallTimeout, "uploadFile", map[string]any{"room": room, "name": name, "mimetype": mimetype,
		"dataBase64": base64.StdEncoding.EncodeToString(data)}, &r)
	return r
}

// DownloadDecrypt downloads an encrypted attachment (an EncryptedFile, the
// `file` of a message), checks its hash and decrypts it.
func (c *jsClient) DownloadDecrypt(file map[string]any) []byte {
	c.t.Helper()
	var r struct {
		DataBase64 string `json:"dataBase64"`
	}
	c.call(jsCallTimeout, "downloadDecrypt", map[string]any{"file": file}, &r)
	data, err := base64.StdEncoding.DecodeString(r.DataBase64)
	if err != nil {
		c.t.Fatal(err)
	}
	return data
}

// jsWait selects the event WaitDecrypted waits for; empty fields match
// anything.
type jsWait struct {
	Room, Sender, EventID, Type, BodyContains, RelType string
	// AllowClear accepts an event that arrived unencrypted (wire_type is
	// then its own type); otherwise such an event fails the wait at once.
	AllowClear bool
	Timeout    time.Duration // default 30 s
}

// jsEvent is a room event as the client decrypted it.
type jsEvent struct {
	EventID  string         `json:"event_id"`
	RoomID   string         `json:"room_id"`
	Sender   string         `json:"sender"`
	Type     string         `json:"type"`      // the clear type
	WireType string         `json:"wire_type"` // m.room.encrypted when it was encrypted
	Content  map[string]any `json:"content"`   // the clear, unedited content
	// WireRelatesTo is m.relates_to of the wire content (outside the
	// ciphertext), if any.
	WireRelatesTo  map[string]any `json:"wire_relates_to"`
	OriginServerTS int64          `json:"origin_server_ts"`
	EncryptionInfo *struct {
		ShieldColour string  `json:"shield_colour"`
		ShieldReason *string `json:"shield_reason"`
	} `json:"encryption_info"`
}

// TryWaitDecrypted waits for the first event since the client started that
// matches; an error says "undecryptable: …" when only events the client
// could not decrypt matched, "not encrypted: …" when a match arrived in the
// clear (without AllowClear), else "timeout: …".
func (c *jsClient) TryWaitDecrypted(w jsWait) (jsEvent, error) {
	if w.Timeout == 0 {
		w.Timeout = 30 * time.Second
	}
	args := map[string]any{"timeoutMs": w.Timeout.Milliseconds(), "allowClear": w.AllowClear}
	for k, v := range map[string]string{"room": w.Room, "sender": w.Sender, "eventId": w.EventID, "type": w.Type,
		"bodyContains": w.BodyContains, "relType": w.RelType} {
		if v != "" {
			args[k] = v
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), w.Timeout+10*time.Second)
	defer cancel()
	var ev jsEvent
	err := c.Call(ctx, "waitDecrypted", args, &ev)
	return ev, err
}

// WaitDecrypted is TryWaitDecrypted failing the test on error.
func (c *jsClient) WaitDecrypted(w jsWait) jsEvent {
	c.t.Helper()
	ev, err := c.TryWaitDecrypted(w)
	if err != nil {
		c.t.Fatal(err)
	}
	return ev
}

// Stop stops the client (stopClient) and waits for the process to exit.
func (c *jsClient) Stop() {
	c.t.Helper()
	if err := c.stop(); err != nil {
		c.t.Error(err)
	}
}

func (c *jsClient) stop() error {
	if !c.proc.Exited() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := c.Call(ctx, "stop", nil, nil)
		cancel()
		if err != nil && !c.proc.Exited() {
			return errors.Join(err, c.proc.Stop(5*time.Second))
		}
	}
	select {
	case <-c.proc.Done():
	case <-time.After(10 * time.Second):
		return c.proc.Stop(5 * time.Second)
	}
	if err := c.proc.Err(); err != nil {
		return fmt.Errorf("jsclient %s exited with %v", c.label(), err)
	}
	return nil
}

// shutdown ends the process however it is doing: closing stdin makes the
// client exit; SIGTERM, then SIGKILL, if it does not.
func (c *jsClient) shutdown() {
	c.in.Close()
	select {
	case <-c.proc.Done():
	case <-time.After(5 * time.Second):
		_ = c.proc.Stop(5 * time.Second)
	}
	<-c.readDone
}

// ---- the self-check ----

// The harness itself, without the bridge: two js clients on Synapse, in an
// encrypted room, exchange text, HTML, a reply, an edit, reactions and an
// encrypted file, and each arrives decrypted with its content, having been
// encrypted on the wire (and a reaction sent as matrix-js-sdk sends it, in
// the clear, is recognised as clear).
func TestJSClientE2EESelfCheck(t *testing.T) {
	began := time.Now()
	ctx := context.Background()
	var alice, bob *jsClient
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // npm ci (if needed) while Synapse starts
		defer wg.Done()
		_, _ = installJSClientOnce()
	}()
	hs := testrig.StartTestHomeserver(t, testrig.HomeserverOptions{
		Kind:         testrig.Synapse,
		ServerName:   serverName,
		SharedSecret: homeserverSecret,
		RateLimits:   busyHumans,
	})
	wg.Wait()
	var aliceHTTP *mautrix.Client // alice's account, for a plain download
	register := func(localpart string) *jsClient {
		cli, err := hs.RegisterUser(ctx, localpart, "js-client-password", false)
		if err != nil {
			t.Fatal(err)
		}
		if aliceHTTP == nil {
			aliceHTTP = cli
		}
		c := startJSClient(t)
		c.LoginAs(hs, cli)
		return c
	}
	alice, bob = register("alice_js"), register("bob_js")
	t.Logf("Synapse and two js clients ready in %v", time.Since(began).Round(time.Millisecond))

	room := alice.CreateRoom("js self-check", true, bob.UserID)
	if got := bob.JoinRoom(room); got != room {
		t.Fatalf("bob joined %s, not %s", got, room)
	}
	alice.WaitMember(room, bob.UserID, "join", 20*time.Second)

	// received waits for bob to decrypt alice's event and checks that it
	// was encrypted on the wire.
	received := func(what, eventID string) jsEvent {
		t.Helper()
		ev := bob.WaitDecrypted(jsWait{Room: room, Sender: alice.UserID, EventID: eventID, Timeout: 20 * time.Second})
		if ev.WireType != "m.room.encrypted" || ev.EventID != eventID || ev.RoomID != room || ev.Sender != alice.UserID {
			t.Errorf("%s: got %s %s in %s from %s on the wire as %q; want encrypted", what, ev.Type, ev.EventID, ev.RoomID, ev.Sender, ev.WireType)
		}
		return ev
	}
	str := func(m map[string]any, keys ...string) string {
		var v any = m
		for _, k := range keys {
			mm, _ := v.(map[string]any)
			v = mm[k]
		}
		s, _ := v.(string)
		return s
	}

	// Text.
	text := alice.Send(room, map[string]any{"msgtype": "m.text", "body": "hello bob, in secret"})
	ev := received("text", text)
	if ev.Type != "m.room.message" || str(ev.Content, "msgtype") != "m.text" || str(ev.Content, "body") != "hello bob, in secret" {
		t.Errorf("text: got %s %v", ev.Type, ev.Content)
	}
	if ev.EncryptionInfo != nil {
		reason := "none"
		if ev.EncryptionInfo.ShieldReason != nil {
			reason = *ev.EncryptionInfo.ShieldReason
		}
		t.Logf("bob's shield for alice's message: %s (%s)", ev.EncryptionInfo.ShieldColour, reason)
	}

	// HTML.
	html := alice.Send(room, map[string]any{"msgtype": "m.text", "body": "**bold** move",
		"format": "org.matrix.custom.html", "formatted_body": "<strong>bold</strong> move"})
	ev = received("html", html)
	if str(ev.Content, "format") != "org.matrix.custom.html" || str(ev.Content, "formatted_body") != "<strong>bold</strong> move" || str(ev.Content, "body") != "**bold** move" {
		t.Errorf("html: got %v", ev.Content)
	}

	// A reply.
	reply := alice.Send(room, map[string]any{"msgtype": "m.text", "body": "replying to myself",
		"m.relates_to": map[string]any{"m.in_reply_to": map[string]any{"event_id": text}}})
	ev = received("reply", reply)
	if str(ev.Content, "m.relates_to", "m.in_reply_to", "event_id") != text || str(ev.Content, "body") != "replying to myself" {
		t.Errorf("reply: got %v", ev.Content)
	}

	// An edit.
	edit := alice.Send(room, map[string]any{"msgtype": "m.text", "body": "* hello bob, edited",
		"m.new_content": map[string]any{"msgtype": "m.text", "body": "hello bob, edited"},
		"m.relates_to":  map[string]any{"rel_type": "m.replace", "event_id": text}})
	ev = received("edit", edit)
	if str(ev.Content, "m.new_content", "body") != "hello bob, edited" || str(ev.Content, "m.relates_to", "rel_type") != "m.replace" ||
		str(ev.Content, "m.relates_to", "event_id") != text {
		t.Errorf("edit: got %v", ev.Content)
	}
	if str(ev.WireRelatesTo, "rel_type") != "m.replace" || str(ev.WireRelatesTo, "event_id") != text {
		t.Errorf("edit: the wire content's m.relates_to is %v; want the m.replace of %s in the clear", ev.WireRelatesTo, text)
	}

	// A reaction, encrypted (as matrix-rust-sdk clients send it).
	reaction := alice.SendEvent(room, "m.reaction", map[string]any{
		"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": text, "key": "👍"}}, jsEncryptAlways)
	ev = received("reaction", reaction)
	if ev.Type != "m.reaction" || str(ev.Content, "m.relates_to", "rel_type") != "m.annotation" ||
		str(ev.Content, "m.relates_to", "key") != "👍" || str(ev.Content, "m.relates_to", "event_id") != text {
		t.Errorf("reaction: got %s %v", ev.Type, ev.Content)
	}
	// A reaction as matrix-js-sdk (Element Web) sends it: in the clear,
	// even in an encrypted room. The harness tells: without AllowClear the
	// wait fails, with it wire_type is m.reaction.
	clearReaction := alice.SendEvent(room, "m.reaction", map[string]any{
		"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": html, "key": "🎉"}}, jsEncryptSDK)
	if _, err := bob.TryWaitDecrypted(jsWait{Room: room, EventID: clearReaction, Timeout: 20 * time.Second}); err == nil || !strings.Contains(err.Error(), "not encrypted") {
		t.Errorf("a clear reaction waited for as encrypted: got %v; want a not-encrypted error", err)
	}
	ev = bob.WaitDecrypted(jsWait{Room: room, EventID: clearReaction, AllowClear: true, Timeout: 5 * time.Second})
	if ev.WireType != "m.reaction" || str(ev.Content, "m.relates_to", "key") != "🎉" {
		t.Errorf("clear reaction: got %s on the wire as %s, %v", ev.Type, ev.WireType, ev.Content)
	}

	// An encrypted file.
	data := make([]byte, 70_000) // more than a pipe's buffer, not a multiple of 16
	for i := range data {
		data[i] = byte(i*7 + i/251)
	}
	up := alice.UploadFile(room, "report.bin", "application/octet-stream", data)
	ev = received("file", up.EventID)
	file, _ := ev.Content["file"].(map[string]any)
	if str(ev.Content, "msgtype") != "m.file" || str(ev.Content, "body") != "report.bin" || ev.Content["url"] != nil ||
		file == nil || str(file, "url") != up.MXC || str(file, "v") != "v2" || str(file, "key", "alg") != "A256CTR" ||
		str(file, "hashes", "sha256") == "" || str(file, "iv") == "" {
		t.Errorf("file: got %v", ev.Content)
	}
	if file != nil {
		if got := bob.DownloadDecrypt(file); !bytes.Equal(got, data) {
			t.Errorf("file: bob decrypted %d bytes that differ from the %d alice sent", len(got), len(data))
		}
		// What the homeserver stores is ciphertext.
		stored := downloadRaw(t, hs, aliceHTTP.AccessToken, up.MXC)
		if len(stored) != len(data) || bytes.Equal(stored, data) {
			t.Errorf("file: the homeserver holds %d bytes, equal to the plaintext: %v", len(stored), bytes.Equal(stored, data))
		}
	}

	// And the other way, after the edit: bob answers, alice decrypts.
	answer := bob.Send(room, map[string]any{"msgtype": "m.text", "body": "got it all"})
	ev = alice.WaitDecrypted(jsWait{Room: room, Sender: bob.UserID, BodyContains: "got it", Timeout: 20 * time.Second})
	if ev.EventID != answer || ev.WireType != "m.room.encrypted" {
		t.Errorf("bob's answer: got %s as %s; want %s encrypted", ev.EventID, ev.WireType, answer)
	}

	// A clear room is reported as such.
	clearRoom := alice.CreateRoom("clear", false, bob.UserID)
	bob.JoinRoom(clearRoom)
	plain := alice.Send(clearRoom, map[string]any{"msgtype": "m.text", "body": "nothing to hide"})
	if _, err := bob.TryWaitDecrypted(jsWait{Room: clearRoom, EventID: plain, Timeout: 20 * time.Second}); err == nil || !strings.Contains(err.Error(), "not encrypted") {
		t.Errorf("a message in a clear room waited for as encrypted: got %v; want a not-encrypted error", err)
	}

	// A device that joins later has no keys for what was sent before: the
	// wait reports it undecryptable (at its timeout), not a timeout.
	carol := register("carol_js")
	inviteAndJoin(t, aliceHTTP, room, carol)
	if _, err := carol.TryWaitDecrypted(jsWait{Room: room, EventID: answer, Timeout: 3 * time.Second}); err == nil || !strings.Contains(err.Error(), "undecryptable") {
		t.Errorf("an event sent before carol joined: got %v; want an undecryptable error", err)
	} else {
		t.Logf("as expected: %v", err)
	}

	alice.Stop()
	if err := alice.Call(ctx, "ping", nil, nil); err == nil || !strings.Contains(err.Error(), "exited") {
		t.Errorf("a command after stop: got %v; want an error saying the client exited", err)
	}
	bob.Stop()
	carol.Stop()
	t.Logf("self-check done in %v", time.Since(began).Round(time.Millisecond))
}

// inviteAndJoin invites the js client into the room (as inviter) and joins.
func inviteAndJoin(t *testing.T, inviter *mautrix.Client, room string, c *jsClient) {
	t.Helper()
	if _, err := inviter.InviteUser(context.Background(), id.RoomID(room), &mautrix.ReqInviteUser{UserID: id.UserID(c.UserID)}); err != nil {
		t.Fatal(err)
	}
	c.JoinRoom(room)
}

// downloadRaw fetches media as the homeserver stores it (authenticated
// media).
func downloadRaw(t *testing.T, hs *testrig.Homeserver, accessToken, mxc string) []byte {
	t.Helper()
	server, mediaID, ok := strings.Cut(strings.TrimPrefix(mxc, "mxc://"), "/")
	if !ok {
		t.Fatalf("bad mxc %q", mxc)
	}
	req, err := http.NewRequest(http.MethodGet, hs.URL+"/_matrix/client/v1/media/download/"+server+"/"+mediaID, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+accessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("downloading %s: %v %d %.200s", mxc, err, resp.StatusCode, body)
	}
	return body
}
