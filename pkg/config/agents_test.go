package config

import (
	"reflect"
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"
)

// The agents' defaults are the safe ones: no unknown agent is provisioned,
// and invites are accepted from local users only, into city rooms and direct
// chats only.
func TestAgentsDefaultsAreSafe(t *testing.T) {
	a := Default().Agents
	p, err := a.InvitePolicy()
	if err != nil {
		t.Fatal(err)
	}
	if !p.Local || len(p.Servers) != 0 || len(p.Users) != 0 || p.MinPowerLevel != nil {
		t.Errorf("default inviters = %+v, want local users only", p)
	}
	if !p.CityRooms || !p.DirectChats || p.AnyRoom {
		t.Errorf("default rooms = %+v, want city rooms and direct chats", p)
	}
	if patterns, err := a.ProvisionUnknownPatterns(); err != nil || len(patterns) != 0 {
		t.Errorf("default provision_unknown = %v, %v; want none", patterns, err)
	}
}

func TestInvitePolicy(t *testing.T) {
	level := func(n int) *int { return &n }
	for _, tc := range []struct {
		yaml string
		want InvitePolicy
	}{
		{"accept_invites_from: [local]", InvitePolicy{Local: true}},
		{"accept_invites_from: []", InvitePolicy{}},
		{"accept_invites_from: nobody", InvitePolicy{}},
		{"accept_invites_from: [nobody]", InvitePolicy{}},
		{"accept_invites_from:", InvitePolicy{}},
		{"accept_invites_from: local", InvitePolicy{Local: true}},
		{`accept_invites_from: [local, "server:example.org", "@bob:elsewhere.net", "power_level:50"]`, InvitePolicy{
			Local: true, Servers: map[string]bool{"example.org": true}, Users: map[id.UserID]bool{"@bob:elsewhere.net": true}, MinPowerLevel: level(50)}},
		{`accept_invites_from: ["server:[::1]:8448", "power_level:0"]`, InvitePolicy{Servers: map[string]bool{"[::1]:8448": true}, MinPowerLevel: level(0)}},
	} {
		cfg := Default()
		if err := Parse([]byte("agents:\n    "+tc.yaml+"\n"), cfg); err != nil {
			t.Fatalf("%s: %v", tc.yaml, err)
		}
		got, err := cfg.Agents.InvitePolicy()
		if err != nil {
			t.Errorf("%s: %v", tc.yaml, err)
			continue
		}
		got.CityRooms, got.DirectChats = false, false
		if tc.want.Servers == nil {
			tc.want.Servers = map[string]bool{}
		}
		if tc.want.Users == nil {
			tc.want.Users = map[id.UserID]bool{}
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s = %+v, want %+v", tc.yaml, got, tc.want)
		}
		if err = cfg.Validate(); err != nil {
			t.Errorf("%s does not validate: %v", tc.yaml, err)
		}
	}
	// The old default, power_level:50 alone, let any user (a federated one
	// too) with that level in a room they made invite agents: it is refused
	// with the fix in the message.
	cfg := Default()
	if err := Parse([]byte("agents:\n    accept_invites_from: power_level:50\n"), cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), `agents.accept_invites_from: power_level:50 is only a further condition`) ||
		!strings.Contains(err.Error(), `[local, "power_level:50"]`) {
		t.Errorf("old scalar form: %v", err)
	}
}

func TestProvisionUnknownPatterns(t *testing.T) {
	patterns, err := Agents{ProvisionUnknown: []string{"demo-.*", "sofia|oleh", "x)|(y"}}.ProvisionUnknownPatterns()
	if err == nil {
		t.Fatalf("an unbalanced expression compiled: %v", patterns)
	}
	patterns, err = Agents{ProvisionUnknown: []string{"demo-.*", "sofia|oleh"}}.ProvisionUnknownPatterns()
	if err != nil {
		t.Fatal(err)
	}
	matches := func(agentID string) bool {
		for _, re := range patterns {
			if re.MatchString(agentID) {
				return true
			}
		}
		return false
	}
	for agentID, want := range map[string]bool{"demo-1": true, "sofia": true, "oleh": true, "sofia2": false, "xsofia": false, "a-demo-1": false, "nobody": false} {
		if matches(agentID) != want {
			t.Errorf("%q matched = %v, want %v (patterns match the whole id)", agentID, !want, want)
		}
	}
}
