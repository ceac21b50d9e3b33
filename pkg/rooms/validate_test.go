package rooms

import (
	"errors"
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/identity"
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
		var fe *identity.FieldError
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
			var fe *identity.FieldError
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
		// What a homeserver cannot sign (canonical JSON) is a 400 here, not
		// the homeserver's 500 (Dendrite) after the room exists.
		{"a fraction", createRoomBody{CreationContent: []byte(`{"x":1.5}`)}, "creation_content"},
		{"an exponent", createRoomBody{InitialState: []stateEvent{{Type: "m.x", Content: []byte(`{"n":1e3}`)}}}, "initial_state[0].content"},
		{"minus zero", createRoomBody{CreationContent: []byte(`{"x":-0}`)}, "creation_content"},
		{"past 2^53-1", createRoomBody{CreationContent: []byte(`{"x":9007199254740992}`)}, "creation_content"},
		{"2^53-1 is fine", createRoomBody{CreationContent: []byte(`{"x":9007199254740991,"y":-9007199254740991}`)}, ""},
		{"a key with a control character", createRoomBody{InitialState: []stateEvent{{Type: "m.x", Content: []byte(`{"a":1}`)}}}, "initial_state[0].content"},
		{"a key with a quote", createRoomBody{CreationContent: []byte(`{"a"b":1}`)}, "creation_content"},
		{"a value with a quote is fine", createRoomBody{CreationContent: []byte(`{"ab":"a\"b\\c\n"}`)}, ""},
		{"a nested key", createRoomBody{PowerLevelContentOverride: []byte(`{"events":{"m.x\\y":50}}`)}, "power_level_content_override"},
		// Types and state keys the log can index as they are.
		{"NUL in a type", createRoomBody{InitialState: []stateEvent{{Type: "m.\x00x", Content: []byte(`{}`)}}}, "initial_state[0].type"},
		{"a type past 255 bytes", createRoomBody{InitialState: []stateEvent{{Type: strings.Repeat("t", 256), Content: []byte(`{}`)}}}, "initial_state[0].type"},
		{"a newline in a state key", createRoomBody{InitialState: []stateEvent{{Type: "m.x", StateKey: ptr("a\nb"), Content: []byte(`{}`)}}}, "initial_state[0].state_key"},
		// Power levels that would lock the bot out of its own room.
		{"the bot below 100", createRoomBody{PowerLevelContentOverride: []byte(`{"users":{"@bot:daarion.test":50}}`)}, "power_level_content_override.users"},
		{"users without the bot", createRoomBody{PowerLevelContentOverride: []byte(`{"users":{"@alice:daarion.test":100}}`)}, "power_level_content_override.users"},
		{"a users key that is no user id", createRoomBody{PowerLevelContentOverride: []byte(`{"users":{"nobody":50}}`)}, "power_level_content_override.users"},
		{"state events past the bot", createRoomBody{PowerLevelContentOverride: []byte(`{"state_default":101}`)}, "power_level_content_override.state_default"},
		{"an event past the bot", createRoomBody{PowerLevelContentOverride: []byte(`{"events":{"m.room.name":150}}`)}, "power_level_content_override.events.m.room.name"},
		{"others at 100 is fine", createRoomBody{PowerLevelContentOverride: []byte(`{"users":{"@bot:daarion.test":100,"@alice:daarion.test":100},"ban":100}`)}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.body.toRequest("@bot:daarion.test")
			var fe *identity.FieldError
			if tc.field == "" && err != nil {
				t.Errorf("unexpected error %v", err)
			} else if tc.field != "" && (!errors.As(err, &fe) || fe.Field != tc.field) {
				t.Errorf("error %v, want one naming %s", err, tc.field)
			}
		})
	}
}
