// Package syncapi serves GET /internal/matrix/sync: DAARION services read the
// event log by long-polling, in the shape of the Matrix client-server /sync.
// A sync token is a log position ("s<position>"); see docs/sync.md.
package syncapi

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/internalapi"
	"github.com/daarion/matrix-bridge/pkg/mapping"
)

// Path is the route of the sync endpoint.
const Path = "/internal/matrix/sync"

const (
	// DefaultMaxTimeout is the longest wait when New is given none.
	DefaultMaxTimeout = 60 * time.Second
	// DefaultLimit is how many events an answer holds at most when the
	// filter sets no limit; MaxLimit is the largest limit a filter may set.
	DefaultLimit = 100
	MaxLimit     = 1000

	// DefaultPollInterval is how often a waiting sync looks at the log for
	// events appended by another process when Options sets no interval
	// (appends by this process wake it at once).
	DefaultPollInterval = time.Second
	// scanBudget bounds how many log events one read may look at while a
	// filter drops them; past it the answer goes out (possibly empty) with
	// next_batch moved on, and the client's next sync carries on from there.
	scanBudget = 10_000
	// filteredPage is the page size while a filter may drop events.
	filteredPage = 1000
)

// Handler serves the sync endpoint.
type Handler struct {
	log          *eventlog.Log
	maxTimeout   time.Duration
	pollInterval time.Duration
	scanBudget   int
	filteredPage int
	confidential func(roomID string) bool

	closeOnce sync.Once
	closed    chan struct{}
}

// Options tune the handler; zero values take the defaults.
type Options struct {
	// MaxTimeout (SYNC_TIMEOUT_MS) is both the wait when a request gives no
	// timeout and the longest a request may ask for. Default
	// DefaultMaxTimeout.
	MaxTimeout time.Duration
	// PollInterval is how often a waiting sync reads the log without a
	// wake-up: what finds events another process appended. Default
	// DefaultPollInterval.
	PollInterval time.Duration
	// Confidential, when set, tells the confidential rooms: their room
	// events are answered with mapping.StripContent's allow-list (those
	// the log holds from before the room was marked, too). It is asked for
	// every event answered, so it must answer from memory.
	Confidential func(roomID string) bool
}

// New returns the sync handler over log.
func New(log *eventlog.Log, opts Options) *Handler {
	if opts.MaxTimeout <= 0 {
		opts.MaxTimeout = DefaultMaxTimeout
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = DefaultPollInterval
	}
	return &Handler{
		log: log, maxTimeout: opts.MaxTimeout, pollInterval: opts.PollInterval,
		scanBudget: scanBudget, filteredPage: filteredPage, confidential: opts.Confidential,
		closed: make(chan struct{}),
	}
}

// RegisterRoutes adds GET /internal/matrix/sync (scope subscriptions).
func (h *Handler) RegisterRoutes(api *internalapi.API) {
	api.Handle(http.MethodGet, Path, internalapi.ScopeSubscriptions, h.handleSync)
}

// Close makes every waiting sync answer now, and later ones answer without
// waiting, so that shutting the server down does not wait out long-polls.
// Register it with (*http.Server).RegisterOnShutdown.
func (h *Handler) Close() {
	h.closeOnce.Do(func() { close(h.closed) })
}

// Response is the answer of a sync: the shape of the Matrix client-server
// /sync, restricted to joined rooms and presence.
type Response struct {
	// NextBatch is the since of the next sync.
	NextBatch string `json:"next_batch"`
	Rooms     Rooms  `json:"rooms"`
	// Presence holds ephemeral events without a room (m.presence).
	Presence EventList `json:"presence"`
}

// Rooms holds the rooms with events in this answer, by room id.
type Rooms struct {
	Join map[string]*JoinedRoom `json:"join"`
}

// JoinedRoom is one room's events in an answer.
type JoinedRoom struct {
	Timeline Timeline `json:"timeline"`
	// Ephemeral holds the room's EDUs (m.typing, m.receipt).
	Ephemeral EventList `json:"ephemeral"`
}

// Timeline is a room's timeline events, in log order, as stored.
type Timeline struct {
	Events []json.RawMessage `json:"events"`
	// Limited is true when the answer stopped at the filter's limit while
	// more events were waiting: sync again at once, nothing is skipped.
	Limited bool `json:"limited"`
	// PrevBatch is the token just before the room's first event in this
	// answer; as a since it reads this answer again from there.
	PrevBatch string `json:"prev_batch"`
}

// EventList is a list of events as stored.
type EventList struct {
	Events []json.RawMessage `json:"events"`
}

