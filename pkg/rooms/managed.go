package rooms

import (
	"context"
	"fmt"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/internalapi"
)

// Where a managed room (beside a city room) came from.
const (
	// OriginCreated is a room created through POST /internal/matrix/create-room.
	OriginCreated = "created"
	// OriginAgentInvite is a room an agent was invited into and accepted.
	OriginAgentInvite = "agent_invite"
)

const (
	markManagedQuery = `
		INSERT INTO managed_room (room_id, origin, agent_id, managed_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (room_id) DO NOTHING`
	// managedQuery: a city room, a room a city room lived in, or a marked room.
	managedQuery = `
		SELECT EXISTS (SELECT 1 FROM city_room WHERE room_id = $1)
			OR EXISTS (SELECT 1 FROM city_room_predecessor WHERE room_id = $1)
			OR EXISTS (SELECT 1 FROM managed_room WHERE room_id = $1)`
)

// MarkManaged records roomID as a room the bridge manages for DAARION. The
// first origin stays; marking again is a no-op.
func (s *Store) MarkManaged(ctx context.Context, roomID id.RoomID, origin, agentID string) error {
	if err := s.cityRooms.Exec(ctx, markManagedQuery, roomID, origin, agentID, time.Now().UnixMilli()); err != nil {
		return fmt.Errorf("failed to record %s as a managed room: %w", roomID, err)
	}
	return nil
}

// Managed reports whether roomID is a room the bridge manages for DAARION: a
// city room (or a room a city room lived in before an upgrade), or a room
// MarkManaged recorded.
func (s *Store) Managed(ctx context.Context, roomID id.RoomID) (bool, error) {
	var managed bool
	if err := s.db.QueryRow(ctx, managedQuery, roomID).Scan(&managed); err != nil {
		return false, fmt.Errorf("failed to look up whether %s is a managed room: %w", roomID, err)
	}
	return managed, nil
}

// OutOfReachError is a 403: the calling service may not act in the room.
type OutOfReachError struct {
	Field   string
	Problem string
}

func (e *OutOfReachError) Error() string { return e.Field + ": " + e.Problem }

// APIError is the answer: 403 M_FORBIDDEN naming the field.
func (e *OutOfReachError) APIError() *internalapi.Error {
	return internalapi.ForbiddenField(e.Field, e.Problem)
}

// CheckReach returns nil when the service calling the internal API (the one
// in ctx) may act in roomID, named by field, and an *OutOfReachError when it
// may not. The bot's direct chats — where admins give commands — are never
// reachable. Rooms the bridge manages for DAARION (Store.Managed) are
// reachable with the route's scope alone; any other room only with the
// any_room scope as well, and then as far as the acting user's membership
// lets the homeserver allow.
func (s *Service) CheckReach(ctx context.Context, field string, roomID id.RoomID) error {
	if s.direct != nil {
		direct, err := s.direct.Has(ctx, roomID)
		if err != nil {
			return matrixFailure("reading the bot's direct chats", err)
		} else if direct {
			return &OutOfReachError{Field: field, Problem: "is one of the bridge bot's direct chats, which the internal API never reaches"}
		}
	}
	managed, err := s.store.Managed(ctx, roomID)
	if err != nil {
		return err
	} else if managed || internalapi.ServiceFrom(ctx).Has(internalapi.ScopeAnyRoom) {
		return nil
	}
	return &OutOfReachError{Field: field, Problem: "is not a room the bridge manages for DAARION (a city room, a room created through " +
		"the internal API, or a room an agent accepted an invite into); reaching other rooms needs the any_room scope"}
}
