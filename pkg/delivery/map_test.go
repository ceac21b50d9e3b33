package delivery

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/identity"
	"github.com/daarion/matrix-bridge/pkg/mapping"
	"github.com/daarion/matrix-bridge/pkg/messaging"
	"github.com/daarion/matrix-bridge/pkg/rooms"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

var testIDs = identity.Mapper{ServerName: "s", BotLocalpart: "daarion-bot"}

const (
	human = "@bob:s"
	agent = "@agent_sofia:s"
)

// logEvent is a log event of kind with the given type, room and sender,
// received age ago.
func logEvent(kind eventlog.Kind, eventID, evtType, roomID, sender string, age time.Duration) *eventlog.Event {
	raw := map[string]any{"type": evtType, "event_id": eventID, "sender": sender, "origin_server_ts": 1_700_000_000_000,
		"content": map[string]any{"msgtype": "m.text", "body": "hello"}}
	if roomID != "" {
		raw["room_id"] = roomID
	}
	data, _ := json.Marshal(raw)
	return &eventlog.Event{Kind: kind, EventID: eventID, Type: evtType, RoomID: roomID, Sender: sender,
		ReceivedAt: time.Now().Add(-age), JSON: data}
}

func message(eventID, roomID, sender string) *eventlog.Event {
	return logEvent(eventlog.KindTimeline, eventID, "m.room.message", roomID, sender, time.Minute)
}

// redaction is a log event at position redacting target (room v11 form).
func redaction(position int64, eventID, roomID, target string) *eventlog.Event {
	raw, _ := json.Marshal(map[string]any{"type": "m.room.redaction", "event_id": eventID, "room_id": roomID, "sender": human,
		"origin_server_ts": 1_700_000_000_000, "content": map[string]any{"redacts": target}})
	return &eventlog.Event{Position: position, Kind: eventlog.KindTimeline, EventID: eventID, Type: "m.room.redaction", RoomID: roomID,
		Sender: human, ReceivedAt: time.Now().Add(-time.Minute), JSON: raw}
}

