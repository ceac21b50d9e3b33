package commands

import (
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/config"
)

// Level is what a user may do with the bot.
type Level int

const (
	// LevelNone may do nothing: every command is refused.
	LevelNone Level = iota
	// LevelUser may run help and ping.
	LevelUser
	// LevelAdmin may run every command and open a direct chat with the bot.
	LevelAdmin
)

func (l Level) String() string {
	switch l {
	case LevelAdmin:
		return config.PermissionAdmin
	case LevelUser:
		return config.PermissionUser
	default:
		return "none"
	}
}

func parseLevel(s string) Level {
	switch s {
	case config.PermissionAdmin:
		return LevelAdmin
	case config.PermissionUser:
		return LevelUser
	default:
		return LevelNone
	}
}

// Permissions resolve the `permissions` config: a user id beats a server
// name, which beats "*".
type Permissions struct {
	users    map[id.UserID]Level
	servers  map[string]Level // lower-case server names
	wildcard Level
}

// NewPermissions reads the permissions config (validated by config).
func NewPermissions(raw map[string]string) Permissions {
	p := Permissions{users: map[id.UserID]Level{}, servers: map[string]Level{}}
	for key, value := range raw {
		level := parseLevel(value)
		switch {
		case key == "*":
			p.wildcard = level
		case strings.HasPrefix(key, "@"):
			p.users[id.UserID(key)] = level
		default:
			p.servers[strings.ToLower(key)] = level
		}
	}
	return p
}

// Level returns what userID may do.
func (p Permissions) Level(userID id.UserID) Level {
	if level, ok := p.users[userID]; ok {
		return level
	}
	if _, server, err := userID.Parse(); err == nil {
		if level, ok := p.servers[strings.ToLower(server)]; ok {
			return level
		}
	}
	return p.wildcard
}
