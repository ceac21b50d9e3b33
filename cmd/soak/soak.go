package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/database"
	"github.com/daarion/matrix-bridge/pkg/clock"
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
	// FinishPlan: when the load time is over with planned faults still to
	// come (slow repairs made the plan slip), the load goes on until they
	// are done, for at most this long (0: the rest of the plan is dropped).
	FinishPlan time.Duration
	Progress   time.Duration // how often a progress line is printed

	// FloodInvites is how many unknown @agent_* users one invite-flood
	// fault invites.
	FloodInvites int
	// Poison is the kind of poison event: poisonPrivate or poisonMissing.
	Poison string
	// SlowEvery: the slow receiver holds the first request of every
	// SlowEvery-th DTO past the attempt timeout (0: no slow receiver).
	SlowEvery int
	// WebhookTimeout is the bridge's attempt timeout (delivery.webhook_timeout_ms).
	WebhookTimeout time.Duration
	// WebhookWorkers is the bridge's delivery.webhook_workers: fewer than
	// the slow receiver's queues, so that fairness matters.
	WebhookWorkers int

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
		FloodInvites: 200, Poison: poisonPrivate, SlowEvery: 10, WebhookTimeout: time.Second, WebhookWorkers: 2,
		LogLevel: "info",
	}
}

// soak is one run: the rig, the load, the chaos and what was observed.
type soak struct {
	opts      options
	out       io.Writer
	start     time.Time
	loadStart time.Time

	dir       string
	bridgeBin string
	cfg       *config.Config
	apiURL    string // the front door's
	api       *testrig.APIClient

	pg    *testrig.PostgresCluster
	dbURL string
	db    *dbutil.Database // the soak's own reads during the run (lease, cursors)
	hs    *testrig.Homeserver
	nats  *testrig.NATSServer
	hook  *receiver // the normal subscriber
	slow  *receiver // the slow one, nil without
	front *front

	bridgeMu     sync.Mutex
	slots        []*slot // two bridge processes on the one database
	bridgeStarts int

	rooms    []id.RoomID
	slugs    []string
	humans   []*mautrix.Client
	bot      *mautrix.Client // the bridge's bot (the appservice token), for the poison
	outsider *mautrix.Client // a human in no city room: the invite floods, the poisons' private rooms

	load  *loadStats
	chaos *chaosLog
	inj   *injections
}

// slot is one of the bridge processes: its config, its own listeners, and
// the process running there now (started again in place after a kill).
type slot struct {
	name       string
	index      int
	configPath string
	asURL      string // its own appservice listener
	apiURL     string // its own internal API
	proc       *testrig.Process
	starts     int
}