// The DTOs of a batch carry the city room of their room and, for the
// bridge's own sends, their origin, read from the database; events no DTO
// exists for are counted and left out.
func TestMapFillsCityRoomsAndOrigins(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx := context.Background()
		db := testrig.OpenDatabase(t, tdb)
		roomStore := rooms.NewStore(db)
		if ok, err := roomStore.Insert(ctx, &rooms.CityRoom{Slug: "harbour", RoomID: "!harbour:s", Alias: "#city_harbour:s", Name: "Harbour", Visibility: "public"}); err != nil || !ok {
			t.Fatalf("insert: %v %v", ok, err)
		}
		// What pkg/messaging records when it sends (its sent_event table).
		for _, rec := range []struct{ eventID, service, key string }{{"$echo", "gateway", "key-1"}, {"$nokey", "gateway", ""}} {
			var key any
			if rec.key != "" {
				key = rec.key
			}
			if _, err := db.Exec(ctx, `INSERT INTO sent_event (event_id, service, idem_key, sent_at) VALUES ($1, $2, $3, $4)`,
				rec.eventID, rec.service, key, time.Now().UnixMilli()); err != nil {
				t.Fatal(err)
			}
		}
		// A reaction the event log holds (at position 1), which a
		// redaction of the batch names.
		log := eventlog.New(db)
		t.Cleanup(func() { _ = log.Close() })
		reaction := eventlog.IncomingEvent{EventID: "$reaction", Kind: eventlog.KindTimeline, RoomID: "!harbour:s", Type: "m.reaction", Sender: human,
			JSON: `{"type":"m.reaction","event_id":"$reaction","room_id":"!harbour:s","sender":"@bob:s","content":{"m.relates_to":{"rel_type":"m.annotation","event_id":"$human","key":"👍"}}}`}
		body, _ := json.Marshal([]eventlog.IncomingEvent{reaction})
		if err := log.Journal(ctx, "txn1", body); err != nil {
			t.Fatal(err)
		}
		if _, err := log.IndexPending(ctx, func(_ string, body []byte) (evts []eventlog.IncomingEvent, err error) {
			return evts, json.Unmarshal(body, &evts)
		}); err != nil {
			t.Fatal(err)
		}
		src := NewDTOSource(testIDs, roomStore, messaging.NewIdempotencyStore(db), log)

		events := []*eventlog.Event{
			message("$human", "!harbour:s", human),
			message("$echo", "!harbour:s", agent),
			message("$nokey", "!other:s", agent),
			logEvent(eventlog.KindTimeline, "$custom", "org.example.unknown", "!harbour:s", human, time.Minute),
			logEvent(eventlog.KindToDevice, "$todevice", "m.room_key_request", "", human, time.Minute),
			message("$later", "!harbour:s", human),
			redaction(10, "$unreact", "!harbour:s", "$reaction"),
			redaction(11, "$redact", "!harbour:s", "$unknown"),
		}
		out, err := src.Map(ctx, events)
		if err != nil {
			t.Fatal(err)
		}
		type want struct {
			eventID, alias, slug string
			origin               *mapping.Origin
			dtoID                string // "": the event id
			part                 int
		}
		wants := []want{
			{"$human", "#city_harbour:s", "harbour", nil, "", 0},
			{"$echo", "#city_harbour:s", "harbour", &mapping.Origin{Bridge: true, Service: "gateway", IdempotencyKey: "key-1"}, "", 0},
			{"$nokey", "", "", &mapping.Origin{Bridge: true, Service: "gateway"}, "", 0},
			{"$later", "#city_harbour:s", "harbour", nil, "", 0},
			{"$unreact", "#city_harbour:s", "harbour", nil, "", 0},
			// The redaction of a reaction the log holds has a second DTO, right after.
			{"$unreact", "#city_harbour:s", "harbour", nil, mapping.ReactionRemovedID("$unreact"), 1},
			{"$redact", "#city_harbour:s", "harbour", nil, "", 0},
		}
		if len(out) != len(wants) {
			t.Fatalf("%d DTOs, want %d: %+v", len(out), len(wants), out)
		}
		for i, w := range wants {
			m := out[i]
			if w.dtoID == "" {
				w.dtoID = w.eventID
			}
			if m.Event.EventID != w.eventID || m.DTO.ID != w.dtoID || m.Part != w.part {
				t.Errorf("DTO %d is of %s (%s, part %d), want %s (%s, part %d): log order is kept", i, m.Event.EventID, m.DTO.ID, m.Part, w.eventID, w.dtoID, w.part)
				continue
			}
			if m.DTO.Room == nil || m.DTO.Room.MatrixRoomAlias != w.alias || m.DTO.Room.CitySlug != w.slug {
				t.Errorf("%s: room %+v, want alias %q slug %q", w.eventID, m.DTO.Room, w.alias, w.slug)
			}
			if (m.DTO.Origin == nil) != (w.origin == nil) || w.origin != nil && *m.DTO.Origin != *w.origin {
				t.Errorf("%s: origin %+v, want %+v", w.eventID, m.DTO.Origin, w.origin)
			}
		}
		// Both redactions are messaging.message.deleted; the one of the
		// reaction the log holds says what it was, and is followed by
		// messaging.reaction.removed.
		unreact, removed, redact := out[4].DTO, out[5].DTO, out[6].DTO
		if unreact.Type != mapping.MessageDeleted || unreact.Data["redacted_type"] != "m.reaction" ||
			unreact.Data["reaction"].(map[string]any)["target_event_id"] != "$human" {
			t.Errorf("redaction of a logged reaction: %s", unreact.JSON())
		}
		if removed.Type != mapping.ReactionRemoved || removed.MatrixEventID != "$unreact" || removed.Data["reaction_event_id"] != "$reaction" ||
			removed.Data["target_event_id"] != "$human" || removed.Data["key"] != "👍" || removed.Sender.ID != "user:bob" {
			t.Errorf("reaction removed: %s", removed.JSON())
		}
		if err := mapping.Validate(removed.JSON()); err != nil {
			t.Errorf("reaction removed: %v", err)
		}
		if _, ok := redact.Data["redacted_type"]; redact.Type != mapping.MessageDeleted || ok {
			t.Errorf("redaction of an event the log does not hold: %s", redact.JSON())
		}
		if got := src.Unmapped(); got != 2 {
			t.Errorf("Unmapped = %d, want 2 (the unknown type and the to-device event)", got)
		}
	})
}

