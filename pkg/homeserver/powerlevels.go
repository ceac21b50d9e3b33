package homeserver

import (
	"context"
	"fmt"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// PowerLevels reads a room's power levels together with its create event, so
// that GetUserLevel is right in every room version: from room version 12
// (MSC4289; Synapse's default room version) a room's creators have a power
// level above every other and are not listed in m.room.power_levels at all.
// Read without the create event, the bot that created a v12 room has level 0.
func PowerLevels(ctx context.Context, cli *mautrix.Client, roomID id.RoomID) (*event.PowerLevelsEventContent, error) {
	var pl event.PowerLevelsEventContent
	if err := cli.StateEvent(ctx, roomID, event.StatePowerLevels, "", &pl); err != nil {
		return nil, err
	}
	// format=event gives the whole event (its sender is the creator) and
	// parses its content.
	create, err := cli.FullStateEvent(ctx, roomID, event.StateCreate, "")
	if err != nil {
		return nil, fmt.Errorf("failed to read the create event: %w", err)
	}
	pl.CreateEvent = create
	return &pl, nil
}
