// Package reconcile repairs gaps that the homeserver causes: events of a
// city room that never reached the bridge in a transaction. It compares each
// city room's newest events (/messages as the bot) with the event log and
// journals what the log lacks as a transaction of its own, so the indexer
// stores it once (the log's event-id dedup) and every consumer sees it like
// any other event.
//
// Synapse, for one, can leave a transaction unsent: while it marks the
// appservice down it stores each new event as a transaction for its
// recoverer, and a transaction stored just after the recoverer has found
// none left waits in its table until the next outage (docs/homeservers.md).
// Ephemeral events and to-device messages it drops while the appservice is
// down cannot be recovered this way; only the room timeline can.
package reconcile

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// TxnPrefix starts the id of every transaction a reconcile journals: an
// event in the log whose transaction id starts with it was recovered.
const TxnPrefix = "daarion-reconcile:"

// Recovered reports whether an event stored under txnID was recovered by a
// reconcile rather than pushed by the homeserver.
func Recovered(txnID string) bool { return strings.HasPrefix(txnID, TxnPrefix) }

// maxPage is the most events one /messages request asks for.
const maxPage = 100

// Homeserver is how the reconciler reads a room's timeline: a client
// request as the bridge bot (*mautrix.Client is one).
type Homeserver interface {
	BuildURLWithQuery(urlPath mautrix.PrefixableURLPath, urlQuery map[string]string) string
	MakeRequest(ctx context.Context, method string, httpURL string, reqBody any, resBody any) ([]byte, error)
}

// Rooms lists the rooms to reconcile: the city rooms.
type Rooms interface {
	CityRoomIDs(ctx context.Context) ([]id.RoomID, error)
}

// Log is what the reconciler needs of the event log (*eventlog.Log is one).
type Log interface {
	Known(ctx context.Context, eventIDs []string) (map[string]bool, error)
	Journal(ctx context.Context, txnID string, body []byte) error
}

// Observer records reconciles (the bridge's metrics).
type Observer interface {
	ObserveReconcile(trigger string, rooms, recovered, failed int, d time.Duration)
}

// Options tune a Reconciler; zero values take the defaults.
type Options struct {
	// Window is how many of a room's newest events are compared (50).
	Window int
	// MaxAge skips events older than this (the log's retention of events:
	// an older event may have been pruned from the log, and storing it
	// again would deliver it twice). 0 compares events of any age.
	MaxAge time.Duration
	// Concurrency is how many rooms are compared at once (4).
	Concurrency int
	Observer    Observer
	// Schedule is when Run reconciles by itself.
	Schedule Schedule
	// Logger is for what happens outside a reconcile's context (a gap seen
	// by the indexer); nothing by default.
	Logger *zerolog.Logger
	// Now is the clock (tests); time.Now by default.
	Now func() time.Time
}

// Reconciler compares rooms' timelines with the event log.
type Reconciler struct {
	hs    Homeserver
	rooms Rooms
	log   Log
	opts  Options

	// one reconcile at a time: two would journal the same missing events
	// twice (harmless, the log stores each once, but the reports would lie).
	running sync.Mutex
	seq     atomic.Int64

	triggers chan string
	gaps     gapWatch
}

// New returns a Reconciler reading timelines through hs as the bot.
func New(hs Homeserver, rooms Rooms, log Log, opts Options) *Reconciler {
	if opts.Window <= 0 {
		opts.Window = 50
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 4
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		nop := zerolog.Nop()
		opts.Logger = &nop
	}
	return &Reconciler{hs: hs, rooms: rooms, log: log, opts: opts, triggers: make(chan string, 1)}
}

// RoomResult is what a reconcile found in one room.
type RoomResult struct {
	RoomID id.RoomID
	// Compared is how many of the room's events were compared with the log.
	Compared int
	// Recovered are the ids of the events the log lacked, journalled now.
	Recovered []string
	// Pages is how many /messages requests it took.
	Pages int
	Err   error
}

// Report is what a reconcile of several rooms found.
type Report struct {
	Trigger   string
	Rooms     []RoomResult
	Duration  time.Duration
	Recovered int
	Failed    int
	Pages     int
}

// City reconciles every city room.
func (r *Reconciler) City(ctx context.Context, trigger string) (*Report, error) {
	roomIDs, err := r.rooms.CityRoomIDs(ctx)
	if err != nil {
		return nil, fmt.Errorf("failed to list the city rooms to reconcile: %w", err)
	}
	return r.Rooms(ctx, trigger, roomIDs), nil
}

