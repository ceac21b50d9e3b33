// Package bridge assembles the running bridge: database, event log, the
// homeserver-facing API, the consumers, and the start-up and shutdown order.
package bridge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	mxappservice "maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/sqlstatestore"

	"github.com/daarion/matrix-bridge/database"
	"github.com/daarion/matrix-bridge/pkg/agents"
	"github.com/daarion/matrix-bridge/pkg/appservice"
	"github.com/daarion/matrix-bridge/pkg/clock"
	"github.com/daarion/matrix-bridge/pkg/commands"
	"github.com/daarion/matrix-bridge/pkg/config"
	"github.com/daarion/matrix-bridge/pkg/consumer"
	"github.com/daarion/matrix-bridge/pkg/delivery"
	"github.com/daarion/matrix-bridge/pkg/delivery/jetstream"
	"github.com/daarion/matrix-bridge/pkg/delivery/webhook"
	"github.com/daarion/matrix-bridge/pkg/e2ee"
	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/identity"
	"github.com/daarion/matrix-bridge/pkg/internalapi"
	"github.com/daarion/matrix-bridge/pkg/leader"
	"github.com/daarion/matrix-bridge/pkg/mapping"
	"github.com/daarion/matrix-bridge/pkg/matrixstate"
	"github.com/daarion/matrix-bridge/pkg/messaging"
	"github.com/daarion/matrix-bridge/pkg/metrics"
	"github.com/daarion/matrix-bridge/pkg/reconcile"
	"github.com/daarion/matrix-bridge/pkg/registration"
	"github.com/daarion/matrix-bridge/pkg/rooms"
	"github.com/daarion/matrix-bridge/pkg/syncapi"
)

// sinkBatch is the DTO sinks' batch: one cursor commit, one origins query
// and one outbox insert (or one wait for JetStream acks) per 500 events.
var sinkBatch = consumer.Options{BatchSize: 500}

// Version is set at build time with -ldflags.
var Version = "dev"

// Bridge is one running bridge process.
type Bridge struct {
	Config *config.Config
	Log    zerolog.Logger

	DB *dbutil.Database
	// mautrixDB is what mautrix's stores use (database.OpenForMautrix): DB
	// itself on SQLite, a pool of its own on PostgreSQL.
	mautrixDB *dbutil.Database
	EventLog  *eventlog.Log
	AS        *mxappservice.AppService
	Parked    *consumer.ParkedStore
	// consumers are the consumers' names, for the API (set once in Start).
	consumers atomic.Pointer[[]string]
	// status is the latest status sample (sampleStatus).
	status statusSample
	// The stores the retention job prunes.
	idempotency  *messaging.IdempotencyStore
	stateStore   *sqlstatestore.SQLStateStore
	webhookStore *webhook.Store
	Consumers    *consumer.Group
	Rooms        *rooms.Service
	Agents       *agents.Service
	Messaging    *messaging.Service
	DTOs         *delivery.DTOSource
	Webhooks     *webhook.Deliverer
	NATS         *jetstream.Sink // nil when NATS_URL is unset
	Leader       *leader.Elector
	Sync         *syncapi.Handler
	Reconciler   *reconcile.Reconciler
	E2EE         *e2ee.Service
	Metrics      *metrics.Metrics
	InternalAPI  *internalapi.API

	asListener  net.Listener
	asServer    *http.Server
	apiListener net.Listener
	apiServer   *http.Server
	metricsSrv  *http.Server
	serving     sync.WaitGroup

	asHandler  http.Handler
	background sync.WaitGroup
	// runCtx is what the bridge runs under, from New until Stop (cancel).
	runCtx context.Context
	cancel context.CancelFunc
}

