package webhook

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/daarion/matrix-bridge/pkg/delivery"
	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/mapping"
)

// Fanout is the webhook consumer of the event log: it maps each batch to
// DTOs and puts one delivery per DTO and matching subscription in the
// outbox, in the same order. The outbox, not the consumer, then carries
// retries, so a dead receiver never holds up the log or another
// subscription.
type Fanout struct {
	store  *Store
	source *delivery.DTOSource
	queued func([]*Delivery)
}

// NewFanout returns the fan-out consumer; queued is told the rows of each
// batch once they are committed (the deliverer's Queued).
func NewFanout(store *Store, source *delivery.DTOSource, queued func([]*Delivery)) *Fanout {
	return &Fanout{store: store, source: source, queued: queued}
}

// Body is what a webhook receives.
type Body struct {
	SubscriptionID string          `json:"subscription_id"`
	RoomID         string          `json:"room_id"`
	Event          json.RawMessage `json:"event"`
	DTO            json.RawMessage `json:"dto"`
}

// SlotsPerPosition is how many outbox rows one log position has room for:
// the outbox is keyed by (subscription, slot), and an event can map to more
// than one DTO (a redaction of a reaction: messaging.message.deleted, then
// messaging.reaction.removed). The upgrade to schema v11 multiplied the
// positions of the rows queued before by this.
const SlotsPerPosition = 4

// The mapper makes no more DTOs of an event than there are slots (this
// does not compile otherwise).
var _ [SlotsPerPosition - mapping.MaxDTOsPerEvent]struct{}

// Slot is the outbox position of part (from 0) of the DTOs of the event at
// position: in log order, then in the event's order, and the same every
// time the event is fanned out again, so a batch handled again after a
// restart queues nothing twice.
func Slot(position int64, part int) int64 {
	return position*SlotsPerPosition + int64(part)
}

// HandleEvents queues the batch's deliveries.
func (f *Fanout) HandleEvents(ctx context.Context, events []*eventlog.Event) error {
	subs, err := f.store.Subscriptions(ctx, "")
	if err != nil {
		return err
	}
	subs = slices.DeleteFunc(subs, func(s *Subscription) bool { return s.State == StateDisabled })
	if len(subs) == 0 {
		return nil
	}
	mapped, err := f.source.Map(ctx, events)
	if err != nil {
		return err
	}
	now := time.Now()
	var queued []*Delivery
	for _, m := range mapped {
		dto := m.JSON()
		for _, sub := range subs {
			if !sub.matches(m) {
				continue
			}
			body, _ := json.Marshal(Body{SubscriptionID: sub.ID, RoomID: m.Event.RoomID, Event: m.Event.JSON, DTO: dto})
			queued = append(queued, &Delivery{
				SubscriptionID: sub.ID, Position: Slot(m.Event.Position, m.Part), RoomID: m.Event.RoomID,
				EventID: m.DTO.ID, Body: body, NextAttemptAt: now,
			})
		}
	}
	if len(queued) == 0 {
		return nil
	}
	if err = f.store.Enqueue(ctx, queued); err != nil {
		return err
	}
	f.queued(queued)
	return nil
}

// matches reports whether a subscription wants an event: its room filter
// ("*", a room id, or "city:<slug>") and its types (Matrix or DTO types).
func (s *Subscription) matches(m delivery.Mapped) bool {
	switch {
	case s.RoomFilter == "*":
	case strings.HasPrefix(s.RoomFilter, "city:"):
		if m.DTO.Room == nil || m.DTO.Room.CitySlug != strings.TrimPrefix(s.RoomFilter, "city:") {
			return false
		}
	case s.RoomFilter != m.Event.RoomID:
		return false
	}
	return len(s.EventTypes) == 0 || slices.Contains(s.EventTypes, m.Event.Type) || slices.Contains(s.EventTypes, m.DTO.Type)
}
