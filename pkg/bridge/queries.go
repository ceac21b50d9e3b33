package bridge

import (
	"context"

	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/agents"
	"github.com/daarion/matrix-bridge/pkg/rooms"
)

// queries answers the homeserver's user and alias queries.
type queries struct {
	rooms  *rooms.Service
	agents *agents.Service
}

// QueryUser answers for @agent_<id> users.
func (q queries) QueryUser(ctx context.Context, userID id.UserID) (bool, error) {
	return q.agents.QueryUser(ctx, userID)
}

// QueryAlias answers for #city_<slug> aliases.
func (q queries) QueryAlias(ctx context.Context, alias id.RoomAlias) (bool, error) {
	return q.rooms.QueryAlias(ctx, alias)
}
