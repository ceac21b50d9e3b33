package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/config"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

const (
	serverName    = "daarion.test"
	userPassword  = "correct horse battery staple"
	bridgeModule  = "github.com/daarion/matrix-bridge/cmd/bridge"
	readyTimeout  = 60 * time.Second
	setupDeadline = 5 * time.Minute
)

// options configure one soak run. Every loop the soak runs is bounded by
// these durations.
type options struct {
	Duration time.Duration // load (and chaos) time
	Seed     uint64        // 0: pick one
	Humans   int
	Agents   int
	Rooms    int
	Rate     float64 // messages per second, all producers together

	Warmup     time.Duration // before the first fault
	GapMin     time.Duration // between two faults
	GapMax     time.Duration
	FaultMin   time.Duration // how long a fault lasts
	FaultMax   time.Duration
	MaxFaults  int           // 0: no limit
	Kinds      []string      // fault kinds to draw from (default: all)
	QuietTail  time.Duration // no fault starts this close to the end of the load
	MsgTimeout time.Duration // a message still unsent after this is abandoned
	Drain      time.Duration // the longest wait for the sinks after the load
	Progress   time.Duration // how often a progress line is printed

	Dir         string // work directory ("" = a new temporary one)
	Keep        bool   // keep the work directory even when the soak passes
	BridgeBin   string // "" = build it
	DendriteBin string // "" = testrig's default
	LogLevel    string // the bridge's log level
}

func defaultOptions() options {
	return options{
		Duration: 10 * time.Minute, Humans: 3, Agents: 3, Rooms: 3, Rate: 7,
		Warmup: 10 * time.Second, GapMin: 5 * time.Second, GapMax: 20 * time.Second,
		FaultMin: time.Second, FaultMax: 5 * time.Second, QuietTail: 5 * time.Second,
		MsgTimeout: 3 * time.Minute, Drain: 5 * time.Minute, Progress: 30 * time.Second,
		LogLevel: "info",
	}
}

// soak is one run: the rig, the load, the chaos and what was observed.
type soak struct {
	opts  options
	out   io.Writer
	start time.Time

	dir        string
	configPath string
	bridgeBin  string
	cfg        *config.Config
	apiURL     string
	api        *apiClient

	pg    *testrig.PostgresCluster
	dbURL string
	hs    *testrig.Homeserver
	nats  *natsServer
	hook  *receiver

	bridgeMu     sync.Mutex
	bridge       *bridgeProc
	bridgeStarts int

	rooms  []id.RoomID
	slugs  []string
	humans []*mautrix.Client

	load  *loadStats
	chaos *chaosLog
}

func (s *soak) logf(format string, args ...any) {
	fmt.Fprintf(s.out, "[%7.1fs] %s\n", time.Since(s.start).Seconds(), fmt.Sprintf(format, args...))
}

// run does the whole soak and returns its report. An error means the rig
// itself failed (not the bridge's guarantees, which the report judges).
func run(ctx context.Context, opts options, out io.Writer) (rep *report, err error) {
	if opts.Seed == 0 {
		opts.Seed = uint64(time.Now().UnixNano())
	}
	s := &soak{opts: opts, out: out, start: time.Now(), load: newLoadStats(), chaos: &chaosLog{}}
	s.logf("chaos soak: seed %d, duration %s, %d humans + %d agents in %d rooms at %.1f msg/s",
		opts.Seed, opts.Duration, opts.Humans, opts.Agents, opts.Rooms, opts.Rate)
	if s.dir = opts.Dir; s.dir == "" {
		if s.dir, err = os.MkdirTemp("", "soak-*"); err != nil {
			return nil, err
		}
	} else if err = os.MkdirAll(s.dir, 0o755); err != nil {
		return nil, err
	}
	s.logf("work directory %s", s.dir)
	defer func() {
		s.teardown()
		if err == nil && rep.ok() && !opts.Keep {
			_ = os.RemoveAll(s.dir)
		} else {
			s.logf("kept the work directory %s (bridge-*.log, homeserver/dendrite.log, postgres.log, report.json)", s.dir)
		}
	}()

	setupCtx, cancel := context.WithTimeout(ctx, setupDeadline)
	err = s.setup(setupCtx)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("setting up the rig: %w", err)
	}
	return s.exercise(ctx)
}

func (s *soak) setup(ctx context.Context) error {
	var err error
	if s.bridgeBin = s.opts.BridgeBin; s.bridgeBin == "" {
		s.bridgeBin = filepath.Join(s.dir, "bridge")
		s.logf("building the bridge")
		build := exec.CommandContext(ctx, "go", "build", "-o", s.bridgeBin, bridgeModule)
		if out, err := build.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s", bridgeModule, err, out)
		}
	}
	var hsPort, asPort, apiPort, natsPort int
	for _, p := range []*int{&hsPort, &asPort, &apiPort, &natsPort} {
		if *p, err = freePort(); err != nil {
			return err
		}
	}

	s.logf("starting PostgreSQL (throwaway cluster)")
	if s.pg, err = testrig.StartPostgres(ctx, s.dir); err != nil {
		return err
	}
	if s.dbURL, err = s.pg.CreateDatabase(ctx, "soak"); err != nil {
		return err
	}
	s.logf("starting NATS with JetStream on port %d", natsPort)
	if s.nats, err = startNATS(natsPort, filepath.Join(s.dir, "nats")); err != nil {
		return err
	}
	if s.hook, err = startReceiver(); err != nil {
		return err
	}

	s.configPath = filepath.Join(s.dir, "config.yaml")
	s.apiURL = fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	serviceSecret := "soak-" + randomHex(16)
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
delivery:
    nats_url: %s
    webhook_max_backoff: 1s
