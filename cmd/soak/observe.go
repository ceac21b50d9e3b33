package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"
	"go.mau.fi/util/dbutil"

	"github.com/daarion/matrix-bridge/database"
	"github.com/daarion/matrix-bridge/pkg/delivery/jetstream"
	"github.com/daarion/matrix-bridge/pkg/eventlog"
)

// logEntry is an event of the bridge's log, as the soak needs it.
type logEntry struct {
	Position int64
	EventID  string
	RoomID   string
	Type     string
	Key      string // the soak message key, "" for other events
	TxnID    string // the appservice transaction that brought it
	Received time.Time
	OriginTS int64 // origin_server_ts
	// Member events: the state key and the membership; tombstones: the
	// replacement room.
	StateKey, Membership, Replacement string
}

// arrival is a DTO received by a sink, in arrival order.
type arrival struct {
	DTOID, RoomID, Type, Key string
	// At is when the sink had it: the webhook receiver's answer, or the
	// time NATS stored it in the stream.
	At time.Time
}

// observer reads what reached the log and the NATS stream.
type observer struct {
	db  *dbutil.Database
	log *eventlog.Log
	nc  *nats.Conn
	js  natsjs.JetStream

	// incremental state for the drain
	logSeen  map[string]bool
	logAfter int64
	natsSeen map[string]bool
	natsNext uint64
}

