package agents

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/rs/zerolog"
	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/homeserver"
	"github.com/daarion/matrix-bridge/pkg/identity"
)

// HandleEvents is the agents consumer of the event log. Homeservers do not
// always ask the bridge about a user before inviting it (Dendrite lets an
// unregistered @agent_ be invited), so an invite of an agent registers the
// ghost and, per agents.accept_invites_from, accepts it.
func (s *Service) HandleEvents(ctx context.Context, events []*eventlog.Event) error {
	for _, evt := range events {
		if evt.Type != "m.room.member" || evt.Kind != eventlog.KindTimeline {
			continue
		}
		f := gjson.GetMany(string(evt.JSON), "state_key", "content.membership")
		if f[1].Str != "invite" {
			continue
		}
		invitee := s.mapper.FromMatrix(id.UserID(f[0].Str))
		if invitee.Kind != identity.KindAgent {
			continue
		}
		if err := s.handleInvite(ctx, id.RoomID(evt.RoomID), id.UserID(evt.Sender), strings.TrimPrefix(invitee.ID, "agent:")); err != nil {
			return err
		}
	}
	return nil
}

func (s *Service) handleInvite(ctx context.Context, roomID id.RoomID, inviter id.UserID, agentID string) error {
	log := zerolog.Ctx(ctx).With().Str("agent_id", agentID).Stringer("room_id", roomID).Stringer("inviter", inviter).Logger()
	agent, err := s.Ensure(ctx, "state_key", agentID)
	var fieldErr *identity.FieldError
	if errors.As(err, &fieldErr) {
		log.Warn().Err(err).Msg("Ignoring invite of an invalid agent id")
		return nil
	} else if err != nil {
		return err
	}
	minLevel, accept := s.cfg.InviteMinPowerLevel()
	if !accept {
		log.Debug().Msg("Agent invited; accept_invites_from is nobody")
		return nil
	}
	ghost := s.as.Intent(agent.UserID)
	// The bot reads the inviter's level when it is in the room; otherwise the
	// ghost must join to read it, and leaves again if the inviter may not.
	level, known := s.powerLevel(ctx, s.as.BotIntent(), roomID, inviter)
	if known && level < minLevel {
		log.Info().Int("inviter_level", level).Msg("Declining agent invite from a member below the required power level")
		_, _ = ghost.LeaveRoom(ctx, roomID)
		return nil
	}
	if _, err = ghost.JoinRoomByID(ctx, roomID); err != nil {
		if isPermanent(err) {
			log.Warn().Err(err).Msg("Agent cannot accept the invite")
			return nil
		}
		return HomeserverFailure("accepting an invite", err)
	}
	if !known {
		if level, known = s.powerLevel(ctx, ghost, roomID, inviter); !known || level < minLevel {
			log.Info().Int("inviter_level", level).Msg("Leaving: the inviter is below the required power level")
			_, _ = ghost.LeaveRoom(ctx, roomID)
			return nil
		}
	}
	log.Info().Msg("Agent accepted an invite")
	return nil
}

// powerLevel reads a user's level in a room as reader; false when the reader
// cannot see the room's state.
func (s *Service) powerLevel(ctx context.Context, reader *appservice.IntentAPI, roomID id.RoomID, userID id.UserID) (int, bool) {
	pl, err := homeserver.PowerLevels(ctx, reader.Client, roomID)
	if err != nil {
		return 0, false
	}
	return pl.GetUserLevel(userID), true
}

// isPermanent reports whether the homeserver refused for good (a 4xx other
// than rate limiting), so retrying is pointless.
func isPermanent(err error) bool {
	var httpErr mautrix.HTTPError
	if errors.As(err, &httpErr) && httpErr.Response != nil {
		code := httpErr.Response.StatusCode
		return code >= 400 && code < 500 && code != http.StatusTooManyRequests
	}
	return false
}
