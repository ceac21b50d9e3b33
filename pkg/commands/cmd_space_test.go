package commands

import (
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/rooms"
)

func TestSpaceCommand(t *testing.T) {
	outOfStep := &rooms.SpaceReport{SpaceID: "!space:daarion.test", Alias: "#city:daarion.test", OutOfStep: 4,
		Rooms: []rooms.SpaceChild{
			{Slug: "harbour", RoomID: harbourRoom, InSpace: true, HasParent: true, HasBridgeState: true},
			{Slug: "lighthouse", RoomID: "!lighthouse:daarion.test", HasBridgeState: true},
			{Slug: "mill", RoomID: "!mill:daarion.test", Archived: true, InSpace: true, HasBridgeState: true},
			{Slug: "quay", RoomID: "!quay:daarion.test", Error: "M_FORBIDDEN"},
		},
		Stale: []id.RoomID{"!old:daarion.test"},
	}
	repairs := func(n int) func(t *testing.T, r *fakeRig) {
		return func(t *testing.T, r *fakeRig) {
			if r.rooms.repairs != n {
				t.Errorf("%d repairs, want %d", r.rooms.repairs, n)
			}
		}
	}
	runCommandCases(t, []commandCase{
		{name: "in step", command: "space", check: repairs(0),
			setup: func(r *fakeRig) {
				r.rooms.space = &rooms.SpaceReport{SpaceID: "!space:daarion.test", Alias: "#city:daarion.test",
					Rooms: []rooms.SpaceChild{{Slug: "harbour", InSpace: true, HasParent: true, HasBridgeState: true}}}
			},
			want: []string{"City space** `#city:daarion.test` (`!space:daarion.test`): 1 city room(s), **0 out of step**"}, absent: []string{"harbour", "repair"}},
		{name: "out of step", command: "space", check: repairs(0), setup: func(r *fakeRig) { r.rooms.space = outOfStep },
			want: []string{"**4 out of step**", "`lighthouse`: not in the space, no space parent", "`mill`: archived but in the space",
				"`quay`: unreadable: M_FORBIDDEN", "`!old:daarion.test`: listed, but no live city room", "space repair` to put them in step"},
			absent: []string{"`harbour`"}},
		{name: "repair", command: "space repair", check: repairs(1), setup: func(r *fakeRig) { r.rooms.space = outOfStep },
			want: []string{"**4 out of step**, **4 repaired**"}, absent: []string{"space repair` to put them in step"}},
		{name: "turned off", command: "space", want: []string{"Error:", "rooms.space.enabled"}},
		{name: "a bad argument", command: "space fix", check: repairs(0), setup: func(r *fakeRig) { r.rooms.space = outOfStep },
			want: []string{"Error:", "unknown argument `fix`"}},
	})
}
