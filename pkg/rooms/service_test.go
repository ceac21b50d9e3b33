package rooms

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	mxappservice "maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/config"
	"github.com/daarion/matrix-bridge/pkg/homeserver"
	"github.com/daarion/matrix-bridge/pkg/registration"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// newTestService is the rooms service over a real store and the fake
// homeserver.
func newTestService(t *testing.T, tdb testrig.TestDatabase, createOnQuery bool) (*Service, *matrixHomeserver) {
	t.Helper()
	hs := newMatrixHomeserver(t)
	cfg := config.Default()
	cfg.Homeserver.ServerName, cfg.Homeserver.URL = testServer, hs.URL
	cfg.AppService.ASToken, cfg.AppService.HSToken = "as-token", "hs-token"
	as, err := mxappservice.CreateFull(mxappservice.CreateOpts{
		Registration: registration.FromConfig(cfg), HomeserverDomain: testServer, HomeserverURL: hs.URL,
	})
	if err != nil {
		t.Fatal(err)
	}
	as.DefaultHTTPRetries = 0
	if as.BotMXID() != testBot {
		t.Fatalf("the bot is %s, want %s", as.BotMXID(), testBot)
	}
	cfg.Rooms.CreateOnAliasQuery = createOnQuery
	// The space has its own tests (space_internal_test.go, e2e TestCitySpace).
	cfg.Rooms.Space.Enabled = false
	svc, err := NewService(openStore(t, tdb), as.BotIntent(), testServer, cfg.Rooms)
	if err != nil {
		t.Fatal(err)
	}
	return svc, hs
}

func isFieldError(err error, field string) bool {
	fields, ok := fieldErrors(err)
	return ok && len(fields) == 1 && fields[0] == field
}

func isConflict(err error) bool {
	var conflict *ConflictError
	return errors.As(err, &conflict) && conflict.APIError().Status == http.StatusConflict
}

func isHomeserverFailure(err error) bool {
	var hsErr *homeserver.Error
	return errors.As(err, &hsErr)
}

func TestServiceCreate(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx := context.Background()
		svc, hs := newTestService(t, tdb, false)
		// Rooms with #city_ aliases the store does not know: one the bot
		// controls (an earlier attempt that was not recorded), one squatted,
		// one the bot is not in.
		hs.addRoom("!orphan:daarion.test", "#city_orphan:daarion.test", 100, nil)
		hs.addRoom("!squat:daarion.test", "#city_squat:daarion.test", 50, nil)
		hs.addRoom("!away:daarion.test", "#city_away:daarion.test", 0, nil)

		for _, tc := range []struct {
			name   string
			req    CreateRequest
			roomID id.RoomID // "" for a new room
			check  func(error) bool
		}{
			{name: "a new public room", req: CreateRequest{Slug: "harbour", Name: "Harbour", Visibility: "public", Topic: "Ships"}},
			{name: "a new private room", req: CreateRequest{Slug: "vault", Name: "Vault", Visibility: "private"}},
			{name: "an unrecorded room of the bridge is adopted", req: CreateRequest{Slug: "orphan", Name: "Orphan", Visibility: "public"},
				roomID: "!orphan:daarion.test"},
			{name: "a squatted alias", req: CreateRequest{Slug: "squat", Name: "Squat", Visibility: "public"}, check: isConflict},
			{name: "an alias of a room the bot is not in", req: CreateRequest{Slug: "away", Name: "Away", Visibility: "public"}, check: isConflict},
			{name: "a bad slug", req: CreateRequest{Slug: "Bad Slug", Name: "Bad", Visibility: "public"},
				check: func(err error) bool { return isFieldError(err, "slug") }},
			{name: "a bad visibility", req: CreateRequest{Slug: "odd", Name: "Odd", Visibility: "secret"},
				check: func(err error) bool { return isFieldError(err, "visibility") }},
		} {
			t.Run(tc.name, func(t *testing.T) {
				cr, err := svc.Create(ctx, tc.req)
				if tc.check != nil {
					if !tc.check(err) {
						t.Fatalf("Create = %+v, %v", cr, err)
					}
					if stored, _ := svc.Store().BySlug(ctx, tc.req.Slug); stored != nil {
						t.Errorf("a refused room was recorded: %+v", stored)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				alias := id.RoomAlias("#city_" + tc.req.Slug + ":" + testServer)
				if cr.Slug != tc.req.Slug || cr.Alias != alias || cr.Name != tc.req.Name || cr.Visibility != tc.req.Visibility {
					t.Errorf("Create = %+v", cr)
				}
				if tc.roomID != "" && cr.RoomID != tc.roomID {
					t.Errorf("room %s, want the adopted %s", cr.RoomID, tc.roomID)
				}
				if hs.alias(alias) != cr.RoomID {
					t.Errorf("%s points at %s, not %s", alias, hs.alias(alias), cr.RoomID)
				}
				if stored, err := svc.Store().ByRoomID(ctx, cr.RoomID); err != nil || stored == nil || stored.Slug != tc.req.Slug {
					t.Errorf("stored %+v, %v", stored, err)
				}
				// The same slug again is the same room, without a new one.
				before := hs.count("createRoom")
				again, err := svc.Create(ctx, tc.req)
				if err != nil || again.RoomID != cr.RoomID || hs.count("createRoom") != before {
					t.Errorf("again: %+v, %v (%d room creations more)", again, err, hs.count("createRoom")-before)
				}
			})
		}

		// What the homeserver was asked for.
		hs.mu.Lock()
		first := hs.created[0]
		hs.mu.Unlock()
		for field, want := range map[string]string{"preset": `"public_chat"`, "visibility": `"public"`, "room_alias_name": `"city_harbour"`,
			"name": `"` + NamePrefix + `Harbour"`, "topic": `"Ships"`} {
			if got := string(first[field]); got != want {
				t.Errorf("createRoom %s = %s, want %s", field, got, want)
			}
		}
		if initial := string(first["initial_state"]); !strings.Contains(initial, "m.room.history_visibility") || !strings.Contains(initial, "m.room.guest_access") {
			t.Errorf("createRoom initial_state = %s", initial)
		}

		// A failing homeserver records nothing and is a homeserver failure.
		hs.setFail("createRoom", http.StatusInternalServerError)
		if cr, err := svc.Create(ctx, CreateRequest{Slug: "later", Name: "Later", Visibility: "public"}); !isHomeserverFailure(err) {
			t.Errorf("Create while the homeserver fails = %+v, %v", cr, err)
		}
		if stored, _ := svc.Store().BySlug(ctx, "later"); stored != nil {
			t.Errorf("recorded while the homeserver failed: %+v", stored)
		}
	})
}