func (s *soak) hooks() []*receiver {
	if s.slow == nil {
		return []*receiver{s.hook}
	}
	return []*receiver{s.hook, s.slow}
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
	s := &soak{opts: opts, out: out, start: time.Now(), load: newLoadStats(), chaos: &chaosLog{}, inj: &injections{}}
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
		build := exec.CommandContext(ctx, "go", "build", "-tags", "goolm", "-o", s.bridgeBin, bridgeModule)
		if out, err := build.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s", bridgeModule, err, out)
		}
	}
	// The front door's ports (what the homeserver and the agents use), each
	// process's own, the homeserver's and NATS's.
	ports := make([]int, 8)
	for i := range ports {
		if ports[i], err = testrig.FreePort(); err != nil {
			return err
		}
	}
	hsPort, asPort, apiPort, natsPort := ports[0], ports[1], ports[2], ports[3]
	s.slots = []*slot{{name: "a", index: 0}, {name: "b", index: 1}}
	var targets []frontTarget
	for i, sl := range s.slots {
		asOwn, apiOwn := ports[4+2*i], ports[5+2*i]
		sl.configPath = filepath.Join(s.dir, "config-"+sl.name+".yaml")
		sl.asURL = fmt.Sprintf("http://127.0.0.1:%d", asOwn)
		sl.apiURL = fmt.Sprintf("http://127.0.0.1:%d", apiOwn)
		asU, _ := url.Parse(sl.asURL)
		apiU, _ := url.Parse(sl.apiURL)
		targets = append(targets, frontTarget{appservice: asU, api: apiU})
	}

	s.logf("starting PostgreSQL (throwaway cluster)")
	if s.pg, err = testrig.StartPostgres(ctx, s.dir); err != nil {
		return err
	}
	if s.dbURL, err = s.pg.CreateDatabase(ctx, "soak"); err != nil {
		return err
	}
	s.logf("starting NATS with JetStream on port %d", natsPort)
	if s.nats, err = testrig.NewNATS(testrig.NATSOptions{Port: natsPort, StoreDir: filepath.Join(s.dir, "nats")}); err != nil {
		return err
	}
	if s.hook, err = startReceiver("webhook", 0, 0); err != nil {
		return err
	}
	if s.opts.SlowEvery > 0 {
		if s.slow, err = startReceiver("webhook-slow", s.opts.SlowEvery, 2*s.opts.WebhookTimeout); err != nil {
			return err
		}
	}
	if s.front, err = startFront(asPort, apiPort, targets); err != nil {
		return err
	}

	s.apiURL = fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	serviceSecret := "soak-" + randomHex(16)
	cfgYAML := fmt.Sprintf(`homeserver:
    url: http://127.0.0.1:%d
    server_name: %s
appservice:
    url: http://127.0.0.1:%d
    listen: %s
database:
    url: %q
internal_api:
    port: %d
    service_secret: %s
delivery:
    nats_url: %s
    webhook_max_backoff: 1s
    webhook_timeout_ms: %d
    webhook_workers: %d
logging:
    level: %s
`, hsPort, serverName, asPort, strings.TrimPrefix(s.slots[0].asURL, "http://"), s.dbURL, ports[5], serviceSecret, s.nats.URL(),
		s.opts.WebhookTimeout.Milliseconds(), s.opts.WebhookWorkers, s.opts.LogLevel)
	configA := s.slots[0].configPath
	if err = os.WriteFile(configA, []byte(cfgYAML), 0o600); err != nil {
		return err
	}
	registrationPath := filepath.Join(s.dir, "registration.yaml")
	if out, err := exec.CommandContext(ctx, s.bridgeBin, "-g", "-c", configA, "-r", registrationPath).CombinedOutput(); err != nil {
		return fmt.Errorf("bridge -g: %v\n%s", err, out)
	}
	// The second process: the same config, tokens and database; its own listeners.
	data, err := os.ReadFile(configA)
	if err != nil {
		return err
	}
	cfgB := string(data)
	for _, r := range [][2]string{
		{"listen: " + strings.TrimPrefix(s.slots[0].asURL, "http://") + "\n", "listen: " + strings.TrimPrefix(s.slots[1].asURL, "http://") + "\n"},
		{fmt.Sprintf("port: %d\n", ports[5]), fmt.Sprintf("port: %d\n", ports[7])},
	} {
		if strings.Count(cfgB, r[0]) != 1 {
			return fmt.Errorf("config of the second process: %q is not in %s once", r[0], configA)
		}
		cfgB = strings.Replace(cfgB, r[0], r[1], 1)
	}
	if err = os.WriteFile(s.slots[1].configPath, []byte(cfgB), 0o600); err != nil {
		return err
	}
	if s.cfg, err = config.Load(configA, nil); err != nil {
		return err
	}
	s.api = testrig.NewAPIClient(s.apiURL, serviceSecret, 16, 30*time.Second)
	target, err := database.ParseURL(s.dbURL)
	if err != nil {
		return err
	}
	if s.db, err = dbutil.NewWithDialect(target.URI, target.Type); err != nil {
		return err
	}
	s.db.RawDB.SetMaxOpenConns(4)

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
	// a first: it takes the lease; b is the standby. The front door
	// forwards to a.
	for _, sl := range s.slots {
		s.logf("starting bridge process %s (appservice %s, internal API %s)", sl.name, sl.asURL, sl.apiURL)
		if err = s.startBridge(ctx, sl); err != nil {
			return err
		}
		if sl.index == 0 {
			if err = s.waitForLeader(ctx, sl, readyTimeout); err != nil {
				return err
			}
		}
	}
	s.logf("front door: the homeserver and the agents reach process %s through 127.0.0.1:%d and :%d", s.frontSlot().name, asPort, apiPort)
	if s.bot, err = s.hs.Client(s.cfg.BotUserID(), s.cfg.AppService.ASToken); err != nil {
		return err
	}
	s.bot.Client.Timeout = 20 * time.Second

	for i := 0; i < s.opts.Rooms; i++ {
		slug := fmt.Sprintf("soak%d", i+1)
		roomID, err := s.createCityRoom(ctx, slug)
		if err != nil {
			return err
		}
		s.rooms, s.slugs = append(s.rooms, roomID), append(s.slugs, slug)
	}
	s.logf("city rooms %s", strings.Join(s.slugs, ", "))

	for _, rc := range s.hooks() {
		var sub struct {
			ID     string `json:"subscription_id"`
			Secret string `json:"secret"`
		}
		status, body, err := s.api.Call(ctx, http.MethodPost, "/internal/matrix/webhook/subscribe", nil,
			map[string]any{"room_id": "*", "webhook_url": rc.url}, &sub)
		if err != nil || status != http.StatusOK || sub.Secret == "" {
			return fmt.Errorf("webhook subscribe: %d %s %v", status, body, err)
		}
		rc.setSecret(sub.Secret)
		extra := ""
		if rc.holdEvery > 0 {
			extra = fmt.Sprintf("; holds the first request of every %d-th DTO for %s, past the %s attempt timeout", rc.holdEvery, rc.hold, s.opts.WebhookTimeout)
		}
		s.logf("webhook receiver %s %s subscribed to \"*\" (%s)%s", rc.name, rc.url, sub.ID, extra)
	}

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
	if s.outsider, err = s.hs.RegisterUser(ctx, "outsider", userPassword, false); err != nil {
		return err
	}
	s.outsider.Client.Timeout = 20 * time.Second
	s.logf("%d humans registered and joined every city room; the outsider (floods, poisons' rooms) registered", len(s.humans))
	return nil
}

