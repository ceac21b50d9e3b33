// Package delivery carries DTOs to DAARION services. Every sink is a
// consumer of the event log with its own durable cursor; DTOSource maps a
// batch of log events to DTOs for them, with the city room, the echo origin
// and what a redaction redacted filled in from the database.
package delivery

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/clock"
	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/identity"
	"github.com/daarion/matrix-bridge/pkg/mapping"
	"github.com/daarion/matrix-bridge/pkg/messaging"
	"github.com/daarion/matrix-bridge/pkg/rooms"
)

// Mapped is a log event with one of its DTOs.
type Mapped struct {
	Event *eventlog.Event
	DTO   *mapping.DTO
	// Part is the DTO's place among the event's DTOs (mapping.MapAll),
	// from 0, below mapping.MaxDTOsPerEvent: with the event's position it
	// names the DTO in the log, the same every time the event is mapped.
	Part int
	// body is the DTO's encoding, made once for every sink (nil: encode
	// each time).
	body *encoded
}

// encoded is a DTO's JSON, encoded on first use.
type encoded struct {
	once sync.Once
	data json.RawMessage
}

// JSON is the DTO's encoding (mapping.DTO.JSON), encoded once however many
// sinks deliver it. It must not be changed.
func (m Mapped) JSON() json.RawMessage {
	if m.body == nil {
		return m.DTO.JSON()
	}
	m.body.once.Do(func() { m.body.data = m.DTO.JSON() })
	return m.body.data
}

// mappedEvent is what Map made of one log event: shared by the sinks that
// map the same event (recentlyMapped).
type mappedEvent struct {
	dtos   []*mapping.DTO
	bodies []*encoded
}

// recentlyMapped keeps what Map made of the newest events, by the event as
// the log's in-memory tail hands it out (every sink of the process gets the
// same *eventlog.Event from it): the webhook fan-out and the NATS sink map
// each batch once between them, not once each. Events read from the
// database are new values, so they are mapped again, as before.
type recentlyMapped struct {
	mu    sync.Mutex
	byEvt map[*eventlog.Event]*mappedEvent
	order []*eventlog.Event // oldest first, for eviction
}

// maxRecentlyMapped bounds recentlyMapped: the tail's size (eventlog).
const maxRecentlyMapped = 16384

func (r *recentlyMapped) get(evt *eventlog.Event) *mappedEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.byEvt[evt]
}

func (r *recentlyMapped) put(evt *eventlog.Event, m *mappedEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byEvt == nil {
		r.byEvt = make(map[*eventlog.Event]*mappedEvent)
	}
	if _, ok := r.byEvt[evt]; ok {
		return
	}
	r.byEvt[evt] = m
	r.order = append(r.order, evt)
	if len(r.order) > maxRecentlyMapped {
		drop := len(r.order) - maxRecentlyMapped/2
		for _, old := range r.order[:drop] {
			delete(r.byEvt, old)
		}
		r.order = append(r.order[:0:0], r.order[drop:]...)
	}
}

// DTOSource maps log events to DTOs.
type DTOSource struct {
	ids       identity.Mapper
	cityRooms CityRooms
	sent      SentEvents
	logged    LoggedEvents
	// confidential tells the confidential rooms (SetConfidential); nil: none.
	confidential func(roomID string) bool

	// rooms caches room id → city room for a short while (mappings change
	// only on creation and room upgrades), at most maxCachedRooms of them.
	rooms *expirable.LRU[string, cachedRoom]

	unmapped atomic.Int64
	recent   recentlyMapped
}

// CityRooms finds the city room living in a Matrix room, or whose earlier
// room it was; rooms.Store is one (pkg/rooms owns the table).
type CityRooms interface {
	ByRoomID(ctx context.Context, roomID id.RoomID) (*rooms.CityRoom, error)
}

// SentEvents tells which events the bridge sent through the internal API;
// messaging.IdempotencyStore is one (pkg/messaging owns the table).
type SentEvents interface {
	SentBy(ctx context.Context, eventIDs []string) (map[string]messaging.SendRecord, error)
}

