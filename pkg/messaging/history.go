package messaging

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/identity"
	"github.com/daarion/matrix-bridge/pkg/internalapi"
	"github.com/daarion/matrix-bridge/pkg/rooms"
)

const (
	defaultHistoryLimit = 10
	maxHistoryLimit     = 100
	// maxTokenBytes bounds a pagination token (they are opaque, and short).
	maxTokenBytes = 1024
)

// historyQuery is GET /internal/matrix/rooms/{roomId}/messages's query.
type historyQuery struct {
	From  string
	Dir   mautrix.Direction
	Limit int
	As    string
}

// parseHistoryQuery reads from, dir, limit and as. limit is clamped to
// 1–100 rather than refused; dir=f needs from (a page forward from nowhere
// is refused by some homeservers).
func parseHistoryQuery(q url.Values) (historyQuery, error) {
	hq := historyQuery{From: q.Get("from"), Dir: mautrix.DirectionBackward, Limit: defaultHistoryLimit, As: q.Get("as")}
	switch q.Get("dir") {
	case "", "b":
	case "f":
		hq.Dir = mautrix.DirectionForward
	default:
		return hq, &identity.FieldError{Field: "dir", Problem: `must be "b" (backwards, the default) or "f" (forwards)`}
	}
	if raw := q.Get("limit"); raw != "" {
		n, err := strconv.ParseInt(raw, 10, 64)
		var numErr *strconv.NumError
		switch {
		case err == nil:
		case errors.As(err, &numErr) && errors.Is(numErr.Err, strconv.ErrRange):
			n = maxHistoryLimit // far out of range either way: clamped below
			if raw[0] == '-' {
				n = 1
			}
		default:
			return hq, &identity.FieldError{Field: "limit", Problem: "must be a whole number (it is clamped to 1-100)"}
		}
		hq.Limit = int(min(max(n, 1), maxHistoryLimit))
	}
	if len(hq.From) > maxTokenBytes {
		return hq, &identity.FieldError{Field: "from", Problem: "is too long to be a pagination token"}
	}
	if hq.Dir == mautrix.DirectionForward && hq.From == "" {
		return hq, &identity.FieldError{Field: "from", Problem: "is required with dir=f (a start or end token from an earlier page)"}
	}
	return hq, nil
}

// historyResponse is the homeserver's /messages answer with the events as
// it gave them.
type historyResponse struct {
	Start string            `json:"start"`
	End   string            `json:"end,omitempty"`
	Chunk []json.RawMessage `json:"chunk"`
}

func (s *Service) handleHistory(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	raw, _ := internalapi.PathVar(r, "roomId")
	roomID := id.RoomID(raw)
	if err := rooms.ValidateRoomID("roomId", roomID); err != nil {
		return err
	}
	q, err := parseHistoryQuery(r.URL.Query())
	if err != nil {
		return err
	}
	if err := s.rooms.CheckReach(ctx, "roomId", roomID); err != nil {
		return err
	}
	actor := s.botActor()
	if q.As != "" {
		if actor, err = s.actAs(ctx, "as", q.As, "", ""); err != nil {
			return err
		}
	}
	// Only a member reads: homeservers differ for others (Synapse refuses,
	// Dendrite answers an empty page), and a former member may still see
	// the history up to its leave.
	notIn := internalapi.NotFound("no such room, or " + actor.Entity.ID + " is not in it")
	var member event.MemberEventContent
	err = actor.Intent.Client.StateEvent(ctx, roomID, event.StateMember, actor.Intent.UserID.String(), &member)
	var httpErr mautrix.HTTPError
	switch {
	case err == nil && member.Membership == event.MembershipJoin:
	case err == nil, errors.As(err, &httpErr) && httpErr.Response != nil &&
		(httpErr.Response.StatusCode == http.StatusForbidden || httpErr.Response.StatusCode == http.StatusNotFound):
		return notIn
	default:
		return err
	}
	query := map[string]string{"dir": string(q.Dir), "limit": strconv.Itoa(q.Limit)}
	if q.From != "" {
		query["from"] = q.From
	}
	var resp historyResponse
	cli := actor.Intent.Client
	_, err = cli.MakeRequest(ctx, http.MethodGet, cli.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "rooms", roomID, "messages"}, query), nil, &resp)
	switch {
	case err == nil:
	case errors.As(err, &httpErr) && httpErr.Response != nil &&
		(httpErr.Response.StatusCode == http.StatusForbidden || httpErr.Response.StatusCode == http.StatusNotFound):
		return notIn
	case q.From != "" && errors.As(err, &httpErr) && httpErr.Response != nil && httpErr.Response.StatusCode == http.StatusBadRequest:
		return internalapi.InvalidField("from", "the homeserver refused the token: "+httpErrMessage(httpErr))
	default:
		return err
	}
	if resp.Chunk == nil {
		resp.Chunk = []json.RawMessage{}
	}
	internalapi.WriteJSON(w, http.StatusOK, resp)
	return nil
}

func httpErrMessage(err mautrix.HTTPError) string {
	if err.RespError != nil {
		return err.RespError.ErrCode + " " + err.RespError.Err
	}
	return err.Error()
}
