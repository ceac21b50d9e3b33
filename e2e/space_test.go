package e2e_test

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// spaceReport is GET /internal/matrix/space's answer.
type spaceReport struct {
	SpaceID   id.RoomID    `json:"space_id"`
	Alias     id.RoomAlias `json:"alias"`
	OutOfStep int          `json:"out_of_step"`
	Repaired  int          `json:"repaired"`
	Rooms     []struct {
		Slug           string    `json:"slug"`
		RoomID         id.RoomID `json:"room_id"`
		InSpace        bool      `json:"in_space"`
		HasParent      bool      `json:"has_parent"`
		HasBridgeState bool      `json:"has_bridge_state"`
	} `json:"rooms"`
}

func checkSpace(t *testing.T, s *stack, method, path string) spaceReport {
	t.Helper()
	res := s.api(t, method, path, nil)
	if res.status != http.StatusOK {
		t.Fatalf("%s %s: %d %s", method, path, res.status, res.body)
	}
	var report spaceReport
	if err := json.Unmarshal(res.body, &report); err != nil {
		t.Fatal(err)
	}
	return report
}

// hierarchy is what a client (Element) shows of the space: the rooms of
// its hierarchy, the space itself first.
func hierarchy(t *testing.T, cli *mautrix.Client, spaceID id.RoomID) []id.RoomID {
	t.Helper()
	resp, err := cli.Hierarchy(context.Background(), spaceID, &mautrix.ReqHierarchy{})
	if err != nil {
		t.Fatalf("the space's hierarchy: %v", err)
	}
	var out []id.RoomID
	for _, room := range resp.Rooms {
		out = append(out, room.RoomID)
	}
	return out
}

// The city is one space holding its live rooms: created with the first
// city room, kept in step on create, archive and unarchive, reported and
// repaired through the API; every city room carries the bridge state.
func TestCitySpace(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, tdb rig) {
		ctx := context.Background()
		s := newStack(t, tdb)
		s.bridge.waitForLog("Bridge bot registered", 30*time.Second)
		harbour, harbourAlias := createCity(t, s, "harbour", "Harbour", "")
		lighthouse, _ := createCity(t, s, "lighthouse", "Lighthouse", "")

		report := checkSpace(t, s, http.MethodGet, "/internal/matrix/space")
		if report.Alias != id.NewRoomAlias("city", serverName) || report.SpaceID == "" || report.OutOfStep != 0 || len(report.Rooms) != 2 {
			t.Fatalf("space report: %+v", report)
		}
		for _, room := range report.Rooms {
			if !room.InSpace || !room.HasParent || !room.HasBridgeState {
				t.Errorf("%s is out of step: %+v", room.Slug, room)
			}
		}

		// A human sees the space through its alias, with both rooms.
		alice, _ := s.humanJoins("alice", harbourAlias)
		resolved, err := alice.ResolveAlias(ctx, report.Alias)
		if err != nil || resolved.RoomID != report.SpaceID {
			t.Fatalf("#city resolves to %v (%v), want %s", resolved, err, report.SpaceID)
		}
		if _, err := alice.JoinRoom(ctx, report.Alias.String(), nil); err != nil {
			t.Fatalf("joining the public space: %v", err)
		}
		var create event.CreateEventContent
		if err := alice.StateEvent(ctx, report.SpaceID, event.StateCreate, "", &create); err != nil || create.Type != event.RoomTypeSpace {
			t.Fatalf("the space's create event: %+v (%v)", create, err)
		}
		rooms := hierarchy(t, alice, report.SpaceID)
		if !slices.Contains(rooms, harbour) || !slices.Contains(rooms, lighthouse) {
			t.Fatalf("the space's hierarchy %v lacks the city rooms %s, %s", rooms, harbour, lighthouse)
		}

		// The bridge state names the protocol, the slug and the DAARION id.
		for _, evtType := range []event.Type{event.StateBridge, event.StateHalfShotBridge} {
			var info struct {
				BridgeBot id.UserID `json:"bridgebot"`
				Protocol  struct {
					ID string `json:"id"`
				} `json:"protocol"`
				Channel struct {
					ID string `json:"id"`
				} `json:"channel"`
				Slug string `json:"net.daarion.slug"`
			}
			if err := alice.StateEvent(ctx, harbour, evtType, "net.daarion.bridge://daarion/harbour", &info); err != nil {
				t.Fatalf("%s in harbour: %v", evtType.Type, err)
			}
			if info.Protocol.ID != "daarion" || info.Channel.ID != "room_city_harbour" || info.Slug != "harbour" || info.BridgeBot != s.cfg.BotUserID() {
				t.Errorf("%s in harbour: %+v", evtType.Type, info)
			}
		}

		// Archived: out of the space; unarchived: back.
		if res := s.api(t, http.MethodPost, "/internal/matrix/rooms/"+lighthouse.String()+"/archive", map[string]string{}); res.status != http.StatusOK {
			t.Fatalf("archive: %d %s", res.status, res.body)
		}
		if rooms := hierarchy(t, alice, report.SpaceID); slices.Contains(rooms, lighthouse) {
			t.Errorf("the archived room is still in the space: %v", rooms)
		}
		if r := checkSpace(t, s, http.MethodGet, "/internal/matrix/space"); r.OutOfStep != 0 {
			t.Errorf("after archive the space is out of step: %+v", r)
		}
		if res := s.api(t, http.MethodPost, "/internal/matrix/rooms/"+lighthouse.String()+"/unarchive", nil); res.status != http.StatusOK {
			t.Fatalf("unarchive: %d %s", res.status, res.body)
		}
		if rooms := hierarchy(t, alice, report.SpaceID); !slices.Contains(rooms, lighthouse) {
			t.Errorf("the unarchived room is not back in the space: %v", rooms)
		}

		// Someone takes harbour out of the space: the report says so, a
		// repair puts it back.
		bot := s.botClient()
		if _, err := bot.SendStateEvent(ctx, report.SpaceID, event.StateSpaceChild, harbour.String(), map[string]any{}); err != nil {
			t.Fatal(err)
		}
		if r := checkSpace(t, s, http.MethodGet, "/internal/matrix/space"); r.OutOfStep != 1 {
			t.Fatalf("with harbour taken out: %+v", r)
		}
		if r := checkSpace(t, s, http.MethodPost, "/internal/matrix/space/repair"); r.OutOfStep != 1 || r.Repaired != 1 {
			t.Fatalf("repair: %+v", r)
		}
		if r := checkSpace(t, s, http.MethodGet, "/internal/matrix/space"); r.OutOfStep != 0 {
			t.Fatalf("after the repair: %+v", r)
		}
		if rooms := hierarchy(t, alice, report.SpaceID); !slices.Contains(rooms, harbour) {
			t.Errorf("the repaired room is not back in the space: %v", rooms)
		}
	})
}