func newObserver(ctx context.Context, dbURL, natsURL string) (*observer, error) {
	target, err := database.ParseURL(dbURL)
	if err != nil {
		return nil, err
	}
	// No schema upgrade: the bridge owns the schema; the soak only reads.
	db, err := dbutil.NewWithDialect(target.URI, target.Type)
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(natsURL, nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	js, err := natsjs.New(nc)
	if err != nil {
		nc.Close()
		_ = db.Close()
		return nil, err
	}
	return &observer{db: db, log: eventlog.New(db), nc: nc, js: js,
		logSeen: map[string]bool{}, natsSeen: map[string]bool{}, natsNext: 1}, nil
}

func (o *observer) close() {
	o.nc.Close()
	_ = o.db.Close()
}

// readLog reads the log after position after, in order.
func (o *observer) readLog(ctx context.Context, after int64) ([]logEntry, error) {
	var out []logEntry
	for {
		batch, err := o.log.Read(ctx, after, 5000)
		if err != nil {
			return nil, err
		}
		for _, e := range batch {
			le := logEntry{Position: e.Position, EventID: e.EventID, RoomID: e.RoomID, Type: e.Type, TxnID: e.TxnID, Received: e.ReceivedAt}
			switch e.Type {
			case "m.room.message", "m.room.member", "m.room.tombstone":
				var ev struct {
					OriginTS int64  `json:"origin_server_ts"`
					StateKey string `json:"state_key"`
					Content  struct {
						Body        string `json:"body"`
						Membership  string `json:"membership"`
						Replacement string `json:"replacement_room"`
					} `json:"content"`
				}
				if json.Unmarshal(e.JSON, &ev) == nil {
					le.OriginTS = ev.OriginTS
					switch e.Type {
					case "m.room.message":
						le.Key = messageKey(ev.Content.Body)
					case "m.room.member":
						le.StateKey, le.Membership = ev.StateKey, ev.Content.Membership
					default:
						le.Replacement = ev.Content.Replacement
					}
				}
			}
			out = append(out, le)
			after = e.Position
		}
		if len(batch) < 5000 {
			return out, nil
		}
	}
}

// readStream reads the JetStream stream from sequence from, in order.
func (o *observer) readStream(ctx context.Context, from uint64) ([]arrival, uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cons, err := o.js.OrderedConsumer(ctx, jetstream.DefaultStream, natsjs.OrderedConsumerConfig{
		DeliverPolicy: natsjs.DeliverByStartSequencePolicy, OptStartSeq: from,
	})
	if err != nil {
		if errors.Is(err, natsjs.ErrStreamNotFound) {
			return nil, from, nil
		}
		return nil, from, err
	}
	info, err := o.js.Stream(ctx, jetstream.DefaultStream)
	if err != nil {
		return nil, from, err
	}
	last := info.CachedInfo().State.LastSeq
	var out []arrival
	next := from
	for next <= last && ctx.Err() == nil {
		batch, err := cons.Fetch(1000, natsjs.FetchMaxWait(2*time.Second))
		if err != nil {
			return out, next, err
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			var dto dtoFields
			_ = json.Unmarshal(msg.Data(), &dto)
			room := ""
			if dto.Room != nil {
				room = dto.Room.MatrixRoomID
			}
			if id := msg.Headers().Get(natsjs.MsgIDHeader); id != dto.ID {
				dto.ID = "bad-msg-id:" + id + ":" + dto.ID
			}
			a := arrival{DTOID: dto.ID, RoomID: room, Type: dto.Type, Key: dto.key()}
			if meta, err := msg.Metadata(); err == nil {
				next = meta.Sequence.Stream + 1
				a.At = meta.Timestamp
			}
			out = append(out, a)
		}
		if n == 0 {
			break
		}
	}
	return out, next, ctx.Err()
}

// cursors returns every consumer's position.
func (o *observer) cursors(ctx context.Context) (map[string]int64, error) {
	return consumerCursors(ctx, o.db)
}

// consumerCursors reads every consumer's position from the bridge's
// database (read-only: the soak checks what the bridge wrote).
func consumerCursors(ctx context.Context, db *dbutil.Database) (map[string]int64, error) {
	rows, err := db.Query(ctx, `SELECT name, position FROM consumer_cursor`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var name string
		var pos int64
		if err = rows.Scan(&name, &pos); err != nil {
			return nil, err
		}
		out[name] = pos
	}
	return out, rows.Err()
}

// pendingWebhooks counts outbox rows still pending or dead.
func (o *observer) pendingWebhooks(ctx context.Context) (pending, dead int64, err error) {
	err = o.db.QueryRow(ctx, `SELECT COUNT(*) FILTER (WHERE state = 'pending'), COUNT(*) FILTER (WHERE state = 'dead') FROM webhook_delivery`).Scan(&pending, &dead)
	return
}

// parkedEvent is a row of parked_event.
type parkedEvent struct {
	Consumer string
	Position int64
	EventID  string
	Error    string
	Attempts int
}

// parked lists every parked event, of every consumer.
func (o *observer) parked(ctx context.Context) ([]parkedEvent, error) {
	rows, err := o.db.Query(ctx, `SELECT consumer, position, event_id, error, attempts FROM parked_event ORDER BY position`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []parkedEvent
	for rows.Next() {
		var p parkedEvent
		if err = rows.Scan(&p.Consumer, &p.Position, &p.EventID, &p.Error, &p.Attempts); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// agentRows counts the bridge's agent rows whose id starts with prefix
// ("" for all).
func (o *observer) agentRows(ctx context.Context, prefix string) (int, error) {
	var n int
	err := o.db.QueryRow(ctx, `SELECT COUNT(*) FROM agent WHERE agent_id LIKE $1`, prefix+"%").Scan(&n)
	return n, err
}

// homeserverAccounts counts Dendrite's accounts whose localpart starts
// with prefix, read from its user database (SQLite, read-only).
func homeserverAccounts(ctx context.Context, dendriteDir, prefix string) (int, error) {
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(dendriteDir, "dendrite_userapi.db")+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		return 0, err
	}
	defer db.Close()
	var n int
	err = db.QueryRowContext(ctx, `SELECT COUNT(*) FROM userapi_accounts WHERE localpart LIKE ?`, prefix+"%").Scan(&n)
	return n, err
}

// drainState is how far the drain is.
type drainState struct {
	produced                    int
	missingLog, missingHook     int
	missingNATS                 int
	head                        int64
	behind                      []string // consumers behind the head
	pendingHooks, deadHooks     int64
	errors                      []string
	hookTotal, natsTotal, total int
}

func (d drainState) done() bool {
	return len(d.errors) == 0 && d.missingLog == 0 && d.missingHook == 0 && d.missingNATS == 0 &&
		len(d.behind) == 0 && d.pendingHooks == 0
}

func (d drainState) String() string {
	s := fmt.Sprintf("%d produced; missing from the log %d, webhooks %d, NATS %d; log head %d; webhook outbox pending %d, dead %d",
		d.produced, d.missingLog, d.missingHook, d.missingNATS, d.head, d.pendingHooks, d.deadHooks)
	if len(d.behind) > 0 {
		s += "; consumers behind: " + strings.Join(d.behind, ", ")
	}
	if len(d.errors) > 0 {
		s += "; errors: " + strings.Join(d.errors, "; ")
	}
	return s
}

// poll reads what is new and says what is still missing.
func (o *observer) poll(ctx context.Context, produced []string, hooks []*receiver) drainState {
	st := drainState{produced: len(produced)}
	if entries, err := o.readLog(ctx, o.logAfter); err != nil {
		st.errors = append(st.errors, "log: "+err.Error())
	} else {
		for _, e := range entries {
			o.logSeen[e.EventID] = true
			o.logAfter = e.Position
		}
	}
	st.head = o.logAfter
	if got, next, err := o.readStream(ctx, o.natsNext); err != nil {
		st.errors = append(st.errors, "NATS: "+err.Error())
	} else {
		for _, a := range got {
			o.natsSeen[a.DTOID] = true
		}
		o.natsNext = next
	}
	var hookSeen []map[string]bool
	for _, hook := range hooks {
		seen := map[string]bool{}
		for _, d := range hook.snapshot() {
			seen[d.dtoID] = true
		}
		hookSeen = append(hookSeen, seen)
	}
	for _, id := range produced {
		if !o.logSeen[id] {
			st.missingLog++
		}
		for _, seen := range hookSeen {
			if !seen[id] {
				st.missingHook++
			}
		}
		if !o.natsSeen[id] {
			st.missingNATS++
		}
	}
	if cur, err := o.cursors(ctx); err != nil {
		st.errors = append(st.errors, "cursors: "+err.Error())
	} else {
		for name, pos := range cur {
			if pos < st.head {
				st.behind = append(st.behind, fmt.Sprintf("%s at %d", name, pos))
			}
		}
		sort.Strings(st.behind)
	}
	var err error
	if st.pendingHooks, st.deadHooks, err = o.pendingWebhooks(ctx); err != nil {
		st.errors = append(st.errors, "webhook outbox: "+err.Error())
	}
	return st
}