// New builds a bridge: it opens the database, brings its schema up to date,
// builds every part and registers the routes. Nothing listens and nothing
// runs yet (but the NATS sink, which connects in the background): Start does
// that. On an error, what New opened is closed again.
func New(ctx context.Context, cfg *config.Config, log zerolog.Logger) (*Bridge, error) {
	b := &Bridge{Config: cfg, Log: log}
	// The parts' background work lives as long as the bridge, not ctx.
	b.runCtx, b.cancel = context.WithCancel(b.Log.WithContext(context.WithoutCancel(ctx)))
	if err := b.build(b.Log.WithContext(ctx)); err != nil {
		_ = b.Stop(context.WithoutCancel(ctx))
		return nil, err
	}
	return b, nil
}

func (b *Bridge) build(ctx context.Context) error {
	cfg := b.Config

	target, err := database.ParseURL(cfg.Database.URL)
	if err != nil {
		return fmt.Errorf("database.url: %w", err)
	}
	start := time.Now()
	pool := database.PoolOptions{
		MaxOpenConns: cfg.Database.MaxOpenConns,
		MaxIdleConns: cfg.Database.MaxIdleConns,
	}
	if b.DB, err = database.Open(ctx, target, pool, b.Log); err != nil {
		return err
	}
	if b.mautrixDB, err = database.OpenForMautrix(ctx, target, b.DB, pool, b.Log); err != nil {
		return err
	}
	b.Log.Info().Str("dialect", target.Dialect()).Dur("duration", time.Since(start)).Msg("Database ready")
	b.EventLog = eventlog.New(b.DB)

	// Membership and power levels live in the database, shared by every
	// process and fed from the log, not in each process's memory.
	if b.stateStore, err = matrixstate.Open(ctx, b.mautrixDB, b.Log); err != nil {
		return err
	}
	b.AS, err = mxappservice.CreateFull(mxappservice.CreateOpts{
		Registration:     registration.FromConfig(cfg),
		HomeserverDomain: cfg.Homeserver.ServerName,
		HomeserverURL:    cfg.Homeserver.URL,
		StateStore:       b.stateStore,
	})
	if err != nil {
		return fmt.Errorf("failed to set up the appservice client: %w", err)
	}
	b.AS.Log = b.Log.With().Str("component", "mautrix").Logger()
	b.Metrics = metrics.New()
	b.AS.HTTPClient.Transport = b.Metrics.InstrumentTransport(b.AS.HTTPClient.Transport)
	// Fail fast: the internal API answers 502/503 promptly when the
	// homeserver is down, and the callers that should retry do so themselves.
	b.AS.DefaultHTTPRetries = 0

	b.Rooms, err = rooms.NewService(rooms.NewStore(b.DB), b.AS.BotIntent(), cfg.Homeserver.ServerName, cfg.Rooms)
	if err != nil {
		return err
	}
	// Known before anything is indexed, mapped or synced.
	if err = b.Rooms.Confidential().Load(ctx); err != nil {
		return err
	}
	mapper := identity.NewMapper(cfg)
	b.Agents = agents.NewService(agents.NewStore(b.DB), b.Rooms.Store(), b.AS, mapper, cfg.Agents)
	if cfg.Encryption.Enabled && !e2ee.Built {
		return errors.New("encryption.enabled: this binary was built without end-to-bridge encryption (build it with -tags goolm)")
	}
	e2eeOpts := e2ee.Options{
		Config: cfg.Encryption, AppService: b.AS, DB: b.mautrixDB, State: b.stateStore, Log: b.EventLog,
		OwnUser: func(userID id.UserID) bool {
			kind := mapper.FromMatrix(userID).Kind
			return kind == identity.KindAgent || kind == identity.KindBridge
		},
		Confidential: b.Rooms.Confidential().Is, Strip: mapping.StripContent,
		Logger: b.Log.With().Str("component", "e2ee").Logger(),
	}
	if cfg.Encryption.Enabled {
		e2eeOpts.Observer = b.Metrics.E2EE()
	}
	b.E2EE = e2ee.New(e2eeOpts)
	if b.E2EE.Enabled() {
		if err = b.E2EE.Upgrade(ctx); err != nil {
			return err
		}
		b.Agents.SetDevices(b.E2EE)
	}
	b.idempotency = messaging.NewIdempotencyStore(b.DB)
	b.Messaging = messaging.NewService(messaging.Options{
		AppService:  b.AS,
		Agents:      b.Agents,
		Rooms:       b.Rooms,
		Mapper:      mapper,
		Idempotency: b.idempotency,
		Config:      cfg,
		Encryption:  b.E2EE,
	})
	b.InternalAPI, err = internalapi.New(internalapi.Options{
		Services:     cfg.InternalAPI.Services,
		Secret:       cfg.InternalAPI.ServiceSecret,
		RateLimit:    cfg.InternalAPI.RateLimit,
		MaxBodyBytes: cfg.InternalAPI.MaxBodyBytes,
		Observer:     b.Metrics,
		Logger:       b.Log.With().Str("component", "internal_api").Logger(),
	})
	if err != nil {
		return fmt.Errorf("failed to set up the internal API: %w", err)
	}
	b.DTOs = delivery.NewDTOSource(mapper, b.Rooms.Store(), b.idempotency, b.EventLog)
	b.DTOs.SetConfidential(b.Rooms.Confidential().Is)
	webhookStore := webhook.NewStore(b.DB)
	b.webhookStore = webhookStore
	policy := webhook.Policy{AllowLinkLocal: cfg.Delivery.WebhookAllowLinkLocal, MaxPerService: cfg.Delivery.MaxSubscriptionsPerService}
	b.Webhooks = webhook.NewDeliverer(webhookStore, webhook.DelivererOptions{
		Workers:     cfg.Delivery.WebhookWorkers,
		Timeout:     cfg.Delivery.WebhookTimeout(),
		RetryWindow: cfg.Delivery.RetryWindow(),
		MaxBackoff:  cfg.Delivery.MaxBackoff(),
		Policy:      policy,
		UserAgent:   "daarion-matrix-bridge/" + Version,
	})
	webhook.NewAPI(webhookStore, policy, b.Webhooks).RegisterRoutes(b.InternalAPI)
	b.InternalAPI.HandlePublic(http.MethodGet, "/healthz", b.handleHealth)
	b.Rooms.RegisterRoutes(b.InternalAPI)
	b.Messaging.RegisterRoutes(b.InternalAPI)
	b.Sync = syncapi.New(b.EventLog, syncapi.Options{
		MaxTimeout:   cfg.Delivery.SyncTimeout(),
		PollInterval: cfg.Database.Poll(),
		Confidential: b.Rooms.Confidential().Is,
	})
	b.Sync.RegisterRoutes(b.InternalAPI)
	b.Messaging.RegisterMediaRoutes(b.InternalAPI)
	b.Agents.RegisterRoutes(b.InternalAPI, cfg.Homeserver)
	// An event a consumer fails on for good is parked, not retried for ever.
	b.Parked = consumer.NewParkedStore(b.DB)
	consumer.RegisterParkedRoutes(b.InternalAPI, b.Parked, b.consumerNames)
	reconcileLog := b.Log.With().Str("component", "reconcile").Logger()
	b.Reconciler = reconcile.New(b.AS.BotClient(), b.Rooms.Store(), b.EventLog, reconcile.Options{
		Window:      cfg.Reconcile.Window,
		MaxAge:      cfg.Retention.EventsFor(),
		Concurrency: cfg.Reconcile.Concurrency,
		Observer:    b.Metrics,
		Schedule: reconcile.Schedule{
			AfterStart:       cfg.Reconcile.AfterStartFor(),
			Interval:         cfg.Reconcile.Every(),
			MinInterval:      cfg.Reconcile.MinIntervalFor(),
			OnTransactionGap: cfg.Reconcile.OnTransactionGap,
		},
		Logger: &reconcileLog,
	})

	b.asHandler = appservice.NewServer(appservice.Options{
		HSToken:         cfg.AppService.HSToken,
		AllowQueryToken: cfg.AppService.AllowQueryToken,
		MaxBodyBytes:    cfg.AppService.MaxBodyBytes,
		Observer:        b.Metrics,
		Overloaded:      b.overloaded,
		Pace: func(ctx context.Context, events int) time.Duration {
			return b.EventLog.Pace(ctx, events, cfg.AppService.PaceJournalEvents, paceMaxWait)
		},
	}, b.EventLog, queries{rooms: b.Rooms, agents: b.Agents}, b.Log.With().Str("component", "appservice").Logger())

	parking := consumer.Options{Parked: b.Parked, PollInterval: cfg.Database.Poll()}
	sinks := sinkBatch
	sinks.Parked, sinks.PollInterval = b.Parked, cfg.Database.Poll()
	runners := []*consumer.Runner{
		consumer.NewRunner("matrix-state", b.EventLog, matrixstate.NewConsumer(b.stateStore), parking),
		consumer.NewRunner("rooms", b.EventLog, b.Rooms, parking),
		consumer.NewRunner("agents", b.EventLog, b.Agents, parking),
		consumer.NewRunner("webhooks", b.EventLog, webhook.NewFanout(webhookStore, b.DTOs, b.Webhooks.Queued), sinks),
	}
	if cfg.Delivery.NATSURL != "" {
		b.NATS, err = jetstream.New(b.runCtx, jetstream.Options{
			URL:    cfg.Delivery.NATSURL,
			Source: b.DTOs,
			Logger: b.Log.With().Str("component", "nats").Logger(),
		})
		if err != nil {
			return fmt.Errorf("delivery.nats_url: %w", err)
		}
		runners = append(runners, consumer.NewRunner("nats", b.EventLog, b.NATS, sinks))
	}
	if b.E2EE.Enabled() {
		runners = append(runners, consumer.NewRunner("e2ee", b.EventLog, b.E2EE, parking))
	}
	var natsSink commands.NATSSink // nil, not a nil *jetstream.Sink, without NATS
	if b.NATS != nil {
		natsSink = b.NATS
	}
	runners = append(runners, consumer.NewRunner("commands", b.EventLog, commands.New(commands.Options{
		Config: cfg, AppService: b.AS, DB: b.DB, EventLog: b.EventLog,
		Rooms: b.Rooms, CityRooms: b.Rooms.Store(), Agents: b.Agents, AgentStore: b.Agents.Store(),
		Webhooks: webhookStore, Deliverer: b.Webhooks, NATS: natsSink, Version: Version,
		Runners:    func() []*consumer.Runner { return b.Consumers.Runners() },
		Status:     b.Status,
		Parked:     b.Parked,
		Reconciler: b.Reconciler,
	}), parking))
	b.Consumers = consumer.NewGroup(runners...)
	names := make([]string, len(runners))
	for i, r := range runners {
		names[i] = r.Name()
	}
	b.consumers.Store(&names)
	b.registerMetrics()
	b.Leader = leader.New(b.DB, leader.Options{})
	return nil
}

