package testrig

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// DefaultServerName is the Matrix server name the test homeserver uses unless
// HomeserverOptions.ServerName says otherwise.
const DefaultServerName = "daarion.test"

// DendriteVersion is the Dendrite release pinned in tools/dendrite/go.mod.
const DendriteVersion = "v0.15.2"

const (
	// How long Stop waits after SIGTERM before it sends SIGKILL. Dendrite
	// normally exits within a second, but its appservice sender sleeps
	// through its retry backoff (up to 64s) without looking at shutdown.
	dendriteStopTimeout = 15 * time.Second
	// How long StartHomeserver waits for /_matrix/client/versions when ctx
	// has no deadline of its own (building the binary is not counted).
	dendriteReadyTimeout = 2 * time.Minute
)

// Homeserver kinds accepted in HomeserverOptions.Kind.
const (
	Dendrite = "dendrite"
	Synapse  = "synapse"
)

// HomeserverKinds are the homeservers ForEachHomeserver runs, in order:
// Synapse, the production homeserver, first.
var HomeserverKinds = []string{Synapse, Dendrite}

// HomeserverOptions configures StartHomeserver. Only Dir is required.
type HomeserverOptions struct {
	// Kind is the homeserver: Dendrite (default) or Synapse.
	Kind string
	// PostgresDSN, when set, makes Synapse keep its data in that PostgreSQL
	// database (a lib/pq URL, e.g. from TestDatabase.URI) instead of SQLite.
	// Dendrite always uses SQLite.
	PostgresDSN string
	// RateLimits, for Synapse, replaces the default rate limits (rc_* keys)
	// with this YAML; "" keeps Synapse's defaults. Dendrite's rate limiting
	// is always off.
	RateLimits string
	// Dir is the working directory for the config, signing key, SQLite
	// databases, JetStream storage, media and the default log file. It is
	// owned by the caller (e.g. t.TempDir()); Restart reuses its contents.
	Dir string
	// ServerName is the Matrix server name; default DefaultServerName.
	ServerName string
	// RegistrationFiles are appservice registration YAML files, put in
	// app_service_api.config_files. Dendrite reads them only at start-up.
	RegistrationFiles []string
	// SharedSecret is client_api.registration_shared_secret, which RegisterUser
	// uses; default a random one.
	SharedSecret string
	// Port is the HTTP port on 127.0.0.1; 0 picks a free one. Restart keeps it.
	Port int
	// BinPath is the Dendrite binary. Default: $DENDRITE_BIN, else
	// <repo root>/bin/dendrite, built with tools/dendrite/build.sh when it is
	// missing or older than tools/dendrite/go.sum.
	BinPath string
	// LogOutput receives Dendrite's stdout and stderr (and the output of a
	// build, if one is needed). Default: Dir/dendrite.log, appended to.
	LogOutput io.Writer
	// LogLevel is Dendrite's log level: trace, debug, info (default), warn
	// or error. "debug" shows each transaction sent to an appservice.
	LogLevel string
}

// Homeserver is a running (or stopped) homeserver process (Dendrite or
// Synapse) started by StartHomeserver. Its methods are safe for concurrent use.
type Homeserver struct {
	// Kind is Dendrite or Synapse.
	Kind string
	// URL is the client-server API base URL, http://127.0.0.1:<Port>.
	URL string
	// ServerName is the Matrix server name (the part after ':' in user IDs).
	ServerName string
	// SharedSecret is the registration shared secret.
	SharedSecret string
	// Port is the loopback HTTP port; it stays the same across Restart.
	Port int
	// Dir is the working directory (see HomeserverOptions.Dir).
	Dir string
	// ConfigPath is the generated dendrite.yaml or homeserver.yaml.
	ConfigPath string
	// LogFile is the file Dendrite logs to, or "" when LogOutput was given.
	LogFile string
	// BinPath is the Dendrite binary, or the Python of Synapse's venv.
	BinPath string

	postgresDSN       string
	rateLimits        string
	logLevel          string
	registrationFiles []string
	logOutput         io.Writer // nil: LogFile
	httpClient        *http.Client

	mu   sync.Mutex
	proc *Process
}