// fakeCityRooms counts lookups.
type fakeCityRooms struct {
	mu      sync.Mutex
	rooms   map[id.RoomID]*rooms.CityRoom
	lookups map[id.RoomID]int
	err     error
}

func (f *fakeCityRooms) ByRoomID(_ context.Context, roomID id.RoomID) (*rooms.CityRoom, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lookups[roomID]++
	if f.err != nil {
		return nil, f.err
	}
	return f.rooms[roomID], nil
}

// fakeSent answers SentBy from records, which the n-th call (from 1) on
// sees when it is appearAt or later.
type fakeSent struct {
	mu       sync.Mutex
	records  map[string]messaging.SendRecord
	appearAt int
	calls    int
	err      error
}

func (f *fakeSent) SentBy(_ context.Context, eventIDs []string) (map[string]messaging.SendRecord, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.err != nil {
		return nil, f.err
	}
	out := map[string]messaging.SendRecord{}
	if f.calls >= f.appearAt {
		for _, eventID := range eventIDs {
			if rec, ok := f.records[eventID]; ok {
				out[eventID] = rec
			}
		}
	}
	return out, nil
}

// fakeLogged answers ByEventIDs from events, recording the ids asked for.
type fakeLogged struct {
	mu     sync.Mutex
	events map[string]*eventlog.Event
	asked  [][]string
	err    error
}

func (f *fakeLogged) ByEventIDs(_ context.Context, eventIDs []string) (map[string]*eventlog.Event, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, eventIDs)
	if f.err != nil {
		return nil, f.err
	}
	out := map[string]*eventlog.Event{}
	for _, eventID := range eventIDs {
		if evt, ok := f.events[eventID]; ok {
			out[eventID] = evt
		}
	}
	return out, nil
}

// The events a batch's redactions name are looked up in one call, each id
// once; a batch without redactions looks up nothing.
func TestMapLooksUpRedactedEventsOnce(t *testing.T) {
	ctx := context.Background()
	reaction := logEvent(eventlog.KindTimeline, "$reaction", "m.reaction", "!harbour:s", human, time.Hour)
	reaction.Position = 1
	logged := &fakeLogged{events: map[string]*eventlog.Event{"$reaction": reaction}}
	src := NewDTOSource(testIDs, &fakeCityRooms{lookups: map[id.RoomID]int{}}, &fakeSent{}, logged)

	if out, err := src.Map(ctx, []*eventlog.Event{message("$1", "!harbour:s", human)}); err != nil || len(out) != 1 || len(logged.asked) != 0 {
		t.Fatalf("a batch without redactions: %+v, %v, lookups %v", out, err, logged.asked)
	}
	batch := []*eventlog.Event{
		redaction(10, "$r1", "!harbour:s", "$reaction"),
		message("$2", "!harbour:s", human),
		redaction(11, "$r2", "!harbour:s", "$gone"),
		redaction(12, "$r3", "!harbour:s", "$reaction"), // a second redaction of the same event
	}
	out, err := src.Map(ctx, batch)
	if err != nil || len(out) != 6 {
		t.Fatalf("Map = %+v, %v", out, err)
	}
	if len(logged.asked) != 1 || strings.Join(logged.asked[0], ",") != "$reaction,$gone" {
		t.Errorf("lookups %v, want one of $reaction and $gone", logged.asked)
	}
	// Each redaction of the reaction is followed by its reaction.removed.
	for i, want := range []struct {
		typ          string
		redactedType any
	}{
		{mapping.MessageDeleted, "m.reaction"}, {mapping.ReactionRemoved, nil}, {mapping.MessageCreated, nil},
		{mapping.MessageDeleted, nil}, {mapping.MessageDeleted, "m.reaction"}, {mapping.ReactionRemoved, nil},
	} {
		if got := out[i].DTO; got.Type != want.typ || got.Data["redacted_type"] != want.redactedType {
			t.Errorf("DTO %d %s: %s, redacted_type %v; want %s, %v", i, got.ID, got.Type, got.Data["redacted_type"], want.typ, want.redactedType)
		}
	}
}