// Start listens for the homeserver, the services and the metrics scrape,
// and runs the rest under the leader lease. Registering the bot and pinging
// the homeserver run in the background: the transaction endpoint must be up
// even while the homeserver is not. ctx is only for starting; Stop ends
// what runs.
func (b *Bridge) Start(ctx context.Context) error {
	cfg := b.Config
	var err error
	if b.asListener, b.asServer, err = b.serve("appservice.listen", cfg.AppService.Listen, b.asHandler, appserviceTimeouts()); err != nil {
		return err
	}
	b.Log.Info().Str("address", b.asListener.Addr().String()).Msg("Listening for the homeserver")
	apiAddr := net.JoinHostPort(cfg.InternalAPI.Host, fmt.Sprint(cfg.InternalAPI.Port))
	if b.apiListener, b.apiServer, err = b.serve("internal_api.port", apiAddr, b.InternalAPI,
		internalAPITimeouts(syncMaxTimeout(cfg), b.AS.HTTPClient.Timeout)); err != nil {
		return err
	}
	b.Log.Info().Str("address", b.apiListener.Addr().String()).Msg("Internal API listening")
	if cfg.Metrics.Listen != "" {
		var metricsListener net.Listener
		if metricsListener, b.metricsSrv, err = b.serve("metrics.listen", cfg.Metrics.Listen, b.Metrics.Handler(cfg.Metrics.Pprof), metricsTimeouts()); err != nil {
			return err
		}
		b.Log.Info().Str("address", metricsListener.Addr().String()).Msg("Metrics listening")
	}
	ctx = b.runCtx
	// Every process keeps its set of confidential rooms in step with the table.
	b.background.Go(func() { b.Rooms.Confidential().Run(ctx) })
	// Every process serves the appservice endpoint and the internal API; only
	// the leader runs the journal indexer, the consumers and the deliverer.
	b.background.Add(1)
	go func() {
		defer b.background.Done()
		b.Leader.Run(ctx, func(ctx context.Context) {
			// One indexer at a time moves journalled transactions (of every
			// process) into the log, in order.
			indexed := make(chan struct{})
			go func() {
				defer close(indexed)
				b.EventLog.RunIndexer(ctx, appservice.ParseTransaction, eventlog.IndexerOptions{
					PollInterval: cfg.Database.Poll(),
					GroupCommit:  cfg.Database.GroupCommit.Duration,
					// Other processes' journals wake it by NOTIFY (PostgreSQL
					// only: the URL is the pool's DSN; SQLite ignores it).
					ListenDSN: cfg.Database.URL,
					Indexed:   b.Reconciler.ObserveTransactions,
					// Confidential rooms' message content stays out of the log.
					Confidential: b.Rooms.Confidential().Is,
					Strip:        mapping.StripContent,
				})
			}()
			reconciled := make(chan struct{})
			go func() {
				defer close(reconciled)
				b.Reconciler.Run(ctx)
			}()
			encryption := make(chan struct{})
			go func() {
				defer close(encryption)
				b.E2EE.Run(ctx)
			}()
			b.Consumers.Start(ctx)
			pruned := make(chan struct{})
			go func() {
				defer close(pruned)
				b.runRetention(ctx)
			}()
			b.Webhooks.Run(ctx)
			<-pruned
			<-reconciled
			<-encryption
			b.Consumers.Stop()
			<-indexed
		})
	}()

	b.background.Add(1)
	go func() {
		defer b.background.Done()
		b.connectHomeserver(ctx)
	}()
	b.background.Add(1)
	go func() {
		defer b.background.Done()
		b.sampleStatus(ctx)
	}()
	return nil
}

