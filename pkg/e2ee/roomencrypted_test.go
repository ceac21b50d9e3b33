package e2ee

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/config"
	"github.com/daarion/matrix-bridge/pkg/internalapi"
	"github.com/daarion/matrix-bridge/pkg/matrixstate"
	"github.com/daarion/matrix-bridge/pkg/registration"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// roomEncrypted answers from the state store for a room whose state it has
// seen, and loads the state of one it has not from the homeserver, as the
// sender, else the bot, before it answers.
func TestRoomEncrypted(t *testing.T) {
	const room = id.RoomID("!room:daarion.test")
	const agent = id.UserID("@agent_sofia:daarion.test")
	createEvt := map[string]any{"type": "m.room.create", "state_key": "", "sender": "@alice:daarion.test",
		"event_id": "$create", "room_id": room, "content": map[string]any{"room_version": "11"}}
	encryptionEvt := map[string]any{"type": "m.room.encryption", "state_key": "", "sender": "@alice:daarion.test",
		"event_id": "$enc", "room_id": room, "content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}
	clearState := []any{createEvt}
	encryptedState := []any{createEvt, encryptionEvt}
	// answer is the homeserver's answer to a state read as a user: a status
	// and the state (nil: 403).
	type answer struct {
		status int
		state  []any
	}
	cases := []struct {
		name string
		// known is what the store has of the room beforehand.
		known       string // "", "encrypted", "create"
		asAgent     answer
		asBot       answer
		want        bool
		wantReads   int32
		wantStatus  int // the API status of the error; 0: none
		wantKnowEnc bool
	}{
		{name: "the store knows it encrypted", known: "encrypted", want: true, wantKnowEnc: true},
		{name: "the store saw its state, clear", known: "create"},
		{name: "not seen, encrypted: the sender reads it", asAgent: answer{200, encryptedState}, want: true, wantReads: 1, wantKnowEnc: true},
		{name: "not seen, clear", asAgent: answer{200, clearState}, wantReads: 1},
		{name: "the sender may not read it, the bot does", asAgent: answer{403, nil}, asBot: answer{200, encryptedState}, want: true, wantReads: 2, wantKnowEnc: true},
		{name: "neither may read it", asAgent: answer{403, nil}, asBot: answer{403, nil}, wantReads: 2},
		{name: "the homeserver fails", asAgent: answer{500, nil}, wantReads: 1, wantStatus: http.StatusBadGateway},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			hs := testrig.NewFakeHomeserver(t)
			cfg := config.Default()
			cfg.Homeserver.URL, cfg.Homeserver.ServerName = hs.URL, "daarion.test"
			cfg.AppService.ASToken, cfg.AppService.HSToken = "as-token", "hs-token"
			as, err := appservice.CreateFull(appservice.CreateOpts{Registration: registration.FromConfig(cfg), HomeserverDomain: "daarion.test", HomeserverURL: hs.URL})
			if err != nil {
				t.Fatal(err)
			}
			as.DefaultHTTPRetries = 0
			store, err := matrixstate.Open(ctx, testrig.OpenMautrixDatabase(t, testrig.NewTestDatabase(t, testrig.SQLite)), zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			as.StateStore = store
			// Registered already (the bridge registers its users as it
			// makes them): an intent's first call registers it otherwise.
			for _, u := range []id.UserID{agent, as.BotMXID()} {
				if err = store.MarkRegistered(ctx, u); err != nil {
					t.Fatal(err)
				}
			}
			switch c.known {
			case "encrypted":
				err = store.SetEncryptionEvent(ctx, room, &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1})
			case "create":
				err = store.SetCreate(ctx, &event.Event{Type: event.StateCreate, RoomID: room, StateKey: new(string)})
			}
			if err != nil {
				t.Fatal(err)
			}
			var reads atomic.Int32
			hs.Handle("GET /_matrix/client/v3/rooms/{room}/state", func(w http.ResponseWriter, r *http.Request) {
				reads.Add(1)
				a := c.asBot
				if r.URL.Query().Get("user_id") == agent.String() {
					a = c.asAgent
				}
				if a.status != http.StatusOK {
					testrig.WriteMatrixError(w, a.status, map[bool]string{true: "M_FORBIDDEN", false: "M_UNKNOWN"}[a.status == 403], "no")
					return
				}
				testrig.WriteJSON(w, http.StatusOK, a.state)
			})

			opts := Options{AppService: as, State: store}
			got, err := opts.roomEncrypted(ctx, agent, room)
			if c.wantStatus != 0 {
				if apiErr := internalapi.AsError(err); apiErr == nil || apiErr.Status != c.wantStatus {
					t.Fatalf("error %v answers %+v, want status %d", err, apiErr, c.wantStatus)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("encrypted %v, want %v", got, c.want)
			}
			if n := reads.Load(); n != c.wantReads {
				t.Errorf("%d state reads from the homeserver, want %d", n, c.wantReads)
			}
			if enc, err := store.IsEncrypted(ctx, room); err != nil || enc != c.wantKnowEnc {
				t.Errorf("the store knows it encrypted: %v (%v), want %v", enc, err, c.wantKnowEnc)
			}
			// A state read once is in the store: the next answer is its.
			if c.asAgent.status == http.StatusOK || c.asBot.status == http.StatusOK {
				before := reads.Load()
				if again, err := opts.roomEncrypted(ctx, agent, room); err != nil || again != c.want || reads.Load() != before {
					t.Errorf("asked again: %v (%v) after %d more state reads; want %v from the store", again, err, reads.Load()-before, c.want)
				}
			}
		})
	}
}