// LoggedEvents finds events in the event log by event id; eventlog.Log is
// one. Map reads the events redactions name from it.
type LoggedEvents interface {
	ByEventIDs(ctx context.Context, eventIDs []string) (map[string]*eventlog.Event, error)
}

type cachedRoom struct{ alias, slug string }

const roomCacheTTL = 10 * time.Second

// maxCachedRooms bounds the room lookups kept (a few MB at most).
const maxCachedRooms = 10000

// NewDTOSource returns a source that reads city rooms from cityRooms, the
// origin of the bridge's own events from sent, and the events redactions
// redacted from logged.
func NewDTOSource(ids identity.Mapper, cityRooms CityRooms, sent SentEvents, logged LoggedEvents) *DTOSource {
	return newDTOSource(ids, cityRooms, sent, logged, maxCachedRooms)
}

func newDTOSource(ids identity.Mapper, cityRooms CityRooms, sent SentEvents, logged LoggedEvents, maxRooms int) *DTOSource {
	return &DTOSource{ids: ids, cityRooms: cityRooms, sent: sent, logged: logged,
		rooms: expirable.NewLRU[string, cachedRoom](maxRooms, nil, roomCacheTTL)}
}

// SetConfidential makes the DTOs of the rooms confidential tells carry no
// message content (mapping.Mapper.Confidential). It is asked for every event
// mapped, so it must answer from memory (rooms.ConfidentialRooms.Is does).
// Call it before the sinks run.
func (s *DTOSource) SetConfidential(confidential func(roomID string) bool) {
	s.confidential = confidential
}

// Unmapped counts events of types no DTO exists for.
func (s *DTOSource) Unmapped() int64 { return s.unmapped.Load() }

// Map returns the DTOs of a batch, in log order (an event with two DTOs
// gives two in a row, in MapAll's order); events no DTO exists for are
// counted and left out.
func (s *DTOSource) Map(ctx context.Context, events []*eventlog.Event) ([]Mapped, error) {
	events = asRoomEvents(events)
	mapped := make([]*mappedEvent, len(events))
	var fresh []*eventlog.Event
	for i, evt := range events {
		if mapped[i] = s.recent.get(evt); mapped[i] == nil {
			fresh = append(fresh, evt)
		}
	}
	if len(fresh) > 0 {
		made, err := s.mapFresh(ctx, fresh)
		if err != nil {
			return nil, err
		}
		for i, j := 0, 0; i < len(events); i++ {
			if mapped[i] == nil {
				mapped[i] = made[j]
				s.recent.put(events[i], made[j])
				j++
			}
		}
	}
	out := make([]Mapped, 0, len(events))
	for i, evt := range events {
		for part, dto := range mapped[i].dtos {
			out = append(out, Mapped{Event: evt, DTO: dto, Part: part, body: mapped[i].bodies[part]})
		}
	}
	return out, nil
}

// mapFresh maps events no sink has mapped yet, one result per event.
func (s *DTOSource) mapFresh(ctx context.Context, events []*eventlog.Event) ([]*mappedEvent, error) {
	origins, err := s.originsOfEchoes(ctx, events)
	if err != nil {
		return nil, err
	}
	cities := map[string]cachedRoom{}
	for _, evt := range events {
		if _, done := cities[evt.RoomID]; evt.RoomID != "" && !done {
			if cities[evt.RoomID], err = s.room(ctx, evt.RoomID); err != nil {
				return nil, err
			}
		}
	}
	redacted, err := s.redacted(ctx, events)
	if err != nil {
		return nil, err
	}
	m := &mapping.Mapper{
		IDs:      s.ids,
		Rooms:    func(roomID string) (string, string) { return cities[roomID].alias, cities[roomID].slug },
		Origin:   func(eventID string) *mapping.Origin { return origins[eventID] },
		Redacted: func(eventID string) *eventlog.Event { return redacted[eventID] },

		Confidential: s.confidential,
	}
	out := make([]*mappedEvent, len(events))
	for i, evt := range events {
		dtos := m.MapAll(evt)
		if len(dtos) == 0 && !encryptedOriginal(evt) {
			s.unmapped.Add(1)
		}
		me := &mappedEvent{dtos: dtos, bodies: make([]*encoded, len(dtos))}
		for part := range dtos {
			me.bodies[part] = &encoded{}
		}
		out[i] = me
	}
	return out, nil
}

