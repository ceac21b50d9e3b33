// Package consumer runs the readers of the event log. Each consumer has a
// durable cursor: it handles a batch, then saves the position of the batch's
// last event, so a restart resumes after the last handled batch (at least
// once). Consumers run apart from the transaction path: a slow or failing one
// delays only itself.
package consumer

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/daarion/matrix-bridge/pkg/eventlog"
)

// Handler handles events from the log, in log order. Returning an error makes
// the runner retry the same batch after a backoff.
type Handler interface {
	HandleEvents(ctx context.Context, events []*eventlog.Event) error
}

// Source is the part of the event log a runner reads.
type Source interface {
	Read(ctx context.Context, after int64, limit int) ([]*eventlog.Event, error)
	Changed() <-chan struct{}
	Cursor(ctx context.Context, consumer string) (int64, error)
	SaveCursor(ctx context.Context, consumer string, position int64) error
}

// Options tune a runner; zero values take the defaults.
type Options struct {
	// BatchSize is how many events one HandleEvents call gets at most.
	BatchSize int
	// PollInterval is how often the log is re-read without a wake-up; it is
	// what notices events appended by another process.
	PollInterval time.Duration
	// MinBackoff and MaxBackoff bound the wait before retrying a failed batch.
	MinBackoff time.Duration
	MaxBackoff time.Duration
}

func (o Options) withDefaults() Options {
	if o.BatchSize <= 0 {
		o.BatchSize = 100
	}
	if o.PollInterval <= 0 {
		o.PollInterval = time.Second
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 200 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 30 * time.Second
	}
	return o
}

// Runner feeds one handler from the log.
type Runner struct {
	name    string
	source  Source
	handler Handler
	opts    Options

	position atomic.Int64
	failures atomic.Int64
}

// NewRunner makes a runner for the consumer called name.
func NewRunner(name string, source Source, handler Handler, opts Options) *Runner {
	return &Runner{name: name, source: source, handler: handler, opts: opts.withDefaults()}
}

// Name is the consumer's name, the key of its cursor.
func (r *Runner) Name() string { return r.name }

// Position is the position of the last event the consumer handled.
func (r *Runner) Position() int64 { return r.position.Load() }

// Failures counts failed batches since start.
func (r *Runner) Failures() int64 { return r.failures.Load() }

// Run consumes until ctx is cancelled.
func (r *Runner) Run(ctx context.Context) {
	log := zerolog.Ctx(ctx).With().Str("consumer", r.name).Logger()
	ctx = log.WithContext(ctx)

	var pos int64
	backoff := newBackoff(r.opts.MinBackoff, r.opts.MaxBackoff)
	for {
		var err error
		if pos, err = r.source.Cursor(ctx, r.name); err == nil {
			break
		}
		log.Err(err).Msg("Failed to load consumer cursor, retrying")
		if !backoff.sleep(ctx) {
			return
		}
	}
	r.position.Store(pos)
	log.Info().Int64("position", pos).Msg("Consumer started")

	for ctx.Err() == nil {
		changed := r.source.Changed()
		events, err := r.source.Read(ctx, pos, r.opts.BatchSize)
		if err != nil {
			if ctx.Err() == nil {
				log.Err(err).Msg("Failed to read the event log, retrying")
				backoff.sleep(ctx)
			}
			continue
		}
		if len(events) == 0 {
			backoff.reset()
			select {
			case <-ctx.Done():
			case <-changed:
			case <-time.After(r.opts.PollInterval):
			}
			continue
		}
		if !r.handle(ctx, events, backoff) {
			return
		}
		pos = events[len(events)-1].Position
		r.position.Store(pos)
		// A cursor that fails to save only means the batch is handled again
		// after a restart, which at-least-once delivery allows.
		if err = r.source.SaveCursor(ctx, r.name, pos); err != nil && ctx.Err() == nil {
			log.Err(err).Int64("position", pos).Msg("Failed to save consumer cursor")
		}
	}
}

// handle retries one batch until it succeeds; false when ctx ended first.
func (r *Runner) handle(ctx context.Context, events []*eventlog.Event, backoff *backoff) bool {
	for {
		err := r.handler.HandleEvents(ctx, events)
		if err == nil {
			backoff.reset()
			return true
		}
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return false
		}
		r.failures.Add(1)
		zerolog.Ctx(ctx).Err(err).
			Int64("first_position", events[0].Position).
			Int("batch_size", len(events)).
			Msg("Consumer failed to handle events, retrying")
		if !backoff.sleep(ctx) {
			return false
		}
	}
}

// Group runs several runners and stops them together.
type Group struct {
	runners []*Runner
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// NewGroup returns a group of runners, not yet started.
func NewGroup(runners ...*Runner) *Group {
	return &Group{runners: runners}
}

// Runners returns the group's runners.
func (g *Group) Runners() []*Runner { return g.runners }

// Start runs every runner in its own goroutine.
func (g *Group) Start(ctx context.Context) {
	ctx, g.cancel = context.WithCancel(ctx)
	for _, r := range g.runners {
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			r.Run(ctx)
		}()
	}
}

// Stop cancels every runner and waits for them to return.
func (g *Group) Stop() {
	if g.cancel != nil {
		g.cancel()
	}
	g.wg.Wait()
}