// StartHomeserver writes a Dendrite config into opts.Dir, starts the pinned
// Dendrite on 127.0.0.1 and returns once /_matrix/client/versions answers.
//
// The homeserver is configured for tests: SQLite for every component, no
// federation, no TLS, rate limiting off, registration closed except via the
// shared secret (see RegisterUser), bcrypt at minimum cost.
//
// The Dendrite process is a direct child of this process and gets SIGKILL if
// this process dies, so a crashed test binary does not leave it running.
// Call Stop when done.
func StartHomeserver(ctx context.Context, opts HomeserverOptions) (*Homeserver, error) {
	if opts.Dir == "" {
		return nil, errors.New("testrig: HomeserverOptions.Dir is required")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	kind := opts.Kind
	if kind == "" {
		kind = Dendrite
	}
	if kind != Dendrite && kind != Synapse {
		return nil, fmt.Errorf("testrig: unknown homeserver kind %q (want %q or %q)", kind, Dendrite, Synapse)
	}
	h := &Homeserver{
		Kind:         kind,
		postgresDSN:  opts.PostgresDSN,
		rateLimits:   opts.RateLimits,
		ServerName:   opts.ServerName,
		SharedSecret: opts.SharedSecret,
		Port:         opts.Port,
		Dir:          dir,
		ConfigPath:   filepath.Join(dir, kind+".yaml"),
		logLevel:     opts.LogLevel,
		logOutput:    opts.LogOutput,
		httpClient:   &http.Client{Timeout: 30 * time.Second},
	}
	if h.ServerName == "" {
		h.ServerName = DefaultServerName
	}
	if h.SharedSecret == "" {
		h.SharedSecret = dendriteRandomHex(24)
	}
	if h.logLevel == "" {
		h.logLevel = "info"
	}
	if h.logOutput == nil {
		h.LogFile = filepath.Join(dir, kind+".log")
	}
	for _, f := range opts.RegistrationFiles {
		abs, err := filepath.Abs(f)
		if err != nil {
			return nil, err
		}
		if _, err := os.Stat(abs); err != nil {
			return nil, fmt.Errorf("testrig: appservice registration: %w", err)
		}
		h.registrationFiles = append(h.registrationFiles, abs)
	}

	if err := h.ensureSigningKey(); err != nil {
		return nil, err
	}
	buildLog, closeBuildLog, err := h.openLog()
	if err != nil {
		return nil, err
	}
	if kind == Synapse {
		h.BinPath, err = resolveSynapsePython(ctx, opts.BinPath, buildLog)
	} else {
		h.BinPath, err = resolveDendriteBin(ctx, opts.BinPath, buildLog)
	}
	closeBuildLog()
	if err != nil {
		return nil, err
	}

	// A port picked here may be taken by someone else before Dendrite binds
	// it; pick another one and try again in that case.
	autoPort := h.Port == 0
	for attempt := 1; ; attempt++ {
		if autoPort {
			if h.Port, err = FreePort(); err != nil {
				return nil, err
			}
		}
		h.URL = "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(h.Port))
		err = h.Start(ctx)
		if err == nil {
			return h, nil
		}
		if !autoPort || attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			return nil, err
		}
	}
}

// StartTestHomeserver is StartHomeserver for tests: Dir defaults to
// t.TempDir(), the homeserver is stopped in t.Cleanup, and when the test has
// failed the tail of Dendrite's log is written to the test log. It calls
// t.Fatal if the homeserver does not start.
func StartTestHomeserver(t testing.TB, opts HomeserverOptions) *Homeserver {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	h, err := StartHomeserver(ctx, opts)
	if err != nil {
		t.Fatalf("starting the homeserver (%s): %v", cmp.Or(opts.Kind, Dendrite), err)
	}
	t.Cleanup(func() {
		if err := h.Stop(); err != nil {
			t.Errorf("stopping %s: %v", h.Kind, err)
		}
		if t.Failed() && h.LogFile != "" {
			t.Logf("last lines of %s:\n%s", h.LogFile, TailFile(h.LogFile, 0, 60))
		}
	})
	return h
}

