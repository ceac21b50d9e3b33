package commands

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/daarion/matrix-bridge/database"
	"github.com/daarion/matrix-bridge/pkg/agents"
	"github.com/daarion/matrix-bridge/pkg/consumer"
	"github.com/daarion/matrix-bridge/pkg/delivery/webhook"
	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/identity"
	"github.com/daarion/matrix-bridge/pkg/rooms"
	"github.com/daarion/matrix-bridge/pkg/status"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// handlerRig is a bot over real stores (SQLite) and the fake homeserver:
// what the command handlers read and change is in the database, so each
// handler is tested without a homeserver of its own.
type handlerRig struct {
	t        *testing.T
	hs       *fakeHomeserver
	b        *Bot
	webhooks *webhook.Store
	parked   *consumer.ParkedStore
	snapshot *status.Snapshot
}

func newHandlerRig(t *testing.T) *handlerRig {
	t.Helper()
	ctx := context.Background()
	tdb := testrig.NewTestDatabase(t, testrig.SQLite)
	db, err := database.Open(ctx, database.Target{Type: tdb.Type, URI: tdb.URI}, database.PoolOptions{}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	r := &handlerRig{t: t, hs: newFakeHomeserver(t), webhooks: webhook.NewStore(db), parked: consumer.NewParkedStore(db)}
	base := newTestBot(t, r.hs)
	cfg, as := base.opts.Config, base.opts.AppService
	roomStore := rooms.NewStore(db)
	roomSvc, err := rooms.NewService(roomStore, as.BotIntent(), cfg.Homeserver.ServerName, cfg.Rooms)
	if err != nil {
		t.Fatal(err)
	}
	agentStore := agents.NewStore(db)
	r.b = New(Options{
		Config: cfg, AppService: as, DB: db, EventLog: eventlog.New(db), Rooms: roomSvc, CityRooms: roomStore,
		Agents: agents.NewService(agentStore, roomStore, as, identity.NewMapper(cfg), cfg.Agents), AgentStore: agentStore, Webhooks: r.webhooks,
		Parked: r.parked, Version: "v-test", Status: func() *status.Snapshot { return r.snapshot },
	})
	for _, cr := range []*rooms.CityRoom{
		{Slug: "harbour", RoomID: "!harbour:daarion.test", Alias: "#city_harbour:daarion.test", Name: "Harbour", Visibility: "public"},
		{Slug: "lighthouse", RoomID: "!lighthouse:daarion.test", Alias: "#city_lighthouse:daarion.test", Name: "Lighthouse", Visibility: "private"},
	} {
		if ok, err := roomStore.Insert(ctx, cr); err != nil || !ok {
			t.Fatalf("city room %s: %v %v", cr.Slug, ok, err)
		}
	}
	if err := agentStore.Upsert(ctx, "sofia", "@agent_sofia:daarion.test"); err != nil {
		t.Fatal(err)
	}
	sub := &webhook.Subscription{ID: "sub_one", Service: "svc", RoomFilter: "*", URL: "https://hooks.example.org/one", Secret: webhook.NewSecret(), State: webhook.StateActive}
	if err := r.webhooks.CreateSubscription(ctx, sub); err != nil {
		t.Fatal(err)
	}
	dead := &webhook.Delivery{SubscriptionID: sub.ID, Position: 1, RoomID: "!harbour:daarion.test", EventID: "$lost", Body: []byte(`{}`), NextAttemptAt: time.Now()}
	if err := r.webhooks.Enqueue(ctx, []*webhook.Delivery{dead}); err != nil {
		t.Fatal(err)
	}
	if err := r.webhooks.Failed(ctx, dead, true, time.Now(), time.Now(), "receiver answered 500"); err != nil {
		t.Fatal(err)
	}
	if err := r.parked.Park(ctx, "rooms", 7, "$tomb", errors.New("joining the replacement: HTTP 403")); err != nil {
		t.Fatal(err)
	}
	return r
}

// run sends command as the admin in the city room and returns the bot's answer.
func (r *handlerRig) run(command string, want ...string) string {
	r.t.Helper()
	before := len(r.hs.messages())
	if err := r.b.HandleEvents(context.Background(), toLog(text(city, admin, "!daarion "+command))); err != nil {
		r.t.Fatalf("%s: %v", command, err)
	}
	msgs := r.hs.messages()
	if len(msgs) != before+1 {
		r.t.Fatalf("%s: the bot sent %d messages, want 1", command, len(msgs)-before)
	}
	answer := body(msgs[len(msgs)-1])
	for _, w := range want {
		if !strings.Contains(answer, w) {
			r.t.Errorf("%s: the answer does not contain %q:\n%s", command, w, answer)
		}
	}
	return answer
}

func TestListingHandlers(t *testing.T) {
	r := newHandlerRig(t)
	r.run("rooms", "City rooms:** 2", "`harbour` — Harbour", "#city_harbour:daarion.test", "`lighthouse`")
	r.run("rooms light", "City rooms matching `light`:** 1", "`lighthouse`")
	r.run("agents", "Agents:** 1", "`sofia`", "@agent_sofia:daarion.test")
	r.run("subscriptions", "Webhook subscriptions:** 1", "`sub_one`", "hooks.example.org")
	r.run("failures sub_one", "Dead letters of `sub_one`", "$lost", "receiver answered 500")
	r.run("failures sub_nope", "no subscription has the id sub_nope")
	r.run("parked", "`rooms` #7", "$tomb", "HTTP 403")
}

func TestSubscriptionHandlersChangeTheStore(t *testing.T) {
	r := newHandlerRig(t)
	ctx := context.Background()
	state := func() string {
		sub, err := r.webhooks.Subscription(ctx, "sub_one")
		if err != nil || sub == nil {
			t.Fatalf("subscription: %v", err)
		}
		return sub.State
	}
	r.run("pause sub_one")
	if got := state(); got != webhook.StatePaused {
		t.Errorf("after pause: %s", got)
	}
	r.run("resume sub_one")
	if got := state(); got != webhook.StateActive {
		t.Errorf("after resume: %s", got)
	}
	r.run("redeliver sub_one")
	if pending, dead, err := r.webhooks.Counts(ctx, "sub_one"); err != nil || pending != 1 || dead != 0 {
		t.Errorf("after redeliver: %d pending, %d dead, %v; want the dead letter pending again", pending, dead, err)
	}
}

func TestRetryParkedMarksTheEvent(t *testing.T) {
	r := newHandlerRig(t)
	r.run("retry-parked rooms 7")
	p, err := r.parked.Get(context.Background(), "rooms", 7)
	if err != nil || p == nil || !p.RetryRequested {
		t.Fatalf("parked event after retry-parked: %+v, %v", p, err)
	}
	r.run("parked", "retry requested")
}

func TestStatusReadsTheSnapshot(t *testing.T) {
	r := newHandlerRig(t)
	r.run("status", "not sampled yet")
	r.snapshot = &status.Snapshot{
		At: time.Now(), LogHead: 42, JournalBacklog: 3, LeaderHeld: true, Leading: true,
		Homeserver: status.Reachability{Reachable: true, Ping: 7 * time.Millisecond},
		Database:   status.Reachability{Error: "disk on fire"},
		Consumers:  []status.Consumer{{Name: "rooms", Position: 40, Lag: 2}},
	}
	r.run("status", "Homeserver:** reachable, ping 7 ms", "Database:** SQLite, unreachable (disk on fire)",
		"position 42, journal backlog 3; leader: this process", "`rooms`: position 40, lag 2")
}

// The status command's Encryption line, from the snapshot.
func TestStatusShowsEncryption(t *testing.T) {
	for _, tc := range []struct {
		name string
		enc  status.Encryption
		want string
	}{
		{"off", status.Encryption{}, "Encryption:** off (encryption.enabled)"},
		{"unavailable", status.Encryption{Enabled: true, Unavailable: "no MSC4190 here"}, "Encryption:** unavailable: no MSC4190 here"},
		{"on", status.Encryption{Enabled: true, Devices: 2, Waiting: 1}, "Encryption:** on; 2 devices loaded in this process, 1 event waiting for keys"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newHandlerRig(t)
			r.snapshot = &status.Snapshot{At: time.Now(), Encryption: tc.enc}
			r.run("status", tc.want)
		})
	}
}
