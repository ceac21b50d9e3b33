package rooms

import (
	"container/list"
	"context"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
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

// DefaultMetadataCacheEntries bounds how many rooms the metadata cache holds.
// An entry is a few hundred bytes, so a full cache takes a few megabytes.
const DefaultMetadataCacheEntries = 10_000

type cacheEntry struct {
	roomID    id.RoomID
	meta      Metadata
	fetchedAt time.Time
	// used is set when the entry is read and cleared when eviction passes
	// over it, which gives a room in use a second chance (the CLOCK
	// approximation of LRU, so that reads need only the read lock).
	used atomic.Bool
	elem *list.Element
}

func (e *cacheEntry) fresh(now time.Time, ttl time.Duration) bool {
	return now.Sub(e.fetchedAt) < ttl
}

// fetchCall is one fetch from the homeserver, shared by the Gets that arrive
// while it runs.
type fetchCall struct {
	startedAt time.Time
	done      chan struct{}
	// meta and err are set before done is closed.
	meta *Metadata
	err  error
	// waiters counts the Gets waiting for the fetch; guarded by the cache's mu.
	waiters int
	cancel  context.CancelFunc
}

// MetadataCache serves room metadata from memory. The room consumer drops a
// room's entry when a state event arrives for it, so a change made in Matrix
// is seen on the next read; the TTL bounds staleness should an event be missed.
//
// Concurrent Gets of a room share one fetch. Invalidation wins over a fetch
// under way: that fetch may have read the state before the change, so its
// result goes to the Gets already waiting for it but is not stored, and
// later Gets start a fetch of their own.
//
// The cache holds at most DefaultMetadataCacheEntries rooms; beyond that it
// evicts the oldest entry not read since eviction last passed it.
type MetadataCache struct {
	ttl        time.Duration
	maxEntries int
	fetch      func(ctx context.Context, roomID id.RoomID) (*Metadata, error)
	now        func() time.Time

	mu      sync.RWMutex
	entries map[id.RoomID]*cacheEntry
	// order holds the entries, oldest stored first, for eviction.
	order *list.List
	// inflight holds each room's fetch that Gets may join: one started
	// after the room's latest invalidation. Only a fetch still here when it
	// finishes may store its result. A room is here only while a fetch runs,
	// so invalidating rooms leaves nothing behind.
	inflight map[id.RoomID]*fetchCall
}

// NewMetadataCache returns an empty cache that fills itself with fetch.
func NewMetadataCache(ttl time.Duration, fetch func(context.Context, id.RoomID) (*Metadata, error)) *MetadataCache {
	return &MetadataCache{
		ttl:        ttl,
		maxEntries: DefaultMetadataCacheEntries,
		fetch:      fetch,
		now:        time.Now,
		entries:    make(map[id.RoomID]*cacheEntry),
		order:      list.New(),
		inflight:   make(map[id.RoomID]*fetchCall),
	}
}

// Get returns a room's metadata, from the cache when fresh. Otherwise it
// waits for the room's fetch, starting one if none is under way; when ctx
// ends first it returns ctx's error, and a fetch nobody waits for is stopped.
func (c *MetadataCache) Get(ctx context.Context, roomID id.RoomID) (*Metadata, error) {
	if meta, ok := c.Peek(roomID); ok {
		return meta, nil
	}
	c.mu.Lock()
	// A fetch may have stored the room since Peek looked.
	if meta, ok := c.lookup(roomID); ok {
		c.mu.Unlock()
		return meta, nil
	}
	call := c.inflight[roomID]
	if call == nil {
		call = c.startLocked(ctx, roomID)
	}
	call.waiters++
	c.mu.Unlock()

	select {
	case <-call.done:
	case <-ctx.Done():
		c.leave(roomID, call)
		return nil, ctx.Err()
	}
	if call.err != nil {
		return nil, call.err
	}
	meta := *call.meta
	return &meta, nil
}

// Peek returns a room's metadata when the cache holds a fresh copy, without
// fetching: the hot path of GET /rooms/{roomId} answers from memory alone.
func (c *MetadataCache) Peek(roomID id.RoomID) (*Metadata, bool) {
	c.mu.RLock()
	meta, ok := c.lookup(roomID)
	c.mu.RUnlock()
	return meta, ok
}

// lookup is Peek for a caller holding mu (for reading or writing).
func (c *MetadataCache) lookup(roomID id.RoomID) (*Metadata, bool) {
	e := c.entries[roomID]
	if e == nil || !e.fresh(c.now(), c.ttl) {
		return nil, false
	}
	if !e.used.Load() {
		e.used.Store(true)
	}
	meta := e.meta
	return &meta, true
}

// Invalidate drops a room's entry, and detaches the room's fetch under way,
// if any, so that its result is neither joined nor stored.
func (c *MetadataCache) Invalidate(roomID id.RoomID) {
	c.mu.Lock()
	c.removeLocked(roomID)
	delete(c.inflight, roomID)
	c.mu.Unlock()
}

// startLocked starts fetching a room and makes it the room's fetch to join.
func (c *MetadataCache) startLocked(ctx context.Context, roomID id.RoomID) *fetchCall {
	// The fetch serves every Get that joins it, so no one caller's
	// cancellation ends it; it keeps ctx's values (the logger).
	fetchCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	call := &fetchCall{startedAt: c.now(), done: make(chan struct{}), cancel: cancel}
	c.inflight[roomID] = call
	go c.run(fetchCtx, roomID, call)
	return call
}

// run fetches a room for call and stores the result if call is still the
// room's fetch: neither invalidated nor given up by its callers.
func (c *MetadataCache) run(ctx context.Context, roomID id.RoomID, call *fetchCall) {
	defer call.cancel()
	meta, err := c.fetchRecovered(ctx, roomID)
	c.mu.Lock()
	if c.inflight[roomID] == call {
		delete(c.inflight, roomID)
		if err == nil {
			c.storeLocked(roomID, meta, call.startedAt)
		}
	}
	call.meta, call.err = meta, err
	c.mu.Unlock()
	close(call.done)
}

// fetchRecovered is fetch with a panic turned into an error: fetches run in
// their own goroutine, where a panic would end the process rather than the
// request.
func (c *MetadataCache) fetchRecovered(ctx context.Context, roomID id.RoomID) (meta *Metadata, err error) {
	defer func() {
		if v := recover(); v != nil {
			zerolog.Ctx(ctx).Error().
				Stringer("room_id", roomID).
				Str("panic", fmt.Sprint(v)).
				Str("stack", string(debug.Stack())).
				Msg("Room metadata fetch panicked")
			meta, err = nil, fmt.Errorf("failed to fetch metadata of %s: panic: %v", roomID, v)
		}
	}()
	return c.fetch(ctx, roomID)
}

// leave is a Get giving up on call. When nobody waits for it any more the
// fetch is stopped, and the next Get starts afresh.
func (c *MetadataCache) leave(roomID id.RoomID, call *fetchCall) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if call.waiters--; call.waiters > 0 {
		return
	}
	if c.inflight[roomID] == call {
		delete(c.inflight, roomID)
	}
	call.cancel()
}

// storeLocked caches a room's metadata, evicting to stay within maxEntries.
// The current fetch of a room is the newest, so it replaces any entry.
func (c *MetadataCache) storeLocked(roomID id.RoomID, meta *Metadata, fetchedAt time.Time) {
	c.removeLocked(roomID)
	if len(c.entries) >= c.maxEntries {
		c.evictLocked()
	}
	e := &cacheEntry{roomID: roomID, meta: *meta, fetchedAt: fetchedAt}
	e.elem = c.order.PushBack(e)
	c.entries[roomID] = e
}

// evictLocked drops the oldest entry that is stale or was not read since
// eviction last passed it; entries passed over go to the back unmarked.
func (c *MetadataCache) evictLocked() {
	now := c.now()
	for {
		e := c.order.Front().Value.(*cacheEntry)
		if !e.used.Swap(false) || !e.fresh(now, c.ttl) {
			c.removeLocked(e.roomID)
			return
		}
		c.order.MoveToBack(e.elem)
	}
}

func (c *MetadataCache) removeLocked(roomID id.RoomID) {
	if e := c.entries[roomID]; e != nil {
		c.order.Remove(e.elem)
		delete(c.entries, roomID)
	}
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
