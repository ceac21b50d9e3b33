package commands

import (
	"context"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/agents"
	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/rooms"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// The real parts are the bot's dependencies.
var (
	_ Rooms      = (*rooms.Service)(nil)
	_ CityRooms  = (*rooms.Store)(nil)
	_ Agents     = (*agents.Service)(nil)
	_ AgentStore = (*agents.Store)(nil)
	_ EventLog   = (*eventlog.Log)(nil)
)

// failures makes a fake's methods fail: method name → error.
type failures struct {
	mu   sync.Mutex
	errs map[string]error
}

func (f *failures) fail(method string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.errs == nil {
		f.errs = map[string]error{}
	}
	f.errs[method] = err
}

func (f *failures) err(method string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.errs[method]
}

// fakeRooms is the rooms service and the city room mapping over a slice,
// as the bot uses them.
type fakeRooms struct {
	failures
	mu       sync.Mutex
	list     []*rooms.CityRoom // by slug
	created  []rooms.CreateRequest
	reasons  []string // of Archive
	listed   int      // List calls
	cache    *rooms.MetadataCache
	metadata map[id.RoomID]*rooms.Metadata
	space    *rooms.SpaceReport // CheckSpace's answer
	repairs  int                // CheckSpace calls with repair
	// confidential: the rooms SetConfidential marked, with who did.
	confidential map[id.RoomID]string
}

func newFakeRooms(list ...*rooms.CityRoom) *fakeRooms {
	fr := &fakeRooms{list: list, metadata: map[id.RoomID]*rooms.Metadata{}}
	fr.sortLocked()
	fr.cache = rooms.NewMetadataCache(time.Minute, func(_ context.Context, roomID id.RoomID) (*rooms.Metadata, error) {
		fr.mu.Lock()
		defer fr.mu.Unlock()
		if meta := fr.metadata[roomID]; meta != nil {
			return meta, nil
		}
		return nil, rooms.ErrNotFound
	})
	return fr
}

func (fr *fakeRooms) sortLocked() {
	slices.SortFunc(fr.list, func(a, b *rooms.CityRoom) int { return strings.Compare(a.Slug, b.Slug) })
}

func (fr *fakeRooms) find(match func(*rooms.CityRoom) bool) *rooms.CityRoom {
	fr.mu.Lock()
	defer fr.mu.Unlock()
	for _, cr := range fr.list {
		if match(cr) {
			copied := *cr
			return &copied
		}
	}
	return nil
}

func (fr *fakeRooms) List(_ context.Context, opts rooms.ListOptions) ([]*rooms.CityRoom, error) {
	if err := fr.err("List"); err != nil {
		return nil, err
	}
	fr.mu.Lock()
	defer fr.mu.Unlock()
	fr.listed++
	var out []*rooms.CityRoom
	for _, cr := range fr.list {
		if cr.Slug > opts.After && strings.HasPrefix(cr.Slug, opts.Prefix) && (opts.Archived == nil || *opts.Archived == cr.Archived) && len(out) < opts.Limit {
			out = append(out, cr)
		}
	}
	return out, nil
}

func (fr *fakeRooms) BySlug(_ context.Context, slug string) (*rooms.CityRoom, error) {
	if err := fr.err("BySlug"); err != nil {
		return nil, err
	}
	return fr.find(func(cr *rooms.CityRoom) bool { return cr.Slug == slug }), nil
}

func (fr *fakeRooms) ByAlias(_ context.Context, alias id.RoomAlias) (*rooms.CityRoom, error) {
	if err := fr.err("ByAlias"); err != nil {
		return nil, err
	}
	return fr.find(func(cr *rooms.CityRoom) bool { return cr.Alias == alias }), nil
}

func (fr *fakeRooms) ByRoomID(_ context.Context, roomID id.RoomID) (*rooms.CityRoom, error) {
	if err := fr.err("ByRoomID"); err != nil {
		return nil, err
	}
	return fr.find(func(cr *rooms.CityRoom) bool { return cr.RoomID == roomID }), nil
}

func (fr *fakeRooms) Create(_ context.Context, req rooms.CreateRequest) (*rooms.CityRoom, error) {
	if err := fr.err("Create"); err != nil {
		return nil, err
	}
	fr.mu.Lock()
	defer fr.mu.Unlock()
	fr.created = append(fr.created, req)
	cr := &rooms.CityRoom{Slug: req.Slug, Name: req.Name, Topic: req.Topic, Visibility: req.Visibility,
		RoomID: id.RoomID("!" + req.Slug + ":daarion.test"), Alias: id.RoomAlias("#city_" + req.Slug + ":daarion.test"), CreatedAt: time.Now()}
	fr.list = append(fr.list, cr)
	fr.sortLocked()
	copied := *cr
	return &copied, nil
}

func (fr *fakeRooms) setArchived(roomID id.RoomID, archived bool) (*rooms.CityRoom, error) {
	fr.mu.Lock()
	defer fr.mu.Unlock()
	for _, cr := range fr.list {
		if cr.RoomID == roomID {
			cr.Archived = archived
			copied := *cr
			return &copied, nil
		}
	}
	return nil, rooms.ErrNotFound
}

func (fr *fakeRooms) Archive(_ context.Context, roomID id.RoomID, reason string) (*rooms.CityRoom, error) {
	if err := fr.err("Archive"); err != nil {
		return nil, err
	}
	fr.mu.Lock()
	fr.reasons = append(fr.reasons, reason)
	fr.mu.Unlock()
	return fr.setArchived(roomID, true)
}

func (fr *fakeRooms) Unarchive(_ context.Context, roomID id.RoomID) (*rooms.CityRoom, error) {
	if err := fr.err("Unarchive"); err != nil {
		return nil, err
	}
	return fr.setArchived(roomID, false)
}

func (fr *fakeRooms) Cache() *rooms.MetadataCache { return fr.cache }

func (fr *fakeRooms) SetConfidential(_ context.Context, field string, roomID id.RoomID, confidential bool, by string) error {
	if err := fr.err("SetConfidential"); err != nil {
		return err
	}
	fr.mu.Lock()
	defer fr.mu.Unlock()
	if fr.confidential == nil {
		fr.confidential = map[id.RoomID]string{}
	}
	if confidential {
		fr.confidential[roomID] = by
	} else {
		delete(fr.confidential, roomID)
	}
	return nil
}

func (fr *fakeRooms) IsConfidential(roomID id.RoomID) bool {
	fr.mu.Lock()
	defer fr.mu.Unlock()
	_, ok := fr.confidential[roomID]
	return ok
}

// DirectChats is nil: the bot keeps its own.
func (fr *fakeRooms) DirectChats() *rooms.DirectChats { return nil }

func (fr *fakeRooms) CheckSpace(_ context.Context, repair bool) (*rooms.SpaceReport, error) {
	if err := fr.err("CheckSpace"); err != nil {
		return nil, err
	}
	if fr.space == nil {
		return nil, rooms.ErrNoSpace
	}
	if repair {
		fr.repairs++
		report := *fr.space
		report.Repaired = report.OutOfStep
		return &report, nil
	}
	return fr.space, nil
}

// fakeAgents is the agents service and the agent table over a map.
type fakeAgents struct {
	failures
	mu     sync.Mutex
	agents map[string]*agents.Agent
	names  map[string]string // set through SetProfile
}

func newFakeAgents(list ...*agents.Agent) *fakeAgents {
	fa := &fakeAgents{agents: map[string]*agents.Agent{}, names: map[string]string{}}
	for _, a := range list {
		fa.agents[a.AgentID] = a
	}
	return fa
}

func (fa *fakeAgents) Get(_ context.Context, agentID string) (*agents.Agent, error) {
	if err := fa.err("Get"); err != nil {
		return nil, err
	}
	fa.mu.Lock()
	defer fa.mu.Unlock()
	if a := fa.agents[agentID]; a != nil {
		copied := *a
		return &copied, nil
	}
	return nil, nil
}

func (fa *fakeAgents) List(_ context.Context, prefix string, limit int) ([]*agents.Agent, error) {
	if err := fa.err("List"); err != nil {
		return nil, err
	}
	fa.mu.Lock()
	defer fa.mu.Unlock()
	var out []*agents.Agent
	for _, agentID := range slices.Sorted(maps.Keys(fa.agents)) {
		if strings.HasPrefix(agentID, prefix) && len(out) < limit {
			out = append(out, fa.agents[agentID])
		}
	}
	return out, nil
}

func (fa *fakeAgents) SetProfile(_ context.Context, agentID string, displayName, _ *string) error {
	if err := fa.err("SetProfile"); err != nil {
		return err
	}
	fa.mu.Lock()
	defer fa.mu.Unlock()
	if displayName != nil {
		fa.names[agentID] = *displayName
	}
	return nil
}

// fakeLog answers the bot's reads of the event log: the last post of a
// sender.
type fakeLog struct {
	failures
	last map[string]*eventlog.Event // sender → last message
}

func (fl *fakeLog) LastBy(_ context.Context, sender, _ string, _ int64) (*eventlog.Event, error) {
	if err := fl.err("LastBy"); err != nil {
		return nil, err
	}
	return fl.last[sender], nil
}

func (fl *fakeLog) ParkedTransactionCount(context.Context) (int64, error) { return 0, nil }

// fakeRig is a bot whose rooms, agents and event log are fakes, on the
// fake homeserver.
type fakeRig struct {
	*handlerRig
	rooms      *fakeRooms
	agents     *fakeAgents
	log        *fakeLog
	reconciler *fakeReconciler
}

const (
	harbourRoom = "!harbour:daarion.test"
	sofia       = "@agent_sofia:daarion.test"
)

func newFakeRig(t *testing.T) *fakeRig {
	t.Helper()
	hs := newFakeHomeserver(t)
	base := newTestBot(t, hs)
	r := &fakeRig{
		handlerRig: &handlerRig{t: t, hs: hs},
		rooms: newFakeRooms(
			&rooms.CityRoom{Slug: "harbour", RoomID: harbourRoom, Alias: "#city_harbour:daarion.test", Name: "Harbour",
				Topic: "Ships *and* boats", Visibility: "public", CreatedAt: time.Now().Add(-time.Hour)},
			&rooms.CityRoom{Slug: "lighthouse", RoomID: "!lighthouse:daarion.test", Alias: "#city_lighthouse:daarion.test", Name: "Lighthouse",
				Visibility: "private", CreatedAt: time.Now()},
			&rooms.CityRoom{Slug: "mill", RoomID: "!mill:daarion.test", Alias: "#city_mill:daarion.test", Name: "Old Mill",
				Visibility: "public", Archived: true, CreatedAt: time.Now()},
		),
		agents: newFakeAgents(
			&agents.Agent{AgentID: "sofia", UserID: sofia, DisplayName: "Sofia", AvatarURL: "mxc://daarion.test/face",
				RegisteredAt: time.Now().Add(-48 * time.Hour), UpdatedAt: time.Now()},
			&agents.Agent{AgentID: "helper", UserID: "@agent_helper:daarion.test"},
		),
		log: &fakeLog{last: map[string]*eventlog.Event{sofia: {
			Position: 9, EventID: "$hello", RoomID: harbourRoom, Type: "m.room.message", Sender: sofia,
			JSON: []byte(`{"content":{"body":"Good   morning,\nharbour!"},"origin_server_ts":` + strconv.FormatInt(time.Now().UnixMilli(), 10) + `}`),
		}}},
		reconciler: &fakeReconciler{},
	}
	r.b = New(Options{Config: base.opts.Config, AppService: base.opts.AppService, Version: "v-test",
		Rooms: r.rooms, CityRooms: r.rooms, Agents: r.agents, AgentStore: r.agents, EventLog: r.log,
		Reconciler: r.reconciler})

	// What the room and agent commands read from the homeserver.
	const v3 = "/_matrix/client/v3"
	hs.handle("GET "+v3+"/rooms/{room}/joined_members", func(w http.ResponseWriter, r *http.Request, _ []byte) {
		if r.PathValue("room") != harbourRoom {
			testrig.WriteMatrixError(w, http.StatusForbidden, "M_FORBIDDEN", "not in room")
			return
		}
		testrig.WriteJSON(w, http.StatusOK, map[string]any{"joined": map[string]any{bot: map[string]any{}, sofia: map[string]any{}}})
	})
	hs.handle("GET "+v3+"/rooms/{room}/messages", func(w http.ResponseWriter, r *http.Request, _ []byte) {
		if r.PathValue("room") != harbourRoom {
			testrig.WriteJSON(w, http.StatusOK, map[string]any{"chunk": []any{}, "start": "s"})
			return
		}
		testrig.WriteJSON(w, http.StatusOK, map[string]any{"start": "s", "chunk": []any{map[string]any{
			"type": "m.room.message", "sender": sofia, "event_id": "$latest", "room_id": harbourRoom,
			"origin_server_ts": time.Now().UnixMilli(), "content": map[string]any{"msgtype": "m.text", "body": "hi"},
		}}})
	})
	hs.handle("GET "+v3+"/directory/room/{alias}", func(w http.ResponseWriter, r *http.Request, _ []byte) {
		if r.PathValue("alias") != "#elsewhere:daarion.test" {
			testrig.WriteMatrixError(w, http.StatusNotFound, "M_NOT_FOUND", "no such alias")
			return
		}
		testrig.WriteJSON(w, http.StatusOK, map[string]any{"room_id": "!elsewhere:daarion.test", "servers": []string{"daarion.test"}})
	})
	hs.handle("GET "+v3+"/joined_rooms", func(w http.ResponseWriter, r *http.Request, _ []byte) {
		if r.URL.Query().Get("user_id") != sofia {
			testrig.WriteMatrixError(w, http.StatusForbidden, "M_FORBIDDEN", "no ghost")
			return
		}
		testrig.WriteJSON(w, http.StatusOK, map[string]any{"joined_rooms": []string{harbourRoom, "!elsewhere:daarion.test"}})
	})
	return r
}
