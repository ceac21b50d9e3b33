package agents

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/config"
	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/rooms"
)

const (
	cityRoom     = id.RoomID("!city:daarion.test")
	oldCityRoom  = id.RoomID("!city-before-upgrade:daarion.test")
	otherRoom    = id.RoomID("!elsewhere:daarion.test")
	localHuman   = id.UserID("@alice:daarion.test")
	remoteHuman  = id.UserID("@mallory:evil.example")
	partnerHuman = id.UserID("@pat:partner.example")
	bot          = id.UserID("@" + botLocalpart + ":" + testServer)
)

// roomsFake is the homeserver's rooms for the invite tests: who joined and
// left what, and the rooms' power levels (readable by the bot only, as in
// a city room it is in).
type roomsFake struct {
	joined map[id.UserID]map[id.RoomID]bool
	joins  map[id.UserID][]id.RoomID
	leaves map[id.UserID][]id.RoomID
	levels map[id.RoomID]map[id.UserID]int
}

// serve answers join, leave, joined_rooms and the power-levels and create
// state of a room. It runs under fakeHomeserver.mu.
func (rf *roomsFake) serve(fh *fakeHomeserver) func(w http.ResponseWriter, r *http.Request, caller id.UserID) bool {
	return func(w http.ResponseWriter, r *http.Request, caller id.UserID) bool {
		parts := strings.Split(strings.TrimPrefix(r.URL.EscapedPath(), "/_matrix/client/v3/"), "/")
		for i, p := range parts {
			parts[i], _ = url.PathUnescape(p)
		}
		if len(parts) == 1 && parts[0] == "joined_rooms" {
			list := []id.RoomID{}
			for roomID := range rf.joined[caller] {
				list = append(list, roomID)
			}
			reply(w, 200, map[string]any{"joined_rooms": list})
			return true
		}
		if len(parts) < 3 || parts[0] != "rooms" {
			return false
		}
		roomID := id.RoomID(parts[1])
		switch {
		case parts[2] == "join" && r.Method == http.MethodPost:
			if !fh.users[caller] {
				matrixErr(w, 403, "M_FORBIDDEN") // an unregistered ghost cannot join
				return true
			}
			if rf.joined[caller] == nil {
				rf.joined[caller] = map[id.RoomID]bool{}
			}
			rf.joined[caller][roomID] = true
			rf.joins[caller] = append(rf.joins[caller], roomID)
			reply(w, 200, map[string]any{"room_id": roomID})
		case parts[2] == "leave" && r.Method == http.MethodPost:
			delete(rf.joined[caller], roomID)
			rf.leaves[caller] = append(rf.leaves[caller], roomID)
			reply(w, 200, map[string]any{})
		case len(parts) >= 4 && parts[2] == "state" && parts[3] == "m.room.power_levels":
			users, ok := rf.levels[roomID]
			if !ok || caller != bot {
				matrixErr(w, 403, "M_FORBIDDEN")
				return true
			}
			reply(w, 200, map[string]any{"users": users, "users_default": 0})
		case len(parts) >= 4 && parts[2] == "state" && parts[3] == "m.room.create":
			reply(w, 200, map[string]any{"type": "m.room.create", "state_key": "", "sender": bot, "room_id": roomID,
				"event_id": "$create", "content": map[string]any{"room_version": "10"}})
		default:
			return false
		}
		return true
	}
}

