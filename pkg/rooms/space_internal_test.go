package rooms

import (
	"encoding/json"
	"strings"
	"testing"

	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"

	"github.com/daarion/matrix-bridge/pkg/config"
)

func TestSpaceChildInStep(t *testing.T) {
	for _, tc := range []struct {
		name  string
		child SpaceChild
		want  bool
	}{
		{"live, listed, parent, bridge state", SpaceChild{InSpace: true, HasParent: true, HasBridgeState: true}, true},
		{"live, not listed", SpaceChild{HasParent: true, HasBridgeState: true}, false},
		{"live, no parent", SpaceChild{InSpace: true, HasBridgeState: true}, false},
		{"no bridge state", SpaceChild{InSpace: true, HasParent: true}, false},
		{"archived, unlisted", SpaceChild{Archived: true, HasBridgeState: true}, true},
		{"archived, unlisted, a parent left", SpaceChild{Archived: true, HasParent: true, HasBridgeState: true}, true},
		{"archived, listed", SpaceChild{Archived: true, InSpace: true, HasBridgeState: true}, false},
		{"unreadable", SpaceChild{InSpace: true, HasParent: true, HasBridgeState: true, Error: "M_FORBIDDEN"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.child.inStep(); got != tc.want {
				t.Fatalf("inStep = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestCityRoomStateAndSpaceRequest(t *testing.T) {
	s := &Service{serverName: "daarion.test", bot: &appservice.IntentAPI{UserID: "@bot:daarion.test"},
		cfg: config.Rooms{Space: config.CitySpace{Name: "Kyiv"}}}
	cr := &CityRoom{Slug: "harbour", Name: "Harbour"}
	state := s.cityRoomState(cr, "!space:daarion.test")
	if len(state) != 3 || state[0].Type != event.StateBridge || state[1].Type != event.StateHalfShotBridge || state[2].Type != event.StateSpaceParent {
		t.Fatalf("state: %+v", state)
	}
	raw, _ := json.Marshal(state[0].Content.Parsed)
	for _, want := range []string{`"bridgebot":"@bot:daarion.test"`, `"protocol":{"id":"daarion"`, `"channel":{"id":"room_city_harbour","displayname":"Harbour"}`,
		`"net.daarion.slug":"harbour"`, `"network":{"id":"city","displayname":"Kyiv"}`} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("m.bridge %s lacks %s", raw, want)
		}
	}
	if *state[0].StateKey != "net.daarion.bridge://daarion/harbour" || *state[2].StateKey != "!space:daarion.test" {
		t.Errorf("state keys %q, %q", *state[0].StateKey, *state[2].StateKey)
	}
	if got := s.cityRoomState(cr, ""); len(got) != 2 {
		t.Errorf("without a space: %d state events, want the two bridge ones", len(got))
	}
	req := s.spaceRequest()
	if req.RoomAliasName != "city" || req.CreationContent["type"] != event.RoomTypeSpace || req.Name != "Kyiv" ||
		req.PowerLevelOverride.EventsDefault != 100 {
		t.Errorf("space request: %+v", req)
	}
}
