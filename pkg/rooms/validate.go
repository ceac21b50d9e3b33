package rooms

import (
	"fmt"
	"github.com/daarion/matrix-bridge/pkg/identity"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"maunium.net/go/mautrix/id"
)

// Slug rules: lower-case letters, digits, '-' and '_', starting with a letter
// or digit, 1 to 64 characters. The alias #city_<slug>:<server> then stays
// well inside Matrix's 255-byte limit.
var slugRegex = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

const (
	maxNameRunes  = 200
	maxTopicRunes = 1000
)

// ValidateSlug checks a city room slug.
func ValidateSlug(field, slug string) error {
	if !slugRegex.MatchString(slug) {
		return &identity.FieldError{Field: field, Problem: "must be 1-64 lower-case letters, digits, '-' or '_', starting with a letter or digit"}
	}
	return nil
}

func validateText(field, value string, required bool, maxRunes int) error {
	switch {
	case required && strings.TrimSpace(value) == "":
		return &identity.FieldError{Field: field, Problem: "is required"}
	case !utf8.ValidString(value):
		return &identity.FieldError{Field: field, Problem: "must be valid UTF-8"}
	case utf8.RuneCountInString(value) > maxRunes:
		return &identity.FieldError{Field: field, Problem: fmt.Sprintf("must be at most %d characters", maxRunes)}
	case strings.ContainsFunc(value, func(r rune) bool { return unicode.IsControl(r) && r != '\n' && r != '\t' }):
		return &identity.FieldError{Field: field, Problem: "must not contain control characters"}
	}
	return nil
}

// ValidateVisibility checks a visibility value.
func ValidateVisibility(field, v string) error {
	if v != "public" && v != "private" {
		return &identity.FieldError{Field: field, Problem: `must be "public" or "private"`}
	}
	return nil
}

// ValidateRoomID checks a Matrix room id: !opaque:server (room versions 1 to
// 11), or, from room version 12 (MSC4291, Synapse's default since 1.136), !
// and the create event's reference hash in unpadded URL-safe base64, with no
// server part.
func ValidateRoomID(field string, roomID id.RoomID) error {
	s := string(roomID)
	if len(s) > 255 || !strings.HasPrefix(s, "!") || strings.ContainsAny(s, " \x00/") || !utf8.ValidString(s) ||
		!(strings.Contains(s[1:], ":") && len(s) >= 4 || isRoomIDHash(s[1:])) {
		return &identity.FieldError{Field: field, Problem: "must be a Matrix room id such as !abc:example.org (or, from room version 12, ! and a 43-character hash)"}
	}
	return nil
}

// isRoomIDHash reports whether s is a room version 12 room id's opaque part:
// a SHA-256 in unpadded URL-safe base64.
func isRoomIDHash(s string) bool {
	if len(s) != 43 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// parseAlias checks a room alias (#local:server).
func parseAlias(field string, alias id.RoomAlias) (localpart, server string, err error) {
	s := string(alias)
	local, srv, ok := strings.Cut(strings.TrimPrefix(s, "#"), ":")
	if len(s) > 255 || !strings.HasPrefix(s, "#") || !ok || local == "" || srv == "" || strings.ContainsAny(s, " \x00") {
		return "", "", &identity.FieldError{Field: field, Problem: "must be a Matrix room alias such as #city_kyiv:example.org"}
	}
	return local, srv, nil
}
