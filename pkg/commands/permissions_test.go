package commands

import (
	"testing"

	"maunium.net/go/mautrix/id"
)

func TestPermissionLevel(t *testing.T) {
	for _, tc := range []struct {
		name   string
		config map[string]string
		user   id.UserID
		want   Level
	}{
		{"nothing configured", nil, "@alice:daarion.test", LevelNone},
		{"wildcard user", map[string]string{"*": "user"}, "@alice:daarion.test", LevelUser},
		{"wildcard admin", map[string]string{"*": "admin"}, "@eve:elsewhere.org", LevelAdmin},
		{"user id beats wildcard", map[string]string{"*": "user", "@admin:daarion.test": "admin"}, "@admin:daarion.test", LevelAdmin},
		{"wildcard for the others", map[string]string{"*": "user", "@admin:daarion.test": "admin"}, "@bob:daarion.test", LevelUser},
		{"server beats wildcard", map[string]string{"*": "admin", "daarion.test": "user"}, "@bob:daarion.test", LevelUser},
		{"user id beats server", map[string]string{"daarion.test": "user", "@root:daarion.test": "admin"}, "@root:daarion.test", LevelAdmin},
		{"user id demoted below server", map[string]string{"daarion.test": "admin", "@intern:daarion.test": "user"}, "@intern:daarion.test", LevelUser},
		{"server names are case-insensitive", map[string]string{"DAARION.test": "admin"}, "@bob:daarion.TEST", LevelAdmin},
		{"another server", map[string]string{"daarion.test": "admin"}, "@bob:evil.test", LevelNone},
		{"server with port", map[string]string{"localhost:8448": "admin"}, "@bob:localhost:8448", LevelAdmin},
		{"port matters", map[string]string{"localhost:8448": "admin"}, "@bob:localhost", LevelNone},
		{"user ids are exact", map[string]string{"@admin:daarion.test": "admin"}, "@Admin:daarion.test", LevelNone},
		{"subdomain is not the server", map[string]string{"daarion.test": "admin"}, "@bob:sub.daarion.test", LevelNone},
		{"invalid user id falls to wildcard", map[string]string{"*": "user", "daarion.test": "admin"}, "not-a-user", LevelUser},
		{"unknown level is none", map[string]string{"*": "root"}, "@bob:daarion.test", LevelNone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := NewPermissions(tc.config).Level(tc.user); got != tc.want {
				t.Errorf("Level(%s) with %v = %s, want %s", tc.user, tc.config, got, tc.want)
			}
		})
	}
}
