package testrig

import (
	"net/http"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// A registered call is answered with its path parts unescaped.
func TestFakeHomeserverAnswersRegisteredCalls(t *testing.T) {
	hs := NewFakeHomeserver(t)
	var gotRoom, gotUser string
	hs.Handle("GET /_matrix/client/v3/rooms/{room}/state/m.room.member/{user}", func(w http.ResponseWriter, r *http.Request) {
		gotRoom, gotUser = r.PathValue("room"), r.PathValue("user")
		WriteJSON(w, http.StatusOK, map[string]string{"membership": "join"})
	})
	cli, err := mautrix.NewClient(hs.URL, "@bot:daarion.test", "token")
	if err != nil {
		t.Fatal(err)
	}
	var member struct {
		Membership string `json:"membership"`
	}
	if err := cli.StateEvent(t.Context(), id.RoomID("!room:daarion.test"), event.StateMember, "@alice:daarion.test", &member); err != nil {
		t.Fatal(err)
	}
	if gotRoom != "!room:daarion.test" || gotUser != "@alice:daarion.test" || member.Membership != "join" {
		t.Errorf("room %q, user %q, membership %q", gotRoom, gotUser, member.Membership)
	}
}

// An unregistered call is answered 404 M_UNRECOGNIZED and fails the test.
func TestFakeHomeserverRefusesOtherCalls(t *testing.T) {
	ft := &recordingT{TB: t}
	hs := NewFakeHomeserver(ft)
	resp, err := http.Get(hs.URL + "/_matrix/client/v3/sync")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("status %d, want 404", resp.StatusCode)
	}
	if !ft.failed {
		t.Error("the unexpected call did not fail the test")
	}
}

type recordingT struct {
	testing.TB
	failed bool
}

func (r *recordingT) Errorf(string, ...any) { r.failed = true }
