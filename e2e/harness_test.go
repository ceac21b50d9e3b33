// Package e2e_test runs the bridge binary against a real homeserver (the
// pinned Dendrite) and a real database, as an operator would run it.
package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/config"
	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

const (
	serverName    = "daarion.test"
	serviceSecret = "e2e-internal-service-secret"
	// homeserverSecret is the test homeserver's registration_shared_secret
	// (stackOptions.homeserver can hand it to the bridge).
	homeserverSecret = "e2e-homeserver-registration-shared-secret"
)

var bridgeBin string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "e2e-bridge-*")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	bridgeBin = filepath.Join(dir, "bridge")
	build := exec.Command("go", "build", "-tags", "goolm", "-o", bridgeBin, "../cmd/bridge")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err = build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the bridge:", err)
		return 1
	}
	return testrig.RunTests(m)
}

func freePort(t *testing.T) int {
	t.Helper()
	return testrig.FreeTestPort(t)
}

// rig names the real parts of one stack: which homeserver (testrig.Synapse
// or testrig.Dendrite) and the bridge's database.
type rig struct {
	testrig.TestDatabase
	homeserver string
}

// forEachRig runs fn as the subtests synapse/postgres, synapse/sqlite,
// dendrite/postgres and dendrite/sqlite.
func forEachRig(t *testing.T, fn func(t *testing.T, r rig)) {
	t.Helper()
	testrig.ForEachHomeserver(t, func(t *testing.T, kind string) {
		testrig.ForEachDatabase(t, func(t *testing.T, db testrig.TestDatabase) {
			fn(t, rig{TestDatabase: db, homeserver: kind})
		})
	})
}

// forEachHomeserver runs fn as the subtests synapse and dendrite, each with a
// fresh SQLite database for the bridge.
func forEachHomeserver(t *testing.T, fn func(t *testing.T, r rig)) {
	t.Helper()
	testrig.ForEachHomeserver(t, func(t *testing.T, kind string) {
		fn(t, rig{TestDatabase: testrig.NewTestDatabase(t, testrig.SQLite), homeserver: kind})
	})
}

// stack is one homeserver and one bridge process sharing a database.
type stack struct {
	t          *testing.T
	dir        string
	configPath string
	cfg        *config.Config
	hs         *testrig.Homeserver
	bridge     *bridgeProcess
	db         rig
	log        *eventlog.Log
	database   *dbutil.Database // the bridge's, for tests that count rows
	// homeserverDSN is Synapse's PostgreSQL database ("": SQLite in hs.Dir).
	homeserverDSN string
	apiURL        string
}

// stackOptions add to the bridge's config.
type stackOptions struct {
	// homeserver is YAML indented by four spaces, added under homeserver
	// (e.g. "    registration_shared_secret: " + homeserverSecret).
	homeserver string
	// internalAPI is YAML indented by four spaces, added under internal_api.
	internalAPI string
	// appservice is YAML indented by four spaces, added under appservice.
	appservice string
	// database is YAML indented by four spaces, added under database.
	database string
	// extra is YAML of further top-level sections.
	extra string
	// homeserverRateLimits replaces Synapse's default rate limits (rc_*
	// keys, YAML) for a test that needs a human to send faster than a
	// default Synapse allows; "" keeps the defaults.
	homeserverRateLimits string
	// homeserverPostgres keeps Synapse's own data in a fresh PostgreSQL
	// database instead of SQLite.
	homeserverPostgres bool
	// editRegistration, if set, rewrites the registration the bridge
	// generated before the homeserver reads it.
	editRegistration func(string) string
}

// busyHumans lets a human test user send (and join) as fast as a test needs:
// a default Synapse allows a burst of 10 messages, then one per 5 s.
const busyHumans = `rc_message:
  per_second: 1000
  burst_count: 1000`

// testReconcile is the reconcile section of a test that sets none: only
// the gap in Synapse's transaction ids triggers a reconcile. The timed ones
// (after start, hourly) would store, at a moment no test chooses, what
// Dendrite never pushes (redactions), and the tests that assert what each
// homeserver pushes would see it; reconcile_test.go turns them on.
const testReconcile = "reconcile:\n    after_start: 0s\n    interval: 0s\n"

// noPoll (stackOptions.database) keeps the bridge from polling its
// database during a test: only its wake-ups (a transaction wakes the journal
// indexer, indexed events wake the consumers and waiting syncs) move anything.
const noPoll = "    poll_interval: 1h"

func newStack(t *testing.T, tdb rig) *stack {
	t.Helper()
	return newStackWith(t, tdb, stackOptions{})
}

