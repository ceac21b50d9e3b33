package commands

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/rooms"
)

var errDatabase = errors.New("database on fire")

// commandCase is one command run by the admin, with what the answer holds
// and what the fakes saw.
type commandCase struct {
	name    string
	setup   func(r *fakeRig)
	command string
	want    []string
	// absent must not be in the answer.
	absent []string
	check  func(t *testing.T, r *fakeRig)
}

func runCommandCases(t *testing.T, cases []commandCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newFakeRig(t)
			if tc.setup != nil {
				tc.setup(r)
			}
			answer := r.run(tc.command, tc.want...)
			for _, a := range tc.absent {
				if strings.Contains(answer, a) {
					t.Errorf("the answer contains %q:\n%s", a, answer)
				}
			}
			if tc.check != nil {
				tc.check(t, r)
			}
		})
	}
}

func TestRoomCommands(t *testing.T) {
	noCalls := func(t *testing.T, r *fakeRig) {
		if len(r.rooms.created) != 0 || len(r.rooms.reasons) != 0 {
			t.Errorf("the rooms service was asked to create %v and archive %v", r.rooms.created, r.rooms.reasons)
		}
	}
	runCommandCases(t, []commandCase{
		// rooms
		{name: "rooms lists the live city rooms", command: "rooms",
			want:   []string{"City rooms:** 2", "`harbour` — Harbour · `#city_harbour:daarion.test` · public", "`lighthouse` — Lighthouse"},
			absent: []string{"mill", "archived"}},
		{name: "rooms --archived matches names too", command: "rooms MILL --archived",
			want: []string{"Archived city rooms matching `mill`:** 1", "`mill` — Old Mill", "**archived**"}},
		{name: "rooms says when none match", command: "rooms zzz", want: []string{"City rooms matching `zzz`:** none."}},
		{name: "rooms reads the mapping page by page", command: "rooms",
			setup: func(r *fakeRig) {
				for i := range 1200 {
					r.rooms.list = append(r.rooms.list, &rooms.CityRoom{Slug: fmt.Sprintf("r%04d", i), Name: "R", Visibility: "public"})
				}
				r.rooms.sortLocked()
			},
			want: []string{"City rooms:** 1202", "`harbour`", "rooms --page 2"},
			check: func(t *testing.T, r *fakeRig) {
				if r.rooms.listed != 3 {
					t.Errorf("%d pages read, want 3 of at most 500", r.rooms.listed)
				}
			}},
		{name: "rooms reports a failing mapping", command: "rooms", setup: func(r *fakeRig) { r.rooms.fail("List", errDatabase) },
			want: []string{"**Error:** database on fire"}},

		// room
		{name: "room by slug", command: "room HARBOUR", want: []string{
			"**City room `harbour`** — Harbour", "**Mapping:** `#city_harbour:daarion.test` → `!harbour:daarion.test`",
			"**Visibility:** public · **archived:** no · **created:** ", "(1h0m", "**Topic:** Ships *and* boats",
			"**Members:** 2 joined: `@agent_sofia:daarion.test`, `@daarion-bot:daarion.test`",
			"**Last event:** `m.room.message` by `@agent_sofia:daarion.test`", "(`$latest`)",
		}},
		{name: "room by the alias of a city room", command: "room #city_lighthouse:daarion.test", want: []string{
			"**City room `lighthouse`** — Lighthouse", "**Visibility:** private", "**Members:** unknown (", "**Last event:** none",
		}},
		{name: "room by the id of a city room", command: "room !harbour:daarion.test", want: []string{"**City room `harbour`**"}},
		{name: "room by an alias elsewhere", command: "room #elsewhere:daarion.test",
			setup: func(r *fakeRig) { r.rooms.metadata["!elsewhere:daarion.test"] = &rooms.Metadata{Name: "Tea House"} },
			want:  []string{"**Room `!elsewhere:daarion.test`** — not a city room", "**Name:** Tea House"}},
		{name: "room by a room id elsewhere", command: "room !other:daarion.test",
			want: []string{"**Room `!other:daarion.test`** — not a city room"}, absent: []string{"**Name:**"}},
		{name: "room by an unknown alias", command: "room #nowhere:daarion.test",
			want: []string{"**Error:** no room has the alias #nowhere:daarion.test"}},
		{name: "room by an unknown slug", command: "room nope", want: []string{"**Error:** no city room has the slug nope"}},
		{name: "room reports a failing slug lookup", command: "room harbour", setup: func(r *fakeRig) { r.rooms.fail("BySlug", errDatabase) },
			want: []string{"**Error:** database on fire"}},
		{name: "room reports a failing alias lookup", command: "room #city_harbour:daarion.test",
			setup: func(r *fakeRig) { r.rooms.fail("ByAlias", errDatabase) }, want: []string{"**Error:** database on fire"}},
		{name: "room reports a failing room id lookup", command: "room #elsewhere:daarion.test",
			setup: func(r *fakeRig) { r.rooms.fail("ByRoomID", errDatabase) }, want: []string{"**Error:** database on fire"}},

		// create-room
		{name: "create-room makes a private city room", command: "create-room Plaza Plaza Square --private",
			want: []string{"**Created** private city room `plaza` — Plaza Square: `#city_plaza:daarion.test` (`!plaza:daarion.test`)."},
			check: func(t *testing.T, r *fakeRig) {
				want := []rooms.CreateRequest{{Slug: "plaza", Name: "Plaza Square", Visibility: "private"}}
				if !slices.Equal(r.rooms.created, want) {
					t.Errorf("created %+v, want %+v", r.rooms.created, want)
				}
			}},
		{name: "create-room is public by default", command: "create-room plaza Plaza",
			want: []string{"**Created** public city room `plaza`"}},
		{name: "create-room keeps an existing room", command: "create-room harbour Other Harbour",
			want: []string{"City room `harbour` **already exists**: `#city_harbour:daarion.test` (`!harbour:daarion.test`)."}, check: noCalls},
		{name: "create-room reports the service's refusal", command: "create-room plaza Plaza",
			setup: func(r *fakeRig) {
				r.rooms.fail("Create", &rooms.ConflictError{Detail: "#city_plaza:daarion.test is squatted"})
			},
			want: []string{"**Error:** conflict: #city_plaza:daarion.test is squatted"}},
		{name: "create-room reports a failing lookup", command: "create-room plaza Plaza",
			setup: func(r *fakeRig) { r.rooms.fail("BySlug", errDatabase) }, want: []string{"**Error:** database on fire"}, check: noCalls},

		// archive and unarchive
		{name: "archive locks a city room", command: "archive harbour storm is coming",
			want: []string{"**Archived** city room `harbour`: only the bridge may post in `#city_harbour:daarion.test` now."},
			check: func(t *testing.T, r *fakeRig) {
				if !slices.Equal(r.rooms.reasons, []string{"storm is coming"}) {
					t.Errorf("archived with reasons %q", r.rooms.reasons)
				}
			}},
		{name: "archive of an archived room", command: "archive mill", want: []string{"City room `mill` is **already archived**."}, check: noCalls},
		{name: "archive of an unknown slug", command: "archive nope", want: []string{"**Error:** no city room has the slug nope"}, check: noCalls},
		{name: "archive reports the service's failure", command: "archive harbour",
			setup: func(r *fakeRig) { r.rooms.fail("Archive", errDatabase) }, want: []string{"**Error:** database on fire"}},
		{name: "unarchive opens an archived room", command: "unarchive MILL",
			want: []string{"**Unarchived** city room `mill`: its members may post again."},
			check: func(t *testing.T, r *fakeRig) {
				if cr := r.rooms.find(func(cr *rooms.CityRoom) bool { return cr.Slug == "mill" }); cr.Archived {
					t.Error("mill is still archived")
				}
			}},
		{name: "unarchive of a live room", command: "unarchive harbour", want: []string{"City room `harbour` is **not archived**."}},
		{name: "unarchive reports the service's failure", command: "unarchive mill",
			setup: func(r *fakeRig) { r.rooms.fail("Unarchive", errDatabase) }, want: []string{"**Error:** database on fire"}},

		// confidential
		{name: "confidential tells a room's state", command: "confidential harbour", want: []string{"City room `harbour` is **not confidential**."}},
		{name: "confidential on marks a city room by its alias", command: "confidential #city_harbour:daarion.test ON",
			want: []string{"City room `harbour` is **confidential** now", "stored before stays as it is"},
			check: func(t *testing.T, r *fakeRig) {
				if by, ok := r.rooms.confidential["!harbour:daarion.test"]; !ok || !strings.HasPrefix(by, "@") {
					t.Errorf("marked %v", r.rooms.confidential)
				}
			}},
		{name: "confidential then tells it", command: "confidential !harbour:daarion.test",
			setup: func(r *fakeRig) {
				r.rooms.confidential = map[id.RoomID]string{"!harbour:daarion.test": "@admin:daarion.test"}
			},
			want: []string{"City room `harbour` is **confidential**: its DTOs, sync answers and event log keep no message content."}},
		{name: "confidential off unmarks a room elsewhere", command: "confidential !other:daarion.test off",
			setup: func(r *fakeRig) { r.rooms.confidential = map[id.RoomID]string{"!other:daarion.test": ""} },
			want:  []string{"`!other:daarion.test` is **not confidential** any more"},
			check: func(t *testing.T, r *fakeRig) {
				if len(r.rooms.confidential) != 0 {
					t.Errorf("still marked: %v", r.rooms.confidential)
				}
			}},
		{name: "confidential refuses another word", command: "confidential harbour maybe",
			want: []string{"**Error:** the second argument must be on or off, not maybe"}},
		{name: "confidential says why a room is out of reach", command: "confidential !other:daarion.test on",
			setup: func(r *fakeRig) {
				r.rooms.fail("SetConfidential", &rooms.OutOfReachError{Field: "room", Problem: "is not a room the bridge manages"})
			},
			want: []string{"**Error:** !other:daarion.test is not a room the bridge manages"}},
		{name: "confidential reports the service's failure", command: "confidential harbour on",
			setup: func(r *fakeRig) { r.rooms.fail("SetConfidential", errDatabase) }, want: []string{"**Error:** database on fire"}},
	})
}