// inviteFixture is the agents service with a city room (!city, which an
// upgrade moved from !city-before-upgrade) and the rooms fake.
func inviteFixture(t *testing.T, agents config.Agents) (*agentsFixture, *roomsFake) {
	t.Helper()
	f := newAgentsFixtureWith(t, "", agents)
	rf := &roomsFake{joined: map[id.UserID]map[id.RoomID]bool{}, joins: map[id.UserID][]id.RoomID{},
		leaves: map[id.UserID][]id.RoomID{}, levels: map[id.RoomID]map[id.UserID]int{}}
	f.hs.mu.Lock()
	f.hs.rooms = rf.serve(f.hs)
	f.hs.mu.Unlock()
	ctx := context.Background()
	store := rooms.NewStore(f.db)
	if _, err := store.Insert(ctx, &rooms.CityRoom{Slug: "forum", RoomID: oldCityRoom, Alias: "#city_forum:" + testServer, Name: "Forum", Visibility: "public"}); err != nil {
		t.Fatal(err)
	}
	if err := store.MoveToRoom(ctx, "forum", oldCityRoom, cityRoom); err != nil {
		t.Fatal(err)
	}
	return f, rf
}

// inviteEvent is an m.room.member invite as the event log holds it.
func inviteEvent(roomID id.RoomID, inviter, invitee id.UserID, isDirect bool) *eventlog.Event {
	content := map[string]any{"membership": "invite"}
	if isDirect {
		content["is_direct"] = true
	}
	raw, _ := json.Marshal(map[string]any{"type": "m.room.member", "room_id": roomID, "sender": inviter,
		"state_key": invitee, "event_id": "$invite", "content": content})
	return &eventlog.Event{EventID: "$invite", Kind: eventlog.KindTimeline, RoomID: roomID.String(),
		Type: "m.room.member", Sender: inviter.String(), JSON: raw}
}

// makeKnown makes an agent known the way the platform does: through the
// internal API (setting its display name).
func (f *agentsFixture) makeKnown(t *testing.T, agentID string) {
	t.Helper()
	res := f.do(t, agentsOnlyToken, http.MethodPut, "/internal/matrix/users/agent:"+agentID+"/display-name", map[string]string{"display_name": agentID})
	if res.status != 200 {
		t.Fatalf("making agent:%s known: %d %s", agentID, res.status, res.raw)
	}
}