// echoWait bounds how long a fresh event sent by a bridge-controlled user
// (an agent ghost or the bot) waits for the send's record: the homeserver
// can deliver the echo before the API call that sent it has recorded it.
const echoWait = 2 * time.Second

// originsOfEchoes is origins, waiting up to echoWait while a fresh event of
// a bridge-controlled sender has no record yet. Events the bridge sent
// outside the API (an agent accepting an invite) simply have none.
func (s *DTOSource) originsOfEchoes(ctx context.Context, events []*eventlog.Event) (map[string]*mapping.Origin, error) {
	deadline := time.Now().Add(echoWait)
	for {
		origins, err := s.origins(ctx, events)
		if err != nil || time.Now().After(deadline) || !s.awaitingRecord(events, origins) {
			return origins, err
		}
		if !clock.Sleep(ctx, 50*time.Millisecond) {
			return nil, ctx.Err()
		}
	}
}

func (s *DTOSource) awaitingRecord(events []*eventlog.Event, origins map[string]*mapping.Origin) bool {
	for _, evt := range events {
		if evt.Kind != eventlog.KindTimeline || origins[evt.EventID] != nil || time.Since(evt.ReceivedAt) > echoWait {
			continue
		}
		switch s.ids.FromMatrix(id.UserID(evt.Sender)).Kind {
		case identity.KindAgent, identity.KindBridge:
			return true
		}
	}
	return false
}

// origins looks up, in one query, which events of the batch the bridge sent.
func (s *DTOSource) origins(ctx context.Context, events []*eventlog.Event) (map[string]*mapping.Origin, error) {
	var eventIDs []string
	for _, evt := range events {
		if evt.Kind == eventlog.KindTimeline {
			eventIDs = append(eventIDs, evt.EventID)
		}
	}
	records, err := s.sent.SentBy(ctx, eventIDs)
	if err != nil {
		return nil, err
	}
	origins := make(map[string]*mapping.Origin, len(records))
	for eventID, rec := range records {
		origins[eventID] = &mapping.Origin{Bridge: true, Service: rec.Service, IdempotencyKey: rec.IdempotencyKey}
	}
	return origins, nil
}

// redacted looks up, in one query, the events the batch's redactions name.
// A failure fails the batch (the consumer retries it): mapping without the
// lookup would deliver a DTO that leaves out what the log holds.
func (s *DTOSource) redacted(ctx context.Context, events []*eventlog.Event) (map[string]*eventlog.Event, error) {
	var eventIDs []string
	seen := map[string]bool{}
	for _, evt := range events {
		if target := mapping.Redacts(evt); target != "" && !seen[target] {
			seen[target] = true
			eventIDs = append(eventIDs, target)
		}
	}
	if len(eventIDs) == 0 {
		return nil, nil
	}
	found, err := s.logged.ByEventIDs(ctx, eventIDs)
	if err != nil {
		return nil, fmt.Errorf("failed to look up the events %d redactions name: %w", len(eventIDs), err)
	}
	return found, nil
}

// room returns the city room alias and slug of a room id ("" when none).
func (s *DTOSource) room(ctx context.Context, roomID string) (cachedRoom, error) {
	if c, ok := s.rooms.Get(roomID); ok {
		return c, nil
	}
	cr, err := s.cityRooms.ByRoomID(ctx, id.RoomID(roomID))
	if err != nil {
		return cachedRoom{}, err
	}
	var c cachedRoom
	if cr != nil {
		c = cachedRoom{alias: string(cr.Alias), slug: cr.Slug}
	}
	s.rooms.Add(roomID, c)
	return c, nil
}
