// Package jetstream is the NATS JetStream sink: a consumer of the event log
// that publishes every DTO to a JetStream stream, one subject per DTO type
// (<prefix><type>, as in daarion.messaging.message.created), with the DTO id
// as Nats-Msg-Id.
//
// Delivery is at least once from the log (a batch is retried until every
// publish of it is acknowledged) and exactly once into the stream within
// its duplicate window: JetStream drops a message whose Nats-Msg-Id it has
// already stored, so re-publishing a batch after a failure, a crash or a
// rewound cursor stores nothing twice.
//
// NATS never blocks the bridge: New returns at once and the connection is
// made, and kept, in the background. While NATS is unreachable HandleEvents
// returns an error, so the consumer's cursor waits and the runner retries
// with backoff; nothing else is delayed.
package jetstream

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/daarion/matrix-bridge/pkg/delivery"
	"github.com/daarion/matrix-bridge/pkg/eventlog"
)

// Defaults of Options.
const (
	DefaultStream           = "DAARION_MESSAGING"
	DefaultSubjectPrefix    = "daarion."
	DefaultPublishTimeout   = 10 * time.Second
	DefaultMaxReconnectWait = 5 * time.Second
)

// MinDuplicateWindow is the default and the smallest duplicate window of the
// stream: a re-publish within it is dropped by JetStream. It covers a bridge
// restart and the consumer's retry backoff with a wide margin.
const MinDuplicateWindow = 15 * time.Minute

// minReconnectWait is the first wait between reconnect attempts.
const minReconnectWait = 250 * time.Millisecond

// Options configure a Sink; zero values take the defaults.
type Options struct {
	// URL is the NATS server, as in nats://127.0.0.1:4222 (a comma-separated
	// list names several servers of one cluster). Required.
	URL string
	// Stream is the JetStream stream, created when missing
	// (default DAARION_MESSAGING).
	Stream string
	// SubjectPrefix goes before the DTO type in the subject; it must end
	// with "." (default "daarion."). The stream captures
	// <prefix>messaging.>.
	SubjectPrefix string
	// DuplicateWindow is the stream's duplicate window (default and minimum
	// 15 minutes). An existing stream with a smaller window is raised to it.
	DuplicateWindow time.Duration
	// Source maps log batches to DTOs. Required.
	Source *delivery.DTOSource
	// Logger logs connection changes and stream set-up.
	Logger zerolog.Logger

	// PublishTimeout bounds the wait for the acks of one batch
	// (default 10s); a batch that times out is retried.
	PublishTimeout time.Duration
	// MaxReconnectWait caps the backoff between reconnect attempts
	// (default 5s).
	MaxReconnectWait time.Duration
}

// Stats counts what the sink did since it was made.
type Stats struct {
	// Published counts DTOs JetStream stored.
	Published int64
	// Duplicates counts DTOs JetStream acknowledged as duplicates: a
	// re-publish after a failed batch, a crash or a rewound cursor.
	Duplicates int64
	// FailedBatches counts HandleEvents calls that returned an error.
	FailedBatches int64
	// Connected tells whether the sink is connected to NATS now.
	Connected bool
	// StreamReady tells whether the stream has been checked (or created)
	// on the current connection.
	StreamReady bool
}

// ErrNotConnected is returned (wrapped) by HandleEvents while NATS is unreachable.
var ErrNotConnected = errors.New("not connected to NATS")

// ErrClosed is returned by HandleEvents after Close.
var ErrClosed = errors.New("NATS sink is closed")

// Sink publishes DTOs to JetStream. It is a consumer.Handler.
type Sink struct {
	opts          Options
	log           zerolog.Logger
	streamSubject string

	mu          sync.Mutex
	nc          *nats.Conn
	js          natsjs.JetStream
	closed      bool
	streamReady bool
	// connGen counts connections; stream set-up done on an older one
	// does not count.
	connGen uint64
	// ensureMu serialises stream set-up between the background and HandleEvents.
	ensureMu sync.Mutex

	// kick asks the background loop to set the stream up.
	kick chan struct{}
	done chan struct{}
	bg   sync.WaitGroup

	closeOnce sync.Once

	published  atomic.Int64
	duplicates atomic.Int64
	failures   atomic.Int64
}

