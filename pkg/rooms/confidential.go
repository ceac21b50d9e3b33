package rooms

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/clock"
)

// Confidential rooms: the bridge keeps their message content out of DTOs,
// sync answers and its own event log (pkg/mapping.StripContent says what is
// kept). The flag lives in confidential_room; every process holds the whole
// set in memory (ConfidentialRooms), so that asking about a room on the hot
// path — every event mapped, synced or indexed — costs no query.

const (
	markConfidentialQuery = `
		INSERT INTO confidential_room (room_id, marked_by, marked_at) VALUES ($1, $2, $3)
		ON CONFLICT (room_id) DO NOTHING`
	unmarkConfidentialQuery = `DELETE FROM confidential_room WHERE room_id = $1`
	confidentialRoomsQuery  = `SELECT room_id FROM confidential_room`
)

// SetConfidential marks roomID confidential (by names who did it: a service
// or a Matrix user) or unmarks it. Marking again keeps the first record.
func (s *Store) SetConfidential(ctx context.Context, roomID id.RoomID, confidential bool, by string) error {
	var err error
	if confidential {
		err = s.cityRooms.Exec(ctx, markConfidentialQuery, roomID, by, time.Now().UnixMilli())
	} else {
		err = s.cityRooms.Exec(ctx, unmarkConfidentialQuery, roomID)
	}
	if err != nil {
		return fmt.Errorf("failed to set whether %s is confidential: %w", roomID, err)
	}
	return nil
}

// ConfidentialRoomIDs returns every room marked confidential.
func (s *Store) ConfidentialRoomIDs(ctx context.Context) ([]id.RoomID, error) {
	rows, err := s.db.Query(ctx, confidentialRoomsQuery)
	roomIDs, err := dbutil.NewRowIterWithError(rows, dbutil.ScanSingleColumn[id.RoomID], err).AsList()
	if err != nil {
		return nil, fmt.Errorf("failed to list the confidential rooms: %w", err)
	}
	return roomIDs, nil
}

// DefaultConfidentialRefresh is how often ConfidentialRooms reads the table
// again: what bounds how long a mark made by another process takes to reach
// this one (a mark made here applies here at once).
const DefaultConfidentialRefresh = 2 * time.Second

// ConfidentialRooms is the set of confidential rooms, in memory. Load fills
// it, Run keeps it in step with the table, and a change made through
// Service.SetConfidential applies to it at once.
type ConfidentialRooms struct {
	store   *Store
	refresh time.Duration
	set     atomic.Pointer[map[string]struct{}]
}

// NewConfidentialRooms returns an empty set over store; Load fills it.
func NewConfidentialRooms(store *Store) *ConfidentialRooms {
	c := &ConfidentialRooms{store: store, refresh: DefaultConfidentialRefresh}
	c.set.Store(&map[string]struct{}{})
	return c
}

// Is reports whether roomID is confidential: a map look-up, safe for
// concurrent use.
func (c *ConfidentialRooms) Is(roomID string) bool {
	if c == nil {
		return false
	}
	_, ok := (*c.set.Load())[roomID]
	return ok
}

// Load reads the set from the table. The bridge loads it before anything
// is indexed or delivered; a failure then fails the start.
func (c *ConfidentialRooms) Load(ctx context.Context) error {
	roomIDs, err := c.store.ConfidentialRoomIDs(ctx)
	if err != nil {
		return err
	}
	set := make(map[string]struct{}, len(roomIDs))
	for _, roomID := range roomIDs {
		set[string(roomID)] = struct{}{}
	}
	c.set.Store(&set)
	return nil
}

// Run reloads the set every refresh interval until ctx ends. A failed
// reload keeps the set it has (a mark is never forgotten by a failure).
func (c *ConfidentialRooms) Run(ctx context.Context) {
	for clock.Sleep(ctx, c.refresh) {
		if err := c.Load(ctx); err != nil && ctx.Err() == nil {
			zerolog.Ctx(ctx).Warn().Err(err).Msg("Failed to reload the confidential rooms; keeping the set loaded before")
		}
	}
}

// apply puts one change into the set at once (copy on write).
func (c *ConfidentialRooms) apply(roomID id.RoomID, confidential bool) {
	for {
		old := c.set.Load()
		if _, ok := (*old)[string(roomID)]; ok == confidential {
			return
		}
		next := make(map[string]struct{}, len(*old)+1)
		for k := range *old {
			next[k] = struct{}{}
		}
		if confidential {
			next[string(roomID)] = struct{}{}
		} else {
			delete(next, string(roomID))
		}
		if c.set.CompareAndSwap(old, &next) {
			return
		}
	}
}

// Confidential returns the set of confidential rooms.
func (s *Service) Confidential() *ConfidentialRooms { return s.confidential }

// IsConfidential reports whether roomID is confidential (from memory).
func (s *Service) IsConfidential(roomID id.RoomID) bool { return s.confidential.Is(string(roomID)) }

// SetConfidential marks a room confidential, or unmarks it, and answers
// the state. The room must be in reach (CheckReach: a room the bridge
// manages, or any room with the any_room scope; never the bot's direct
// chats, where commands are read). Events stored before the change are not
// rewritten.
func (s *Service) SetConfidential(ctx context.Context, field string, roomID id.RoomID, confidential bool, by string) error {
	if err := ValidateRoomID(field, roomID); err != nil {
		return err
	}
	if err := s.CheckReach(ctx, field, roomID); err != nil {
		return err
	}
	if err := s.store.SetConfidential(ctx, roomID, confidential, by); err != nil {
		return err
	}
	s.confidential.apply(roomID, confidential)
	zerolog.Ctx(ctx).Info().Stringer("room_id", roomID).Bool("confidential", confidential).Str("by", by).
		Msg("Room confidentiality changed")
	return nil
}
