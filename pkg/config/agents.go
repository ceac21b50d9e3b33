package config

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix/id"
)

// Agents configures agent ghosts: which agents may exist as Matrix users,
// and whose invites a ghost accepts. Only agents the platform made (through
// the internal API) exist by default: no Matrix user, local or federated,
// can make the bridge register an account.
type Agents struct {
	// ProvisionUnknown lists agent ids, as regular expressions matched
	// against the whole id ("sofia", not "@agent_sofia:…"), that may be
	// registered when a Matrix user invites them or the homeserver asks
	// about them (a user query). Empty: nobody.
	ProvisionUnknown []string `yaml:"provision_unknown"`
	// AcceptInvitesFrom says whose invites a known agent accepts: "local"
	// (users of homeserver.server_name), "server:<name>", "@user:server";
	// "power_level:<n>" adds that the inviter must have at least n in the
	// room. Empty (or "nobody"): no Matrix user's invite is accepted.
	AcceptInvitesFrom InviteRules `yaml:"accept_invites_from"`
	// AcceptInvitesInto says into which rooms: "city" (the bridge's city
	// rooms), "direct" (invites marked is_direct), "any".
	AcceptInvitesInto []string `yaml:"accept_invites_into"`
}

// InviteRules is agents.accept_invites_from. A single string is read as a
// one-entry list, so that files written for the old scalar form
// ("power_level:50") still parse and get a validation error that explains
// the new form, instead of a YAML type error.
type InviteRules []string

// UnmarshalYAML reads a list or a single string.
func (r *InviteRules) UnmarshalYAML(node *yaml.Node) error {
	if node.Kind == yaml.ScalarNode {
		*r = InviteRules{node.Value}
		return nil
	}
	var list []string
	if err := node.Decode(&list); err != nil {
		return err
	}
	*r = list
	return nil
}

// Invite room kinds of agents.accept_invites_into.
const (
	InviteIntoCity   = "city"
	InviteIntoDirect = "direct"
	InviteIntoAny    = "any"
)

// InvitePolicy is agents.accept_invites_from and accept_invites_into, parsed.
type InvitePolicy struct {
	// Local accepts users of the bridge's own server.
	Local bool
	// Servers accepts users of these servers.
	Servers map[string]bool
	// Users accepts these users.
	Users map[id.UserID]bool
	// MinPowerLevel, when set, is a further condition: the inviter's level
	// in the room.
	MinPowerLevel *int
	// CityRooms, DirectChats and AnyRoom say where an invite may lead.
	CityRooms, DirectChats, AnyRoom bool
}

// AcceptsNobody reports whether no Matrix user's invite is accepted.
func (p InvitePolicy) AcceptsNobody() bool {
	return !p.Local && len(p.Servers) == 0 && len(p.Users) == 0
}

