package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/internalapi"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

func TestConfidentialRooms(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx := context.Background()
		svc, _ := newTestService(t, tdb, false)
		store := svc.Store()
		if err := store.MarkManaged(ctx, "!made:s", OriginCreated, ""); err != nil {
			t.Fatal(err)
		}
		messaging := internalapi.WithService(ctx, &internalapi.Service{Name: "gw", Scopes: []internalapi.Scope{internalapi.ScopeRooms}})
		anyRoom := internalapi.WithService(ctx, &internalapi.Service{Name: "ops", Scopes: []internalapi.Scope{internalapi.ScopeRooms, internalapi.ScopeAnyRoom}})

		// Another process over the same table: it sees a mark once it
		// reloads.
		other := NewConfidentialRooms(store)
		other.refresh = 10 * time.Millisecond
		if err := other.Load(ctx); err != nil {
			t.Fatal(err)
		}
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); other.Run(runCtx) }()
		t.Cleanup(func() { stop(); <-done })

		if svc.IsConfidential("!made:s") || other.Is("!made:s") {
			t.Fatal("confidential before it was marked")
		}
		if err := svc.SetConfidential(messaging, "roomId", "!made:s", true, "gw"); err != nil {
			t.Fatalf("marking a managed room: %v", err)
		}
		// Twice is fine, and keeps the first record.
		if err := svc.SetConfidential(messaging, "roomId", "!made:s", true, "later"); err != nil {
			t.Fatal(err)
		}
		if !svc.IsConfidential("!made:s") {
			t.Error("this process does not see its own mark at once")
		}
		testrig.Eventually(t, "the other process sees the mark", 5*time.Second, func() bool { return other.Is("!made:s") })

		var reach *OutOfReachError
		if err := svc.SetConfidential(messaging, "roomId", "!other:s", true, "gw"); !errors.As(err, &reach) || reach.Field != "roomId" {
			t.Errorf("marking a room out of reach = %v, want an OutOfReachError", err)
		}
		if err := svc.SetConfidential(anyRoom, "roomId", "!other:s", true, "ops"); err != nil {
			t.Errorf("marking another room with any_room: %v", err)
		}
		if err := svc.SetConfidential(messaging, "roomId", "not-a-room", true, "gw"); !isFieldError(err, "roomId") {
			t.Errorf("marking a bad room id = %v", err)
		}
		ids, err := store.ConfidentialRoomIDs(ctx)
		slices.Sort(ids)
		if err != nil || !slices.Equal(ids, []id.RoomID{"!made:s", "!other:s"}) {
			t.Errorf("stored %v, %v", ids, err)
		}

		if err := svc.SetConfidential(messaging, "roomId", "!made:s", false, "gw"); err != nil {
			t.Fatal(err)
		}
		if svc.IsConfidential("!made:s") || !svc.IsConfidential("!other:s") {
			t.Error("unmarking changed the wrong rooms")
		}
		testrig.Eventually(t, "the other process sees the unmark", 5*time.Second, func() bool { return !other.Is("!made:s") && other.Is("!other:s") })

		// A fresh process loads what is stored.
		fresh := NewConfidentialRooms(store)
		if err := fresh.Load(ctx); err != nil || fresh.Is("!made:s") || !fresh.Is("!other:s") {
			t.Errorf("loaded %v, %v", *fresh.set.Load(), err)
		}
		var none *ConfidentialRooms
		if none.Is("!other:s") {
			t.Error("a nil set says a room is confidential")
		}
	})
}

// Encrypted city rooms and rooms are created with Megolm in their initial
// state.
func TestCreateEncrypted(t *testing.T) {
	ctx := context.Background()
	svc, hs := newTestService(t, testrig.NewTestDatabase(t, testrig.SQLite), false)
	encryption := func(req map[string]json.RawMessage) []string {
		var state []struct {
			Type     string         `json:"type"`
			StateKey string         `json:"state_key"`
			Content  map[string]any `json:"content"`
		}
		_ = json.Unmarshal(req["initial_state"], &state)
		var algorithms []string
		for _, st := range state {
			if st.Type == event.StateEncryption.Type && st.StateKey == "" {
				alg, _ := st.Content["algorithm"].(string)
				algorithms = append(algorithms, alg)
			}
		}
		return algorithms
	}
	if _, err := svc.Create(ctx, CreateRequest{Slug: "vault", Name: "Vault", Visibility: "private", Encrypted: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Create(ctx, CreateRequest{Slug: "plaza", Name: "Plaza", Visibility: "public"}); err != nil {
		t.Fatal(err)
	}
	if got := encryption(hs.created[0]); !slices.Equal(got, []string{"m.megolm.v1.aes-sha2"}) {
		t.Errorf("the encrypted city room's initial m.room.encryption: %v", got)
	}
	if got := encryption(hs.created[1]); len(got) != 0 {
		t.Errorf("the clear city room has m.room.encryption %v", got)
	}

	yes, no := true, false
	for _, tc := range []struct {
		name string
		body createRoomBody
		want []string
	}{
		{"encrypted", createRoomBody{Encrypted: &yes}, []string{"m.megolm.v1.aes-sha2"}},
		{"not encrypted", createRoomBody{Encrypted: &no}, nil},
		{"left out", createRoomBody{}, nil},
		{"the request's own encryption stays alone", createRoomBody{Encrypted: &yes,
			InitialState: []stateEvent{{Type: "m.room.encryption", Content: []byte(`{"algorithm":"m.megolm.v1.aes-sha2","rotation_period_ms":3600000}`)}}},
			[]string{"m.megolm.v1.aes-sha2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := tc.body.toRequest(testBot)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := json.Marshal(req)
			var decoded map[string]json.RawMessage
			_ = json.Unmarshal(raw, &decoded)
			if got := encryption(decoded); !slices.Equal(got, tc.want) {
				t.Errorf("m.room.encryption %v, want %v (%s)", got, tc.want, raw)
			}
		})
	}
}