// New validates opts and returns the sink at once; it connects to NATS, and
// creates the stream if missing, in the background, reconnecting for ever.
// ctx is used only while New runs: the sink lives until Close.
func New(ctx context.Context, opts Options) (*Sink, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Sink{
		opts:          opts,
		log:           opts.Logger,
		streamSubject: opts.SubjectPrefix + "messaging.>",
		kick:          make(chan struct{}, 1),
		done:          make(chan struct{}),
	}
	s.bg.Add(1)
	go s.run()
	return s, nil
}

func (o Options) withDefaults() (Options, error) {
	if o.URL == "" {
		return o, errors.New("jetstream sink: URL is required")
	}
	for i, u := range strings.Split(o.URL, ",") {
		u = strings.TrimSpace(u)
		if !strings.Contains(u, "://") {
			u = "nats://" + u
		}
		if parsed, err := url.Parse(u); err != nil || parsed.Host == "" {
			// Not the URL itself: it may hold a password or token.
			return o, fmt.Errorf("jetstream sink: invalid NATS URL (entry %d of the list)", i+1)
		}
	}
	if o.Source == nil {
		return o, errors.New("jetstream sink: Source is required")
	}
	if o.Stream == "" {
		o.Stream = DefaultStream
	}
	if strings.ContainsAny(o.Stream, " \t\r\n.*>/\\") {
		return o, fmt.Errorf("jetstream sink: invalid stream name %q (no spaces, '.', '*', '>', '/' or '\\')", o.Stream)
	}
	if o.SubjectPrefix == "" {
		o.SubjectPrefix = DefaultSubjectPrefix
	}
	if !strings.HasSuffix(o.SubjectPrefix, ".") || strings.ContainsAny(o.SubjectPrefix, " \t\r\n*>") ||
		strings.HasPrefix(o.SubjectPrefix, ".") || strings.Contains(o.SubjectPrefix, "..") {
		return o, fmt.Errorf("jetstream sink: invalid subject prefix %q (dot-separated tokens ending with '.', as in %q)", o.SubjectPrefix, DefaultSubjectPrefix)
	}
	if o.DuplicateWindow < MinDuplicateWindow {
		if o.DuplicateWindow > 0 {
			o.Logger.Warn().Stringer("configured", o.DuplicateWindow).Stringer("used", MinDuplicateWindow).
				Msg("NATS duplicate window is below the minimum, using the minimum")
		}
		o.DuplicateWindow = MinDuplicateWindow
	}
	if o.PublishTimeout <= 0 {
		o.PublishTimeout = DefaultPublishTimeout
	}
	if o.MaxReconnectWait <= 0 {
		o.MaxReconnectWait = DefaultMaxReconnectWait
	}
	return o, nil
}

// redactURLs is a NATS URL list fit for errors and logs: credentials
// (user:password, or a token as the user) are replaced by "redacted".
func redactURLs(list string) string {
	parts := strings.Split(list, ",")
	for i, u := range parts {
		u = strings.TrimSpace(u)
		if !strings.Contains(u, "://") {
			u = "nats://" + u
		}
		parsed, err := url.Parse(u)
		switch {
		case err != nil:
			parts[i] = "(invalid URL)"
		case parsed.User != nil:
			parsed.User = url.User("redacted")
			parts[i] = parsed.String()
		default:
			parts[i] = parsed.String()
		}
	}
	return strings.Join(parts, ",")
}

// reconnectDelay is exponential from minReconnectWait up to
// MaxReconnectWait, with up to 25% jitter.
func (s *Sink) reconnectDelay(attempt int) time.Duration {
	d := s.opts.MaxReconnectWait
	if attempt < 32 {
		d = min(minReconnectWait<<max(attempt-1, 0), s.opts.MaxReconnectWait)
	}
	return d + rand.N(d/4+1)
}

// run connects, then sets the stream up after every (re)connection.
func (s *Sink) run() {
	defer s.bg.Done()
	for attempt := 1; ; attempt++ {
		err := s.connect()
		if err == nil {
			break
		}
		// Only options nats.go rejects outright end up here: connection
		// failures are retried inside nats.go (RetryOnFailedConnect).
		s.log.Err(err).Msg("Failed to set up the NATS connection, retrying")
		select {
		case <-s.done:
			return
		case <-time.After(s.reconnectDelay(attempt)):
		}
	}
	for {
		select {
		case <-s.done:
			return
		case <-s.kick:
		}
		for attempt := 1; ; attempt++ {
			if !s.connected() {
				break // the next (re)connection kicks again
			}
			ctx, cancel := context.WithTimeout(context.Background(), s.opts.PublishTimeout)
			err := s.ensureStream(ctx)
			cancel()
			if err == nil {
				break
			}
			s.log.Err(err).Str("stream", s.opts.Stream).Msg("Failed to set up the NATS stream, retrying")
			select {
			case <-s.done:
				return
			case <-time.After(s.reconnectDelay(attempt)):
			}
		}
	}
}