func TestMapLooksUpEachRoomOnce(t *testing.T) {
	ctx := context.Background()
	cityRooms := &fakeCityRooms{lookups: map[id.RoomID]int{},
		rooms: map[id.RoomID]*rooms.CityRoom{"!harbour:s": {Slug: "harbour", Alias: "#city_harbour:s"}}}
	src := NewDTOSource(testIDs, cityRooms, &fakeSent{}, &fakeLogged{})
	batch := []*eventlog.Event{message("$1", "!harbour:s", human), message("$2", "!other:s", human), message("$3", "!harbour:s", human)}
	for range 3 {
		out, err := src.Map(ctx, batch)
		if err != nil || len(out) != 3 || out[2].DTO.Room.CitySlug != "harbour" || out[1].DTO.Room.CitySlug != "" {
			t.Fatalf("Map = %+v, %v", out, err)
		}
	}
	// Within the cache's lifetime a room (a city room or not) is looked up once.
	if cityRooms.lookups["!harbour:s"] != 1 || cityRooms.lookups["!other:s"] != 1 {
		t.Errorf("lookups %v, want one per room", cityRooms.lookups)
	}
}

func TestMapFailures(t *testing.T) {
	errDB := errors.New("database on fire")
	for _, tc := range []struct {
		name      string
		cityRooms *fakeCityRooms
		sent      *fakeSent
		logged    *fakeLogged
	}{
		{"the city room lookup fails", &fakeCityRooms{lookups: map[id.RoomID]int{}, err: errDB}, &fakeSent{}, &fakeLogged{}},
		{"the sent lookup fails", &fakeCityRooms{lookups: map[id.RoomID]int{}}, &fakeSent{err: errDB}, &fakeLogged{}},
		// Not a DTO without what the log holds: the consumer retries.
		{"the redacted lookup fails", &fakeCityRooms{lookups: map[id.RoomID]int{}}, &fakeSent{}, &fakeLogged{err: errDB}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := NewDTOSource(testIDs, tc.cityRooms, tc.sent, tc.logged)
			batch := []*eventlog.Event{message("$1", "!harbour:s", human), redaction(10, "$2", "!harbour:s", "$1")}
			out, err := src.Map(context.Background(), batch)
			if !errors.Is(err, errDB) || out != nil {
				t.Fatalf("Map = %+v, %v; want the failure, no DTOs", out, err)
			}
			// A failed lookup is not cached: the retried batch asks again.
			tc.cityRooms.err, tc.sent.err, tc.logged.err = nil, nil, nil
			if out, err := src.Map(context.Background(), batch); err != nil || len(out) != 2 {
				t.Fatalf("retry: %+v, %v", out, err)
			}
		})
	}
}

// The homeserver may deliver the echo of a send before the send is
// recorded: a fresh event of an agent or the bot waits for its record.
func TestMapWaitsForTheRecordOfAFreshEcho(t *testing.T) {
	fresh := func(eventID, sender string) *eventlog.Event {
		return logEvent(eventlog.KindTimeline, eventID, "m.room.message", "!harbour:s", sender, 0)
	}
	for _, tc := range []struct {
		name      string
		event     *eventlog.Event
		appearAt  int // the SentBy call the record appears in
		wantCalls int
		wantEcho  bool
	}{
		{"an agent's echo recorded late", fresh("$echo", agent), 2, 2, true},
		{"the bot's echo recorded late", fresh("$echo", "@daarion-bot:s"), 3, 3, true},
		{"an agent's echo recorded in time", fresh("$echo", agent), 1, 1, true},
		{"a human's message does not wait", fresh("$echo", human), 2, 1, false},
		{"an old event of an agent does not wait", message("$echo", "!harbour:s", agent), 2, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sent := &fakeSent{records: map[string]messaging.SendRecord{"$echo": {Service: "gateway"}}, appearAt: tc.appearAt}
			src := NewDTOSource(testIDs, &fakeCityRooms{lookups: map[id.RoomID]int{}}, sent, &fakeLogged{})
			out, err := src.Map(context.Background(), []*eventlog.Event{tc.event})
			if err != nil || len(out) != 1 {
				t.Fatalf("Map = %+v, %v", out, err)
			}
			if sent.calls != tc.wantCalls || (out[0].DTO.Origin != nil) != tc.wantEcho {
				t.Errorf("%d lookups, origin %+v; want %d lookups, an origin: %v", sent.calls, out[0].DTO.Origin, tc.wantCalls, tc.wantEcho)
			}
		})
	}

	// A consumer stopping meanwhile stops the wait.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	src := NewDTOSource(testIDs, &fakeCityRooms{lookups: map[id.RoomID]int{}}, &fakeSent{appearAt: 100}, &fakeLogged{})
	if out, err := src.Map(ctx, []*eventlog.Event{fresh("$echo", agent)}); !errors.Is(err, context.Canceled) || out != nil {
		t.Errorf("Map with a cancelled context = %+v, %v", out, err)
	}
}

