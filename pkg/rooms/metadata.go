package rooms

import (
	"context"
	"sync"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Metadata is what GET /internal/matrix/rooms/{roomId} answers.
type Metadata struct {
	RoomID         id.RoomID `json:"room_id"`
	Name           string    `json:"name"`
	Topic          string    `json:"topic"`
	AvatarURL      string    `json:"avatar_url"`
	CanonicalAlias string    `json:"canonical_alias"`
	// MemberCount counts joined and invited members.
	MemberCount   int `json:"member_count"`
	JoinedMembers int `json:"joined_members"`
	// Encryption is the m.room.encryption algorithm, nil when unencrypted.
	Encryption *string `json:"encryption"`
}

type cacheEntry struct {
	meta      Metadata
	fetchedAt time.Time
}

// MetadataCache serves room metadata from memory. The room consumer drops a
// room's entry when a state event arrives for it, so a change made in Matrix
// is seen on the next read; the TTL bounds staleness should an event be missed.
type MetadataCache struct {
	ttl   time.Duration
	fetch func(ctx context.Context, roomID id.RoomID) (*Metadata, error)
	now   func() time.Time

	mu      sync.RWMutex
	entries map[id.RoomID]cacheEntry
}

// NewMetadataCache returns an empty cache that fills itself with fetch.
func NewMetadataCache(ttl time.Duration, fetch func(context.Context, id.RoomID) (*Metadata, error)) *MetadataCache {
	return &MetadataCache{ttl: ttl, fetch: fetch, now: time.Now, entries: make(map[id.RoomID]cacheEntry)}
}

// Get returns a room's metadata, from the cache when fresh.
func (c *MetadataCache) Get(ctx context.Context, roomID id.RoomID) (*Metadata, error) {
	c.mu.RLock()
	entry, ok := c.entries[roomID]
	c.mu.RUnlock()
	if ok && c.now().Sub(entry.fetchedAt) < c.ttl {
		meta := entry.meta
		return &meta, nil
	}
	fetchedAt := c.now()
	meta, err := c.fetch(ctx, roomID)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	// An invalidation that raced the fetch wins: keep nothing older than it.
	if cur, ok := c.entries[roomID]; !ok || cur.fetchedAt.Before(fetchedAt) {
		c.entries[roomID] = cacheEntry{meta: *meta, fetchedAt: fetchedAt}
	}
	c.mu.Unlock()
	return meta, nil
}

// Peek returns a room's metadata when the cache holds a fresh copy, without
// fetching: the hot path of GET /rooms/{roomId} answers from memory alone.
func (c *MetadataCache) Peek(roomID id.RoomID) (*Metadata, bool) {
	c.mu.RLock()
	entry, ok := c.entries[roomID]
	c.mu.RUnlock()
	if !ok || c.now().Sub(entry.fetchedAt) >= c.ttl {
		return nil, false
	}
	meta := entry.meta
	return &meta, true
}

// Invalidate drops a room's entry.
func (c *MetadataCache) Invalidate(roomID id.RoomID) {
	c.mu.Lock()
	delete(c.entries, roomID)
	c.mu.Unlock()
}

// fetchMetadata reads a room's full state as the bot.
func (s *Service) fetchMetadata(ctx context.Context, roomID id.RoomID) (*Metadata, error) {
	state, err := s.bot.Client.State(ctx, roomID)
	if isMatrixCode(err, "M_FORBIDDEN") || isMatrixCode(err, "M_NOT_FOUND") {
		return nil, ErrNotFound
	} else if err != nil {
		return nil, matrixFailure("reading room state", err)
	}
	meta := &Metadata{RoomID: roomID}
	if evt := state[event.StateRoomName][""]; evt != nil {
		meta.Name = evt.Content.AsRoomName().Name
	}
	if evt := state[event.StateTopic][""]; evt != nil {
		meta.Topic = evt.Content.AsTopic().Topic
	}
	if evt := state[event.StateRoomAvatar][""]; evt != nil {
		meta.AvatarURL = string(evt.Content.AsRoomAvatar().URL)
	}
	if evt := state[event.StateCanonicalAlias][""]; evt != nil {
		meta.CanonicalAlias = string(evt.Content.AsCanonicalAlias().Alias)
	}
	if evt := state[event.StateEncryption][""]; evt != nil {
		if alg := string(evt.Content.AsEncryption().Algorithm); alg != "" {
			meta.Encryption = &alg
		}
	}
	for _, evt := range state[event.StateMember] {
		switch evt.Content.AsMember().Membership {
		case event.MembershipJoin:
			meta.JoinedMembers++
			meta.MemberCount++
		case event.MembershipInvite:
			meta.MemberCount++
		}
	}
	return meta, nil
}
