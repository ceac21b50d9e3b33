package messaging

import (
	"net/http"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/identity"
	"github.com/daarion/matrix-bridge/pkg/internalapi"
)

type membershipAction string

const (
	actionInvite membershipAction = "invite"
	actionJoin   membershipAction = "join"
	actionLeave  membershipAction = "leave"
	actionKick   membershipAction = "kick"
	actionBan    membershipAction = "ban"
	actionUnban  membershipAction = "unban"
)

// statuses are the gateway spec's answers.
var statuses = map[membershipAction]string{
	actionInvite: "invited", actionJoin: "joined", actionLeave: "left",
	actionKick: "kicked", actionBan: "banned", actionUnban: "unbanned",
}

// membershipRequest covers the membership endpoints: user_id is the member
// (a Matrix id or a DAARION id); invite, kick, ban and unban act as their
// actor field (default: the bridge bot); join and leave act as user_id.
type membershipRequest struct {
	RoomID          id.RoomID `json:"room_id"`
	CitySlug        string    `json:"city_slug"`
	UserID          string    `json:"user_id"`
	Inviter         string    `json:"inviter"`
	InviterMatrixID id.UserID `json:"inviter_matrix_id"`
	Kicker          string    `json:"kicker"`
	KickerMatrixID  id.UserID `json:"kicker_matrix_id"`
	Reason          string    `json:"reason"`
}

func (s *Service) handleMembership(action membershipAction) internalapi.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		ctx := r.Context()
		var req membershipRequest
		if err := internalapi.DecodeJSON(r, &req); err != nil {
			return err
		}
		roomID, err := s.resolveRoom(ctx, req.RoomID, req.CitySlug)
		if err != nil {
			return err
		}
		if len(req.Reason) > 1000 {
			return internalapi.InvalidField("reason", "must be at most 1000 bytes")
		}
		var member identity.Entity
		if req.UserID == "" {
			err = &identity.FieldError{Field: "user_id", Problem: "is required"}
		} else {
			member, err = s.mapper.ParseUser("user_id", req.UserID)
		}
		if err != nil {
			return err
		}
		switch action {
		case actionJoin, actionLeave:
			err = s.joinOrLeave(r, action, roomID, req.UserID)
		case actionInvite:
			err = s.moderate(r, action, roomID, member, "inviter", req.Inviter, "inviter_matrix_id", req.InviterMatrixID, req.Reason)
		default:
			err = s.moderate(r, action, roomID, member, "kicker", req.Kicker, "kicker_matrix_id", req.KickerMatrixID, req.Reason)
		}
		if err != nil {
			return err
		}
		resp := map[string]string{"status": statuses[action]}
		if action == actionJoin {
			resp["room_id"] = roomID.String()
		}
		internalapi.WriteJSON(w, http.StatusOK, resp)
		return nil
	}
}

func (s *Service) joinOrLeave(r *http.Request, action membershipAction, roomID id.RoomID, userID string) error {
	ctx := r.Context()
	actor, err := s.actAs(ctx, "user_id", userID, "", "")
	if err != nil {
		return err
	}
	if action == actionJoin {
		if actor.Entity.Kind == identity.KindAgent {
			return s.ensureJoined(ctx, actor, roomID, true)
		}
		_, err = actor.Intent.JoinRoomByID(ctx, roomID)
		return err
	}
	_, err = actor.Intent.LeaveRoom(ctx, roomID)
	return err
}

func (s *Service) moderate(r *http.Request, action membershipAction, roomID id.RoomID, member identity.Entity,
	actorField, actorValue, actorMatrixField string, actorMatrixID id.UserID, reason string) error {
	ctx := r.Context()
	actor, err := s.actAsOrBot(ctx, actorField, actorValue, actorMatrixField, actorMatrixID)
	if err != nil {
		return err
	}
	if err = s.ensureJoined(ctx, actor, roomID, false); err != nil {
		return err
	}
	// An agent about to be invited is registered first: homeservers expect
	// invited users to exist.
	if member.Kind == identity.KindAgent {
		if _, err = s.agents.Ensure(ctx, "user_id", member.ID[len("agent:"):]); err != nil {
			return err
		}
	}
	switch action {
	case actionInvite:
		_, err = actor.Intent.InviteUser(ctx, roomID, &mautrix.ReqInviteUser{UserID: member.UserID, Reason: reason})
	case actionKick:
		_, err = actor.Intent.KickUser(ctx, roomID, &mautrix.ReqKickUser{UserID: member.UserID, Reason: reason})
	case actionBan:
		_, err = actor.Intent.BanUser(ctx, roomID, &mautrix.ReqBanUser{UserID: member.UserID, Reason: reason})
	case actionUnban:
		_, err = actor.Intent.UnbanUser(ctx, roomID, &mautrix.ReqUnbanUser{UserID: member.UserID, Reason: reason})
	}
	return err
}