func TestServiceFindAndQueryAlias(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx := context.Background()
		svc, hs := newTestService(t, tdb, false)
		if _, err := svc.Create(ctx, CreateRequest{Slug: "harbour", Name: "Harbour", Visibility: "public"}); err != nil {
			t.Fatal(err)
		}
		hs.addRoom("!mill:daarion.test", "#city_mill:daarion.test", 100, map[string]any{
			"m.room.name": map[string]string{"name": NamePrefix + "Old Mill"}, "m.room.topic": map[string]string{"topic": "Flour"},
			"m.room.join_rules": map[string]string{"join_rule": "public"},
		})
		hs.addRoom("!yard:daarion.test", "#city_yard:daarion.test", 100, nil)

		for _, tc := range []struct {
			alias     id.RoomAlias
			want      *CityRoom // nil: an error
			wantError func(error) bool
		}{
			{alias: "#city_harbour:daarion.test", want: &CityRoom{Slug: "harbour", Name: "Harbour", Visibility: "public"}},
			{alias: "#city_mill:daarion.test", want: &CityRoom{Slug: "mill", RoomID: "!mill:daarion.test", Name: "Old Mill", Topic: "Flour", Visibility: "public"}},
			{alias: "#city_yard:daarion.test", want: &CityRoom{Slug: "yard", RoomID: "!yard:daarion.test", Name: "yard", Visibility: "private"}},
			{alias: "#city_nowhere:daarion.test", wantError: func(err error) bool { return errors.Is(err, ErrNotFound) }},
			{alias: "#other:daarion.test", wantError: func(err error) bool { return isFieldError(err, "alias") }},
			{alias: "#city_harbour:elsewhere.test", wantError: func(err error) bool { return isFieldError(err, "alias") }},
			{alias: "#city_Bad:daarion.test", wantError: func(err error) bool { return isFieldError(err, "alias") }},
		} {
			t.Run("find "+string(tc.alias), func(t *testing.T) {
				cr, err := svc.FindByAlias(ctx, tc.alias)
				if tc.want == nil {
					if !tc.wantError(err) {
						t.Fatalf("FindByAlias = %+v, %v", cr, err)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if cr.Slug != tc.want.Slug || cr.Name != tc.want.Name || cr.Topic != tc.want.Topic || cr.Visibility != tc.want.Visibility ||
					cr.Alias != tc.alias || tc.want.RoomID != "" && cr.RoomID != tc.want.RoomID {
					t.Errorf("FindByAlias = %+v, want %+v", cr, tc.want)
				}
				if stored, _ := svc.Store().BySlug(ctx, tc.want.Slug); stored == nil || stored.RoomID != cr.RoomID {
					t.Errorf("not recorded: %+v", stored)
				}
			})
		}

		// The homeserver asks about an alias it lacks: a known city room
		// gets it back; anything else is not the bridge's.
		harbour, _ := svc.Store().BySlug(ctx, "harbour")
		hs.mu.Lock()
		delete(hs.aliases, harbour.Alias)
		hs.mu.Unlock()
		for _, tc := range []struct {
			alias id.RoomAlias
			want  bool
		}{
			{harbour.Alias, true},
			{harbour.Alias, true}, // restored already (409): fine
			{"#city_unknown:daarion.test", false},
			{"#other:daarion.test", false},
		} {
			if got, err := svc.QueryAlias(ctx, tc.alias); err != nil || got != tc.want {
				t.Errorf("QueryAlias(%s) = %v, %v; want %v", tc.alias, got, err, tc.want)
			}
		}
		if got := hs.alias(harbour.Alias); got != harbour.RoomID {
			t.Errorf("%s points at %q after the query, want %s", harbour.Alias, got, harbour.RoomID)
		}
		if stored, _ := svc.Store().BySlug(ctx, "unknown"); stored != nil {
			t.Errorf("an unknown slug was created without rooms.create_on_alias_query: %+v", stored)
		}
		hs.setFail("putAlias", http.StatusInternalServerError)
		hs.mu.Lock()
		delete(hs.aliases, harbour.Alias)
		hs.mu.Unlock()
		if got, err := svc.QueryAlias(ctx, harbour.Alias); got || !isHomeserverFailure(err) {
			t.Errorf("QueryAlias while the homeserver fails = %v, %v", got, err)
		}
	})
}

