//go:build goolm

package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/daarion/matrix-bridge/internal/benchkit"
	"github.com/daarion/matrix-bridge/pkg/clock"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

const (
	serverName = "daarion.test"
	// agentLocalpart is the agent the human invites: provisioned on the
	// invite (agents.provision_unknown), as in e2e/e2ee_test.go.
	agentLocalpart = "agent_sofia"
	agentEntity    = "agent:sofia"
	bridgeModule   = "github.com/daarion/matrix-bridge/cmd/bridge"
)

// busyHumans lifts Synapse's message rate limit (a burst of 10, then one
// per 5 s) so one human can send as fast as it can, as the e2e tests do.
const busyHumans = `rc_message:
  per_second: 1000
  burst_count: 1000`

func randomToken() string { return (rand.Text() + rand.Text())[:48] }

// buildBridge builds the bridge binary with goolm (the encryption needs it)
// into dir: the bench measures the code in this work tree, not a bin/bridge
// that may be older.
func buildBridge(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "bridge")
	build := exec.CommandContext(ctx, "go", "build", "-tags", "goolm", "-o", bin, bridgeModule)
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", bridgeModule, err, out)
	}
	return bin, nil
}

// stack is one run's parts: a fresh Synapse (its own devices and rooms, so
// the two databases' runs share nothing), the bridge as a separate process
// on a fresh database, and the client for its internal API.
type stack struct {
	db         string
	dir        string
	hs         *testrig.Homeserver
	bridge     *testrig.Process
	bridgeLog  string
	api        *testrig.APIClient
	metricsURL string
	dbURL      string // the bridge's database
}

type stackOptions struct {
	dir       string
	db        string
	bridgeBin string
	pg        *testrig.PostgresCluster // for db == postgres
	logLevel  string
}

