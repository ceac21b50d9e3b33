package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/daarion/matrix-bridge/pkg/delivery"
	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/identity"
	"github.com/daarion/matrix-bridge/pkg/mapping"
	"github.com/daarion/matrix-bridge/pkg/messaging"
	"github.com/daarion/matrix-bridge/pkg/rooms"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// loggedEvents is the event log's lookup of redacted events, from a map.
type loggedEvents map[string]*eventlog.Event

func (l loggedEvents) ByEventIDs(_ context.Context, eventIDs []string) (map[string]*eventlog.Event, error) {
	out := map[string]*eventlog.Event{}
	for _, eventID := range eventIDs {
		if evt, ok := l[eventID]; ok {
			out[eventID] = evt
		}
	}
	return out, nil
}

// A redaction of a reaction the log holds is two deliveries, in order, in
// the slots of its position: messaging.message.deleted, then
// messaging.reaction.removed under its own webhook-id. A subscription to
// m.room.redaction gets both, one to a DTO type only that DTO; the batch
// handled again (a restart) queues nothing twice.
func TestFanoutQueuesBothDTOsOfAReactionRedaction(t *testing.T) {
	ctx := context.Background()
	db := testrig.OpenDatabase(t, testrig.NewTestDatabase(t, testrig.SQLite))
	roomStore := rooms.NewStore(db)
	if ok, err := roomStore.Insert(ctx, &rooms.CityRoom{Slug: "plaza", RoomID: "!plaza:s", Alias: "#city_plaza:s", Name: "Plaza", Visibility: "public"}); err != nil || !ok {
		t.Fatalf("city room: %v %v", ok, err)
	}
	reaction := logEvent(2, "$r1", "!plaza:s", "m.reaction", `{"m.relates_to":{"rel_type":"m.annotation","event_id":"$m1","key":"👍"}}`)
	store := NewStore(db)
	source := delivery.NewDTOSource(identity.Mapper{ServerName: "s", BotLocalpart: "bot"}, roomStore, messaging.NewIdempotencyStore(db),
		loggedEvents{"$r1": reaction})
	f := NewFanout(store, source, func([]*Delivery) {})
	for _, sub := range []struct{ id, typ string }{{"sub_all", ""}, {"sub_redactions", "m.room.redaction"},
		{"sub_deleted", mapping.MessageDeleted}, {"sub_removed", mapping.ReactionRemoved}} {
		var types []string
		if sub.typ != "" {
			types = []string{sub.typ}
		}
		if err := store.CreateSubscription(ctx, &Subscription{ID: sub.id, Service: "svc", RoomFilter: "*", URL: "https://hooks.example.org/" + sub.id,
			EventTypes: types, Secret: NewSecret(), State: StateActive}); err != nil {
			t.Fatal(err)
		}
	}
	batch := []*eventlog.Event{
		logEvent(1, "$m1", "!plaza:s", "m.room.message", `{"msgtype":"m.text","body":"one"}`),
		reaction,
		logEvent(3, "$d1", "!plaza:s", "m.room.redaction", `{"redacts":"$r1"}`),
		logEvent(4, "$m2", "!plaza:s", "m.room.message", `{"msgtype":"m.text","body":"two"}`),
	}
	removedID := mapping.ReactionRemovedID("$d1")
	for range 2 {
		if err := f.HandleEvents(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		sub  string
		want []string // slot id type
	}{
		{"sub_all", []string{
			"4 $m1 messaging.message.created", "8 $r1 messaging.reaction.added",
			"12 $d1 messaging.message.deleted", "13 " + removedID + " messaging.reaction.removed",
			"16 $m2 messaging.message.created"}},
		{"sub_redactions", []string{"12 $d1 messaging.message.deleted", "13 " + removedID + " messaging.reaction.removed"}},
		{"sub_deleted", []string{"12 $d1 messaging.message.deleted"}},
		{"sub_removed", []string{"13 " + removedID + " messaging.reaction.removed"}},
	} {
		rows, err := store.QueueHead(ctx, queueKey{tc.sub, "!plaza:s"}, 100)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, d := range rows {
			var b Body
			if err := json.Unmarshal(d.Body, &b); err != nil || gjson.GetBytes(b.DTO, "id").Str != d.EventID ||
				gjson.GetBytes(b.Event, "event_id").Str != gjson.GetBytes(b.DTO, "matrix_event_id").Str {
				t.Errorf("%s: row %d %s: body %s (%v)", tc.sub, d.Position, d.EventID, d.Body, err)
			}
			if err := mapping.Validate(b.DTO); err != nil {
				t.Errorf("%s: %v", tc.sub, err)
			}
			got = append(got, fmt.Sprint(d.Position, " ", d.EventID, " ", gjson.GetBytes(b.DTO, "type").Str))
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s queued\n%v, want\n%v", tc.sub, got, tc.want)
		}
	}
}

// The upgrade to v11 turns the positions of the rows already queued into
// the slots of their events' first DTOs, in the same order, on both
// databases; the fan-out of an event queued before the upgrade, handled
// again after it, queues nothing new.
func TestUpgradeMakesQueuedPositionsSlots(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx := context.Background()
		db := testrig.OpenDatabase(t, tdb)
		store := NewStore(db)
		if err := store.CreateSubscription(ctx, &Subscription{ID: "sub_a", Service: "svc", RoomFilter: "*", URL: "https://hooks.example.org/a",
			Secret: NewSecret(), State: StateActive}); err != nil {
			t.Fatal(err)
		}
		// Rows as v10 queued them: at the log position, dense (so that a
		// naive update would collide).
		var old []*Delivery
		for pos := int64(1); pos <= 5; pos++ {
			old = append(old, &Delivery{SubscriptionID: "sub_a", Position: pos, RoomID: "!r:s", EventID: fmt.Sprint("$", pos), Body: []byte(`{}`), NextAttemptAt: time.Now()})
		}
		if err := store.Enqueue(ctx, old); err != nil {
			t.Fatal(err)
		}
		// The upgrade's statements, as dbutil runs them (later upgrades are
		// left alone: the database is already at the newest version).
		upgrade, err := os.ReadFile("../../../database/upgrades/11-webhook-slots.sql")
		if err != nil {
			t.Fatal(err)
		}
		var statements int
		for _, stmt := range strings.Split(string(upgrade), ";") {
			var lines []string
			for _, line := range strings.Split(stmt, "\n") {
				if !strings.HasPrefix(strings.TrimSpace(line), "--") {
					lines = append(lines, line)
				}
			}
			if sql := strings.TrimSpace(strings.Join(lines, "\n")); sql != "" {
				if _, err := db.Exec(ctx, sql); err != nil {
					t.Fatalf("%s: %v", sql, err)
				}
				statements++
			}
		}
		if statements != 2 {
			t.Fatalf("%d statements in the upgrade, want 2", statements)
		}
		rows, err := store.QueueHead(ctx, queueKey{"sub_a", "!r:s"}, 100)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, d := range rows {
			got = append(got, fmt.Sprint(d.Position, d.EventID))
		}
		if want := []string{"4$1", "8$2", "12$3", "16$4", "20$5"}; !slices.Equal(got, want) {
			t.Errorf("after the upgrade: %v, want %v", got, want)
		}
		again := &Delivery{SubscriptionID: "sub_a", Position: Slot(3, 0), RoomID: "!r:s", EventID: "$3", Body: []byte(`{"again":1}`), NextAttemptAt: time.Now()}
		if err := store.Enqueue(ctx, []*Delivery{again}); err != nil {
			t.Fatal(err)
		}
		if pending, _, err := store.Counts(ctx, "sub_a"); err != nil || pending != 5 {
			t.Errorf("pending after the event queued again: %d, %v; want 5", pending, err)
		}
	})
}