// startBridge starts the process of sl and waits until it answers the
// homeserver's ping route on its own listener.
func (s *soak) startBridge(ctx context.Context, sl *slot) error {
	s.bridgeMu.Lock()
	defer s.bridgeMu.Unlock()
	s.bridgeStarts++
	sl.starts++
	logPath := filepath.Join(s.dir, fmt.Sprintf("bridge-%s-%02d.log", sl.name, sl.starts))
	p, err := spawnBridge(s.bridgeBin, sl.configPath, logPath)
	if err != nil {
		return err
	}
	sl.proc = p
	deadline := time.Now().Add(readyTimeout)
	hc := &http.Client{Timeout: 2 * time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, sl.asURL+"/_matrix/app/v1/ping", strings.NewReader(`{}`))
		req.Header.Set("Authorization", "Bearer "+s.cfg.AppService.HSToken)
		if resp, err := hc.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if p.Exited() {
			return fmt.Errorf("bridge process %s exited during start-up (%v); log %s:\n%s", sl.name, p.Err(), logPath, testrig.TailFile(logPath, 0, 20))
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			p.Kill()
			return fmt.Errorf("bridge process %s did not come up within %s; log %s:\n%s", sl.name, readyTimeout, logPath, testrig.TailFile(logPath, 0, 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// proc is the process running in sl now.
func (s *soak) proc(sl *slot) *testrig.Process {
	s.bridgeMu.Lock()
	defer s.bridgeMu.Unlock()
	return sl.proc
}

// frontSlot is the process the front door forwards to.
func (s *soak) frontSlot() *slot {
	return s.slots[s.front.targetIndex()]
}

// createCityRoom creates a city room, retrying while the bridge is still
// registering its bot with the homeserver.
func (s *soak) createCityRoom(ctx context.Context, slug string) (id.RoomID, error) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		var out struct {
			RoomID id.RoomID `json:"matrix_room_id"`
		}
		status, body, err := s.api.Call(ctx, http.MethodPost, "/internal/matrix/rooms/create", nil,
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
		if !clock.Sleep(ctx, 250*time.Millisecond) {
			return "", ctx.Err()
		}
	}
}

// exercise runs the load and the chaos, drains, and judges.
func (s *soak) exercise(ctx context.Context) (*report, error) {
	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()
	loadStart := time.Now()
	s.loadStart = loadStart
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
	chaosFinished, extended := false, false
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
			if extended {
				break wait
			}
		case <-progress.C:
			s.logf("progress: %s", s.load.summary())
		case <-endLoad.C:
			if !chaosFinished && s.opts.FinishPlan > 0 && !extended {
				extended = true
				endLoad.Reset(s.opts.FinishPlan)
				s.logf("load time over with planned faults to come: the load goes on until they are done (at most %s)", s.opts.FinishPlan)
				continue
			}
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
	for _, sl := range s.slots {
		if p := s.proc(sl); p.Exited() {
			return nil, fmt.Errorf("bridge process %s is not running at the end of the load (%v)", sl.name, p.Err())
		}
	}

	obs, err := newObserver(ctx, s.dbURL, s.nats.URL())
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
		st := obs.poll(ctx, produced, s.hooks())
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
		if !clock.Sleep(ctx, time.Second) {
			return false
		}
	}
}

// teardown stops everything the soak started, each bounded.
func (s *soak) teardown() {
	for _, sl := range s.slots {
		if p := s.proc(sl); p != nil && !p.Exited() {
			_ = p.Signal(syscall.SIGCONT) // in case the soak stopped during a freeze
			if !terminate(p, 30*time.Second) {
				s.logf("bridge process %s did not stop cleanly on SIGTERM (%v)", sl.name, p.Err())
			}
		}
	}
	if s.front != nil {
		s.front.close()
	}
	if s.db != nil {
		_ = s.db.Close()
	}
	if s.hs != nil {
		if err := s.hs.Stop(); err != nil {
			s.logf("stopping Dendrite: %v", err)
		}
	}
	for _, rc := range []*receiver{s.hook, s.slow} {
		if rc != nil {
			rc.close()
		}
	}
	if s.nats != nil {
		s.nats.Stop()
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