// Start starts Dendrite again after Stop, with the same config, port and
// data. It is a no-op if the homeserver is running.
func (h *Homeserver) Start(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.proc != nil {
		return nil
	}
	return h.startLocked(ctx)
}

// Stop sends SIGTERM to the Dendrite process this Homeserver started (and to
// nothing else), waits for it to exit and sends SIGKILL if it has not exited
// within 15 seconds. Data in Dir survives for Start/Restart. It is a no-op if
// the homeserver is not running.
func (h *Homeserver) Stop() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.stopLocked()
}

// Restart stops the homeserver and starts it again on the same port with the
// same config and data, returning once it answers again.
func (h *Homeserver) Restart(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	// A homeserver that had to be killed is gone all the same; its SQLite
	// databases and JetStream store recover on the next start.
	if err := h.stopLocked(); err != nil && !errors.Is(err, ErrEscalated) {
		return err
	}
	return h.startLocked(ctx)
}

// Running reports whether the Dendrite process is alive.
func (h *Homeserver) Running() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.proc != nil && !h.proc.Exited()
}

// Done returns a channel that is closed when the current Dendrite process
// exits (for whatever reason); it is already closed when none is running.
func (h *Homeserver) Done() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.proc == nil {
		closed := make(chan struct{})
		close(closed)
		return closed
	}
	return h.proc.Done()
}

// UserID returns the full Matrix user ID for a localpart on this server.
func (h *Homeserver) UserID(localpart string) id.UserID {
	return id.NewUserID(localpart, h.ServerName)
}

// RegisterUser creates an account with shared-secret registration
// (GET then POST /_synapse/admin/v1/register: a nonce, then an HMAC-SHA1 over
// nonce\0username\0password\0admin|notadmin keyed with the shared secret, as
// Synapse documents it) and returns a client logged in as the new user.
//
// Dendrite lowercases the localpart, requires a password of at least 8
// characters and does not check appservice exclusive namespaces here.
func (h *Homeserver) RegisterUser(ctx context.Context, localpart, password string, admin bool) (*mautrix.Client, error) {
	endpoint := h.URL + "/_synapse/admin/v1/register"
	var nonce struct {
		Nonce string `json:"nonce"`
	}
	if err := h.doJSON(ctx, http.MethodGet, endpoint, nil, &nonce); err != nil {
		return nil, fmt.Errorf("register %q: getting nonce: %w", localpart, err)
	}
	mac := hmac.New(sha1.New, []byte(h.SharedSecret))
	adminStr := "notadmin"
	if admin {
		adminStr = "admin"
	}
	mac.Write([]byte(strings.Join([]string{nonce.Nonce, localpart, password, adminStr}, "\x00")))
	req := map[string]any{
		"nonce":    nonce.Nonce,
		"username": localpart,
		"password": password,
		"admin":    admin,
		"mac":      hex.EncodeToString(mac.Sum(nil)),
	}
	var resp mautrix.RespRegister
	if err := h.doJSON(ctx, http.MethodPost, endpoint, req, &resp); err != nil {
		return nil, fmt.Errorf("register %q: %w", localpart, err)
	}
	if resp.AccessToken == "" || resp.UserID == "" {
		return nil, fmt.Errorf("register %q: response has no access token or user ID", localpart)
	}
	cli, err := h.Client(resp.UserID, resp.AccessToken)
	if err != nil {
		return nil, err
	}
	cli.DeviceID = resp.DeviceID
	return cli, nil
}

// Login logs an existing user in with a password (m.login.password) and
// returns a client using the new access token.
func (h *Homeserver) Login(ctx context.Context, localpart, password string) (*mautrix.Client, error) {
	cli, err := h.Client("", "")
	if err != nil {
		return nil, err
	}
	_, err = cli.Login(ctx, &mautrix.ReqLogin{
		Type:             mautrix.AuthTypePassword,
		Identifier:       mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: localpart},
		Password:         password,
		StoreCredentials: true,
	})
	if err != nil {
		return nil, fmt.Errorf("login %q: %w", localpart, err)
	}
	return cli, nil
}

