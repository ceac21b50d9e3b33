package config

import (
	"fmt"
	"regexp"
	"strings"

	"maunium.net/go/mautrix/id"
)

const (
	// AgentLocalpartPrefix starts every agent ghost's localpart.
	AgentLocalpartPrefix = "agent_"
	// CityAliasPrefix starts every city room alias's localpart.
	CityAliasPrefix = "city_"
)

// BotUserID is the bridge bot's Matrix id.
func (cfg *Config) BotUserID() id.UserID {
	return id.NewUserID(cfg.AppService.Bot.Localpart, cfg.Homeserver.ServerName)
}

// AgentUserRegex is the exclusive users namespace of the agents.
func (cfg *Config) AgentUserRegex() string {
	return fmt.Sprintf("@%s.*:%s", AgentLocalpartPrefix, regexp.QuoteMeta(cfg.Homeserver.ServerName))
}

// CityAliasRegex is the exclusive aliases namespace of the city rooms
// (#city_<slug>) and of the city space (#city).
func (cfg *Config) CityAliasRegex() string {
	rest := strings.TrimPrefix(CityAliasPrefix, CitySpaceLocalpart) // "_"
	return fmt.Sprintf("#%s(%s.*)?:%s", CitySpaceLocalpart, rest, regexp.QuoteMeta(cfg.Homeserver.ServerName))
}

// DoublePuppetRegex is the non-exclusive users namespace of local humans,
// empty when double puppeting is off.
func (cfg *Config) DoublePuppetRegex() string {
	if !cfg.AppService.DoublePuppet.Enabled {
		return ""
	}
	if cfg.AppService.DoublePuppet.UserRegex != "" {
		return cfg.AppService.DoublePuppet.UserRegex
	}
	return fmt.Sprintf("@.*:%s", regexp.QuoteMeta(cfg.Homeserver.ServerName))
}
