package identity

import (
	"errors"
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"
)

var m = Mapper{ServerName: "daarion.space", BotLocalpart: "daarion-bot"}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in     string
		kind   Kind
		userID id.UserID
		ok     bool
	}{
		{"agent:sofia", KindAgent, "@agent_sofia:daarion.space", true},
		{"agent:helper.v2", KindAgent, "@agent_helper.v2:daarion.space", true},
		{"user:alice", KindHuman, "@alice:daarion.space", true},
		{"bridge:bot", KindBridge, "@daarion-bot:daarion.space", true},
		{"matrix:@bob:other.org", KindRemote, "@bob:other.org", true},
		{"matrix:@agent_x:daarion.space", KindAgent, "@agent_x:daarion.space", true},
		{"agent:", "", "", false},
		{"agent:Sofia", "", "", false},
		{"agent:so fia", "", "", false},
		{"agent:софія", "", "", false},
		{"agent:" + strings.Repeat("a", 250), "", "", false},
		{"user:Alice", "", "", false},
		{"user:agent_x", "", "", false},
		{"user:daarion-bot", "", "", false},
		{"bridge:other", "", "", false},
		{"matrix:bob", "", "", false},
		{"sofia", "", "", false},
		{"robot:x", "", "", false},
	} {
		e, err := m.Parse("sender", tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("Parse(%q) error = %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		var fe *FieldError
		if err != nil && (!errors.As(err, &fe) || fe.Field != "sender") {
			t.Errorf("Parse(%q) error %v does not name the field", tc.in, err)
		}
		if tc.ok && (e.Kind != tc.kind || e.UserID != tc.userID) {
			t.Errorf("Parse(%q) = %+v, want %s %s", tc.in, e, tc.kind, tc.userID)
		}
	}
}

func TestFromMatrix(t *testing.T) {
	for _, tc := range []struct {
		userID id.UserID
		id     string
		kind   Kind
	}{
		{"@agent_sofia:daarion.space", "agent:sofia", KindAgent},
		{"@alice:daarion.space", "user:alice", KindHuman},
		{"@daarion-bot:daarion.space", "bridge:bot", KindBridge},
		{"@agent_sofia:other.org", "matrix:@agent_sofia:other.org", KindRemote},
		{"@agent_:daarion.space", "user:agent_", KindHuman},
	} {
		if e := m.FromMatrix(tc.userID); e.ID != tc.id || e.Kind != tc.kind {
			t.Errorf("FromMatrix(%s) = %+v, want %s %s", tc.userID, e, tc.id, tc.kind)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	for _, in := range []string{"agent:sofia", "user:alice", "bridge:bot", "matrix:@x:other.org"} {
		e, err := m.Parse("f", in)
		if err != nil {
			t.Fatal(err)
		}
		if back := m.FromMatrix(e.UserID); back.ID != in {
			t.Errorf("%s → %s → %s", in, e.UserID, back.ID)
		}
	}
}

func TestParseUser(t *testing.T) {
	if e, err := m.ParseUser("user_id", "@agent_x:daarion.space"); err != nil || e.ID != "agent:x" {
		t.Errorf("ParseUser(@agent_x) = %+v, %v", e, err)
	}
	if e, err := m.ParseUser("user_id", "agent:x"); err != nil || e.UserID != "@agent_x:daarion.space" {
		t.Errorf("ParseUser(agent:x) = %+v, %v", e, err)
	}
	if _, err := m.ParseUser("user_id", "@nope"); err == nil {
		t.Error("ParseUser(@nope) accepted")
	}
}