// serve starts an HTTP server on addr with the timeouts t; key names the
// config key for errors.
func (b *Bridge) serve(key, addr string, handler http.Handler, t serverTimeouts) (net.Listener, *http.Server, error) {
	listener, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: failed to listen on %s: %w", key, addr, err)
	}
	server := newServer(handler, t)
	b.serving.Add(1)
	go func() {
		defer b.serving.Done()
		if err := server.Serve(listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
			b.Log.Err(err).Str("address", addr).Msg("Listener failed")
		}
	}()
	return listener, server, nil
}

// AppserviceAddr is the address the appservice listener is bound to.
func (b *Bridge) AppserviceAddr() string {
	return b.asListener.Addr().String()
}

// consumerNames lists the consumers (none until Start has made them).
func (b *Bridge) consumerNames() []string {
	if names := b.consumers.Load(); names != nil {
		return *names
	}
	return nil
}

// InternalAPIAddr is the address the internal API listener is bound to.
func (b *Bridge) InternalAPIAddr() string {
	return b.apiListener.Addr().String()
}

// connectHomeserver registers the bot, sets its profile and pings the
// homeserver, retrying while the homeserver is unreachable.
func (b *Bridge) connectHomeserver(ctx context.Context) {
	log := b.Log.With().Str("component", "homeserver").Logger()
	bot := b.AS.BotIntent()
	wait := time.Second
	for {
		start := time.Now()
		err := bot.EnsureRegistered(ctx)
		if err == nil {
			log.Info().Stringer("bot", bot.UserID).Dur("duration", time.Since(start)).Msg("Bridge bot registered")
			break
		}
		if ctx.Err() != nil {
			return
		}
		log.Warn().Err(err).Dur("retry_in", wait).Msg("Failed to register the bridge bot, retrying")
		if !clock.Sleep(ctx, wait) {
			return
		}
		wait = min(wait*2, time.Minute)
	}
	if name := b.Config.AppService.Bot.Displayname; name != "" {
		if err := bot.SetDisplayName(ctx, name); err != nil {
			log.Warn().Err(err).Msg("Failed to set the bridge bot's display name")
		}
	}
	if b.Config.Homeserver.PingOnStart {
		b.pingHomeserver(ctx, log)
	}
}