func (h *Handler) handleSync(w http.ResponseWriter, r *http.Request) error {
	req, err := h.parseRequest(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	head, err := h.log.Head(ctx)
	if err != nil {
		return failure(r, err)
	}
	if !req.hasSince {
		// No token: start at the head, like an initial sync without history.
		internalapi.WriteJSON(w, http.StatusOK, newBatch(head).response())
		return nil
	} else if req.since > head {
		return internalapi.InvalidField("since", "is past the end of the event log; use a next_batch this bridge gave")
	}
	// Events after since may have been pruned (retention.events): then the
	// answer would silently skip them. Tell the client to start again.
	if pruned, err := h.log.PrunedThrough(ctx); err != nil {
		return failure(r, err)
	} else if req.since < pruned {
		return internalapi.InvalidField("since", "is older than the events this bridge keeps (retention.events); sync again without since and catch up from the current state")
	}

	timer := time.NewTimer(req.timeout)
	defer timer.Stop()
	var ticker <-chan time.Time
	if req.timeout > 0 {
		t := time.NewTicker(h.pollInterval)
		defer t.Stop()
		ticker = t.C
	}
	after := req.since
	for {
		// Take the channel before reading, so an append that commits after
		// the read still wakes this wait.
		changed := h.log.Changed()
		b, err := h.collect(ctx, after, &req.filter)
		if err != nil {
			return failure(r, err)
		}
		if b.count > 0 || b.budgetSpent || req.timeout == 0 {
			internalapi.WriteJSON(w, http.StatusOK, b.response())
			return nil
		}
		after = b.next // events the filter dropped are passed for good
		select {
		case <-changed:
		case <-ticker:
		case <-timer.C:
			internalapi.WriteJSON(w, http.StatusOK, b.response())
			return nil
		case <-h.closed:
			internalapi.WriteJSON(w, http.StatusOK, b.response())
			return nil
		case <-ctx.Done():
			return nil // the caller is gone
		}
	}
}

// failure is the error a failed read answers: none when the caller is gone
// (the read failed for that), as nobody reads an answer.
func failure(r *http.Request, err error) error {
	if r.Context().Err() != nil {
		return nil
	}
	return err
}

// collect reads the log after position after: the events the filter keeps,
// up to its limit.
func (h *Handler) collect(ctx context.Context, after int64, f *filter) (*batch, error) {
	b := newBatch(after)
	b.confidential = h.confidential
	page := f.limit + 1
	if f.selective() {
		page = h.filteredPage
	}
	for scanned := 0; ; {
		if scanned >= h.scanBudget {
			b.budgetSpent = true
			return b, nil
		}
		events, err := h.log.Read(ctx, b.next, page)
		if err != nil {
			return nil, err
		}
		for _, evt := range events {
			if f.match(evt) {
				if b.count == f.limit {
					b.limited = true
					return b, nil
				}
				b.add(evt)
			}
			b.next = evt.Position
		}
		scanned += len(events)
		if len(events) < page {
			return b, nil // reached the head
		}
	}
}

// batch is an answer being put together.
type batch struct {
	next        int64
	count       int
	limited     bool
	budgetSpent bool

	rooms    map[string]*JoinedRoom
	presence []json.RawMessage
	// confidential: see Options.Confidential.
	confidential func(roomID string) bool
}

func newBatch(after int64) *batch {
	return &batch{next: after, rooms: map[string]*JoinedRoom{}}
}

func (b *batch) add(evt *eventlog.Event) {
	b.count++
	if evt.RoomID == "" {
		// Only ephemeral events lack a room (filter.match drops timeline
		// ones): that is presence.
		b.presence = append(b.presence, evt.JSON)
		return
	}
	room := b.rooms[evt.RoomID]
	if room == nil {
		room = &JoinedRoom{
			Timeline:  Timeline{Events: []json.RawMessage{}, PrevBatch: Token(evt.Position - 1)},
			Ephemeral: EventList{Events: []json.RawMessage{}},
		}
		b.rooms[evt.RoomID] = room
	}
	if evt.Kind == eventlog.KindEphemeral {
		room.Ephemeral.Events = append(room.Ephemeral.Events, evt.JSON)
	} else if b.confidential != nil && b.confidential(evt.RoomID) {
		room.Timeline.Events = append(room.Timeline.Events, mapping.StripContent(evt.JSON))
	} else {
		room.Timeline.Events = append(room.Timeline.Events, evt.JSON)
	}
}

func (b *batch) response() *Response {
	resp := &Response{
		NextBatch: Token(b.next),
		Rooms:     Rooms{Join: b.rooms},
		Presence:  EventList{Events: b.presence},
	}
	if resp.Presence.Events == nil {
		resp.Presence.Events = []json.RawMessage{}
	}
	if b.limited {
		for _, room := range b.rooms {
			room.Timeline.Limited = true
		}
	}
	return resp
}