func (s *Sink) connect() error {
	onConnect := func(nc *nats.Conn) {
		s.mu.Lock()
		s.streamReady = false
		s.connGen++
		s.mu.Unlock()
		s.log.Info().Str("server", nc.ConnectedUrlRedacted()).Msg("Connected to NATS")
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	nc, err := nats.Connect(s.opts.URL,
		nats.Name("daarion-matrix-bridge"),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(s.reconnectDelay),
		// No reconnect buffer: a publish while disconnected fails at once
		// instead of waiting in memory for a reconnection.
		nats.ReconnectBufSize(-1),
		nats.PingInterval(20*time.Second),
		nats.MaxPingsOutstanding(3),
		nats.ConnectHandler(onConnect),
		nats.ReconnectHandler(onConnect),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			s.mu.Lock()
			s.streamReady = false
			s.connGen++
			closed := s.closed
			s.mu.Unlock()
			if !closed {
				s.log.Warn().AnErr("reason", err).Msg("Disconnected from NATS, reconnecting")
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			s.log.Warn().Err(err).Msg("NATS error")
		}),
	)
	if err != nil {
		return err
	}
	js, err := natsjs.New(nc, natsjs.WithPublishAsyncTimeout(s.opts.PublishTimeout))
	if err != nil {
		nc.Close()
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		nc.Close()
		return nil
	}
	s.nc, s.js = nc, js
	if nc.IsConnected() {
		// The connect handler may have run before s.nc was set; kick again
		// (harmless when the stream is already set up).
		select {
		case s.kick <- struct{}{}:
		default:
		}
	} else {
		s.log.Warn().Msg("NATS is not reachable yet, connecting in the background")
	}
	return nil
}

func (s *Sink) connected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nc != nil && s.nc.IsConnected()
}

// ensureStream creates the stream when missing, or checks the existing one
// and raises its duplicate window when it is below ours.
func (s *Sink) ensureStream(ctx context.Context) error {
	s.ensureMu.Lock()
	defer s.ensureMu.Unlock()
	s.mu.Lock()
	js, ready, gen := s.js, s.streamReady, s.connGen
	s.mu.Unlock()
	if ready {
		return nil
	}
	if js == nil {
		return ErrNotConnected
	}
	name := s.opts.Stream
	stream, err := js.Stream(ctx, name)
	if errors.Is(err, natsjs.ErrStreamNotFound) {
		stream, err = js.CreateStream(ctx, natsjs.StreamConfig{
			Name:        name,
			Description: "DAARION messaging DTOs from the Matrix bridge",
			Subjects:    []string{s.streamSubject},
			Storage:     natsjs.FileStorage,
			Duplicates:  s.opts.DuplicateWindow,
		})
		if errors.Is(err, natsjs.ErrStreamNameAlreadyInUse) {
			// Another bridge process created it meanwhile.
			stream, err = js.Stream(ctx, name)
		} else if err == nil {
			s.log.Info().Str("stream", name).Str("subjects", s.streamSubject).
				Stringer("duplicate_window", s.opts.DuplicateWindow).Msg("Created the NATS stream")
		}
	}
	if err != nil {
		return fmt.Errorf("failed to set up NATS stream %s: %w", name, err)
	}
	cfg := stream.CachedInfo().Config
	s.log.Debug().Str("stream", name).Strs("subjects", cfg.Subjects).Stringer("duplicate_window", cfg.Duplicates).
		Msg("Using the NATS stream")
	if !slices.Contains(cfg.Subjects, s.streamSubject) {
		s.log.Warn().Str("stream", name).Strs("stream_subjects", cfg.Subjects).Str("expected", s.streamSubject).
			Msg("The NATS stream does not list the sink's subjects; publishes fail unless a wildcard covers them")
	}
	if cfg.Duplicates < s.opts.DuplicateWindow {
		old := cfg.Duplicates
		cfg.Duplicates = s.opts.DuplicateWindow
		if _, err = js.UpdateStream(ctx, cfg); err != nil {
			// Delivery goes on; only the dedup of re-publishes is shorter.
			s.log.Err(err).Str("stream", name).Stringer("duplicate_window", old).
				Msg("Failed to raise the duplicate window of the NATS stream")
		} else {
			s.log.Info().Str("stream", name).Stringer("from", old).Stringer("to", cfg.Duplicates).
				Msg("Raised the duplicate window of the NATS stream")
		}
	}
	s.mu.Lock()
	// A disconnection while setting up leaves it to the next connection.
	s.streamReady = s.connGen == gen && s.nc.IsConnected()
	s.mu.Unlock()
	return nil
}

