package agents

import (
	"context"
	"errors"
	"strings"
	"sync"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/config"
	"github.com/daarion/matrix-bridge/pkg/homeserver"
	"github.com/daarion/matrix-bridge/pkg/identity"
)

// Service registers ghosts and acts as them.
type Service struct {
	store  *Store
	as     *appservice.AppService
	mapper identity.Mapper
	cfg    config.Agents

	// ensured remembers ghosts registered by this process, so the hot path
	// (posting as an agent) costs no database or homeserver round trip.
	ensured sync.Map // agent id → *Agent
}

// NewService returns the agents service.
func NewService(store *Store, as *appservice.AppService, mapper identity.Mapper, cfg config.Agents) *Service {
	return &Service{store: store, as: as, mapper: mapper, cfg: cfg}
}

// Store returns the ghosts' store.
func (s *Service) Store() *Store { return s.store }

// MatrixError means the homeserver failed (502) or was unreachable (503).
type MatrixError = homeserver.Error

// HomeserverFailure classifies a failed homeserver call made while doing action.
var HomeserverFailure = homeserver.Failure

// Ensure registers the ghost of agentID on the homeserver (once) and records
// it. field names the request field the id came from, for errors.
func (s *Service) Ensure(ctx context.Context, field, agentID string) (*Agent, error) {
	if cached, ok := s.ensured.Load(agentID); ok {
		return cached.(*Agent), nil
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
	s.ensured.Store(agentID, agent)
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
	s.ensured.Delete(agentID) // the cached copy has the old profile
	return nil
}

// QueryUser answers the homeserver's user query: a valid @agent_<id> is
// registered before the answer (the homeserver reads the user right after),
// anything else does not exist.
func (s *Service) QueryUser(ctx context.Context, userID id.UserID) (bool, error) {
	entity := s.mapper.FromMatrix(userID)
	if entity.Kind != identity.KindAgent {
		return false, nil
	}
	agentID := strings.TrimPrefix(entity.ID, "agent:")
	if _, err := s.Ensure(ctx, "userId", agentID); err != nil {
		var fieldErr *identity.FieldError
		if errors.As(err, &fieldErr) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}