// Without the rooms parts, the room commands say so; with the mapping
// only, the reading ones work.
func TestRoomCommandsWithoutRooms(t *testing.T) {
	r := newFakeRig(t)
	opts := r.b.opts
	opts.Rooms, opts.CityRooms = nil, nil
	r.b = New(opts)
	for _, command := range []string{"rooms", "room harbour", "create-room plaza Plaza", "archive harbour", "unarchive mill"} {
		r.run(command, "**Error:** not available in this process")
	}

	opts.CityRooms = r.rooms
	r.b = New(opts)
	r.run("rooms", "City rooms:** 2")
	r.run("room !other:daarion.test", "not a city room")
	for _, command := range []string{"create-room plaza Plaza", "archive harbour", "unarchive mill"} {
		r.run(command, "**Error:** not available in this process")
	}
	if len(r.rooms.created) != 0 || len(r.rooms.reasons) != 0 {
		t.Errorf("the rooms service was used: %v %v", r.rooms.created, r.rooms.reasons)
	}
}

// The bot shares the rooms service's direct chats, so the internal API's
// reach check sees the chats the bot records.
func TestBotSharesTheDirectChatsOfRooms(t *testing.T) {
	r := newFakeRig(t)
	shared := rooms.NewDirectChats(r.b.client)
	opts := r.b.opts
	opts.Rooms = &directRooms{fakeRooms: r.rooms, direct: shared}
	r.b = New(opts)
	if r.b.direct != shared {
		t.Fatal("the bot keeps direct chats of its own")
	}
	if err := r.b.HandleEvents(t.Context(), toLog(invite("!dm:daarion.test", admin, true))); err != nil {
		t.Fatal(err)
	}
	if ok, err := shared.Has(t.Context(), id.RoomID("!dm:daarion.test")); err != nil || !ok {
		t.Errorf("the shared direct chats have the new one: %v, %v", ok, err)
	}
}

type directRooms struct {
	*fakeRooms
	direct *rooms.DirectChats
}

func (d *directRooms) DirectChats() *rooms.DirectChats { return d.direct }
