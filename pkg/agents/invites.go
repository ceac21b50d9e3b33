package agents

import (
	"context"
	"slices"
	"strings"

	"github.com/rs/zerolog"
	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/homeserver"
	"github.com/daarion/matrix-bridge/pkg/identity"
	"github.com/daarion/matrix-bridge/pkg/rooms"
)

// invite is one m.room.member invite of an agent's ghost.
type invite struct {
	roomID   id.RoomID
	inviter  id.UserID
	agentID  string
	isDirect bool
}

// HandleEvents is the agents consumer of the event log: a known agent's
// ghost accepts an invite when agents.accept_invites_from and
// accept_invites_into allow it, and declines it otherwise. An invite of an
// unknown agent is ignored: registering it would let any Matrix user
// (Dendrite lets an unregistered @agent_ be invited) make accounts.
func (s *Service) HandleEvents(ctx context.Context, events []*eventlog.Event) error {
	for _, evt := range events {
		if evt.Type != "m.room.member" || evt.Kind != eventlog.KindTimeline {
			continue
		}
		f := gjson.GetMany(string(evt.JSON), "state_key", "content.membership", "content.is_direct")
		if f[1].Str != "invite" {
			continue
		}
		invitee := s.mapper.FromMatrix(id.UserID(f[0].Str))
		if invitee.Kind != identity.KindAgent {
			continue
		}
		inv := invite{
			roomID:   id.RoomID(evt.RoomID),
			inviter:  id.UserID(evt.Sender),
			agentID:  strings.TrimPrefix(invitee.ID, "agent:"),
			isDirect: f[2].Type == gjson.True,
		}
		if err := s.handleInvite(ctx, inv); err != nil {
			return err
		}
	}
	return nil
}

func (s *Service) handleInvite(ctx context.Context, inv invite) error {
	log := zerolog.Ctx(ctx).With().Str("agent_id", inv.agentID).Stringer("room_id", inv.roomID).
		Stringer("inviter", inv.inviter).Bool("is_direct", inv.isDirect).Logger()
	if _, err := s.mapper.AgentUserID("state_key", inv.agentID); err != nil {
		log.Debug().Err(err).Msg("Ignoring an invite of an invalid agent id")
		return nil
	}
	known, err := s.Known(ctx, inv.agentID)
	if err != nil {
		return err
	} else if !known {
		// Debug only: how often this happens is up to whoever sends invites.
		log.Debug().Msg("Ignoring an invite of an unknown agent: nothing is registered")
		return nil
	}
	agent, err := s.Ensure(ctx, "state_key", inv.agentID)
	if err != nil {
		return err
	}
	ghost := s.as.Intent(agent.UserID)
	refusal, err := s.inviteRefusal(ctx, inv)
	if err != nil {
		return err
	} else if refusal != "" {
		s.decline(ctx, log, ghost, inv.roomID, refusal)
		return nil
	}
	minLevel := s.invites.MinPowerLevel
	checkLevel := minLevel != nil && !s.platformUser(inv.inviter)
	// The bot reads the inviter's level when it is in the room; otherwise the
	// ghost must join to read it, and leaves again if the inviter may not.
	var level int
	var levelKnown bool
	if checkLevel {
		level, levelKnown = s.powerLevel(ctx, s.as.BotIntent(), inv.roomID, inv.inviter)
		if levelKnown && level < *minLevel {
			s.decline(ctx, log.With().Int("inviter_level", level).Logger(), ghost, inv.roomID, "the inviter is below agents.accept_invites_from's power level")
			return nil
		}
	}
	if s.devices != nil {
		if err = s.devices.EnsureDevice(ctx, ghost.UserID); err != nil {
			// The agent joins anyway: it reads the room in the clear parts,
			// and the device is made again on its first encrypted send.
			log.Warn().Err(err).Msg("Failed to make the agent's encryption device before joining")
		}
	}
	if _, err = ghost.JoinRoomByID(ctx, inv.roomID); err != nil {
		if homeserver.Permanent(err) {
			log.Warn().Err(err).Msg("Agent cannot accept the invite")
			return nil
		}
		return HomeserverFailure("accepting an invite", err)
	}
	if checkLevel && !levelKnown {
		if level, levelKnown = s.powerLevel(ctx, ghost, inv.roomID, inv.inviter); !levelKnown || level < *minLevel {
			log.Info().Int("inviter_level", level).Msg("Leaving: the inviter is below agents.accept_invites_from's power level")
			_, _ = ghost.LeaveRoom(ctx, inv.roomID)
			return nil
		}
	}
	// The room is one the bridge manages now: the internal API may act in it.
	if err := s.cityRooms.MarkManaged(ctx, inv.roomID, rooms.OriginAgentInvite, inv.agentID); err != nil {
		return err
	}
	log.Info().Msg("Agent accepted an invite")
	return nil
}

// inviteRefusal says why a known agent must decline inv ("" when it may
// accept, subject to the power-level condition). Invites the bridge's own
// users send are the platform's: nobody else can act as the bot or a ghost.
func (s *Service) inviteRefusal(ctx context.Context, inv invite) (string, error) {
	if s.platformUser(inv.inviter) {
		return "", nil
	}
	if !s.inviterAllowed(inv.inviter) {
		return "the inviter is not allowed by agents.accept_invites_from", nil
	}
	p := s.invites
	switch {
	case p.AnyRoom, p.DirectChats && inv.isDirect:
		return "", nil
	case p.CityRooms:
		city, err := s.cityRooms.ByRoomID(ctx, inv.roomID)
		if err != nil {
			return "", err
		}
		// ByRoomID also finds a city by a room an upgrade replaced; that
		// room is no longer where the city lives.
		if city != nil && city.RoomID == inv.roomID {
			return "", nil
		}
	}
	return "the room is not one agents.accept_invites_into allows", nil
}

// inviterAllowed matches the inviter against agents.accept_invites_from.
func (s *Service) inviterAllowed(inviter id.UserID) bool {
	_, server, err := inviter.Parse()
	if err != nil {
		return false
	}
	p := s.invites
	return (p.Local && server == s.mapper.ServerName) || p.Servers[server] || p.Users[inviter]
}

// platformUser reports whether userID is the bridge bot or an agent's ghost
// of this server: users only the bridge can act as.
func (s *Service) platformUser(userID id.UserID) bool {
	kind := s.mapper.FromMatrix(userID).Kind
	return kind == identity.KindBridge || kind == identity.KindAgent
}

// decline rejects an invite, unless the ghost is in the room already: an
// invite replayed from the log, or one forged with the hs_token, must not
// undo a membership the agent has.
func (s *Service) decline(ctx context.Context, log zerolog.Logger, ghost *appservice.IntentAPI, roomID id.RoomID, reason string) {
	log.Info().Str("reason", reason).Msg("Declining an invite of an agent")
	joined, err := ghost.JoinedRooms(ctx)
	if err != nil || slices.Contains(joined.JoinedRooms, roomID) {
		return
	}
	_, _ = ghost.LeaveRoom(ctx, roomID)
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
