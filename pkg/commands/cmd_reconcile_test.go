package commands

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/reconcile"
)

// fakeReconciler answers every room with what recovered names for it.
type fakeReconciler struct {
	recovered map[id.RoomID][]string
	failed    map[id.RoomID]error
	cityErr   error
	asked     [][]id.RoomID
}

func (f *fakeReconciler) City(ctx context.Context, trigger string) (*reconcile.Report, error) {
	if f.cityErr != nil {
		return nil, f.cityErr
	}
	return f.Rooms(ctx, trigger, []id.RoomID{harbourRoom, "!lighthouse:daarion.test"}), nil
}

func (f *fakeReconciler) Rooms(_ context.Context, trigger string, roomIDs []id.RoomID) *reconcile.Report {
	f.asked = append(f.asked, roomIDs)
	report := &reconcile.Report{Trigger: trigger, Duration: 1500 * time.Millisecond}
	for _, roomID := range roomIDs {
		res := reconcile.RoomResult{RoomID: roomID, Compared: 50, Pages: 1, Recovered: f.recovered[roomID], Err: f.failed[roomID]}
		report.Rooms = append(report.Rooms, res)
		report.Recovered += len(res.Recovered)
		report.Pages++
		if res.Err != nil {
			report.Failed++
		}
	}
	return report
}

func TestReconcileCommand(t *testing.T) {
	many := make([]string, 25)
	for i := range many {
		many[i] = fmt.Sprintf("$lost%02d", i)
	}
	askedFor := func(want ...id.RoomID) func(t *testing.T, r *fakeRig) {
		return func(t *testing.T, r *fakeRig) {
			if len(r.reconciler.asked) != 1 || !slices.Equal(r.reconciler.asked[0], want) {
				t.Errorf("reconciled %v, want %v", r.reconciler.asked, want)
			}
		}
	}
	runCommandCases(t, []commandCase{
		{name: "the city, nothing missing", command: "reconcile",
			want:   []string{"Reconciled** 2 room(s) in 1.5s", "0 event(s) recovered", "2 /messages page(s)"},
			absent: []string{"failed"}},
		{name: "the city, events recovered", command: "reconcile",
			setup: func(r *fakeRig) { r.reconciler.recovered = map[id.RoomID][]string{harbourRoom: {"$a", "$b"}} },
			want:  []string{"2 event(s) recovered", "`!harbour:daarion.test`: 2 of 50 compared recovered `$a` `$b`"}},
		{name: "a room by slug", command: "reconcile harbour", check: askedFor(harbourRoom),
			want: []string{"Reconciled** 1 room(s)"}},
		{name: "a room by alias", command: "reconcile #city_lighthouse:daarion.test", check: askedFor("!lighthouse:daarion.test")},
		{name: "a room that is not a city room", command: "reconcile nowhere", want: []string{"Error:"},
			check: func(t *testing.T, r *fakeRig) {
				if len(r.reconciler.asked) != 0 {
					t.Errorf("reconciled %v for an unknown room", r.reconciler.asked)
				}
			}},
		{name: "a room that fails", command: "reconcile",
			setup: func(r *fakeRig) {
				r.reconciler.failed = map[id.RoomID]error{harbourRoom: fmt.Errorf("failed to read the timeline: M_FORBIDDEN")}
			},
			want: []string{"**1 room(s) failed**", "`!harbour:daarion.test`: **failed**: failed to read the timeline: M_FORBIDDEN"}},
		{name: "many recovered are cut", command: "reconcile harbour",
			setup: func(r *fakeRig) { r.reconciler.recovered = map[id.RoomID][]string{harbourRoom: many} },
			want:  []string{"25 event(s) recovered", "`$lost19`", "…and 5 more"}, absent: []string{"$lost20"}},
		{name: "the city rooms cannot be listed", command: "reconcile",
			setup: func(r *fakeRig) { r.reconciler.cityErr = errDatabase }, want: []string{"Error:", "database on fire"}},
	})
}
