// Package identity maps DAARION entity ids to Matrix user ids and back:
//
//	agent:<id>     ⇄ @agent_<id>:<server>   (ghosts the bridge owns)
//	user:<local>   ⇄ @<local>:<server>      (local humans)
//	bridge:bot     ⇄ @<bot localpart>:<server>
//	matrix:<mxid>  ⇄ any other user
package identity

import (
	"fmt"
	"regexp"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/config"
)

// Kind is what an entity is.
type Kind string

const (
	KindAgent  Kind = "agent"
	KindHuman  Kind = "human"
	KindBridge Kind = "bridge"
	KindRemote Kind = "remote"
)

// Entity is one actor, in both worlds.
type Entity struct {
	// ID is the DAARION id: agent:sofia, user:alice, bridge:bot, matrix:@x:y.
	ID     string
	Kind   Kind
	UserID id.UserID
}

// FieldError is a bad id; it names the field.
type FieldError struct {
	Field   string
	Problem string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Problem }

// localpartRegex is the Matrix spec's grammar for user localparts.
var localpartRegex = regexp.MustCompile(`^[a-z0-9._=/+-]+$`)

// maxUserIDBytes is the Matrix spec's limit on a user id.
const maxUserIDBytes = 255

// Mapper converts ids for one homeserver.
type Mapper struct {
	ServerName   string
	BotLocalpart string
}

// NewMapper returns the mapper of a config.
func NewMapper(cfg *config.Config) Mapper {
	return Mapper{ServerName: cfg.Homeserver.ServerName, BotLocalpart: cfg.AppService.Bot.Localpart}
}

func (m Mapper) userID(field, localpart string) (id.UserID, error) {
	if !localpartRegex.MatchString(localpart) {
		return "", &FieldError{Field: field, Problem: fmt.Sprintf("%q cannot be a Matrix localpart (allowed: a-z, 0-9, '.', '_', '=', '-', '/', '+')", localpart)}
	}
	userID := id.NewUserID(localpart, m.ServerName)
	if len(userID) > maxUserIDBytes {
		return "", &FieldError{Field: field, Problem: fmt.Sprintf("makes a Matrix user id longer than %d bytes", maxUserIDBytes)}
	}
	return userID, nil
}

// AgentUserID is the ghost of agent agentID; an id that cannot form a valid
// Matrix localpart is a FieldError naming field.
func (m Mapper) AgentUserID(field, agentID string) (id.UserID, error) {
	if agentID == "" {
		return "", &FieldError{Field: field, Problem: "agent id is empty"}
	}
	return m.userID(field, config.AgentLocalpartPrefix+agentID)
}

// Parse reads a DAARION id (agent:, user:, bridge:bot, matrix:).
func (m Mapper) Parse(field, daarionID string) (Entity, error) {
	kind, rest, ok := strings.Cut(daarionID, ":")
	if !ok {
		return Entity{}, &FieldError{Field: field, Problem: "must be a DAARION id such as agent:sofia or user:alice"}
	}
	switch kind {
	case "agent":
		userID, err := m.AgentUserID(field, rest)
		return Entity{ID: daarionID, Kind: KindAgent, UserID: userID}, err
	case "user":
		if strings.HasPrefix(rest, config.AgentLocalpartPrefix) || rest == m.BotLocalpart {
			return Entity{}, &FieldError{Field: field, Problem: "names an agent or the bridge bot, not a human"}
		}
		userID, err := m.userID(field, rest)
		return Entity{ID: daarionID, Kind: KindHuman, UserID: userID}, err
	case "bridge":
		if rest != "bot" {
			return Entity{}, &FieldError{Field: field, Problem: "the only bridge entity is bridge:bot"}
		}
		return Entity{ID: daarionID, Kind: KindBridge, UserID: id.NewUserID(m.BotLocalpart, m.ServerName)}, nil
	case "matrix":
		userID := id.UserID(rest)
		if _, _, err := userID.Parse(); err != nil || len(rest) > maxUserIDBytes {
			return Entity{}, &FieldError{Field: field, Problem: "matrix: must be followed by a Matrix user id"}
		}
		return m.FromMatrix(userID), nil
	default:
		return Entity{}, &FieldError{Field: field, Problem: fmt.Sprintf("unknown kind %q (agent, user, bridge or matrix)", kind)}
	}
}

// ParseUser reads either a DAARION id or a Matrix user id (@x:y).
func (m Mapper) ParseUser(field, value string) (Entity, error) {
	if strings.HasPrefix(value, "@") {
		userID := id.UserID(value)
		if _, _, err := userID.Parse(); err != nil || len(value) > maxUserIDBytes {
			return Entity{}, &FieldError{Field: field, Problem: "must be a Matrix user id such as @alice:example.org"}
		}
		return m.FromMatrix(userID), nil
	}
	return m.Parse(field, value)
}

// FromMatrix names a Matrix user in DAARION terms.
func (m Mapper) FromMatrix(userID id.UserID) Entity {
	localpart, server, err := userID.Parse()
	if err != nil || server != m.ServerName {
		return Entity{ID: "matrix:" + string(userID), Kind: KindRemote, UserID: userID}
	}
	switch {
	case localpart == m.BotLocalpart:
		return Entity{ID: "bridge:bot", Kind: KindBridge, UserID: userID}
	case strings.HasPrefix(localpart, config.AgentLocalpartPrefix) && len(localpart) > len(config.AgentLocalpartPrefix):
		return Entity{ID: "agent:" + strings.TrimPrefix(localpart, config.AgentLocalpartPrefix), Kind: KindAgent, UserID: userID}
	default:
		return Entity{ID: "user:" + localpart, Kind: KindHuman, UserID: userID}
	}
}