func TestInviteRules(t *testing.T) {
	sofia := id.UserID("@agent_sofia:" + testServer)
	withAgents := func(edit func(a *config.Agents)) config.Agents {
		a := config.Default().Agents
		edit(&a)
		return a
	}
	partner := withAgents(func(a *config.Agents) {
		a.AcceptInvitesFrom = config.InviteRules{"local", "server:partner.example", "@carol:elsewhere.example"}
	})
	for _, tc := range []struct {
		name     string
		agents   config.Agents
		roomID   id.RoomID
		inviter  id.UserID
		isDirect bool
		levels   map[id.UserID]int // the room's power levels, readable by the bot
		accepted bool
	}{
		{"local user into a city room", config.Default().Agents, cityRoom, localHuman, false, nil, true},
		{"local user into a non-city, non-direct room", config.Default().Agents, otherRoom, localHuman, false, nil, false},
		{"local user into a direct chat", config.Default().Agents, otherRoom, localHuman, true, nil, true},
		{"local user into the room an upgrade replaced", config.Default().Agents, oldCityRoom, localHuman, false, nil, false},
		{"remote user into a city room", config.Default().Agents, cityRoom, remoteHuman, false, nil, false},
		{"remote user into a direct chat", config.Default().Agents, otherRoom, remoteHuman, true, nil, false},
		{"remote user from a configured server", partner, cityRoom, partnerHuman, false, nil, true},
		{"configured remote user", partner, cityRoom, "@carol:elsewhere.example", false, nil, true},
		{"another user of the configured user's server", partner, cityRoom, "@dave:elsewhere.example", false, nil, false},
		{"configured server, but a non-city room", partner, otherRoom, partnerHuman, false, nil, false},
		{"the bot into any room", config.Default().Agents, otherRoom, bot, false, nil, true},
		{"another agent into any room", config.Default().Agents, otherRoom, "@agent_oleh:" + testServer, false, nil, true},
		{"a remote agent look-alike", config.Default().Agents, cityRoom, "@agent_oleh:evil.example", false, nil, false},
		{"local user, nobody configured", withAgents(func(a *config.Agents) { a.AcceptInvitesFrom = nil }), cityRoom, localHuman, false, nil, false},
		{"the bot, nobody configured", withAgents(func(a *config.Agents) { a.AcceptInvitesFrom = nil }), otherRoom, bot, false, nil, true},
		{"local user into any room", withAgents(func(a *config.Agents) { a.AcceptInvitesInto = []string{"any"} }), otherRoom, localHuman, false, nil, true},
		{"remote user into any room", withAgents(func(a *config.Agents) { a.AcceptInvitesInto = []string{"any"} }), otherRoom, remoteHuman, false, nil, false},
		{"direct chats only, a city room", withAgents(func(a *config.Agents) { a.AcceptInvitesInto = []string{"direct"} }), cityRoom, localHuman, false, nil, false},
		{"local user below the power level", withAgents(func(a *config.Agents) { a.AcceptInvitesFrom = config.InviteRules{"local", "power_level:50"} }),
			cityRoom, localHuman, false, map[id.UserID]int{localHuman: 0}, false},
		{"local user at the power level", withAgents(func(a *config.Agents) { a.AcceptInvitesFrom = config.InviteRules{"local", "power_level:50"} }),
			cityRoom, localHuman, false, map[id.UserID]int{localHuman: 50}, true},
		{"remote user at the power level", withAgents(func(a *config.Agents) { a.AcceptInvitesFrom = config.InviteRules{"local", "power_level:50"} }),
			cityRoom, remoteHuman, false, map[id.UserID]int{remoteHuman: 100}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, rf := inviteFixture(t, tc.agents)
			f.makeKnown(t, "sofia")
			if tc.levels != nil {
				f.hs.mu.Lock()
				rf.levels[tc.roomID] = tc.levels
				f.hs.mu.Unlock()
			}
			if err := f.svc.HandleEvents(context.Background(), []*eventlog.Event{inviteEvent(tc.roomID, tc.inviter, sofia, tc.isDirect)}); err != nil {
				t.Fatal(err)
			}
			f.hs.mu.Lock()
			defer f.hs.mu.Unlock()
			joined, joins, leaves := rf.joined[sofia][tc.roomID], len(rf.joins[sofia]), len(rf.leaves[sofia])
			switch {
			case tc.accepted && (!joined || leaves != 0):
				t.Errorf("declined: joined %v, %d leaves", joined, leaves)
			case !tc.accepted && joined:
				t.Errorf("accepted: %d joins, %d leaves", joins, leaves)
			case !tc.accepted && leaves != 1:
				t.Errorf("the invite was not rejected: %d leaves", leaves)
			}
		})
	}
}

// An invite of an agent the platform never made registers nothing, from
// anyone, into any room; a configured provision_unknown pattern lets it in.
func TestInviteOfUnknownAgent(t *testing.T) {
	nobody := id.UserID("@agent_nobody:" + testServer)
	ctx := context.Background()
	for _, inviter := range []id.UserID{localHuman, remoteHuman, bot} {
		for _, roomID := range []id.RoomID{cityRoom, otherRoom} {
			f, rf := inviteFixture(t, config.Default().Agents)
			if err := f.svc.HandleEvents(ctx, []*eventlog.Event{inviteEvent(roomID, inviter, nobody, true)}); err != nil {
				t.Fatal(err)
			}
			f.hs.mu.Lock()
			if len(f.hs.asRegisters) != 0 || f.hs.users[nobody] || len(rf.joins[nobody]) != 0 {
				t.Errorf("invite by %s into %s: registrations %v, joins %v", inviter, roomID, f.hs.asRegisters, rf.joins[nobody])
			}
			f.hs.mu.Unlock()
			if a, err := f.svc.Store().Get(ctx, "nobody"); err != nil || a != nil {
				t.Errorf("invite by %s into %s: the agent was recorded: %+v, %v", inviter, roomID, a, err)
			}
			if known, err := f.svc.Known(ctx, "nobody"); err != nil || known {
				t.Errorf("after the invite, known = %v, %v", known, err)
			}
		}
	}

	f, rf := inviteFixture(t, config.Agents{ProvisionUnknown: []string{"demo-.*"}, AcceptInvitesFrom: config.InviteRules{"local"},
		AcceptInvitesInto: []string{"city"}})
	demo := id.UserID("@agent_demo-1:" + testServer)
	events := []*eventlog.Event{inviteEvent(cityRoom, localHuman, demo, false), inviteEvent(cityRoom, localHuman, "@agent_xdemo-1:"+testServer, false)}
	if err := f.svc.HandleEvents(ctx, events); err != nil {
		t.Fatal(err)
	}
	f.hs.mu.Lock()
	defer f.hs.mu.Unlock()
	if !f.hs.users[demo] || !rf.joined[demo][cityRoom] || len(f.hs.asRegisters) != 1 {
		t.Errorf("provision_unknown demo-.*: registered %v, joined %v, %d registrations", f.hs.users[demo], rf.joined[demo][cityRoom], len(f.hs.asRegisters))
	}
}

