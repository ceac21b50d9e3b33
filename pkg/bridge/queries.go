package bridge

import (
	"context"

	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/rooms"
)

// queries answers the homeserver's user and alias queries.
type queries struct {
	rooms *rooms.Service
}

// QueryUser: agent ghosts come with the agents issue; until then no user exists.
func (q queries) QueryUser(context.Context, id.UserID) (bool, error) { return false, nil }

// QueryAlias answers for #city_<slug> aliases.
func (q queries) QueryAlias(ctx context.Context, alias id.RoomAlias) (bool, error) {
	return q.rooms.QueryAlias(ctx, alias)
}
