package reconcile_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/appservice"
	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/reconcile"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

func TestMain(m *testing.M) { os.Exit(testrig.RunTests(m)) }

// timeline is a room's events on the fake homeserver, oldest first, served
// by /messages backwards in pages as a homeserver does.
type timeline struct {
	mu     sync.Mutex
	events map[id.RoomID][]map[string]any
	pages  atomic.Int64
	fail   map[id.RoomID]bool
}

func (tl *timeline) add(roomID id.RoomID, eventID string, ts time.Time) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.events[roomID] = append(tl.events[roomID], map[string]any{
		"event_id": eventID, "room_id": roomID.String(), "type": "m.room.message", "sender": "@alice:example.org",
		"origin_server_ts": ts.UnixMilli(), "content": map[string]any{"msgtype": "m.text", "body": eventID},
	})
}

func (tl *timeline) serve(w http.ResponseWriter, r *http.Request) {
	tl.pages.Add(1)
	roomID := id.RoomID(r.PathValue("room"))
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if tl.fail[roomID] {
		testrig.WriteMatrixError(w, http.StatusForbidden, "M_FORBIDDEN", "not in the room")
		return
	}
	if r.URL.Query().Get("dir") != "b" {
		testrig.WriteMatrixError(w, http.StatusBadRequest, "M_INVALID_PARAM", "dir")
		return
	}
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	events := tl.events[roomID]
	end := len(events) // the index after the newest event still to serve
	if from := r.URL.Query().Get("from"); from != "" {
		end, _ = strconv.Atoi(from)
	}
	start := max(end-limit, 0)
	chunk := []map[string]any{}
	for i := end - 1; i >= start; i-- {
		chunk = append(chunk, events[i])
	}
	resp := map[string]any{"chunk": chunk, "start": strconv.Itoa(end)}
	if start > 0 {
		resp["end"] = strconv.Itoa(start)
	}
	testrig.WriteJSON(w, http.StatusOK, resp)
}

type cityRooms []id.RoomID

func (c cityRooms) CityRoomIDs(context.Context) ([]id.RoomID, error) { return c, nil }

type rig struct {
	log   *eventlog.Log
	tl    *timeline
	hs    *mautrix.Client
	rooms cityRooms
}

func newRig(t *testing.T, tdb testrig.TestDatabase, rooms ...id.RoomID) *rig {
	t.Helper()
	l := eventlog.New(testrig.OpenDatabase(t, tdb))
	tl := &timeline{events: map[id.RoomID][]map[string]any{}, fail: map[id.RoomID]bool{}}
	fake := testrig.NewFakeHomeserver(t)
	fake.Handle("GET /_matrix/client/v3/rooms/{room}/messages", tl.serve)
	cli, err := mautrix.NewClient(fake.URL, "@bot:example.org", "token")
	if err != nil {
		t.Fatal(err)
	}
	return &rig{log: l, tl: tl, hs: cli, rooms: rooms}
}

// pushed stores events as the homeserver would have pushed them.
func (r *rig) pushed(t *testing.T, txnID string, roomID id.RoomID, eventIDs ...string) {
	t.Helper()
	r.tl.mu.Lock()
	var events []map[string]any
	for _, evt := range r.tl.events[roomID] {
		if slices.Contains(eventIDs, evt["event_id"].(string)) {
			events = append(events, evt)
		}
	}
	r.tl.mu.Unlock()
	body, _ := json.Marshal(map[string]any{"events": events})
	if err := r.log.Journal(context.Background(), txnID, body); err != nil {
		t.Fatal(err)
	}
	r.index(t)
}

func (r *rig) index(t *testing.T) {
	t.Helper()
	if _, err := r.log.IndexPending(context.Background(), appservice.ParseTransaction); err != nil {
		t.Fatal(err)
	}
}