// An invite that must be declined, replayed or forged while the ghost is in
// the room already, does not make it leave.
func TestDeclineKeepsAJoinedGhost(t *testing.T) {
	f, rf := inviteFixture(t, config.Default().Agents)
	f.makeKnown(t, "sofia")
	sofia := id.UserID("@agent_sofia:" + testServer)
	logger := zerolog.New(lockedBuffer{f.mu, f.log})
	ctx := logger.WithContext(context.Background())
	if err := f.svc.HandleEvents(ctx, []*eventlog.Event{inviteEvent(cityRoom, localHuman, sofia, false)}); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.HandleEvents(ctx, []*eventlog.Event{inviteEvent(cityRoom, remoteHuman, sofia, false)}); err != nil {
		t.Fatal(err)
	}
	f.hs.mu.Lock()
	defer f.hs.mu.Unlock()
	if !rf.joined[sofia][cityRoom] || len(rf.leaves[sofia]) != 0 {
		t.Errorf("joined %v, leaves %v", rf.joined[sofia][cityRoom], rf.leaves[sofia])
	}
	if !strings.Contains(f.logs(), "Declining an invite of an agent") {
		t.Error("the forged invite was not declined")
	}
}

// The homeserver's user query: a known agent exists (and is registered
// before the answer), anything else is not found and registers nothing.
func TestQueryUser(t *testing.T) {
	f, _ := inviteFixture(t, config.Agents{ProvisionUnknown: []string{"demo-.*"}, AcceptInvitesFrom: config.InviteRules{"local"},
		AcceptInvitesInto: []string{"city"}})
	f.makeKnown(t, "sofia")
	ctx := context.Background()
	for _, tc := range []struct {
		userID     id.UserID
		exists     bool
		registered bool
	}{
		{"@agent_sofia:" + testServer, true, true},
		{"@agent_nobody:" + testServer, false, false},
		{"@agent_demo-7:" + testServer, true, true},
		{"@agent_xdemo-7:" + testServer, false, false},
		{"@agent_Bad:" + testServer, false, false},
		{"@agent_sofia:evil.example", false, false},
		{localHuman, false, false},
		{bot, false, true},
	} {
		exists, err := f.svc.QueryUser(ctx, tc.userID)
		f.hs.mu.Lock()
		registered := f.hs.users[tc.userID]
		f.hs.mu.Unlock()
		if err != nil || exists != tc.exists || registered != tc.registered {
			t.Errorf("%s: exists %v, %v, registered %v; want %v, registered %v", tc.userID, exists, err, registered, tc.exists, tc.registered)
		}
	}
	if a, err := f.svc.Store().Get(ctx, "nobody"); err != nil || a != nil {
		t.Errorf("the unknown agent was recorded: %+v, %v", a, err)
	}
}
