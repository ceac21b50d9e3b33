package commands

import (
	"context"

	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/agents"
	"github.com/daarion/matrix-bridge/pkg/consumer"
	"github.com/daarion/matrix-bridge/pkg/delivery/jetstream"
	"github.com/daarion/matrix-bridge/pkg/delivery/webhook"
	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/reconcile"
	"github.com/daarion/matrix-bridge/pkg/rooms"
)

// The bot's dependencies, as small as what its commands use; the bridge
// hands it the real parts (pkg/bridge), a test whatever it needs.

// EventLog is what the bot reads of the event log; *eventlog.Log is one.
type EventLog interface {
	LastBy(ctx context.Context, sender, eventType string, window int64) (*eventlog.Event, error)
	ParkedTransactionCount(ctx context.Context) (int64, error)
}

// Subscriptions is what the bot reads and changes of the webhook
// subscriptions; *webhook.Store is one.
type Subscriptions interface {
	Subscription(ctx context.Context, id string) (*webhook.Subscription, error)
	Subscriptions(ctx context.Context, service string) ([]*webhook.Subscription, error)
	Counts(ctx context.Context, subscriptionID string) (pending, dead int64, err error)
	DeadLetters(ctx context.Context, subscriptionID string, limit int) ([]*webhook.Delivery, error)
	SetState(ctx context.Context, id, state, reason string) error
	Redeliver(ctx context.Context, subscriptionID, eventID string) (int64, error)
}

// Deliverer is the webhook deliverer as the bot sees it; *webhook.Deliverer
// is one.
type Deliverer interface {
	Wake()
	Stats() webhook.Stats
}

// ParkedEvents is the parked list as the bot sees it; *consumer.ParkedStore
// is one.
type ParkedEvents interface {
	List(ctx context.Context, opts consumer.ListOptions) ([]*consumer.ParkedEvent, error)
	RequestRetry(ctx context.Context, consumer string, position int64) (int64, error)
}

// NATSSink is the JetStream sink as the bot sees it; *jetstream.Sink is one.
type NATSSink interface {
	Stats() jetstream.Stats
}

// Rooms is what the bot changes of the city rooms, and the rooms service's
// caches it shares; *rooms.Service is one.
type Rooms interface {
	Create(ctx context.Context, req rooms.CreateRequest) (*rooms.CityRoom, error)
	Archive(ctx context.Context, roomID id.RoomID, reason string) (*rooms.CityRoom, error)
	Unarchive(ctx context.Context, roomID id.RoomID) (*rooms.CityRoom, error)
	// Cache is the room metadata cache (a room's name in `room`).
	Cache() *rooms.MetadataCache
	// DirectChats are the bot's direct chats, shared with the internal
	// API's reach check; nil makes the bot keep its own.
	DirectChats() *rooms.DirectChats
	// CheckSpace reports (and with repair, fixes) the city space.
	CheckSpace(ctx context.Context, repair bool) (*rooms.SpaceReport, error)
	// SetConfidential marks a room the bridge manages confidential, or
	// unmarks it; IsConfidential tells.
	SetConfidential(ctx context.Context, field string, roomID id.RoomID, confidential bool, by string) error
	IsConfidential(roomID id.RoomID) bool
}

// CityRooms is what the bot reads of the city room mapping; *rooms.Store
// is one (pkg/rooms owns the table).
type CityRooms interface {
	List(ctx context.Context, opts rooms.ListOptions) ([]*rooms.CityRoom, error)
	BySlug(ctx context.Context, slug string) (*rooms.CityRoom, error)
	ByAlias(ctx context.Context, alias id.RoomAlias) (*rooms.CityRoom, error)
	ByRoomID(ctx context.Context, roomID id.RoomID) (*rooms.CityRoom, error)
}

// Agents is what the bot changes of agents' ghosts; *agents.Service is one.
type Agents interface {
	// SetProfile sets the profile in Matrix and in the agent table.
	SetProfile(ctx context.Context, agentID string, displayName, avatarURL *string) error
}

// AgentStore is what the bot reads of the agent table; *agents.Store is
// one (pkg/agents owns the table).
type AgentStore interface {
	Get(ctx context.Context, agentID string) (*agents.Agent, error)
	List(ctx context.Context, prefix string, limit int) ([]*agents.Agent, error)
}

// Reconciler compares rooms' timelines with the event log;
// *reconcile.Reconciler is one.
type Reconciler interface {
	City(ctx context.Context, trigger string) (*reconcile.Report, error)
	Rooms(ctx context.Context, trigger string, roomIDs []id.RoomID) *reconcile.Report
}