// Rooms reconciles the given rooms, opts.Concurrency at a time. A room that
// fails is reported and does not stop the others.
func (r *Reconciler) Rooms(ctx context.Context, trigger string, roomIDs []id.RoomID) *Report {
	r.running.Lock()
	defer r.running.Unlock()
	start := r.opts.Now()
	report := &Report{Trigger: trigger, Rooms: make([]RoomResult, len(roomIDs))}
	slots := make(chan struct{}, r.opts.Concurrency)
	var wg sync.WaitGroup
	for i, roomID := range roomIDs {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			report.Rooms[i] = r.room(ctx, roomID)
		})
	}
	wg.Wait()
	log := zerolog.Ctx(ctx)
	for _, res := range report.Rooms {
		report.Pages += res.Pages
		report.Recovered += len(res.Recovered)
		if res.Err != nil {
			report.Failed++
			log.Warn().Err(res.Err).Stringer("room_id", res.RoomID).Str("trigger", trigger).Msg("Failed to reconcile a room")
		} else if len(res.Recovered) > 0 {
			log.Warn().Stringer("room_id", res.RoomID).Strs("event_ids", res.Recovered).Str("trigger", trigger).
				Msg("Recovered events the homeserver never pushed")
		}
	}
	report.Duration = r.opts.Now().Sub(start)
	log.Info().Str("trigger", trigger).Int("rooms", len(roomIDs)).Int("recovered", report.Recovered).
		Int("failed", report.Failed).Int("pages", report.Pages).Dur("duration", report.Duration).Msg("Reconciled rooms")
	if r.opts.Observer != nil {
		r.opts.Observer.ObserveReconcile(trigger, len(roomIDs), report.Recovered, report.Failed, report.Duration)
	}
	return report
}

// timelineEvent is what the reconciler reads of an event; the rest is kept
// byte for byte in raw.
type timelineEvent struct {
	EventID        string `json:"event_id"`
	OriginServerTS int64  `json:"origin_server_ts"`
	raw            json.RawMessage
}

type messagesPage struct {
	Chunk []json.RawMessage `json:"chunk"`
	End   string            `json:"end"`
}

// room compares one room's newest opts.Window events with the log. It
// stops paging back at the window, at the room's start, or at the first
// event older than MaxAge.
func (r *Reconciler) room(ctx context.Context, roomID id.RoomID) RoomResult {
	res := RoomResult{RoomID: roomID}
	var cutoff int64
	if r.opts.MaxAge > 0 {
		cutoff = r.opts.Now().Add(-r.opts.MaxAge).UnixMilli()
	}
	var events []timelineEvent // newest first
	from := ""
	for len(events) < r.opts.Window {
		limit := min(r.opts.Window-len(events), maxPage)
		page, err := r.page(ctx, roomID, from, limit)
		res.Pages++
		if err != nil {
			res.Err = err
			return res
		}
		old := false
		for _, raw := range page.Chunk {
			var evt timelineEvent
			if err := json.Unmarshal(raw, &evt); err != nil || evt.EventID == "" {
				continue
			}
			if cutoff > 0 && evt.OriginServerTS < cutoff {
				old = true
				break
			}
			evt.raw = raw
			events = append(events, evt)
		}
		// A short page is the room's start: homeservers give an end token
		// there too, and a second request would only get an empty chunk.
		if old || page.End == "" || len(page.Chunk) < limit {
			break
		}
		from = page.End
	}
	res.Compared = len(events)
	if len(events) == 0 {
		return res
	}
	ids := make([]string, len(events))
	for i, evt := range events {
		ids[i] = evt.EventID
	}
	known, err := r.log.Known(ctx, ids)
	if err != nil {
		res.Err = err
		return res
	}
	// Oldest first, the order the homeserver would have pushed them in.
	var missing []json.RawMessage
	for i := len(events) - 1; i >= 0; i-- {
		if !known[events[i].EventID] {
			missing = append(missing, events[i].raw)
			res.Recovered = append(res.Recovered, events[i].EventID)
		}
	}
	if len(missing) == 0 {
		return res
	}
	body, err := json.Marshal(map[string]any{"events": missing})
	if err != nil {
		res.Err = fmt.Errorf("failed to build the recovered transaction: %w", err)
		res.Recovered = nil
		return res
	}
	if err = r.log.Journal(ctx, r.txnID(), body); err != nil {
		res.Err = err
		res.Recovered = nil
	}
	return res
}

func (r *Reconciler) page(ctx context.Context, roomID id.RoomID, from string, limit int) (*messagesPage, error) {
	query := map[string]string{"dir": string(mautrix.DirectionBackward), "limit": strconv.Itoa(limit)}
	if from != "" {
		query["from"] = from
	}
	var page messagesPage
	url := r.hs.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "rooms", roomID, "messages"}, query)
	if _, err := r.hs.MakeRequest(ctx, http.MethodGet, url, nil, &page); err != nil {
		return nil, fmt.Errorf("failed to read the timeline of %s: %w", roomID, err)
	}
	return &page, nil
}

// txnID names a recovered transaction: unique per process and reconcile
// (the journal's own sequence orders it), and recognisable (TxnPrefix).
func (r *Reconciler) txnID() string {
	return fmt.Sprintf("%s%d.%d", TxnPrefix, r.opts.Now().UnixNano(), r.seq.Add(1))
}
