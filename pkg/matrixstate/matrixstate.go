// Package matrixstate keeps mautrix's room state store — membership, power
// levels, encryption, create events, join rules, history visibility — in
// the bridge's database (mautrix's sqlstatestore and its mx_* tables, which
// it owns and upgrades), and feeds it from the event log. Every process on
// one database shares it: the leader's consumer writes what the homeserver
// pushed, the intents of every process write what they did themselves.
package matrixstate

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/sqlstatestore"

	"github.com/daarion/matrix-bridge/pkg/eventlog"
)

// Open returns the state store in db, its schema upgraded.
func Open(ctx context.Context, db *dbutil.Database, log zerolog.Logger) (*sqlstatestore.SQLStateStore, error) {
	// isBridge false: true makes FindSharedRooms (what the end-to-bridge
	// encryption asks) join a bridgev1 "portal" table this bridge has not;
	// false reads the rooms' encryption from mx_room_state. Nothing else in
	// sqlstatestore depends on it.
	store := sqlstatestore.NewSQLStateStore(db, dbutil.ZeroLogger(log.With().Str("db_section", "matrix_state").Logger()), false)
	if err := store.Upgrade(ctx); err != nil {
		return nil, fmt.Errorf("failed to upgrade the Matrix state store: %w", err)
	}
	return store, nil
}

// Store is what the consumer writes to; sqlstatestore.SQLStateStore is one.
type Store interface {
	SetMember(ctx context.Context, roomID id.RoomID, userID id.UserID, member *event.MemberEventContent) error
	SetPowerLevels(ctx context.Context, roomID id.RoomID, levels *event.PowerLevelsEventContent) error
	SetEncryptionEvent(ctx context.Context, roomID id.RoomID, content *event.EncryptionEventContent) error
	SetCreate(ctx context.Context, evt *event.Event) error
	SetJoinRules(ctx context.Context, roomID id.RoomID, rules *event.JoinRulesEventContent) error
	SetHistoryVisibility(ctx context.Context, roomID id.RoomID, content *event.HistoryVisibilityEventContent) error
}

// Consumer is the event log consumer that applies state events to a Store.
type Consumer struct{ store Store }

// NewConsumer returns the consumer writing to store.
func NewConsumer(store Store) *Consumer { return &Consumer{store: store} }

// tracked are the state event types the store keeps.
var tracked = map[string]bool{
	event.StateMember.Type: true, event.StatePowerLevels.Type: true, event.StateEncryption.Type: true,
	event.StateCreate.Type: true, event.StateJoinRules.Type: true, event.StateHistoryVisibility.Type: true,
}

// HandleEvents applies the batch's tracked state events, in log order. A
// database failure is returned (and retried). An event that cannot be read as
// what its type says (old rooms allow power levels as strings) is skipped
// with a warning: the store is a cache, and an intent that finds nothing in
// it asks the homeserver.
func (c *Consumer) HandleEvents(ctx context.Context, events []*eventlog.Event) error {
	for _, logged := range events {
		if logged.Kind != eventlog.KindTimeline || !tracked[logged.Type] {
			continue
		}
		if err := c.apply(ctx, logged); err != nil {
			return err
		}
	}
	return nil
}

func (c *Consumer) apply(ctx context.Context, logged *eventlog.Event) error {
	var evt event.Event
	if err := json.Unmarshal(logged.JSON, &evt); err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Str("event_id", logged.EventID).Msg("Not keeping an unreadable state event in the state store")
		return nil
	}
	// Only member events have a state key among the tracked types; a
	// message of a state type is no state.
	if evt.StateKey == nil || (logged.Type != event.StateMember.Type && *evt.StateKey != "") {
		return nil
	}
	evt.Type.Class = event.StateEventType
	if err := evt.Content.ParseRaw(evt.Type); err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Str("event_id", logged.EventID).Str("event_type", logged.Type).
			Msg("Not keeping a state event whose content mautrix cannot read in the state store")
		return nil
	}
	roomID := evt.RoomID
	var err error
	switch content := evt.Content.Parsed.(type) {
	case *event.MemberEventContent:
		err = c.store.SetMember(ctx, roomID, id.UserID(evt.GetStateKey()), content)
	case *event.PowerLevelsEventContent:
		err = c.store.SetPowerLevels(ctx, roomID, content)
	case *event.EncryptionEventContent:
		err = c.store.SetEncryptionEvent(ctx, roomID, content)
	case *event.CreateEventContent:
		err = c.store.SetCreate(ctx, &evt)
	case *event.JoinRulesEventContent:
		err = c.store.SetJoinRules(ctx, roomID, content)
	case *event.HistoryVisibilityEventContent:
		err = c.store.SetHistoryVisibility(ctx, roomID, content)
	}
	if err != nil {
		return fmt.Errorf("failed to apply %s %s to the state store: %w", evt.Type.Type, logged.EventID, err)
	}
	return nil
}
