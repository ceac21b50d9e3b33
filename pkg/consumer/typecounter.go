package consumer

import (
	"context"
	"maps"
	"sync"

	"github.com/rs/zerolog"

	"github.com/daarion/matrix-bridge/pkg/eventlog"
)

// TypeCounter is the simplest consumer: it counts the events it has seen by
// type and logs each one at debug level. It shows the log is being read and is
// the pattern the mapping and delivery consumers follow.
type TypeCounter struct {
	mu     sync.Mutex
	counts map[string]int64
}

// NewTypeCounter returns an empty counter.
func NewTypeCounter() *TypeCounter {
	return &TypeCounter{counts: make(map[string]int64)}
}

// HandleEvents counts the batch.
func (tc *TypeCounter) HandleEvents(ctx context.Context, events []*eventlog.Event) error {
	log := zerolog.Ctx(ctx)
	tc.mu.Lock()
	defer tc.mu.Unlock()
	for _, evt := range events {
		tc.counts[evt.Type]++
		log.Debug().
			Int64("position", evt.Position).
			Str("event_id", evt.EventID).
			Str("event_type", evt.Type).
			Str("room_id", evt.RoomID).
			Msg("Event consumed")
	}
	return nil
}

// Counts returns a copy of the counts by event type.
func (tc *TypeCounter) Counts() map[string]int64 {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	return maps.Clone(tc.counts)
}