// startStack renders the bridge's config, generates the registration with
// `bridge -g` (as an operator would), starts Synapse with it and then the
// bridge, and returns once the bridge has made its bot's encryption
// device. On error everything started is stopped again.
func startStack(ctx context.Context, opts stackOptions) (_ *stack, err error) {
	s := &stack{db: opts.db, dir: opts.dir}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if err = os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, err
	}
	ports := make([]int, 4)
	for i := range ports {
		if ports[i], err = testrig.FreePort(); err != nil {
			return nil, err
		}
	}
	hsPort, asPort, apiPort, metricsPort := ports[0], ports[1], ports[2], ports[3]
	var dbURL string
	switch opts.db {
	case testrig.SQLite:
		dbURL = "sqlite:" + testrig.SQLiteURI(filepath.Join(s.dir, "bridge.db"))
	case testrig.Postgres:
		if opts.pg == nil {
			return nil, errors.New("PostgreSQL was not started")
		}
		if dbURL, err = opts.pg.CreateDatabase(ctx, "e2eebench_"+strings.ToLower(rand.Text()[:8])); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("unknown database %q", opts.db)
	}
	s.dbURL = dbURL
	secret := randomToken()
	// The internal API's rate limit (100 req/s) is lifted so that it is not
	// what the agent's sends measure; reconciles are off so that nothing
	// timed by the bridge itself runs during a phase.
	cfgYAML := fmt.Sprintf(`homeserver:
    url: http://127.0.0.1:%d
    server_name: %s
appservice:
    url: http://127.0.0.1:%d
    listen: 127.0.0.1:%d
database:
    url: %q
internal_api:
    port: %d
    service_secret: %s
    rate_limit:
        requests_per_second: 1000000
        burst: 1000000
metrics:
    listen: 127.0.0.1:%d
encryption:
    enabled: true
    pickle_key: %s
agents:
    provision_unknown: ["sofia"]
    accept_invites_into: [any]
reconcile:
    after_start: 0s
    interval: 0s
logging:
    level: %s
`, hsPort, serverName, asPort, asPort, dbURL, apiPort, secret, metricsPort, randomToken(), opts.logLevel)
	configPath := filepath.Join(s.dir, "config.yaml")
	if err = os.WriteFile(configPath, []byte(cfgYAML), 0o600); err != nil {
		return nil, err
	}
	regPath := filepath.Join(s.dir, "registration.yaml")
	if out, err := exec.CommandContext(ctx, opts.bridgeBin, "-g", "-c", configPath, "-r", regPath).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("bridge -g: %v\n%s", err, out)
	}

	benchkit.Progress("[%s] starting Synapse %s on port %d", opts.db, testrig.SynapseVersion, hsPort)
	s.hs, err = testrig.StartHomeserver(ctx, testrig.HomeserverOptions{
		Kind:              testrig.Synapse,
		RateLimits:        busyHumans,
		Dir:               filepath.Join(s.dir, "synapse"),
		ServerName:        serverName,
		RegistrationFiles: []string{regPath},
		SharedSecret:      randomToken(),
		Port:              hsPort,
		// Synapse logs every request at info: on 2 shared cores that is
		// load the measurement does not need.
		LogLevel: "warn",
	})
	if err != nil {
		return nil, fmt.Errorf("starting Synapse: %w", err)
	}

	benchkit.Progress("[%s] starting the bridge (%s)", opts.db, opts.bridgeBin)
	s.bridgeLog = filepath.Join(s.dir, "bridge.log")
	if s.bridge, err = testrig.StartProcess(testrig.ProcessOptions{Path: opts.bridgeBin, Args: []string{"-c", configPath}, LogFile: s.bridgeLog}); err != nil {
		return nil, err
	}
	s.api = testrig.NewAPIClient(fmt.Sprintf("http://127.0.0.1:%d", apiPort), secret, 8, 60*time.Second)
	s.metricsURL = fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort)
	if err = s.waitReady(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// waitReady waits for /healthz and then for the bot's encryption device
// (made by the leader after start; an encrypted room before it would have
// no device to share keys with).
func (s *stack) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(2 * time.Minute)
	healthy := false
	for ctx.Err() == nil {
		if s.bridge.Exited() {
			return fmt.Errorf("the bridge exited during start: %v\n%s", s.bridge.Err(), s.logTail(30))
		}
		if !healthy {
			status, _, err := s.api.Call(ctx, http.MethodGet, "/healthz", nil, nil, nil)
			healthy = err == nil && status == http.StatusOK
		}
		if healthy && strings.Contains(s.bridge.LogSince(0), "Made an encryption device") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the bridge did not make its encryption device within 2m (healthy: %v)\n%s", healthy, s.logTail(30))
		}
		clock.Sleep(ctx, 100*time.Millisecond)
	}
	return ctx.Err()
}

// logTail is the end of the bridge's log.
func (s *stack) logTail(n int) string { return testrig.LastLines(s.bridge.LogSince(0), n) }

// logCount counts the bridge's log lines containing text.
func (s *stack) logCount(text string) int { return strings.Count(s.bridge.LogSince(0), text) }

// close stops the bridge (SIGTERM, then SIGKILL after 15 s) and Synapse;
// each is stopped by its own PID, nothing else.
func (s *stack) close() {
	if s.bridge != nil {
		if err := s.bridge.Stop(15 * time.Second); err != nil {
			benchkit.Progress("[%s] stopping the bridge: %v", s.db, err)
		}
		s.bridge = nil
	}
	if s.api != nil {
		s.api.Close()
	}
	if s.hs != nil {
		if err := s.hs.Stop(); err != nil {
			benchkit.Progress("[%s] stopping Synapse: %v", s.db, err)
		}
		s.hs = nil
	}
}

// subscribe subscribes the receiver to every room's DTOs.
func (s *stack) subscribe(ctx context.Context, url string) error {
	var out struct {
		ID string `json:"subscription_id"`
	}
	status, raw, err := s.api.Call(ctx, http.MethodPost, "/internal/matrix/webhook/subscribe", nil,
		map[string]string{"room_id": "*", "webhook_url": url}, &out)
	if err != nil || status != http.StatusOK || out.ID == "" {
		return fmt.Errorf("subscribing the webhook: %d %s %v", status, raw, err)
	}
	return nil
}
