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
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	mxappservice "maunium.net/go/mautrix/appservice"

	"github.com/daarion/matrix-bridge/database"
	"github.com/daarion/matrix-bridge/pkg/appservice"
	"github.com/daarion/matrix-bridge/pkg/config"
	"github.com/daarion/matrix-bridge/pkg/consumer"
	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/registration"
)

// Version is set at build time with -ldflags.
var Version = "dev"

// Bridge is one running bridge process.
type Bridge struct {
	Config *config.Config
	Log    zerolog.Logger

	DB          *dbutil.Database
	EventLog    *eventlog.Log
	AS          *mxappservice.AppService
	TypeCounter *consumer.TypeCounter
	Consumers   *consumer.Group

	asListener net.Listener
	asServer   *http.Server
	serveDone  chan struct{}

	background sync.WaitGroup
	cancel     context.CancelFunc
}

// New prepares a bridge; Start runs it.
func New(cfg *config.Config, log zerolog.Logger) *Bridge {
	return &Bridge{Config: cfg, Log: log}
}

// Start opens the database, brings its schema up to date, starts listening
// for the homeserver and starts the consumers. Registering the bot and
// pinging the homeserver run in the background: the transaction endpoint
// must be up even while the homeserver is not.
func (b *Bridge) Start(ctx context.Context) error {
	ctx, b.cancel = context.WithCancel(context.WithoutCancel(ctx))
	ctx = b.Log.WithContext(ctx)
	cfg := b.Config

	target, err := database.ParseURL(cfg.Database.URL)
	if err != nil {
		return fmt.Errorf("database.url: %w", err)
	}
	start := time.Now()
	b.DB, err = database.Open(ctx, target, database.PoolOptions{
		MaxOpenConns: cfg.Database.MaxOpenConns,
		MaxIdleConns: cfg.Database.MaxIdleConns,
	}, b.Log)
	if err != nil {
		return err
	}
	b.Log.Info().Str("dialect", target.Dialect()).Dur("duration", time.Since(start)).Msg("Database ready")
	b.EventLog = eventlog.New(b.DB)

	b.AS, err = mxappservice.CreateFull(mxappservice.CreateOpts{
		Registration:     registration.FromConfig(cfg),
		HomeserverDomain: cfg.Homeserver.ServerName,
		HomeserverURL:    cfg.Homeserver.URL,
	})
	if err != nil {
		return fmt.Errorf("failed to set up the appservice client: %w", err)
	}
	b.AS.Log = b.Log.With().Str("component", "mautrix").Logger()

	handler := appservice.NewServer(appservice.Options{
		HSToken:         cfg.AppService.HSToken,
		AllowQueryToken: cfg.AppService.AllowQueryToken,
		MaxBodyBytes:    cfg.AppService.MaxBodyBytes,
	}, b.EventLog, appservice.NoQueries{}, b.Log.With().Str("component", "appservice").Logger())
	b.asListener, err = net.Listen("tcp", cfg.AppService.Listen)
	if err != nil {
		return fmt.Errorf("appservice.listen: failed to listen on %s: %w", cfg.AppService.Listen, err)
	}
	b.asServer = &http.Server{Handler: handler, ReadHeaderTimeout: 30 * time.Second}
	b.serveDone = make(chan struct{})
	go func() {
		defer close(b.serveDone)
		if err := b.asServer.Serve(b.asListener); err != nil && !errors.Is(err, http.ErrServerClosed) {
			b.Log.Err(err).Msg("Appservice listener failed")
		}
	}()
	b.Log.Info().Str("address", b.asListener.Addr().String()).Msg("Listening for the homeserver")

	b.TypeCounter = consumer.NewTypeCounter()
	b.Consumers = consumer.NewGroup(
		consumer.NewRunner("type-counter", b.EventLog, b.TypeCounter, consumer.Options{}),
	)
	b.Consumers.Start(ctx)

	b.background.Add(1)
	go func() {
		defer b.background.Done()
		b.connectHomeserver(ctx)
	}()
	return nil
}

// AppserviceAddr is the address the appservice listener is bound to.
func (b *Bridge) AppserviceAddr() string {
	return b.asListener.Addr().String()
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
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
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
	resp, err := b.AS.BotIntent().AppservicePing(ctx, b.AS.Registration.ID, b.AS.BotIntent().TxnID())
	switch {
	case err == nil:
		log.Info().Int64("homeserver_ms", resp.DurationMS).Dur("duration", time.Since(start)).Msg("Homeserver pinged the bridge")
	case errors.Is(err, mautrix.MUnrecognized):
		// Dendrite has no appservice ping endpoint.
		log.Warn().Dur("duration", time.Since(start)).Msg("Homeserver has no appservice ping endpoint (M_UNRECOGNIZED); continuing")
	default:
		log.Warn().Err(err).Dur("duration", time.Since(start)).Msg("Homeserver ping failed; check that the homeserver can reach appservice.url")
	}
}

// Stop shuts down in order: stop taking transactions (finishing the one in
// flight), stop the consumers, close the database.
func (b *Bridge) Stop(ctx context.Context) error {
	var errs []error
	if b.asServer != nil {
		if err := b.asServer.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("failed to shut down the appservice listener: %w", err))
		}
		<-b.serveDone
	}
	if b.cancel != nil {
		b.cancel()
	}
	b.background.Wait()
	if b.Consumers != nil {
		b.Consumers.Stop()
	}
	if b.EventLog != nil {
		errs = append(errs, b.EventLog.Close())
	}
	if b.DB != nil {
		if err := b.DB.Close(); err != nil {
			errs = append(errs, fmt.Errorf("failed to close the database: %w", err))
		}
	}
	return errors.Join(errs...)
}