// InvitePolicy parses the invite keys. The error is a *FieldError naming
// the entry that is wrong.
func (a Agents) InvitePolicy() (InvitePolicy, error) {
	p := InvitePolicy{Servers: map[string]bool{}, Users: map[id.UserID]bool{}}
	rules := a.AcceptInvitesFrom
	if len(rules) == 1 && rules[0] == "nobody" {
		rules = nil
	}
	for i, rule := range rules {
		key := fmt.Sprintf("agents.accept_invites_from[%d]", i)
		fieldErr := func(format string, args ...any) error {
			return &FieldError{Key: key, Message: fmt.Sprintf(format, args...)}
		}
		switch {
		case rule == "local":
			p.Local = true
		case strings.HasPrefix(rule, "server:"):
			server := strings.TrimPrefix(rule, "server:")
			if !serverNameRegex.MatchString(server) {
				return p, fieldErr("must be server:<a Matrix server name such as example.org>, got %q", rule)
			}
			p.Servers[server] = true
		case strings.HasPrefix(rule, "@"):
			localpart, server, err := id.UserID(rule).Parse()
			if err != nil || localpart == "" || !serverNameRegex.MatchString(server) {
				return p, fieldErr("must be a Matrix user id such as @alice:example.org, got %q", rule)
			}
			p.Users[id.UserID(rule)] = true
		case strings.HasPrefix(rule, "power_level:"):
			n, err := strconv.Atoi(strings.TrimPrefix(rule, "power_level:"))
			if err != nil {
				return p, fieldErr("must be power_level:<a whole number>, got %q", rule)
			} else if p.MinPowerLevel != nil {
				return p, fieldErr("power_level is given twice")
			}
			p.MinPowerLevel = &n
		case rule == "nobody":
			return p, fieldErr(`"nobody" must be the only entry (an empty list means the same)`)
		default:
			return p, fieldErr(`must be "local", "server:<name>", "@user:server" or "power_level:<n>", got %q`, rule)
		}
	}
	// power_level:<n> alone used to let anyone with that level in a room
	// they made (any federated user creating a room) invite agents. It is
	// now only a further condition, and who may invite must be said.
	if p.MinPowerLevel != nil && p.AcceptsNobody() {
		return p, &FieldError{Key: "agents.accept_invites_from",
			Message: fmt.Sprintf(`power_level:%d is only a further condition: also say who may invite, e.g. [local, "power_level:%d"]`,
				*p.MinPowerLevel, *p.MinPowerLevel)}
	}
	if len(a.AcceptInvitesInto) == 0 {
		return p, &FieldError{Key: "agents.accept_invites_into",
			Message: "must list at least one of city, direct, any (to accept no invites, empty agents.accept_invites_from)"}
	}
	for i, into := range a.AcceptInvitesInto {
		switch into {
		case InviteIntoCity:
			p.CityRooms = true
		case InviteIntoDirect:
			p.DirectChats = true
		case InviteIntoAny:
			p.AnyRoom = true
		default:
			return p, &FieldError{Key: fmt.Sprintf("agents.accept_invites_into[%d]", i),
				Message: fmt.Sprintf("must be city, direct or any, got %q", into)}
		}
	}
	return p, nil
}

// ProvisionUnknownPatterns compiles agents.provision_unknown, each anchored
// to the whole agent id. The error is a *FieldError naming the entry.
func (a Agents) ProvisionUnknownPatterns() ([]*regexp.Regexp, error) {
	patterns := make([]*regexp.Regexp, 0, len(a.ProvisionUnknown))
	for i, expr := range a.ProvisionUnknown {
		key := fmt.Sprintf("agents.provision_unknown[%d]", i)
		if expr == "" {
			return nil, &FieldError{Key: key, Message: "must not be empty"}
		}
		// Compiled alone first: an expression that compiles has balanced
		// groups, so "x)|(.*" cannot escape the anchors added next.
		if _, err := regexp.Compile(expr); err != nil {
			return nil, &FieldError{Key: key, Message: fmt.Sprintf("must be a regular expression over agent ids: %v", err)}
		}
		patterns = append(patterns, regexp.MustCompile(`^(?:`+expr+`)$`))
	}
	return patterns, nil
}

// validate adds the agents keys' problems through fail.
func (a Agents) validate(fail func(key, format string, args ...any)) {
	var fe *FieldError
	if _, err := a.InvitePolicy(); errors.As(err, &fe) {
		fail(fe.Key, "%s", fe.Message)
	}
	if _, err := a.ProvisionUnknownPatterns(); errors.As(err, &fe) {
		fail(fe.Key, "%s", fe.Message)
	}
}

// defaultAgents is the safe default: no unknown agent is provisioned, and a
// known agent accepts invites from local users into city rooms and direct
// chats only.
func defaultAgents() Agents {
	return Agents{
		ProvisionUnknown:  []string{},
		AcceptInvitesFrom: InviteRules{"local"},
		AcceptInvitesInto: []string{InviteIntoCity, InviteIntoDirect},
	}
}
