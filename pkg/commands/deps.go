package commands

import (
	"context"

	"github.com/daarion/matrix-bridge/pkg/consumer"
	"github.com/daarion/matrix-bridge/pkg/delivery/jetstream"
	"github.com/daarion/matrix-bridge/pkg/delivery/webhook"
	"github.com/daarion/matrix-bridge/pkg/eventlog"
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