func (r *rig) logged(t *testing.T) map[string]*eventlog.Event {
	t.Helper()
	events, err := r.log.Read(context.Background(), 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*eventlog.Event{}
	for _, evt := range events {
		out[evt.EventID] = evt
	}
	return out
}

func TestReconcileStoresWhatTheLogLacks(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx := context.Background()
		const a, b = id.RoomID("!a:example.org"), id.RoomID("!b:example.org")
		r := newRig(t, tdb, a, b)
		now := time.Now()
		for i := range 8 {
			r.tl.add(a, fmt.Sprintf("$a%d", i), now.Add(time.Duration(i-10)*time.Second))
			r.tl.add(b, fmt.Sprintf("$b%d", i), now.Add(time.Duration(i-10)*time.Second))
		}
		// The homeserver pushed all of b, and a but for $a2, $a3 and $a6.
		r.pushed(t, "1", a, "$a0", "$a1", "$a4", "$a5", "$a7")
		r.pushed(t, "2", b, "$b0", "$b1", "$b2", "$b3", "$b4", "$b5", "$b6", "$b7")

		rec := reconcile.New(r.hs, r.rooms, r.log, reconcile.Options{Window: 50})
		report, err := rec.City(ctx, reconcile.TriggerCommand)
		if err != nil {
			t.Fatal(err)
		}
		if report.Recovered != 3 || report.Failed != 0 || report.Pages != 2 {
			t.Fatalf("report: %d recovered, %d failed, %d pages; want 3, 0, 2 (one page a room)", report.Recovered, report.Failed, report.Pages)
		}
		if got := report.Rooms[0].Recovered; !slices.Equal(got, []string{"$a2", "$a3", "$a6"}) {
			t.Fatalf("recovered in a: %v, want oldest first $a2 $a3 $a6", got)
		}
		if report.Rooms[0].Compared != 8 || len(report.Rooms[1].Recovered) != 0 {
			t.Fatalf("room results: %+v", report.Rooms)
		}
		r.index(t)
		logged := r.logged(t)
		for i := range 8 {
			if logged[fmt.Sprintf("$a%d", i)] == nil {
				t.Fatalf("$a%d is not in the log after the reconcile", i)
			}
		}
		if evt := logged["$a3"]; !reconcile.Recovered(evt.TxnID) {
			t.Errorf("$a3 is stored under %q, not marked recovered", evt.TxnID)
		}
		if evt := logged["$a4"]; reconcile.Recovered(evt.TxnID) {
			t.Errorf("$a4 (pushed) is marked recovered")
		}
		if len(logged) != 16 {
			t.Errorf("the log holds %d events, want 16", len(logged))
		}

		// Nothing is missing now: one page a room, nothing journalled.
		report, err = rec.City(ctx, reconcile.TriggerCommand)
		if err != nil {
			t.Fatal(err)
		}
		if report.Recovered != 0 || report.Pages != 2 {
			t.Fatalf("second reconcile: %d recovered in %d pages, want 0 in 2", report.Recovered, report.Pages)
		}
		if n, err := r.log.JournalBacklog(ctx); err != nil || n != 0 {
			t.Fatalf("the second reconcile journalled %d transactions (%v)", n, err)
		}
	})
}

func TestReconcileWindowPagesAndAge(t *testing.T) {
	db := testrig.NewTestDatabase(t, "sqlite")
	ctx := context.Background()
	const room = id.RoomID("!a:example.org")
	r := newRig(t, db, room)
	now := time.Now()
	for i := range 250 {
		r.tl.add(room, fmt.Sprintf("$e%03d", i), now.Add(time.Duration(i-250)*time.Minute))
	}
	for _, tc := range []struct {
		name                string
		window              int
		maxAge              time.Duration
		compared, wantPages int
	}{
		{"one page", 50, 0, 50, 1},
		{"pages of a hundred", 230, 0, 230, 3},
		{"the room's start", 1000, 0, 250, 3},
		{"age stops it", 1000, 30*time.Minute + 30*time.Second, 30, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r.tl.pages.Store(0)
			rec := reconcile.New(r.hs, r.rooms, r.log, reconcile.Options{Window: tc.window, MaxAge: tc.maxAge})
			report := rec.Rooms(ctx, reconcile.TriggerCommand, []id.RoomID{room})
			res := report.Rooms[0]
			if res.Err != nil {
				t.Fatal(res.Err)
			}
			if res.Compared != tc.compared || res.Pages != tc.wantPages || int(r.tl.pages.Load()) != tc.wantPages {
				t.Fatalf("compared %d in %d pages (%d served), want %d in %d", res.Compared, res.Pages, r.tl.pages.Load(), tc.compared, tc.wantPages)
			}
			// Drain what it journalled, so the next case finds it known.
			r.index(t)
		})
	}
	if n := len(r.logged(t)); n != 250 {
		t.Fatalf("the log holds %d events, want all 250", n)
	}
}

func TestReconcileReportsARoomItCannotRead(t *testing.T) {
	db := testrig.NewTestDatabase(t, "sqlite")
	const a, b = id.RoomID("!a:example.org"), id.RoomID("!b:example.org")
	r := newRig(t, db, a, b)
	r.tl.add(b, "$b0", time.Now())
	r.tl.fail[a] = true
	report, err := reconcile.New(r.hs, r.rooms, r.log, reconcile.Options{}).City(context.Background(), reconcile.TriggerCommand)
	if err != nil {
		t.Fatal(err)
	}
	if report.Failed != 1 || report.Rooms[0].Err == nil || report.Recovered != 1 {
		t.Fatalf("report: %+v; want a failed, $b0 recovered", report)
	}
	var httpErr mautrix.HTTPError
	if !errors.As(report.Rooms[0].Err, &httpErr) || httpErr.RespError == nil || httpErr.RespError.ErrCode != "M_FORBIDDEN" {
		t.Fatalf("a's error %v does not carry the homeserver's M_FORBIDDEN", report.Rooms[0].Err)
	}
}
