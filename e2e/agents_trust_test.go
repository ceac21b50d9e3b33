package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// trustAppservice calls the bridge's appservice port with the hs_token, as
// the homeserver (or whoever holds the token) would, and returns the status
// and the errcode of the answer.
func trustAppservice(t *testing.T, s *stack, method, path string, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, s.cfg.AppService.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.cfg.AppService.HSToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var answer struct {
		ErrCode string `json:"errcode"`
	}
	_ = json.Unmarshal(data, &answer)
	return resp.StatusCode, answer.ErrCode
}

// ghostOnHomeserver asks the homeserver whether userID exists as one of the
// appservice's users: whoami masquerading as it with the as_token works only
// for a user the appservice registered.
func ghostOnHomeserver(t *testing.T, s *stack, userID id.UserID) bool {
	t.Helper()
	cli := s.botClient()
	cli.SetAppServiceUserID = true
	cli.UserID = userID
	resp, err := cli.Whoami(context.Background())
	if err == nil {
		return resp.UserID == userID
	}
	var httpErr mautrix.HTTPError
	if !errors.As(err, &httpErr) || httpErr.Response == nil || httpErr.Response.StatusCode >= 500 {
		t.Fatalf("whoami as %s: %v", userID, err)
	}
	return false
}

// agentRows counts the bridge's records of an agent.
func agentRows(t *testing.T, s *stack, agentID string) int {
	t.Helper()
	var n int
	if err := s.database.QueryRow(context.Background(), `SELECT COUNT(*) FROM agent WHERE agent_id = $1`, agentID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Only agents the platform made exist (DESIGN guarantee 6): a human's
// invite of an unknown @agent_, a user query for one, and a profile look-up
// register nothing; a known agent accepts a local human's invite into a city
// room, and not a forged invite from a federated user who is an admin there.
func TestAgentsTrustOnlyKnownAgentsExist(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, r rig) {
		ctx := context.Background()
		s := newStack(t, r)
		s.bridge.waitForLog("Bridge bot registered", 30*time.Second)
		roomID, alias := createCity(t, s, "trust", "Trust", "")
		alice, _ := s.humanJoins("alice", alias)
		memberIn := func(roomID id.RoomID, user id.UserID) event.Membership {
			var m event.MemberEventContent
			if err := s.botClient().StateEvent(ctx, roomID, event.StateMember, user.String(), &m); err != nil {
				return ""
			}
			return m.Membership
		}
		// Synapse creates rooms with invite at level 50 (Dendrite: 0): let
		// alice (level 0) invite, so that only the bridge's rules decide.
		if r.homeserver == testrig.Synapse {
			var pl event.PowerLevelsEventContent
			_ = s.botClient().StateEvent(ctx, roomID, event.StatePowerLevels, "", &pl)
			zero := 0
			pl.InvitePtr = &zero
			if _, err := s.botClient().SendStateEvent(ctx, roomID, event.StatePowerLevels, "", &pl); err != nil {
				t.Fatal(err)
			}
		}

		// The platform makes agent:known known through the internal API.
		if res := s.api(t, http.MethodPut, "/internal/matrix/users/agent:known/display-name", map[string]string{"display_name": "Known"}); res.status != 200 {
			t.Fatalf("display name of agent:known: %d %s", res.status, res.body)
		}
		known := id.NewUserID("agent_known", serverName)

		// A human invites @agent_nobody, an agent the platform never made.
		// Both homeservers let an unregistered user be invited, and the
		// bridge sees the invite. Synapse also asks the bridge about the
		// invitee (a user query, for the membership event), which the
		// bridge answers 404.
		nobody := id.NewUserID("agent_nobody", serverName)
		if _, err := alice.InviteUser(ctx, roomID, &mautrix.ReqInviteUser{UserID: nobody}); err != nil {
			t.Fatalf("%s refused alice's invite of the unregistered @agent_nobody: %v", r.homeserver, err)
		}
		if r.homeserver == testrig.Synapse {
			// Synapse percent-encodes '@' and ':' in the path it logs.
			query := "Received response to GET " + s.cfg.AppService.URL + "/_matrix/app/v1/users/" + url.QueryEscape(nobody.String()) + ": 404"
			answered := func() bool { return bytes.Contains([]byte(readFile(t, s.hs.LogFile)), []byte(query)) }
			for deadline := time.Now().Add(15 * time.Second); !answered() && time.Now().Before(deadline); {
				time.Sleep(100 * time.Millisecond)
			}
			if !answered() {
				t.Errorf("Synapse's user query for @agent_nobody was not answered 404")
			}
		}
		// A known agent invited into the city room by a local human accepts.
		// Its invite comes after the unknown one in the log, so once it is
		// handled (joined or declined) the unknown one has been too.
		if _, err := alice.InviteUser(ctx, roomID, &mautrix.ReqInviteUser{UserID: known}); err != nil {
			t.Fatalf("alice invites @agent_known: %v", err)
		}
		eventually(t, "alice's invite of @agent_known to be handled", 15*time.Second, func() bool {
			m := memberIn(roomID, known)
			return m == event.MembershipJoin || m == event.MembershipLeave
		})
		if m := memberIn(roomID, known); m != event.MembershipJoin {
			t.Errorf("@agent_known declined a local human's invite into a city room: %s", m)
		}
		if !bytes.Contains([]byte(s.bridge.logs()), []byte("Ignoring an invite of an unknown agent")) {
			t.Error("the bridge did not ignore the invite of @agent_nobody")
		}
		if ghostOnHomeserver(t, s, nobody) || agentRows(t, s, "nobody") != 0 {
			t.Errorf("the invite registered @agent_nobody (on the homeserver: %v, bridge rows: %d)", ghostOnHomeserver(t, s, nobody), agentRows(t, s, "nobody"))
		}
		if m := memberIn(roomID, nobody); m == event.MembershipJoin {
			t.Errorf("@agent_nobody is %s", m)
		}

		// User queries, as the homeserver sends them: an unknown agent is
		// 404 M_NOT_FOUND and is not registered; a known one exists.
		for _, tc := range []struct {
			user    id.UserID
			status  int
			errcode string
		}{
			{id.NewUserID("agent_queried", serverName), http.StatusNotFound, "M_NOT_FOUND"},
			{known, http.StatusOK, ""},
		} {
			status, errcode := trustAppservice(t, s, http.MethodGet, "/_matrix/app/v1/users/"+url.PathEscape(tc.user.String()), nil)
			if status != tc.status || errcode != tc.errcode {
				t.Errorf("user query for %s: %d %s, want %d %s", tc.user, status, errcode, tc.status, tc.errcode)
			}
		}
		if ghostOnHomeserver(t, s, id.NewUserID("agent_queried", serverName)) || agentRows(t, s, "queried") != 0 {
			t.Error("the user query registered @agent_queried")
		}
		// A human's profile look-up (Dendrite asks the bridge, Synapse does
		// not) is not found either way.
		lookedUp := id.NewUserID("agent_lookedup", serverName)
		if _, err := alice.GetProfile(ctx, lookedUp); !errors.Is(err, mautrix.MNotFound) && !isHTTPStatus(err, http.StatusNotFound) {
			t.Errorf("profile of the unknown %s: %v, want a 404", lookedUp, err)
		}
		if ghostOnHomeserver(t, s, lookedUp) || agentRows(t, s, "lookedup") != 0 {
			t.Errorf("the profile look-up registered %s", lookedUp)
		}

		// A forged transaction (sent straight to the appservice port with
		// the hs_token) invites @agent_known into a second city room from
		// @mallory:evil.example, whom the room's power levels make an
		// admin: federated users are not allowed by the default
		// accept_invites_from, whatever their level, so the ghost does not
		// join. A forged invite into the room it is in does not make it
		// leave.
		second, _ := createCity(t, s, "second", "Second", "")
		mallory := id.UserID("@mallory:evil.example")
		var pl event.PowerLevelsEventContent
		_ = s.botClient().StateEvent(ctx, second, event.StatePowerLevels, "", &pl)
		pl.SetUserLevel(mallory, 100)
		if _, err := s.botClient().SendStateEvent(ctx, second, event.StatePowerLevels, "", &pl); err != nil {
			t.Fatal(err)
		}
		var events []any
		for i, room := range []id.RoomID{second, roomID} {
			events = append(events, map[string]any{
				"event_id": "$forged-invite-" + string(rune('a'+i)) + ":evil.example", "room_id": room, "sender": mallory,
				"type": "m.room.member", "state_key": known, "origin_server_ts": time.Now().UnixMilli(),
				"content": map[string]any{"membership": "invite"},
			})
		}
		txn, _ := json.Marshal(map[string]any{"events": events})
		if status, errcode := trustAppservice(t, s, http.MethodPut, "/_matrix/app/v1/transactions/forged-invite", txn); status != 200 {
			t.Fatalf("forged transaction: %d %s", status, errcode)
		}
		eventually(t, "the forged invites to be declined", 15*time.Second, func() bool {
			return countLines(s.bridge.logs(), `"inviter":"@mallory:evil.example"`) >= 2
		})
		if m := memberIn(second, known); m == event.MembershipJoin {
			t.Errorf("@agent_known accepted the forged invite from %s: %s", mallory, m)
		}
		if m := memberIn(roomID, known); m != event.MembershipJoin {
			t.Errorf("@agent_known after a forged invite into its room: %s, want join", m)
		}
	})
}