// Client returns a mautrix client for this homeserver with the given
// credentials, e.g. an appservice's as_token (set cli.SetAppServiceUserID
// to masquerade).
func (h *Homeserver) Client(userID id.UserID, accessToken string) (*mautrix.Client, error) {
	cli, err := mautrix.NewClient(h.URL, userID, accessToken)
	if err != nil {
		return nil, err
	}
	cli.Client = &http.Client{Timeout: 60 * time.Second}
	// A real client waits out the homeserver's 429 (retry_after_ms), as
	// Element does: Synapse's default rate limits apply to human test users.
	cli.DefaultHTTPRetries = 5
	return cli, nil
}

// ---- process management ----

func (h *Homeserver) startLocked(ctx context.Context) error {
	if _, hasDeadline := ctx.Deadline(); !hasDeadline {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, dendriteReadyTimeout)
		defer cancel()
	}
	// Fail fast if the port is taken: otherwise another server answering
	// /versions there could pass for ours until Dendrite fails to bind.
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(h.Port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s: port %d: %w", h.Kind, h.Port, err)
	}
	l.Close()
	// Written at every start: Synapse's listener port is in its config.
	if err := h.writeConfig(); err != nil {
		return err
	}
	args := []string{"-config", h.ConfigPath, "-http-bind-address", addr}
	if h.Kind == Synapse {
		args = []string{"-m", "synapse.app.homeserver", "-c", h.ConfigPath}
	}
	p, err := StartProcess(ProcessOptions{
		Path: h.BinPath, Args: args, Dir: h.Dir, Env: dendriteEnv(),
		LogFile: h.LogFile, Output: h.logOutput,
	})
	if err != nil {
		return err
	}
	h.proc = p
	if err := h.waitReady(ctx, p); err != nil {
		_ = h.stopLocked()
		if h.LogFile != "" {
			err = fmt.Errorf("%w\nlast lines of %s:\n%s", err, h.LogFile, TailFile(h.LogFile, p.LogOffset(), 40))
		}
		return fmt.Errorf("%s on %s: %w", h.Kind, h.URL, err)
	}
	return nil
}

// dendriteEnv is our environment minus variables that would make Dendrite
// listen on more ports.
func dendriteEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PPROFLISTEN=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func (h *Homeserver) waitReady(ctx context.Context, p *Process) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		select {
		case <-p.Done():
			return fmt.Errorf("%s exited during start-up: %v", h.Kind, p.Err())
		case <-ctx.Done():
			return fmt.Errorf("waiting for /_matrix/client/versions: %w", ctx.Err())
		case <-tick.C:
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.URL+"/_matrix/client/versions", nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			select {
			case <-p.Done(): // someone else answered, and ours died
				return fmt.Errorf("%s exited during start-up: %v", h.Kind, p.Err())
			default:
				return nil
			}
		}
	}
}

func (h *Homeserver) stopLocked() error {
	p := h.proc
	if p == nil {
		return nil
	}
	h.proc = nil
	if err := p.Stop(dendriteStopTimeout); err != nil {
		return fmt.Errorf("%s: %w", h.Kind, err)
	}
	return nil
}

// openLog returns where a build writes: LogOutput, or LogFile appended to.
func (h *Homeserver) openLog() (io.Writer, func(), error) {
	if h.logOutput != nil {
		return h.logOutput, func() {}, nil
	}
	f, err := os.OpenFile(h.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, err
	}
	return f, func() { f.Close() }, nil
}

// ---- binary ----

// resolveDendriteBin finds the Dendrite binary: explicit, $DENDRITE_BIN, or
// <repo root>/bin/dendrite (built by tools/dendrite/build.sh if missing or
// older than tools/dendrite/go.sum).
func resolveDendriteBin(ctx context.Context, explicit string, buildLog io.Writer) (string, error) {
	for _, c := range []struct{ path, what string }{{explicit, "BinPath"}, {os.Getenv("DENDRITE_BIN"), "$DENDRITE_BIN"}} {
		if c.path == "" {
			continue
		}
		abs, err := filepath.Abs(c.path)
		if err != nil {
			return "", err
		}
		if _, err := os.Stat(abs); err != nil {
			return "", fmt.Errorf("testrig: %s: %w", c.what, err)
		}
		return abs, nil
	}
	root, err := dendriteRepoRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(root, "bin", "dendrite")
	if dendriteBinFresh(root, bin) {
		return bin, nil
	}
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "tools", "dendrite", "build.sh"))
	cmd.Dir = root
	var out bytes.Buffer
	cmd.Stdout = io.MultiWriter(&out, buildLog)
	cmd.Stderr = cmd.Stdout
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("testrig: building Dendrite with tools/dendrite/build.sh: %w\n%s", err, LastLines(out.String(), 30))
	}
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("testrig: tools/dendrite/build.sh did not produce %s", bin)
	}
	return bin, nil
}

