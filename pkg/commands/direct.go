package commands

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// directRooms are the bot's direct chats, kept where Matrix keeps them: the
// bot's m.direct account data (user → rooms). It is read once and written
// through, so it survives restarts and a change of leader.
type directRooms struct {
	client *mautrix.Client

	mu     sync.Mutex
	loaded bool
	byUser map[id.UserID][]id.RoomID
}

func (d *directRooms) loadLocked(ctx context.Context) error {
	if d.loaded {
		return nil
	}
	byUser := map[id.UserID][]id.RoomID{}
	err := d.client.GetAccountData(ctx, "m.direct", &byUser)
	if err != nil && !errors.Is(err, mautrix.MNotFound) {
		return fmt.Errorf("failed to read the bot's direct chats: %w", err)
	}
	d.byUser, d.loaded = byUser, true
	return nil
}

// has reports whether roomID is one of the bot's direct chats.
func (d *directRooms) has(ctx context.Context, roomID id.RoomID) (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.loadLocked(ctx); err != nil {
		return false, err
	}
	return d.hasLocked(roomID), nil
}

// cached is has without loading: false until loaded.
func (d *directRooms) cached(roomID id.RoomID) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.loaded && d.hasLocked(roomID)
}

func (d *directRooms) hasLocked(roomID id.RoomID) bool {
	for _, rooms := range d.byUser {
		if slices.Contains(rooms, roomID) {
			return true
		}
	}
	return false
}

// add records roomID as a direct chat with userID.
func (d *directRooms) add(ctx context.Context, userID id.UserID, roomID id.RoomID) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.loadLocked(ctx); err != nil {
		return err
	}
	if slices.Contains(d.byUser[userID], roomID) {
		return nil
	}
	next := make(map[id.UserID][]id.RoomID, len(d.byUser)+1)
	for user, rooms := range d.byUser {
		next[user] = rooms
	}
	next[userID] = append(slices.Clone(d.byUser[userID]), roomID)
	if err := d.client.SetAccountData(ctx, "m.direct", next); err != nil {
		return fmt.Errorf("failed to record a direct chat: %w", err)
	}
	d.byUser = next
	return nil
}
