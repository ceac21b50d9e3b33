package identity

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"maunium.net/go/mautrix/id"
)

func checkEntity(t *testing.T, in string, e Entity) {
	t.Helper()
	if e.ID == "" || e.UserID == "" {
		t.Fatalf("%q gives an empty entity %+v", in, e)
	}
	if _, _, err := e.UserID.Parse(); err != nil {
		t.Errorf("%q gives user id %q: %v", in, e.UserID, err)
	}
	prefix := map[Kind]string{KindAgent: "agent:", KindHuman: "user:", KindBridge: "bridge:", KindRemote: "matrix:"}[e.Kind]
	if prefix == "" || !strings.HasPrefix(e.ID, prefix) {
		t.Errorf("%q gives kind %q with id %q", in, e.Kind, e.ID)
	}
}

func FuzzMapper(f *testing.F) {
	for _, s := range []string{
		"agent:sofia", "agent:helper.v2", "agent:", "agent:Sofia", "agent:so fia", "agent:софія", "agent:a/b=c+d",
		"user:alice", "user:agent_x", "user:daarion-bot", "user:", "user:a:b",
		"bridge:bot", "bridge:other", "matrix:@bob:other.org", "matrix:@agent_x:daarion.space", "matrix:@daarion-bot:daarion.space",
		"matrix:bob", "matrix:@:s", "matrix:@x:daarion.space:8448", "robot:x", "sofia", "",
		"@alice:daarion.space", "@agent_sofia:daarion.space", "@agent_:daarion.space", "@Alice:daarion.space", "@daarion-bot:daarion.space",
		"@bob:other.org", "@", "@:", "@a:", "@a\x00:daarion.space", "@\xff:daarion.space",
		"agent:" + strings.Repeat("a", 230), "matrix:@" + strings.Repeat("a", 250) + ":s",
	} {
		f.Add(s)
	}
	m := Mapper{ServerName: "daarion.space", BotLocalpart: "daarion-bot"}
	f.Fuzz(func(t *testing.T, s string) {
		// Parse: a DAARION id.
		e, err := m.Parse("who", s)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != "who" || fe.Problem == "" {
				t.Fatalf("Parse(%q) error %v is not a FieldError naming the field", s, err)
			}
		} else {
			checkEntity(t, s, e)
			if len(e.UserID) > maxUserIDBytes {
				t.Errorf("Parse(%q) gives a %d-byte user id", s, len(e.UserID))
			}
			// Round trip: the Matrix id names the same entity.
			if back := m.FromMatrix(e.UserID); back != e && e.Kind != KindRemote {
				t.Errorf("Parse(%q) = %+v, but FromMatrix(%s) = %+v", s, e, e.UserID, back)
			}
			// agent: and user: ids make valid local user ids (matrix: ids
			// name existing users as they are, historical ones included).
			if (e.Kind == KindAgent || e.Kind == KindHuman) && !strings.HasPrefix(s, "matrix:") {
				local, server, _ := e.UserID.Parse()
				if server != m.ServerName || !localpartRegex.MatchString(local) || !utf8.ValidString(string(e.UserID)) {
					t.Errorf("Parse(%q) gives %s, not a local user", s, e.UserID)
				}
				if e.Kind == KindHuman && (strings.HasPrefix(local, "agent_") || local == m.BotLocalpart) {
					t.Errorf("Parse(%q) gives a human in the agents' or bot's namespace: %s", s, e.UserID)
				}
			}
		}

		// ParseUser: a DAARION id or a Matrix user id.
		u, err := m.ParseUser("who", s)
		switch {
		case err != nil:
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != "who" {
				t.Fatalf("ParseUser(%q) error %v is not a FieldError naming the field", s, err)
			}
		case strings.HasPrefix(s, "@"):
			checkEntity(t, s, u)
			if u != m.FromMatrix(id.UserID(s)) || string(u.UserID) != s {
				t.Errorf("ParseUser(%q) = %+v", s, u)
			}
		default:
			if u != e {
				t.Errorf("ParseUser(%q) = %+v, Parse = %+v", s, u, e)
			}
		}

		// FromMatrix: any user id, even a malformed one, is named.
		fm := m.FromMatrix(id.UserID(s))
		if fm.ID == "" || fm.UserID != id.UserID(s) {
			t.Fatalf("FromMatrix(%q) = %+v", s, fm)
		}
		if _, server, err := id.UserID(s).Parse(); (err != nil || server != m.ServerName) != (fm.Kind == KindRemote) {
			t.Errorf("FromMatrix(%q) = %+v", s, fm)
		}
		// Its DAARION id, when it parses, names the same user.
		if back, err := m.Parse("who", fm.ID); err == nil && back != fm {
			t.Errorf("FromMatrix(%q) = %+v, but Parse(%q) = %+v", s, fm, fm.ID, back)
		}
	})
}