func TestAwaitingRecord(t *testing.T) {
	src := NewDTOSource(testIDs, nil, nil, nil)
	recorded := map[string]*mapping.Origin{"$known": {Bridge: true}}
	for _, tc := range []struct {
		name  string
		event *eventlog.Event
		want  bool
	}{
		{"a fresh agent event without a record", logEvent(eventlog.KindTimeline, "$x", "m.room.message", "!r:s", agent, 0), true},
		{"a fresh bot event without a record", logEvent(eventlog.KindTimeline, "$x", "m.room.message", "!r:s", "@daarion-bot:s", 0), true},
		{"a fresh agent event with its record", logEvent(eventlog.KindTimeline, "$known", "m.room.message", "!r:s", agent, 0), false},
		{"a fresh human event", logEvent(eventlog.KindTimeline, "$x", "m.room.message", "!r:s", human, 0), false},
		{"a remote user's event", logEvent(eventlog.KindTimeline, "$x", "m.room.message", "!r:s", "@agent_sofia:elsewhere", 0), false},
		{"an agent event older than the wait", logEvent(eventlog.KindTimeline, "$x", "m.room.message", "!r:s", agent, echoWait+time.Second), false},
		{"an agent's ephemeral event", logEvent(eventlog.KindEphemeral, "$x", "m.typing", "!r:s", agent, 0), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := src.awaitingRecord([]*eventlog.Event{tc.event}, recorded); got != tc.want {
				t.Errorf("awaitingRecord = %v, want %v", got, tc.want)
			}
		})
	}
}

// Sinks mapping the same events (the same values, as the log's in-memory
// tail hands them to every consumer) share one mapping and one encoding:
// the database is asked once, the DTOs and their JSON are the same. The
// same event read again from the database (a new value) is mapped again.
func TestMapSharesWhatItMadeOfTheSameEvents(t *testing.T) {
	sent := &fakeSent{records: map[string]messaging.SendRecord{}}
	src := NewDTOSource(testIDs, &fakeCityRooms{lookups: map[id.RoomID]int{}}, sent, &fakeLogged{})
	batch := []*eventlog.Event{message("$a", "!r:s", human), message("$b", "!r:s", human)}
	batch[0].Position, batch[1].Position = 1, 2
	ctx := context.Background()
	first, err := src.Map(ctx, batch)
	if err != nil || len(first) != 2 {
		t.Fatalf("first map: %d DTOs, %v", len(first), err)
	}
	second, err := src.Map(ctx, batch[1:]) // another sink, another batch boundary
	if err != nil || len(second) != 1 {
		t.Fatalf("second map: %d DTOs, %v", len(second), err)
	}
	if second[0].DTO != first[1].DTO || &second[0].JSON()[0] != &first[1].JSON()[0] {
		t.Error("the second sink got a DTO or an encoding of its own")
	}
	if sent.calls != 1 {
		t.Errorf("SentBy called %d times, want once", sent.calls)
	}
	again := *batch[1] // the same event as read from the database
	third, err := src.Map(ctx, []*eventlog.Event{&again})
	if err != nil || len(third) != 1 || third[0].DTO == first[1].DTO || string(third[0].JSON()) != string(first[1].JSON()) {
		t.Errorf("a new value of the event: %v, shared %v", err, len(third) == 1 && third[0].DTO == first[1].DTO)
	}
	if sent.calls != 2 {
		t.Errorf("SentBy called %d times after a new value, want twice", sent.calls)
	}
}