func dendriteBinFresh(root, bin string) bool {
	bi, err := os.Stat(bin)
	if err != nil {
		return false
	}
	si, err := os.Stat(filepath.Join(root, "tools", "dendrite", "go.sum"))
	if err != nil {
		return true // nothing to compare with; use what is there
	}
	return bi.ModTime().After(si.ModTime())
}

// dendriteRepoRoot finds the repository root: from this source file's
// location when it exists (tests, go run), else by walking up from the
// working directory to the directory holding tools/dendrite/build.sh.
func dendriteRepoRoot() (string, error) {
	isRoot := func(d string) bool {
		_, err := os.Stat(filepath.Join(d, "tools", "dendrite", "build.sh"))
		return err == nil
	}
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		if d := filepath.Join(filepath.Dir(file), "..", ".."); isRoot(d) {
			return filepath.Clean(d), nil
		}
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if isRoot(d) {
			return d, nil
		}
		if d == filepath.Dir(d) {
			break
		}
	}
	return "", errors.New("testrig: no Dendrite binary: set DENDRITE_BIN or HomeserverOptions.BinPath, " +
		"or run from the repository (bash tools/dendrite/build.sh builds bin/dendrite)")
}

// ---- config ----

// ensureSigningKey writes Dir/matrix_key.pem unless it exists: an ed25519
// seed in Dendrite's PEM format (type MATRIX PRIVATE KEY, Key-ID header),
// the same as `generate-keys --private-key`.
func (h *Homeserver) ensureSigningKey() error {
	if h.Kind == Synapse {
		return h.ensureSynapseSigningKey()
	}
	path := filepath.Join(h.Dir, "matrix_key.pem")
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	seed := make([]byte, ed25519.SeedSize)
	if _, err := rand.Read(seed); err != nil {
		return err
	}
	const alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	var keyID [6]byte
	for i, b := range seed[:len(keyID)] {
		keyID[i] = alnum[int(b)%len(alnum)]
	}
	block := &pem.Block{
		Type:    "MATRIX PRIVATE KEY",
		Headers: map[string]string{"Key-ID": "ed25519:" + string(keyID[:])},
		Bytes:   seed,
	}
	return os.WriteFile(path, pem.EncodeToMemory(block), 0o600)
}

func (h *Homeserver) writeConfig() error {
	if h.Kind == Synapse {
		return h.writeSynapseConfig()
	}
	var buf bytes.Buffer
	err := dendriteConfigTemplate.Execute(&buf, map[string]any{
		"ServerName":        h.ServerName,
		"Dir":               h.Dir,
		"SharedSecret":      h.SharedSecret,
		"RegistrationFiles": h.registrationFiles,
		"LogLevel":          h.logLevel,
	})
	if err != nil {
		return err
	}
	return os.WriteFile(h.ConfigPath, buf.Bytes(), 0o600)
}

