package matrixstate_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"

	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/matrixstate"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

func TestMain(m *testing.M) { os.Exit(testrig.RunTests(m)) }

const room = "!plaza:daarion.test"

func logged(eventType, stateKey, content string) *eventlog.Event {
	sk := ""
	if stateKey != "-" {
		sk = fmt.Sprintf(`,"state_key":%q`, stateKey)
	}
	id := fmt.Sprintf("$%s_%s", eventType, stateKey)
	return &eventlog.Event{EventID: id, Kind: eventlog.KindTimeline, RoomID: room, Type: eventType, Sender: "@alice:daarion.test",
		JSON: []byte(fmt.Sprintf(`{"event_id":%q,"room_id":%q,"type":%q,"sender":"@alice:daarion.test"%s,"content":%s}`, id, room, eventType, sk, content))}
}

// The log's state events land in the SQL state store, on both databases;
// what is not state, or not readable, is left out and stops nothing.
func TestConsumerFeedsTheStateStore(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx := context.Background()
		// The pool the bridge gives mautrix's stores: on PostgreSQL not the
		// bridge's own, whose binary parameters the jsonb columns refuse.
		db := testrig.OpenMautrixDatabase(t, tdb)
		store, err := matrixstate.Open(ctx, db, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		c := matrixstate.NewConsumer(store)
		batch := []*eventlog.Event{
			logged("m.room.create", "", `{"room_version":"11","creator":"@alice:daarion.test"}`),
			logged("m.room.member", "@alice:daarion.test", `{"membership":"join","displayname":"Alice"}`),
			logged("m.room.member", "@agent_sofia:daarion.test", `{"membership":"join"}`),
			logged("m.room.power_levels", "", `{"users":{"@alice:daarion.test":100},"users_default":0}`),
			logged("m.room.power_levels", "", `{"users":{"@alice:daarion.test":"lots"}}`),     // unreadable: skipped
			logged("m.room.power_levels", "not-empty", `{"users":{"@alice:daarion.test":1}}`), // not the room's: skipped
			logged("m.room.member", "-", `{"membership":"leave"}`),                            // no state key: no state
			logged("m.room.encryption", "", `{"algorithm":"m.megolm.v1.aes-sha2"}`),
			logged("m.room.message", "-", `{"msgtype":"m.text","body":"hi"}`),
			logged("m.room.member", "@agent_sofia:daarion.test", `{"membership":"leave"}`), // kicked, later in the log
			{EventID: "$junk", Kind: eventlog.KindTimeline, RoomID: room, Type: "m.room.member", JSON: []byte(`{"state_key":`)},
			{EventID: "$typing", Kind: eventlog.KindEphemeral, Type: "m.typing", JSON: []byte(`{}`)},
		}
		if err := c.HandleEvents(ctx, batch); err != nil {
			t.Fatal(err)
		}
		if m, err := store.GetMembership(ctx, room, "@alice:daarion.test"); err != nil || m != event.MembershipJoin {
			t.Errorf("alice = %q, %v", m, err)
		}
		if m, err := store.GetMembership(ctx, room, "@agent_sofia:daarion.test"); err != nil || m != event.MembershipLeave {
			t.Errorf("sofia = %q, %v; want leave (the later event wins)", m, err)
		}
		if pl, err := store.GetPowerLevels(ctx, room); err != nil || pl == nil || pl.GetUserLevel("@alice:daarion.test") != 100 {
			t.Errorf("power levels = %+v, %v", pl, err)
		}
		if enc, err := store.IsEncrypted(ctx, room); err != nil || !enc {
			t.Errorf("encrypted = %v, %v", enc, err)
		}
		if create, err := store.GetCreate(ctx, room); err != nil || create == nil || create.ID != "$m.room.create_" {
			t.Errorf("create = %+v, %v", create, err)
		}

		// A database that fails is an error for the runner to retry.
		_ = db.Close()
		if err := c.HandleEvents(ctx, batch[1:2]); err == nil {
			t.Error("a closed database was no error")
		}
	})
}
