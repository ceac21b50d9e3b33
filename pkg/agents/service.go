package agents

import (
	"context"
	"errors"
	"fmt"
	lru "github.com/hashicorp/golang-lru/v2"
	"regexp"
	"strings"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/config"
	"github.com/daarion/matrix-bridge/pkg/homeserver"
	"github.com/daarion/matrix-bridge/pkg/identity"
	"github.com/daarion/matrix-bridge/pkg/rooms"
)

// Service registers ghosts and acts as them.
type Service struct {
	store  *Store
	as     *appservice.AppService
	mapper identity.Mapper

	// invites and provision are the agents config's invite rules and
	// provision_unknown, parsed once.
	invites   config.InvitePolicy
	provision []*regexp.Regexp
	// cityRooms tells city rooms apart, for agents.accept_invites_into.
	cityRooms CityRooms

	// ensured remembers ghosts registered by this process, so the hot path
	// (posting as an agent) costs no database or homeserver round trip. It
	// holds known agents only, which the platform makes, so Matrix users
	// cannot grow it; and at most EnsuredCacheSize of them, the least
	// recently used going first (a ghost that falls out costs one lookup).
	ensured *lru.Cache[string, *Agent]

	// devices gives a ghost its encryption device before it joins a room
	// (SetDevices; nil: none).
	devices Devices
}

// Devices makes a ghost's end-to-bridge encryption device; e2ee.Service is
// one. A ghost gets it before it accepts an invite, so a client that
// encrypts right after the join already finds the ghost's keys.
type Devices interface {
	EnsureDevice(ctx context.Context, userID id.UserID) error
}

// SetDevices sets what makes ghosts' encryption devices.
func (s *Service) SetDevices(d Devices) { s.devices = d }

// CityRooms finds the city room living in a Matrix room; rooms.Store is
// one. Defined here so that agents reads city rooms only through pkg/rooms,
// which owns the table.
type CityRooms interface {
	ByRoomID(ctx context.Context, roomID id.RoomID) (*rooms.CityRoom, error)
	MarkManaged(ctx context.Context, roomID id.RoomID, origin, agentID string) error
}

// EnsuredCacheSize bounds the ghosts a process remembers as registered.
const EnsuredCacheSize = 10000

// NewService returns the agents service; it reads and records rooms through
// cityRooms (a rooms.Store: pkg/rooms owns those tables).
func NewService(store *Store, cityRooms CityRooms, as *appservice.AppService, mapper identity.Mapper, cfg config.Agents) *Service {
	ensured, _ := lru.New[string, *Agent](EnsuredCacheSize) // errors only on a size ≤ 0
	s := &Service{store: store, as: as, mapper: mapper, cityRooms: cityRooms, ensured: ensured}
	// config.Validate refuses bad rules at start. Should an unvalidated
	// config get here anyway, the zero values provision no unknown agent and
	// accept no Matrix user's invite: failing closed.
	var err error
	if s.invites, err = cfg.InvitePolicy(); err != nil {
		s.invites = config.InvitePolicy{}
	}
	if s.provision, err = cfg.ProvisionUnknownPatterns(); err != nil {
		s.provision = nil
	}
	return s
}

// Store returns the ghosts' store.
func (s *Service) Store() *Store { return s.store }

// MatrixError means the homeserver failed (502) or was unreachable (503).
type MatrixError = homeserver.Error

// HomeserverFailure classifies a failed homeserver call made while doing action.
var HomeserverFailure = homeserver.Failure

// Known reports whether agentID may exist as a ghost: the platform made it
// (it is in the agent table: see Ensure), or agents.provision_unknown names
// it. Unknown agents are not remembered, so the answer follows the table
// (shared by every bridge process) and nothing grows with Matrix users'
// guesses.
func (s *Service) Known(ctx context.Context, agentID string) (bool, error) {
	if _, ok := s.ensured.Get(agentID); ok {
		return true, nil
	}
	agent, err := s.store.Get(ctx, agentID)
	if err != nil {
		return false, err
	} else if agent != nil {
		return true, nil
	}
	for _, re := range s.provision {
		if re.MatchString(agentID) {
			return true, nil
		}
	}
	return false, nil
}

// Ensure registers the ghost of agentID on the homeserver (once) and records
// it, which makes the agent known. Only the platform's requests (the internal
// API: sending as, inviting, registering or setting the profile of an agent)
// call it for any agent id; what Matrix users cause (invites, user queries)
// calls it only for known agents. field names the request field the id came
// from, for errors.
func (s *Service) Ensure(ctx context.Context, field, agentID string) (*Agent, error) {
	if cached, ok := s.ensured.Get(agentID); ok {
		return cached, nil
	}
	userID, err := s.mapper.AgentUserID(field, agentID)
	if err != nil {
		return nil, err
	}
	if err = s.as.Intent(userID).EnsureRegistered(ctx); err != nil {
		return nil, HomeserverFailure("registering "+userID.String(), err)
	}
	if err = s.store.Upsert(ctx, agentID, userID); err != nil {
		return nil, err
	}
	agent, err := s.store.Get(ctx, agentID)
	if err != nil {
		return nil, err
	}
	s.ensured.Add(agentID, agent)
	zerolog.Ctx(ctx).Debug().Str("agent_id", agentID).Stringer("user_id", userID).Msg("Agent ghost ready")
	return agent, nil
}

// Intent returns the intent of an agent's ghost, registering it first.
func (s *Service) Intent(ctx context.Context, field, agentID string) (*appservice.IntentAPI, error) {
	agent, err := s.Ensure(ctx, field, agentID)
	if err != nil {
		return nil, err
	}
	return s.as.Intent(agent.UserID), nil
}

// SetProfile sets an agent's display name and/or avatar in Matrix and in
// the database; nil leaves a value unchanged.
func (s *Service) SetProfile(ctx context.Context, agentID string, displayName, avatarURL *string) error {
	intent, err := s.Intent(ctx, "userId", agentID)
	if err != nil {
		return err
	}
	if displayName != nil {
		if err = intent.SetDisplayName(ctx, *displayName); err != nil {
			return HomeserverFailure("setting the display name", err)
		}
	}
	if avatarURL != nil {
		if err = intent.SetAvatarURL(ctx, id.ContentURIString(*avatarURL).ParseOrIgnore()); err != nil {
			return HomeserverFailure("setting the avatar", err)
		}
	}
	if err = s.store.SetProfile(ctx, agentID, displayName, avatarURL); err != nil {
		return err
	}
	s.ensured.Remove(agentID) // the cached copy has the old profile
	return nil
}

// QueryUser answers the homeserver's user query. A known agent's ghost is
// registered before the answer (the homeserver reads the user right after);
// any other user, an unknown agent included, does not exist (404): the
// question comes from whoever made the homeserver ask (Dendrite asks for a
// profile look-up, Synapse for a membership event), so it must not make an
// account.
func (s *Service) QueryUser(ctx context.Context, userID id.UserID) (bool, error) {
	entity := s.mapper.FromMatrix(userID)
	if entity.Kind != identity.KindAgent {
		return false, nil
	}
	agentID := strings.TrimPrefix(entity.ID, "agent:")
	known, err := s.Known(ctx, agentID)
	if err != nil {
		return false, fmt.Errorf("failed to answer the user query for %s: %w", userID, err)
	} else if !known {
		zerolog.Ctx(ctx).Debug().Str("agent_id", agentID).Msg("User query for an unknown agent: not found")
		return false, nil
	}
	if _, err = s.Ensure(ctx, "userId", agentID); err != nil {
		var fieldErr *identity.FieldError
		if errors.As(err, &fieldErr) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}
