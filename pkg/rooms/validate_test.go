package rooms

import (
	"errors"
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"
)

func TestValidateSlug(t *testing.T) {
	for _, tc := range []struct {
		slug string
		ok   bool
	}{
		{"kyiv", true}, {"a", true}, {"0", true}, {"energy-hub_2", true}, {strings.Repeat("a", 64), true},
		{"", false}, {"Kyiv", false}, {"-kyiv", false}, {"_x", false}, {"ky iv", false}, {"ky.iv", false},
		{"kyïv", false}, {strings.Repeat("a", 65), false}, {"a:b", false}, {"a/b", false},
	} {
		err := ValidateSlug("slug", tc.slug)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateSlug(%q) = %v, want ok=%v", tc.slug, err, tc.ok)
		}
		var fe *FieldError
		if err != nil && (!errors.As(err, &fe) || fe.Field != "slug") {
			t.Errorf("ValidateSlug(%q) error %v does not name the field", tc.slug, err)
		}
	}
}

func TestCreateRequestValidate(t *testing.T) {
	ok := CreateRequest{Slug: "kyiv", Name: "Kyiv", Visibility: "public"}
	for _, tc := range []struct {
		name   string
		mutate func(*CreateRequest)
		field  string
	}{
		{"valid", func(*CreateRequest) {}, ""},
		{"private", func(r *CreateRequest) { r.Visibility = "private" }, ""},
		{"topic", func(r *CreateRequest) { r.Topic = "line one\nline two" }, ""},
		{"bad slug", func(r *CreateRequest) { r.Slug = "K" }, "slug"},
		{"blank name", func(r *CreateRequest) { r.Name = "  " }, "name"},
		{"long name", func(r *CreateRequest) { r.Name = strings.Repeat("я", 201) }, "name"},
		{"control in name", func(r *CreateRequest) { r.Name = "a\x07b" }, "name"},
		{"invalid utf-8", func(r *CreateRequest) { r.Name = "a\xffb" }, "name"},
		{"visibility", func(r *CreateRequest) { r.Visibility = "Public" }, "visibility"},
		{"long topic", func(r *CreateRequest) { r.Topic = strings.Repeat("t", 1001) }, "topic"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := ok
			tc.mutate(&req)
			err := req.Validate()
			var fe *FieldError
			switch {
			case tc.field == "" && err != nil:
				t.Errorf("unexpected error %v", err)
			case tc.field != "" && (!errors.As(err, &fe) || fe.Field != tc.field):
				t.Errorf("error %v, want one naming %s", err, tc.field)
			}
		})
	}
}

func TestValidateRoomIDAndAlias(t *testing.T) {
	for _, tc := range []struct {
		roomID string
		ok     bool
	}{
		{"!abc:daarion.space", true}, {"!a:b", true},
		// Room version 12 (Synapse's default): the create event's hash, no server.
		{"!_75YbyNv4to3jz4uq1Zp12OEiojJeqY-m0AsW2ZAq1g", true},
		{"!_75YbyNv4to3jz4uq1Zp12OEiojJeqY-m0AsW2ZAq1", false}, {"!_75YbyNv4to3jz4uq1Zp12OEiojJeqY+m0AsW2ZAq1g", false},
		{"", false}, {"abc:server", false}, {"!noserver", false}, {"!a b:c", false}, {"!a/b:c", false},
		{"!" + strings.Repeat("a", 255) + ":c", false},
	} {
		if err := ValidateRoomID("roomId", id.RoomID(tc.roomID)); (err == nil) != tc.ok {
			t.Errorf("ValidateRoomID(%q) = %v, want ok=%v", tc.roomID, err, tc.ok)
		}
	}
	s := &Service{serverName: "daarion.space"}
	for _, tc := range []struct {
		alias, slug string
	}{
		{"#city_kyiv:daarion.space", "kyiv"},
		{"#city_energy-hub:daarion.space", "energy-hub"},
		{"#kyiv:daarion.space", ""},
		{"#city_kyiv:other.org", ""},
		{"#city_:daarion.space", ""},
		{"#city_Kyiv:daarion.space", ""},
		{"city_kyiv:daarion.space", ""},
		{"#city_kyiv", ""},
	} {
		slug, err := s.slugFromAlias("alias", id.RoomAlias(tc.alias))
		if slug != tc.slug || (tc.slug == "") != (err != nil) {
			t.Errorf("slugFromAlias(%q) = %q, %v; want %q", tc.alias, slug, err, tc.slug)
		}
	}
}

func TestCreateRoomBodyValidation(t *testing.T) {
	for _, tc := range []struct {
		name  string
		body  createRoomBody
		field string
	}{
		{"empty is fine", createRoomBody{}, ""},
		{"preset", createRoomBody{Preset: "open"}, "preset"},
		{"visibility", createRoomBody{Visibility: "all"}, "visibility"},
		{"alias with colon", createRoomBody{RoomAliasName: "a:b"}, "room_alias_name"},
		{"city alias", createRoomBody{RoomAliasName: "city_kyiv"}, "room_alias_name"},
		{"state without type", createRoomBody{InitialState: []stateEvent{{Content: []byte(`{}`)}}}, "initial_state[0].type"},
		{"state content not object", createRoomBody{InitialState: []stateEvent{{Type: "m.x", Content: []byte(`[]`)}}}, "initial_state[0].content"},
		{"power levels not object", createRoomBody{PowerLevelContentOverride: []byte(`5`)}, "power_level_content_override"},
		{"power levels wrong type", createRoomBody{PowerLevelContentOverride: []byte(`{"users_default":"x"}`)}, "power_level_content_override"},
		{"creation content not object", createRoomBody{CreationContent: []byte(`"x"`)}, "creation_content"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.body.toRequest()
			var fe *FieldError
			if tc.field == "" && err != nil {
				t.Errorf("unexpected error %v", err)
			} else if tc.field != "" && (!errors.As(err, &fe) || fe.Field != tc.field) {
				t.Errorf("error %v, want one naming %s", err, tc.field)
			}
		})
	}
}
