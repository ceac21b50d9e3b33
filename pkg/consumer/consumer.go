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
// the runner retry after a backoff; a permanent error (IsPermanent) parks the
// event that caused it, and the runner moves on.
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
	// Parked is where events that fail for good are parked. Without it a
	// permanent failure is retried like a transient one.
	Parked *ParkedStore
	// SaveInterval is how often, at most, the cursor is saved while events
	// flow; once the consumer has caught up it is saved within this long.
	// A save per batch would cost a commit per batch, and a crash re-handles
	// what the saved cursor had not passed anyway (at least once). Negative:
	// after every batch.
	SaveInterval time.Duration
}

// DefaultSaveInterval is Options.SaveInterval's default: the most a crash
// makes a consumer handle again is what it handled in this long.
const DefaultSaveInterval = 50 * time.Millisecond

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
	if o.SaveInterval == 0 {
		o.SaveInterval = DefaultSaveInterval
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
	parked   atomic.Int64
	saver    *cursorSaver // Run's
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

// ParkedCount counts events this runner parked since start.
func (r *Runner) ParkedCount() int64 { return r.parked.Load() }

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

	saver := &cursorSaver{runner: r, saved: pos}
	r.saver = saver
	// On the way out the position handled is saved, so that a stop (a
	// restart, a lost lease: then the fence refuses it) re-handles nothing.
	defer saver.final(ctx)
	var parkedCheckedAt time.Time
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
			// Retries are looked for when idle, at most every PollInterval:
			// a consumer that keeps up is idle after every batch, and the
			// query per batch showed in the database's load.
			if time.Since(parkedCheckedAt) >= r.opts.PollInterval {
				parkedCheckedAt = time.Now()
				r.retryParked(ctx)
			}
			select {
			case <-ctx.Done():
			case <-changed:
			case <-saver.due():
				saver.save(ctx, pos)
			case <-time.After(r.opts.PollInterval):
			}
			continue
		}
		if !r.handle(ctx, events, backoff) {
			return
		}
		pos = events[len(events)-1].Position
		r.position.Store(pos)
		saver.handled(ctx, pos)
	}
}

// cursorSaver saves a runner's cursor at most every SaveInterval.
type cursorSaver struct {
	runner  *Runner
	saved   int64     // the position last saved (or loaded)
	savedAt time.Time // when
	timer   *time.Timer
}

// handled is told each batch's last position: it saves at once when the
// last save is SaveInterval old, and otherwise leaves it to due.
func (s *cursorSaver) handled(ctx context.Context, pos int64) {
	if time.Since(s.savedAt) >= s.runner.opts.SaveInterval {
		s.save(ctx, pos)
	}
}

// due fires when the handled position is unsaved and SaveInterval has passed
// since the last save; nil (never) when everything handled is saved.
func (s *cursorSaver) due() <-chan time.Time {
	if s.runner.position.Load() == s.saved {
		return nil
	}
	wait := s.runner.opts.SaveInterval - time.Since(s.savedAt)
	if s.timer == nil {
		s.timer = time.NewTimer(wait)
	} else {
		s.timer.Reset(wait)
	}
	return s.timer.C
}

func (s *cursorSaver) save(ctx context.Context, pos int64) {
	s.savedAt = time.Now()
	// A cursor that fails to save only means the batch is handled again
	// after a restart, which at-least-once delivery allows.
	if err := s.runner.source.SaveCursor(ctx, s.runner.name, pos); err != nil {
		if ctx.Err() == nil {
			zerolog.Ctx(ctx).Err(err).Int64("position", pos).Msg("Failed to save consumer cursor")
		}
		return
	}
	s.saved = pos
}

// flush saves the handled position if it is unsaved.
func (s *cursorSaver) flush(ctx context.Context) {
	if s == nil {
		return
	}
	if pos := s.runner.position.Load(); pos != s.saved {
		s.save(ctx, pos)
	}
}

// final saves what was handled but not saved when the runner stops, with a
// context of its own (ctx has ended) and the same fence.
func (s *cursorSaver) final(ctx context.Context) {
	if s.timer != nil {
		s.timer.Stop()
	}
	if pos := s.runner.position.Load(); pos != s.saved {
		saveCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		s.save(saveCtx, pos)
	}
}

// handle retries one batch until it is handled; false when ctx ended first.
// A permanent failure of a batch is narrowed down to its event by handling
// the events one at a time; that event is parked, the rest are handled.
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
		log := zerolog.Ctx(ctx).With().Err(err).Int64("first_position", events[0].Position).Int("batch_size", len(events)).Logger()
		if r.opts.Parked != nil && IsPermanent(err) {
			if len(events) > 1 {
				for i := range events {
					if !r.handle(ctx, events[i:i+1], backoff) {
						return false
					}
				}
				return true
			}
			evt := events[0]
			if perr := r.opts.Parked.Park(ctx, r.name, evt.Position, evt.EventID, err); perr == nil {
				r.parked.Add(1)
				log.Warn().Str("event_id", evt.EventID).Str("event_type", evt.Type).Msg("Consumer failed for good to handle an event; parked it and moved on")
				return true
			} else if ctx.Err() == nil {
				log.Err(perr).Msg("Failed to park an event, retrying it")
			}
		} else {
			log.Warn().Msg("Consumer failed to handle events, retrying")
		}
		// What was handled before this batch is saved before the wait: a
		// batch that keeps failing does not hold back the cursor.
		r.saver.flush(ctx)
		if !backoff.sleep(ctx) {
			return false
		}
	}
}

// retryParked handles again the parked events a retry was requested for:
// handled ones leave the list, a permanent failure stays parked (its error
// updated), a transient one keeps its request for the next idle moment.
func (r *Runner) retryParked(ctx context.Context) {
	if r.opts.Parked == nil {
		return
	}
	log := zerolog.Ctx(ctx)
	list, err := r.opts.Parked.retrying(ctx, r.name, 100)
	if err != nil {
		if ctx.Err() == nil {
			log.Err(err).Msg("Failed to read parked events to retry")
		}
		return
	}
	for _, p := range list {
		events, err := r.source.Read(ctx, p.Position-1, 1)
		if err != nil {
			return
		}
		if len(events) == 0 || events[0].Position != p.Position {
			// The event is no longer in the log (retention): nothing to retry.
			_ = r.opts.Parked.unpark(ctx, r.name, p.Position)
			continue
		}
		err = r.handler.HandleEvents(ctx, events)
		switch {
		case err == nil:
			if err = r.opts.Parked.unpark(ctx, r.name, p.Position); err == nil {
				log.Info().Int64("position", p.Position).Str("event_id", p.EventID).Msg("Parked event handled on retry")
			}
		case IsPermanent(err):
			log.Warn().Err(err).Int64("position", p.Position).Msg("Parked event failed again on retry")
			_ = r.opts.Parked.Park(ctx, r.name, p.Position, p.EventID, err)
		default:
			return // transient: the request stays for the next round
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