// pingHomeserver asks the homeserver to call the bridge's ping endpoint,
// which proves the homeserver→bridge direction and makes Synapse retry
// failed transactions at once.
func (b *Bridge) pingHomeserver(ctx context.Context, log zerolog.Logger) {
	start := time.Now()
	txnID := b.AS.BotIntent().TxnID()
	log = log.With().Str("ping_txn_id", txnID).Logger()
	resp, err := b.AS.BotIntent().AppservicePing(ctx, b.AS.Registration.ID, txnID)
	var httpErr mautrix.HTTPError
	switch {
	case err == nil:
		log.Info().Int64("homeserver_ms", resp.DurationMS).Dur("duration", time.Since(start)).Msg("Homeserver pinged the bridge")
	case errors.Is(err, mautrix.MUnrecognized):
		// Dendrite has no appservice ping endpoint.
		log.Warn().Dur("duration", time.Since(start)).Msg("Homeserver has no appservice ping endpoint (M_UNRECOGNIZED); continuing")
	case errors.As(err, &httpErr) && httpErr.RespError != nil:
		// Synapse reports what the bridge's ping endpoint answered it:
		// M_BAD_STATUS with the status (403 when the hs_token in the
		// registration is not the bridge's), M_CONNECTION_FAILED or
		// M_CONNECTION_TIMEOUT when it could not reach appservice.url.
		ev := log.Warn().Str("errcode", httpErr.RespError.ErrCode).Str("error", httpErr.RespError.Err)
		if status, ok := httpErr.RespError.ExtraData["status"]; ok {
			ev = ev.Interface("bridge_status", status)
		}
		ev.Dur("duration", time.Since(start)).Msg("Homeserver could not ping the bridge; check appservice.url and that the registration's hs_token is the bridge's")
	default:
		log.Warn().Err(err).Dur("duration", time.Since(start)).Msg("Homeserver ping failed; check that the homeserver can reach appservice.url")
	}
}

// Stop shuts down in order: stop taking transactions (finishing the one in
// flight), stop the consumers, close the database.
func (b *Bridge) Stop(ctx context.Context) error {
	var errs []error
	if b.Sync != nil {
		b.Sync.Close() // open long-polls answer now instead of holding up shutdown
	}
	for _, server := range []*http.Server{b.asServer, b.apiServer, b.metricsSrv} {
		if server == nil {
			continue
		}
		if err := server.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("failed to shut down a listener: %w", err))
		}
	}
	b.serving.Wait()
	if b.cancel != nil {
		b.cancel()
	}
	b.background.Wait()
	if b.NATS != nil {
		b.NATS.Close()
	}
	if b.EventLog != nil {
		errs = append(errs, b.EventLog.Close())
	}
	if b.mautrixDB != nil && b.mautrixDB != b.DB {
		if err := b.mautrixDB.Close(); err != nil {
			errs = append(errs, fmt.Errorf("failed to close mautrix's database pool: %w", err))
		}
	}
	if b.DB != nil {
		if err := b.DB.Close(); err != nil {
			errs = append(errs, fmt.Errorf("failed to close the database: %w", err))
		}
	}
	return errors.Join(errs...)
}
