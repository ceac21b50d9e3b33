package rooms

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// DefaultDirectChatsRefresh is how long a process trusts its copy of the
// bot's direct chats before reading them again. The bot's own process writes
// through; another process sharing the database learns of a new direct chat
// within this time.
const DefaultDirectChatsRefresh = 10 * time.Second

// DirectChats are the bot's direct chats (the admins' command rooms), kept
// where Matrix keeps them: the bot's m.direct account data (user → rooms).
// They are read on first use and again after Refresh, and written through,
// so they survive restarts and a change of leader. The internal API never
// reaches them (Service.CheckReach).
type DirectChats struct {
	client *mautrix.Client
	// Refresh is how old the copy may get before has reads it again.
	Refresh time.Duration
	now     func() time.Time

	mu       sync.Mutex
	loadedAt time.Time // zero: never loaded
	byUser   map[id.UserID][]id.RoomID
}

// NewDirectChats returns the direct chats of the bot that client is.
func NewDirectChats(client *mautrix.Client) *DirectChats {
	return &DirectChats{client: client, Refresh: DefaultDirectChatsRefresh, now: time.Now}
}

func (d *DirectChats) loadLocked(ctx context.Context) error {
	if !d.loadedAt.IsZero() && d.now().Sub(d.loadedAt) < d.Refresh {
		return nil
	}
	byUser := map[id.UserID][]id.RoomID{}
	err := d.client.GetAccountData(ctx, "m.direct", &byUser)
	if err != nil && !errors.Is(err, mautrix.MNotFound) {
		return fmt.Errorf("failed to read the bot's direct chats: %w", err)
	}
	d.byUser, d.loadedAt = byUser, d.now()
	return nil
}

// Has reports whether roomID is one of the bot's direct chats.
func (d *DirectChats) Has(ctx context.Context, roomID id.RoomID) (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.loadLocked(ctx); err != nil {
		return false, err
	}
	return d.hasLocked(roomID), nil
}

// Cached is Has without reading: false until first read.
func (d *DirectChats) Cached(roomID id.RoomID) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return !d.loadedAt.IsZero() && d.hasLocked(roomID)
}

func (d *DirectChats) hasLocked(roomID id.RoomID) bool {
	for _, rooms := range d.byUser {
		if slices.Contains(rooms, roomID) {
			return true
		}
	}
	return false
}

// Add records roomID as a direct chat with userID.
func (d *DirectChats) Add(ctx context.Context, userID id.UserID, roomID id.RoomID) error {
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