// dendriteConfigTemplate is a Dendrite v0.15.2 config (version 2). Key names
// follow dendrite-sample.yaml and `generate-config` from that release.
var dendriteConfigTemplate = template.Must(template.New("dendrite.yaml").Funcs(template.FuncMap{
	"q":    yamlQuote,
	"join": filepath.Join,
}).Parse(`# Generated by pkg/testrig for a throwaway test homeserver. Do not edit.
version: 2

global:
  server_name: {{q .ServerName}}
  private_key: {{q (join .Dir "matrix_key.pem")}}
  key_validity_period: 168h0m0s
  # No global database: every component has its own SQLite file below.
  database:
    connection_string: ""
  well_known_server_name: ""
  well_known_client_name: ""
  trusted_third_party_id_servers: []
  disable_federation: true
  presence:
    enable_inbound: false
    enable_outbound: false
  report_stats:
    enabled: false
  server_notices:
    enabled: false
    local_part: "_server"
    display_name: "Server Alerts"
    avatar_url: ""
    room_name: "Server Alerts"
  # Embedded NATS (no listener); persistent so Restart keeps appservice
  # delivery positions.
  jetstream:
    addresses: []
    storage_path: {{q (join .Dir "jetstream")}}
    topic_prefix: Dendrite
    in_memory: false
  metrics:
    enabled: false
  sentry:
    enabled: false
  dns_cache:
    enabled: false
  cache:
    max_size_estimated: 64mb
    max_age: 1h

app_service_api:
  disable_tls_validation: false
  # Only "Authorization: Bearer <hs_token>" and /_matrix/app/v1 paths.
  legacy_auth: false
  legacy_paths: false
  config_files:
{{- range .RegistrationFiles}}
    - {{q .}}
{{- else}} []
{{- end}}

client_api:
  registration_disabled: true
  registration_requires_token: false
  registration_shared_secret: {{q .SharedSecret}}
  guests_disabled: true
  enable_registration_captcha: false
  rate_limiting:
    enabled: false
    threshold: 20
    cooloff_ms: 500
    exempt_user_ids: []

federation_api:
  database:
    connection_string: {{q (printf "file:%s" (join .Dir "dendrite_federationapi.db"))}}
  send_max_retries: 16
  disable_tls_validation: false
  disable_http_keepalives: false
  # Never ask matrix.org for keys.
  key_perspectives: []
  prefer_direct_fetch: true

key_server:
  database:
    connection_string: {{q (printf "file:%s" (join .Dir "dendrite_keyserver.db"))}}

media_api:
  database:
    connection_string: {{q (printf "file:%s" (join .Dir "dendrite_mediaapi.db"))}}
  base_path: {{q (join .Dir "media")}}
  max_file_size_bytes: 10485760
  dynamic_thumbnails: false
  max_thumbnail_generators: 2
  thumbnail_sizes:
    - width: 32
      height: 32
      method: crop

room_server:
  default_room_version: "10"
  database:
    connection_string: {{q (printf "file:%s" (join .Dir "dendrite_roomserver.db"))}}

sync_api:
  database:
    connection_string: {{q (printf "file:%s" (join .Dir "dendrite_syncapi.db"))}}
  search:
    enabled: false
    index_path: {{q (join .Dir "searchindex")}}
    language: en

user_api:
  # Minimum bcrypt cost: registration and login stay fast.
  bcrypt_cost: 4
  account_database:
    connection_string: {{q (printf "file:%s" (join .Dir "dendrite_userapi.db"))}}
  auto_join_rooms: []

relay_api:
  database:
    connection_string: {{q (printf "file:%s" (join .Dir "dendrite_relayapi.db"))}}

mscs:
  mscs: []
  database:
    connection_string: {{q (printf "file:%s" (join .Dir "dendrite_mscs.db"))}}

tracing:
  enabled: false

# Everything to stdout/stderr, which HomeserverOptions.LogOutput receives.
logging:
  - type: std
    level: {{q .LogLevel}}
`))

// ---- helpers ----

// yamlQuote renders a YAML double-quoted scalar (JSON strings are valid YAML).
func yamlQuote(s string) (string, error) {
	b, err := json.Marshal(s)
	return string(b), err
}

func (h *Homeserver) doJSON(ctx context.Context, method, url string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := h.httpClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var merr mautrix.RespError
		if json.Unmarshal(b, &merr) == nil && merr.ErrCode != "" {
			return fmt.Errorf("%s %s: HTTP %d: %s: %s", method, req.URL.Path, resp.StatusCode, merr.ErrCode, merr.Err)
		}
		return fmt.Errorf("%s %s: HTTP %d: %s", method, req.URL.Path, resp.StatusCode, bytes.TrimSpace(b))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: decoding response: %w", method, req.URL.Path, err)
		}
	}
	return nil
}

func dendriteRandomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
