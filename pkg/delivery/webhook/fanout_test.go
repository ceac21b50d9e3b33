package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/daarion/matrix-bridge/pkg/delivery"
	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/identity"
	"github.com/daarion/matrix-bridge/pkg/messaging"
	"github.com/daarion/matrix-bridge/pkg/rooms"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// fanoutRig is the fan-out over a real SQLite outbox, with the real DTO
// source reading one city room, plaza.
type fanoutRig struct {
	store *Store
	f     *Fanout
	wakes int
}

func newFanoutRig(t *testing.T) *fanoutRig {
	t.Helper()
	ctx := context.Background()
	db := testrig.OpenDatabase(t, testrig.NewTestDatabase(t, testrig.SQLite))
	roomStore := rooms.NewStore(db)
	if ok, err := roomStore.Insert(ctx, &rooms.CityRoom{Slug: "plaza", RoomID: "!plaza:s", Alias: "#city_plaza:s", Name: "Plaza", Visibility: "public"}); err != nil || !ok {
		t.Fatalf("city room: %v %v", ok, err)
	}
	r := &fanoutRig{store: NewStore(db)}
	source := delivery.NewDTOSource(identity.Mapper{ServerName: "s", BotLocalpart: "bot"}, roomStore, messaging.NewIdempotencyStore(db), eventlog.New(db))
	r.f = NewFanout(r.store, source, func([]*Delivery) { r.wakes++ })
	return r
}

func (r *fanoutRig) subscribe(t *testing.T, id, filter, state string, types ...string) {
	t.Helper()
	sub := &Subscription{ID: id, Service: "svc", RoomFilter: filter, URL: "https://hooks.example.org/" + id, EventTypes: types, Secret: NewSecret(), State: state}
	if err := r.store.CreateSubscription(context.Background(), sub); err != nil {
		t.Fatal(err)
	}
}

// queued returns the event ids in the outbox of one queue, in order.
func (r *fanoutRig) queued(t *testing.T, sub, room string) []string {
	t.Helper()
	rows, err := r.store.QueueHead(context.Background(), queueKey{sub, room}, 100)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, d := range rows {
		var b Body
		if err := json.Unmarshal(d.Body, &b); err != nil || b.SubscriptionID != sub || b.RoomID != room || gjson.GetBytes(b.DTO, "type").Str == "" {
			t.Errorf("queued body %s (%v)", d.Body, err)
		}
		ids = append(ids, gjson.GetBytes(b.Event, "event_id").Str)
	}
	return ids
}

func logEvent(pos int64, eventID, room, typ, content string) *eventlog.Event {
	return &eventlog.Event{Position: pos, EventID: eventID, Kind: eventlog.KindTimeline, RoomID: room, Type: typ, Sender: "@alice:s",
		JSON: []byte(fmt.Sprintf(`{"event_id":%q,"room_id":%q,"type":%q,"sender":"@alice:s","origin_server_ts":1,"content":%s}`, eventID, room, typ, content))}
}

// Each subscription gets the batch's events its filters match, in log order,
// one outbox row each; disabled ones get nothing, paused ones queue; the
// deliverer is woken once per batch that queued anything.
func TestFanoutQueuesWhatEachSubscriptionMatches(t *testing.T) {
	r := newFanoutRig(t)
	r.subscribe(t, "sub_all", "*", StateActive)
	r.subscribe(t, "sub_other", "!other:s", StateActive)
	r.subscribe(t, "sub_city", "city:plaza", StateActive)
	r.subscribe(t, "sub_reactions", "*", StateActive, "m.reaction")
	r.subscribe(t, "sub_created", "*", StateActive, "messaging.message.created")
	r.subscribe(t, "sub_paused", "*", StatePaused)
	r.subscribe(t, "sub_disabled", "*", StateDisabled)
	batch := []*eventlog.Event{
		logEvent(1, "$m1", "!plaza:s", "m.room.message", `{"msgtype":"m.text","body":"one"}`),
		logEvent(2, "$r1", "!plaza:s", "m.reaction", `{"m.relates_to":{"rel_type":"m.annotation","event_id":"$m1","key":"👍"}}`),
		logEvent(3, "$m2", "!other:s", "m.room.message", `{"msgtype":"m.text","body":"two"}`),
		logEvent(4, "$x", "!plaza:s", "org.example.unmapped", `{}`),
		logEvent(5, "$m3", "!plaza:s", "m.room.message", `{"msgtype":"m.text","body":"three"}`),
	}
	if err := r.f.HandleEvents(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		sub, room string
		want      []string
	}{
		{"sub_all", "!plaza:s", []string{"$m1", "$r1", "$m3"}},
		{"sub_all", "!other:s", []string{"$m2"}},
		{"sub_other", "!other:s", []string{"$m2"}},
		{"sub_other", "!plaza:s", nil},
		{"sub_city", "!plaza:s", []string{"$m1", "$r1", "$m3"}},
		{"sub_city", "!other:s", nil},
		{"sub_reactions", "!plaza:s", []string{"$r1"}},
		{"sub_created", "!plaza:s", []string{"$m1", "$m3"}},
		{"sub_created", "!other:s", []string{"$m2"}},
		{"sub_paused", "!plaza:s", []string{"$m1", "$r1", "$m3"}},
		{"sub_disabled", "!plaza:s", nil},
	} {
		if got := r.queued(t, tc.sub, tc.room); !slices.Equal(got, tc.want) {
			t.Errorf("%s in %s: queued %v, want %v", tc.sub, tc.room, got, tc.want)
		}
	}
	if r.wakes != 1 {
		t.Errorf("woke the deliverer %d times for one batch, want 1", r.wakes)
	}

	// A batch nothing matches queues nothing and wakes nobody.
	if err := r.f.HandleEvents(context.Background(), []*eventlog.Event{logEvent(6, "$y", "!plaza:s", "org.example.unmapped", `{}`)}); err != nil {
		t.Fatal(err)
	}
	if r.wakes != 1 {
		t.Errorf("a batch that queued nothing woke the deliverer (%d wakes)", r.wakes)
	}
}