// ready returns the JetStream context once connected with the stream set up.
func (s *Sink) ready(ctx context.Context) (natsjs.JetStream, error) {
	s.mu.Lock()
	closed, nc, js, ready := s.closed, s.nc, s.js, s.streamReady
	s.mu.Unlock()
	switch {
	case closed:
		return nil, ErrClosed
	case nc == nil || !nc.IsConnected():
		return nil, fmt.Errorf("jetstream sink: %w (%s)", ErrNotConnected, redactURLs(s.opts.URL))
	case !ready:
		if err := s.ensureStream(ctx); err != nil {
			return nil, err
		}
	}
	return js, nil
}

// HandleEvents publishes the DTOs of a batch in log order and returns once
// JetStream has acknowledged every one of them; any failure returns an error
// so that the whole batch is retried (re-publishes are dropped as duplicates).
func (s *Sink) HandleEvents(ctx context.Context, events []*eventlog.Event) error {
	err := s.handle(ctx, events)
	if err != nil {
		s.failures.Add(1)
	}
	return err
}

func (s *Sink) handle(ctx context.Context, events []*eventlog.Event) error {
	mapped, err := s.opts.Source.Map(ctx, events)
	if err != nil {
		return err
	}
	if len(mapped) == 0 {
		return nil
	}
	js, err := s.ready(ctx)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.PublishTimeout)
	defer cancel()

	// Publish asynchronously on the one connection (so in order), then wait
	// for every ack.
	futures := make([]natsjs.PubAckFuture, 0, len(mapped))
	for _, m := range mapped {
		msg := nats.NewMsg(s.opts.SubjectPrefix + m.DTO.Type)
		msg.Header.Set(natsjs.MsgIDHeader, m.DTO.ID)
		msg.Data = m.JSON()
		f, err := js.PublishMsgAsync(msg)
		if err != nil {
			return s.publishError(m, err)
		}
		futures = append(futures, f)
	}
	for i, f := range futures {
		select {
		case ack := <-f.Ok():
			if ack.Duplicate {
				s.duplicates.Add(1)
			} else {
				s.published.Add(1)
			}
		case err := <-f.Err():
			return s.publishError(mapped[i], err)
		case <-ctx.Done():
			return fmt.Errorf("jetstream sink: waiting for the ack of %s (position %d): %w",
				mapped[i].DTO.ID, mapped[i].Event.Position, ctx.Err())
		}
	}
	return nil
}

func (s *Sink) publishError(m delivery.Mapped, err error) error {
	if errors.Is(err, natsjs.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
		// The stream is gone (deleted, or a new server without it): set it
		// up again before the retry.
		s.mu.Lock()
		s.streamReady = false
		s.mu.Unlock()
	}
	return fmt.Errorf("jetstream sink: failed to publish %s %s (position %d): %w",
		m.DTO.Type, m.DTO.ID, m.Event.Position, err)
}

// Stats returns the sink's counters.
func (s *Sink) Stats() Stats {
	s.mu.Lock()
	connected := s.nc != nil && s.nc.IsConnected()
	ready := s.streamReady
	s.mu.Unlock()
	return Stats{
		Published:     s.published.Load(),
		Duplicates:    s.duplicates.Load(),
		FailedBatches: s.failures.Load(),
		Connected:     connected,
		StreamReady:   ready,
	}
}

// Close stops reconnecting and closes the connection. Call it after the
// consumer runner has stopped.
func (s *Sink) Close() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		nc := s.nc
		s.mu.Unlock()
		close(s.done)
		if nc != nil {
			nc.Close()
		}
		s.bg.Wait()
	})
}
