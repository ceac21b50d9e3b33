// Package delivery carries DTOs to DAARION services. Every sink is a
// consumer of the event log with its own durable cursor; DTOSource maps a
// batch of log events to DTOs for them, with the city room and the echo
// origin filled in from the database.
package delivery

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/identity"
	"github.com/daarion/matrix-bridge/pkg/mapping"
)

// Mapped is a log event with its DTO.
type Mapped struct {
	Event *eventlog.Event
	DTO   *mapping.DTO
}

// DTOSource maps log events to DTOs.
type DTOSource struct {
	db  *dbutil.Database
	ids identity.Mapper

	// rooms caches room id → city room for a short while: mappings change
	// only on creation and room upgrades.
	roomsMu sync.Mutex
	rooms   map[string]cachedRoom
	// maxRooms bounds rooms (maxCachedRooms).
	maxRooms int

	unmapped atomic.Int64
}

type cachedRoom struct {
	alias, slug string
	at          time.Time
}

const roomCacheTTL = 10 * time.Second

// NewDTOSource returns a source reading city rooms and sent events from db.
func NewDTOSource(db *dbutil.Database, ids identity.Mapper) *DTOSource {
	return &DTOSource{db: db, ids: ids, rooms: map[string]cachedRoom{}, maxRooms: maxCachedRooms}
}

// Unmapped counts events of types no DTO exists for.
func (s *DTOSource) Unmapped() int64 { return s.unmapped.Load() }

// Map returns the DTOs of a batch, in log order; events no DTO exists for
// are counted and left out.
func (s *DTOSource) Map(ctx context.Context, events []*eventlog.Event) ([]Mapped, error) {
	origins, err := s.originsOfEchoes(ctx, events)
	if err != nil {
		return nil, err
	}
	rooms := map[string]cachedRoom{}
	for _, evt := range events {
		if _, done := rooms[evt.RoomID]; evt.RoomID != "" && !done {
			if rooms[evt.RoomID], err = s.room(ctx, evt.RoomID); err != nil {
				return nil, err
			}
		}
	}
	m := &mapping.Mapper{
		IDs:    s.ids,
		Rooms:  func(roomID string) (string, string) { return rooms[roomID].alias, rooms[roomID].slug },
		Origin: func(eventID string) *mapping.Origin { return origins[eventID] },
	}
	out := make([]Mapped, 0, len(events))
	for _, evt := range events {
		if dto := m.Map(evt); dto != nil {
			out = append(out, Mapped{Event: evt, DTO: dto})
		} else {
			s.unmapped.Add(1)
		}
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
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
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
	var args []any
	var marks []string
	for _, evt := range events {
		if evt.Kind == eventlog.KindTimeline {
			args = append(args, evt.EventID)
			marks = append(marks, fmt.Sprintf("$%d", len(args)))
		}
	}
	origins := map[string]*mapping.Origin{}
	if len(args) == 0 {
		return origins, nil
	}
	rows, err := s.db.Query(ctx, `SELECT event_id, service, COALESCE(idem_key, '') FROM sent_event WHERE event_id IN (`+strings.Join(marks, ", ")+`)`, args...)
	if err != nil {
		return nil, fmt.Errorf("failed to look up sent events: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var eventID string
		o := &mapping.Origin{Bridge: true}
		if err = rows.Scan(&eventID, &o.Service, &o.IdempotencyKey); err != nil {
			return nil, fmt.Errorf("failed to read sent events: %w", err)
		}
		origins[eventID] = o
	}
	return origins, rows.Err()
}

// room returns the city room alias and slug of a room id ("" when none).
func (s *DTOSource) room(ctx context.Context, roomID string) (cachedRoom, error) {
	s.roomsMu.Lock()
	c, ok := s.rooms[roomID]
	s.roomsMu.Unlock()
	if ok && time.Since(c.at) < roomCacheTTL {
		return c, nil
	}
	c = cachedRoom{at: time.Now()}
	err := s.db.QueryRow(ctx, `
		SELECT alias, slug FROM city_room WHERE room_id = $1
		UNION ALL
		SELECT c.alias, c.slug FROM city_room c JOIN city_room_predecessor p ON p.slug = c.slug WHERE p.room_id = $1
		LIMIT 1`, roomID).Scan(&c.alias, &c.slug)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return c, fmt.Errorf("failed to look up the city room of %s: %w", roomID, err)
	}
	s.roomsMu.Lock()
	if len(s.rooms) >= s.maxRooms {
		s.evictRoomsLocked()
	}
	s.rooms[roomID] = c
	s.roomsMu.Unlock()
	return c, nil
}

// maxCachedRooms bounds the room lookups kept (a few MB at most).
const maxCachedRooms = 10000

// evictRoomsLocked makes room for one more lookup: expired ones go first,
// then, if that freed nothing, any one (they are only a cache).
func (s *DTOSource) evictRoomsLocked() {
	for id, c := range s.rooms {
		if time.Since(c.at) >= roomCacheTTL {
			delete(s.rooms, id)
		}
	}
	for id := range s.rooms {
		if len(s.rooms) < s.maxRooms {
			break
		}
		delete(s.rooms, id)
	}
}