func TestServiceQueryAliasCreates(t *testing.T) {
	svc, hs := newTestService(t, testrig.NewTestDatabase(t, testrig.SQLite), true)
	ctx := context.Background()
	if got, err := svc.QueryAlias(ctx, "#city_fresh:daarion.test"); err != nil || !got {
		t.Fatalf("QueryAlias = %v, %v", got, err)
	}
	cr, err := svc.Store().BySlug(ctx, "fresh")
	if err != nil || cr == nil || cr.Visibility != "public" || cr.Name != "fresh" || hs.alias(cr.Alias) != cr.RoomID {
		t.Errorf("created %+v, %v", cr, err)
	}
}

func TestServiceArchive(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx := context.Background()
		svc, hs := newTestService(t, tdb, false)
		cr, err := svc.Create(ctx, CreateRequest{Slug: "harbour", Name: "Harbour", Visibility: "public"})
		if err != nil {
			t.Fatal(err)
		}
		before := hs.state(cr.RoomID, "m.room.power_levels")

		archived, err := svc.Archive(ctx, cr.RoomID, "storm is coming")
		if err != nil || !archived.Archived {
			t.Fatalf("Archive = %+v, %v", archived, err)
		}
		pl := hs.state(cr.RoomID, "m.room.power_levels")
		events, _ := pl["events"].(map[string]any)
		if pl["events_default"] != float64(100) || events["m.room.message"] != float64(100) || events["m.reaction"] != float64(100) {
			t.Errorf("power levels of the archived room: %v", pl)
		}
		if hs.notices[len(hs.notices)-1] != "This room is archived: storm is coming" {
			t.Errorf("notices %q", hs.notices)
		}
		// Archiving again changes nothing.
		puts := hs.count("putState")
		if again, err := svc.Archive(ctx, cr.RoomID, ""); err != nil || !again.Archived || hs.count("putState") != puts {
			t.Errorf("archive again: %+v, %v, %d state events", again, err, hs.count("putState")-puts)
		}

		unarchived, err := svc.Unarchive(ctx, cr.RoomID)
		if err != nil || unarchived.Archived || unarchived.PreArchivePowerLevels != "" {
			t.Fatalf("Unarchive = %+v, %v", unarchived, err)
		}
		if after := hs.state(cr.RoomID, "m.room.power_levels"); len(after) != len(before) || after["events_default"] != before["events_default"] || after["events"] != nil {
			t.Errorf("power levels after unarchive %v, want those before %v", after, before)
		}
		puts = hs.count("putState")
		if again, err := svc.Unarchive(ctx, cr.RoomID); err != nil || again.Archived || hs.count("putState") != puts {
			t.Errorf("unarchive again: %+v, %v", again, err)
		}

		for _, tc := range []struct {
			name   string
			roomID id.RoomID
			reason string
			check  func(error) bool
		}{
			{"an unknown room", "!nope:daarion.test", "", func(err error) bool { return errors.Is(err, ErrNotFound) }},
			{"a bad room id", "nope", "", func(err error) bool { return isFieldError(err, "roomId") }},
			{"a long reason", cr.RoomID, strings.Repeat("x", maxTopicRunes+1), func(err error) bool { return isFieldError(err, "reason") }},
		} {
			if _, err := svc.Archive(ctx, tc.roomID, tc.reason); !tc.check(err) {
				t.Errorf("Archive of %s: %v", tc.name, err)
			}
			if tc.reason == "" {
				if _, err := svc.Unarchive(ctx, tc.roomID); !tc.check(err) {
					t.Errorf("Unarchive of %s: %v", tc.name, err)
				}
			}
		}

		// The homeserver refusing the power levels leaves the room as it was.
		hs.setFail("putState", http.StatusForbidden)
		if _, err := svc.Archive(ctx, cr.RoomID, ""); !isHomeserverFailure(err) {
			t.Errorf("Archive while the homeserver refuses: %v", err)
		}
		if stored, _ := svc.Store().BySlug(ctx, "harbour"); stored.Archived {
			t.Error("recorded as archived while the homeserver refused")
		}
	})
}