// newStackWith starts a homeserver and a bridge with extra config.
func newStackWith(t *testing.T, tdb rig, opts stackOptions) *stack {
	t.Helper()
	dir := t.TempDir()
	hsPort, asPort, apiPort := freePort(t), freePort(t), freePort(t)
	s := &stack{t: t, dir: dir, db: tdb, configPath: filepath.Join(dir, "config.yaml"),
		apiURL: fmt.Sprintf("http://127.0.0.1:%d", apiPort)}
	if !strings.Contains(opts.extra, "reconcile:") {
		opts.extra += "\n" + testReconcile
	}
	cfgYAML := fmt.Sprintf(`homeserver:
    url: http://127.0.0.1:%d
    server_name: %s
%s
appservice:
    url: http://127.0.0.1:%d
    listen: 127.0.0.1:%d
%s
database:
    url: %q
%s
internal_api:
    port: %d
    service_secret: %s
%s
logging:
    level: debug
%s
`, hsPort, serverName, opts.homeserver, asPort, asPort, opts.appservice, tdb.URL(), opts.database, apiPort, serviceSecret, opts.internalAPI, opts.extra)
	if err := os.WriteFile(s.configPath, []byte(cfgYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	registrationPath := filepath.Join(dir, "registration.yaml")
	if out, err := exec.Command(bridgeBin, "-g", "-c", s.configPath, "-r", registrationPath).CombinedOutput(); err != nil {
		t.Fatalf("bridge -g: %v\n%s", err, out)
	}
	if opts.homeserverPostgres {
		s.homeserverDSN = testrig.NewTestDatabase(t, testrig.Postgres).URI
	}
	if opts.editRegistration != nil {
		reg, err := os.ReadFile(registrationPath)
		if err != nil {
			t.Fatal(err)
		}
		if err = os.WriteFile(registrationPath, []byte(opts.editRegistration(string(reg))), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := config.Load(s.configPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.cfg = cfg
	s.hs = testrig.StartTestHomeserver(t, testrig.HomeserverOptions{
		Kind:              tdb.homeserver,
		RateLimits:        opts.homeserverRateLimits,
		PostgresDSN:       s.homeserverDSN,
		Dir:               filepath.Join(dir, "homeserver"),
		ServerName:        serverName,
		RegistrationFiles: []string{registrationPath},
		SharedSecret:      homeserverSecret,
		Port:              hsPort,
	})
	s.bridge = s.startBridge()
	t.Cleanup(func() {
		s.bridge.kill()
		if t.Failed() {
			var lines []string // without the access log, which a polling test fills
			for _, l := range strings.Split(s.bridge.logs(), "\n") {
				if !strings.Contains(l, `"message":"Internal API request"`) {
					lines = append(lines, l)
				}
			}
			t.Logf("last lines of the bridge's log:\n%s", tail(strings.Join(lines, "\n"), 40))
			if s.hs.Kind == testrig.Synapse && s.hs.LogFile != "" {
				var sent []string // what Synapse sent the bridge, and how it went
				for _, l := range strings.Split(readFile(t, s.hs.LogFile), "\n") {
					if strings.Contains(l, "/_matrix/app/") || strings.Contains(l, "synapse.appservice") {
						sent = append(sent, l)
					}
				}
				t.Logf("Synapse's appservice log:\n%s", tail(strings.Join(sent, "\n"), 60))
			}
		}
	})

	db := testrig.OpenDatabase(t, tdb.TestDatabase)
	s.log = eventlog.New(db)
	s.database = db
	return s
}

type bridgeProcess struct {
	t    *testing.T
	proc *testrig.Process
}

// startBridge starts the bridge binary and waits until it answers the
// homeserver's ping route.
func (s *stack) startBridge() *bridgeProcess {
	s.t.Helper()
	return s.startBridgeWith(s.configPath, s.cfg.AppService.URL)
}

// startBridgeWith starts a bridge process with another config (a second
// process on the same database) and waits until it answers on asURL.
func (s *stack) startBridgeWith(configPath, asURL string) *bridgeProcess {
	t := s.t
	t.Helper()
	logPath := filepath.Join(s.dir, fmt.Sprintf("bridge-%d.log", time.Now().UnixNano()))
	proc, err := testrig.StartProcess(testrig.ProcessOptions{Path: bridgeBin, Args: []string{"-c", configPath}, LogFile: logPath})
	if err != nil {
		t.Fatal(err)
	}
	b := &bridgeProcess{t: t, proc: proc}
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequest(http.MethodPost, asURL+"/_matrix/app/v1/ping", strings.NewReader(`{}`))
		req.Header.Set("Authorization", "Bearer "+s.cfg.AppService.HSToken)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return b
			}
		}
		select {
		case <-proc.Done():
			t.Fatalf("bridge exited during start:\n%s", b.logs())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("bridge did not come up:\n%s", b.logs())
		}
	}
}

func (b *bridgeProcess) logs() string {
	return b.proc.LogSince(0)
}

// kill sends SIGKILL: no shutdown code runs.
func (b *bridgeProcess) kill() {
	b.proc.Kill()
}

// terminate sends SIGTERM and returns the exit code.
func (b *bridgeProcess) terminate(timeout time.Duration) int {
	b.t.Helper()
	_ = b.proc.Signal(syscall.SIGTERM)
	select {
	case <-b.proc.Done():
		var exit *exec.ExitError
		if err := b.proc.Err(); errors.As(err, &exit) {
			return exit.ExitCode()
		} else if err != nil {
			return -1
		}
		return 0
	case <-time.After(timeout):
		b.kill()
		b.t.Fatalf("bridge did not stop within %s of SIGTERM", timeout)
		return -1
	}
}

// waitForLog waits until the bridge's log has a line containing text.
func (b *bridgeProcess) waitForLog(text string, timeout time.Duration) {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(b.logs(), text) {
		if time.Now().After(deadline) {
			b.t.Fatalf("bridge never logged %q:\n%s", text, b.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// botClient acts as the bridge bot with the appservice token.
func (s *stack) botClient() *mautrix.Client {
	s.t.Helper()
	cli, err := s.hs.Client(s.cfg.BotUserID(), s.cfg.AppService.ASToken)
	if err != nil {
		s.t.Fatal(err)
	}
	return cli
}

// createCityRoom makes a public room with a #city_ alias as the bot,
// retrying while the bridge is still registering its bot.
func (s *stack) createCityRoom(slug string) id.RoomID {
	s.t.Helper()
	bot := s.botClient()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := bot.CreateRoom(context.Background(), &mautrix.ReqCreateRoom{
			Preset:        "public_chat",
			RoomAliasName: "city_" + slug,
			Name:          "DAARION City — " + slug,
		})
		if err == nil {
			return resp.RoomID
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("bot could not create the room: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// humanJoins registers a human and joins the room by its alias.
func (s *stack) humanJoins(localpart string, alias id.RoomAlias) (*mautrix.Client, id.RoomID) {
	s.t.Helper()
	ctx := context.Background()
	cli, err := s.hs.RegisterUser(ctx, localpart, "correct horse battery staple", false)
	if err != nil {
		s.t.Fatal(err)
	}
	resp, err := cli.JoinRoom(ctx, alias.String(), nil)
	if err != nil {
		s.t.Fatalf("%s joining %s: %v", localpart, alias, err)
	}
	return cli, resp.RoomID
}

// eventsBy lists, from the homeserver, the ids of every event a user sent in a room.
func eventsBy(t *testing.T, cli *mautrix.Client, roomID id.RoomID) []id.EventID {
	t.Helper()
	var ids []id.EventID
	from := ""
	for {
		// Backward from the end: Dendrite refuses a forward page without a token.
		resp, err := cli.Messages(context.Background(), roomID, from, "", mautrix.DirectionBackward, nil, 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, evt := range resp.Chunk {
			if evt.Sender == cli.UserID {
				ids = append(ids, evt.ID)
			}
		}
		if resp.End == "" || len(resp.Chunk) == 0 {
			slices.Reverse(ids)
			return ids
		}
		from = resp.End
	}
}

// loggedEvents returns how many times each event id is in the bridge's log.
func (s *stack) loggedEvents() map[string]int {
	s.t.Helper()
	all, err := s.log.Read(context.Background(), 0, 1_000_000)
	if err != nil {
		s.t.Fatal(err)
	}
	seen := make(map[string]int, len(all))
	for _, e := range all {
		seen[e.EventID]++
	}
	return seen
}

// waitLogged waits until every id is in the log, then checks each is there once.
func (s *stack) waitLogged(ids []id.EventID, timeout time.Duration) map[string]int {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		seen := s.loggedEvents()
		missing := 0
		for _, evtID := range ids {
			if seen[evtID.String()] == 0 {
				missing++
			}
		}
		if missing == 0 {
			for _, evtID := range ids {
				if seen[evtID.String()] != 1 {
					s.t.Errorf("event %s is in the log %d times", evtID, seen[evtID.String()])
				}
			}
			return seen
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%d of %d events never reached the log\nbridge log:\n%s", missing, len(ids), tail(s.bridge.logs(), 40))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func sendText(t *testing.T, cli *mautrix.Client, roomID id.RoomID, body string) id.EventID {
	t.Helper()
	resp, err := cli.SendMessageEvent(context.Background(), roomID, event.EventMessage, &event.MessageEventContent{
		MsgType: event.MsgText, Body: body,
	})
	if err != nil {
		t.Fatalf("send %q: %v", body, err)
	}
	return resp.EventID
}

// countLines counts log lines containing text.
func countLines(logs, text string) int {
	return bytes.Count([]byte(logs), []byte(text))
}

func jsonDecode(resp *http.Response, v any) error {
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}