logging:
    level: %s
`, hsPort, serverName, asPort, asPort, s.dbURL, apiPort, serviceSecret, s.nats.url(), s.opts.LogLevel)
	if err = os.WriteFile(s.configPath, []byte(cfgYAML), 0o600); err != nil {
		return err
	}
	registrationPath := filepath.Join(s.dir, "registration.yaml")
	if out, err := exec.CommandContext(ctx, s.bridgeBin, "-g", "-c", s.configPath, "-r", registrationPath).CombinedOutput(); err != nil {
		return fmt.Errorf("bridge -g: %v\n%s", err, out)
	}
	if s.cfg, err = config.Load(s.configPath, nil); err != nil {
		return err
	}
	s.api = newAPIClient(s.apiURL, serviceSecret)

	s.logf("starting Dendrite %s on port %d", testrig.DendriteVersion, hsPort)
	s.hs, err = testrig.StartHomeserver(ctx, testrig.HomeserverOptions{
		Dir:               filepath.Join(s.dir, "homeserver"),
		ServerName:        serverName,
		RegistrationFiles: []string{registrationPath},
		SharedSecret:      "soak-" + randomHex(16),
		Port:              hsPort,
		BinPath:           s.opts.DendriteBin,
		LogLevel:          "warn",
	})
	if err != nil {
		return err
	}
	s.logf("starting the bridge")
	if err = s.startBridge(ctx); err != nil {
		return err
	}

	for i := 0; i < s.opts.Rooms; i++ {
		slug := fmt.Sprintf("soak%d", i+1)
		roomID, err := s.createCityRoom(ctx, slug)
		if err != nil {
			return err
		}
		s.rooms, s.slugs = append(s.rooms, roomID), append(s.slugs, slug)
	}
	s.logf("city rooms %s", strings.Join(s.slugs, ", "))

	var sub struct {
		ID     string `json:"subscription_id"`
		Secret string `json:"secret"`
	}
	status, body, err := s.api.call(ctx, http.MethodPost, "/internal/matrix/webhook/subscribe", nil,
		map[string]any{"room_id": "*", "webhook_url": s.hook.url}, &sub)
	if err != nil || status != http.StatusOK || sub.Secret == "" {
		return fmt.Errorf("webhook subscribe: %d %s %v", status, body, err)
	}
	s.hook.setSecret(sub.Secret)
	s.logf("webhook receiver %s subscribed to \"*\" (%s)", s.hook.url, sub.ID)

	for i := 0; i < s.opts.Humans; i++ {
		name := fmt.Sprintf("human%d", i+1)
		cli, err := s.hs.RegisterUser(ctx, name, userPassword, false)
		if err != nil {
			return err
		}
		cli.Client.Timeout = 20 * time.Second
		for _, slug := range s.slugs {
			alias := id.NewRoomAlias("city_"+slug, serverName)
			if _, err = cli.JoinRoom(ctx, alias.String(), nil); err != nil {
				return fmt.Errorf("%s joining %s: %w", name, alias, err)
			}
		}
		s.humans = append(s.humans, cli)
	}
	s.logf("%d humans registered and joined every city room", len(s.humans))
	return nil
}

// startBridge starts a bridge process and waits until it answers the
// homeserver's ping route.
func (s *soak) startBridge(ctx context.Context) error {
	s.bridgeMu.Lock()
	defer s.bridgeMu.Unlock()
	s.bridgeStarts++
	logPath := filepath.Join(s.dir, fmt.Sprintf("bridge-%02d.log", s.bridgeStarts))
	p, err := spawnBridge(s.bridgeBin, s.configPath, logPath)
	if err != nil {
		return err
	}
	s.bridge = p
	deadline := time.Now().Add(readyTimeout)
	hc := &http.Client{Timeout: 2 * time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.AppService.URL+"/_matrix/app/v1/ping", strings.NewReader(`{}`))
		req.Header.Set("Authorization", "Bearer "+s.cfg.AppService.HSToken)
		if resp, err := hc.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if p.exited() {
			return fmt.Errorf("the bridge exited during start-up (%v); log %s:\n%s", p.err, logPath, tailFile(logPath, 20))
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			p.kill()
			return fmt.Errorf("the bridge did not come up within %s; log %s:\n%s", readyTimeout, logPath, tailFile(logPath, 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *soak) currentBridge() *bridgeProc {
	s.bridgeMu.Lock()
	defer s.bridgeMu.Unlock()
	return s.bridge
}

// createCityRoom creates a city room, retrying while the bridge is still
// registering its bot with the homeserver.
func (s *soak) createCityRoom(ctx context.Context, slug string) (id.RoomID, error) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		var out struct {
			RoomID id.RoomID `json:"matrix_room_id"`
		}
		status, body, err := s.api.call(ctx, http.MethodPost, "/internal/matrix/rooms/create", nil,
			map[string]string{"slug": slug, "name": "Soak " + slug, "visibility": "public"}, &out)
		if err == nil && status == http.StatusOK && out.RoomID != "" {
			return out.RoomID, nil
		}
		if err == nil && status < 500 {
			return "", fmt.Errorf("rooms/create %s answered %d: %s", slug, status, body)
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("rooms/create %s: %d %s %v", slug, status, body, err)
		}
		if !sleepCtx(ctx, 250*time.Millisecond) {
			return "", ctx.Err()
		}
	}
}

// exercise runs the load and the chaos, drains, and judges.
func (s *soak) exercise(ctx context.Context) (*report, error) {
	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()
	loadStart := time.Now()
	stopLoad := make(chan struct{})
	var producers sync.WaitGroup
	s.startLoad(runCtx, stopLoad, &producers)

	plan := planChaos(s.opts)
	s.logf("load started; chaos plan (seed %d): %s", s.opts.Seed, plan)
	chaosDone := make(chan error, 1)
	stopChaos := make(chan struct{})
	go func() { chaosDone <- s.runChaos(runCtx, loadStart, plan, stopChaos) }()

	progress := time.NewTicker(s.opts.Progress)
	defer progress.Stop()
	endLoad := time.NewTimer(s.opts.Duration)
	defer endLoad.Stop()
	var chaosErr error
	chaosFinished := false
wait:
	for {
		select {
		case <-ctx.Done():
			close(stopLoad)
			close(stopChaos)
			cancelRun()
			producers.Wait()
			if !chaosFinished {
				<-chaosDone
			}
			return nil, ctx.Err()
		case chaosErr = <-chaosDone:
			chaosFinished = true
			if chaosErr != nil {
				close(stopLoad)
				cancelRun()
				producers.Wait()
				return nil, fmt.Errorf("chaos: %w", chaosErr)
			}
			chaosDone = nil
		case <-progress.C:
			s.logf("progress: %s", s.load.summary())
		case <-endLoad.C:
			break wait
		}
	}
	s.logf("load time over: stopping the chaos and the producers (in-flight messages finish)")
	close(stopChaos)
	close(stopLoad)
	if !chaosFinished {
		if chaosErr = <-chaosDone; chaosErr != nil {
			cancelRun()
			producers.Wait()
			return nil, fmt.Errorf("chaos: %w", chaosErr)
		}
	}
	producers.Wait()
	s.logf("load stopped: %s", s.load.summary())
	if b := s.currentBridge(); b.exited() {
		return nil, fmt.Errorf("the bridge is not running at the end of the load (%v)", b.err)
	}

	obs, err := newObserver(ctx, s.dbURL, s.nats.url())
	if err != nil {
		return nil, err
	}
	defer obs.close()
	drainStart := time.Now()
	drained := s.drain(ctx, obs)
	drainTook := time.Since(drainStart)
	return s.judge(ctx, obs, drained, drainTook)
}

// drain waits, bounded by opts.Drain, until every produced message is in
// the log and at both sinks, and the consumers are at the log's head.
func (s *soak) drain(ctx context.Context, obs *observer) bool {
	produced := s.load.producedIDs()
	deadline := time.Now().Add(s.opts.Drain)
	lastReport := time.Now()
	for {
		st := obs.poll(ctx, produced, s.hook)
		if st.done() {
			s.logf("drained: every produced message is in the log and at both sinks; consumers at the head")
			return true
		}
		if time.Now().After(deadline) {
			s.logf("drain timed out after %s: %s", s.opts.Drain, st)
			return false
		}
		if time.Since(lastReport) >= 10*time.Second {
			s.logf("draining: %s", st)
			lastReport = time.Now()
		}
		if !sleepCtx(ctx, time.Second) {
			return false
		}
	}
}

// teardown stops everything the soak started, each bounded.
func (s *soak) teardown() {
	if b := s.currentBridge(); b != nil && !b.exited() {
		if !b.terminate(30 * time.Second) {
			s.logf("the bridge did not stop cleanly on SIGTERM (%v)", b.err)
		}
	}
	if s.hs != nil {
		if err := s.hs.Stop(); err != nil {
			s.logf("stopping Dendrite: %v", err)
		}
	}
	if s.hook != nil {
		s.hook.close()
	}
	if s.nats != nil {
		s.nats.stop()
	}
	if s.pg != nil {
		// Keep the server's log with the bridge's; Remove deletes the cluster.
		if data, err := os.ReadFile(s.pg.LogFile); err == nil {
			_ = os.WriteFile(filepath.Join(s.dir, "postgres.log"), data, 0o644)
		}
		if err := s.pg.Remove(); err != nil {
			s.logf("removing PostgreSQL: %v", err)
		}
	}
}

func tailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
