package rooms

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/config"
	"github.com/daarion/matrix-bridge/pkg/identity"
	"github.com/daarion/matrix-bridge/pkg/internalapi"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

const fuzzServer = "daarion.space"

// fuzzBot is the bridge bot of the fuzzed requests.
const fuzzBot = id.UserID("@daarion-bot:" + fuzzServer)

// pgSafe reports whether PostgreSQL can store s in a text column (no NUL,
// valid UTF-8); lib/pq passes strings through and the server refuses others.
func pgSafe(s string) bool { return utf8.ValidString(s) && !strings.ContainsRune(s, 0) }

// fieldErrors returns the FieldErrors err is made of (errors.Join trees
// included); ok is false when any part is something else.
func fieldErrors(err error) (fields []string, ok bool) {
	var fe *identity.FieldError
	if errors.As(err, &fe) && err == error(fe) {
		return []string{fe.Field}, fe.Field != "" && fe.Problem != ""
	}
	joined, isJoin := err.(interface{ Unwrap() []error })
	if !isJoin {
		return nil, false
	}
	for _, e := range joined.Unwrap() {
		f, ok := fieldErrors(e)
		if !ok {
			return nil, false
		}
		fields = append(fields, f...)
	}
	return fields, len(fields) > 0
}

// checkAnswer: the answer to a bad request is a 4xx JSON error naming a
// field; nothing is ever a 5xx.
type errorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
	Field   string `json:"field"`
}

func checkAnswer(t *testing.T, rec *httptest.ResponseRecorder) errorBody {
	t.Helper()
	if rec.Code >= 500 {
		t.Fatalf("answered %d: %s", rec.Code, rec.Body)
	}
	var eb errorBody
	if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil {
		t.Fatalf("answered %d with a body that is not JSON: %q", rec.Code, rec.Body)
	}
	if rec.Code != http.StatusOK && (eb.Error == "" || eb.Message == "") {
		t.Errorf("answered %d without error and message: %s", rec.Code, rec.Body)
	}
	return eb
}

// fuzzDecode decodes body as a handler does. A rejection must be a 4xx.
func fuzzDecode(t *testing.T, body []byte, dst any) bool {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/internal/matrix/create-room", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	err := internalapi.DecodeJSON(req, dst)
	if err == nil {
		return true
	}
	internalapi.WriteError(rec, req, err)
	if rec.Code != http.StatusBadRequest && rec.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("decode refused with %d", rec.Code)
	}
	if eb := checkAnswer(t, rec); eb.Error != "M_NOT_JSON" && eb.Error != "M_BAD_JSON" {
		t.Errorf("decode refused with %s", eb.Error)
	}
	return false
}

// checkFieldError: err is made of FieldErrors, and internalapi.WriteError answers it
// with a 400 naming one of them.
func checkFieldError(t *testing.T, err error, allowed ...string) []string {
	t.Helper()
	fields, ok := fieldErrors(err)
	if !ok {
		t.Fatalf("error %v (%T) is not made of FieldErrors", err, err)
	}
	for _, f := range fields {
		base, _, _ := strings.Cut(f, "[")
		if !slices.Contains(allowed, base) {
			base, _, _ = strings.Cut(base, ".") // a field within one: power_level_content_override.users
		}
		if !slices.Contains(allowed, base) {
			t.Errorf("error names field %q", f)
		}
	}
	rec := httptest.NewRecorder()
	internalapi.WriteError(rec, httptest.NewRequest(http.MethodPost, "/", nil), err)
	if eb := checkAnswer(t, rec); rec.Code != http.StatusBadRequest || eb.Error != "M_INVALID_PARAM" || !slices.Contains(fields, eb.Field) {
		t.Errorf("%v answered %d %s field %q", err, rec.Code, eb.Error, eb.Field)
	}
	return fields
}

// textOK is validateText's rule, written out independently.
func textOK(s string, required bool, maxRunes int) bool {
	if required && strings.TrimSpace(s) == "" || !utf8.ValidString(s) || utf8.RuneCountInString(s) > maxRunes {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) && r != '\n' && r != '\t' {
			return false
		}
	}
	return true
}

// slugOK is the slug rule, written out independently.
func slugOK(s string) bool {
	if len(s) < 1 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '-' || c == '_') && i > 0:
		default:
			return false
		}
	}
	return true
}

func FuzzCreateRoomBody(f *testing.F) {
	for _, body := range []string{
		`{}`,
		`{"name":"Energy Union","topic":"Coordination","visibility":"private","preset":"private_chat","room_alias_name":"energy-union"}`,
		`{"name":"x","initial_state":[{"type":"m.room.join_rules","state_key":"","content":{"join_rule":"invite"}},{"type":"m.room.history_visibility","content":{"history_visibility":"joined"}}]}`,
		`{"power_level_content_override":{"users":{"@agent_sofia:daarion.space":100},"events":{"m.room.name":50},"users_default":0}}`,
		`{"creation_content":{"m.federate":false,"type":"m.space"}}`,
		`{"visibility":"public","preset":"public_chat","room_alias_name":"city_kyiv"}`,
		`{"room_alias_name":"a:b"}`,
		`{"room_alias_name":"a\u0000b"}`,
		`{"name":"a\u0007b","topic":"` + strings.Repeat("t", 1001) + `"}`,
		`{"initial_state":[{"content":{}}]}`,
		`{"initial_state":[{"type":"m.x","content":null}]}`,
		`{"initial_state":[{"type":"m.x","content":[]}]}`,
		`{"initial_state":null,"power_level_content_override":null,"creation_content":null}`,
		`{"power_level_content_override":{"users_default":"x"}}`,
		`{"power_level_content_override":{"users":{"@a:s":1e400}}}`,
		`{"power_level_content_override":{"events":{"m.x":"50"},"notifications":{"room":"50"}}}`,
		`{"creation_content":"x"}`,
		`{"name":5}`,
		`{"unknown":1}`,
	} {
		f.Add([]byte(body))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var b createRoomBody
		if !fuzzDecode(t, body, &b) {
			return
		}
		req, err := b.toRequest(fuzzBot)
		if err != nil {
			if req != nil {
				t.Errorf("refused, yet returned a request")
			}
			checkFieldError(t, err, "name", "topic", "visibility", "preset", "room_alias_name", "initial_state", "power_level_content_override", "creation_content")
			return
		}
		switch {
		case !textOK(req.Name, false, maxNameRunes) || !textOK(req.Topic, false, maxTopicRunes):
			t.Errorf("accepted name %q / topic %q", req.Name, req.Topic)
		case req.Visibility != "" && req.Visibility != "public" && req.Visibility != "private":
			t.Errorf("accepted visibility %q", req.Visibility)
		case req.Preset != "" && req.Preset != "private_chat" && req.Preset != "public_chat" && req.Preset != "trusted_private_chat":
			t.Errorf("accepted preset %q", req.Preset)
		case strings.ContainsAny(req.RoomAliasName, ": #\x00") || len(req.RoomAliasName) > 200 || strings.HasPrefix(req.RoomAliasName, config.CityAliasPrefix):
			t.Errorf("accepted room_alias_name %q", req.RoomAliasName)
		case len(req.InitialState) != len(b.InitialState):
			t.Errorf("%d initial state events, the body has %d", len(req.InitialState), len(b.InitialState))
		case (req.PowerLevelOverride != nil) != (len(b.PowerLevelContentOverride) > 0):
			t.Errorf("power level override dropped or invented")
		}
		// What goes to the homeserver encodes, with each state event's
		// content an object: an encoding failure would be a 5xx.
		raw, err := json.Marshal(req)
		if err != nil {
			t.Fatalf("the createRoom request does not encode: %v", err)
		}
		var sent struct {
			InitialState []struct {
				Type     string                     `json:"type"`
				StateKey *string                    `json:"state_key"`
				Content  map[string]json.RawMessage `json:"content"`
			} `json:"initial_state"`
		}
		if err = json.Unmarshal(raw, &sent); err != nil || len(sent.InitialState) != len(b.InitialState) {
			t.Fatalf("sent request %s does not hold the initial state (%v)", raw, err)
		}
		for i, st := range sent.InitialState {
			if st.Type != b.InitialState[i].Type || st.StateKey == nil || st.Content == nil {
				t.Errorf("initial_state[%d] sent as %+v", i, st)
			}
		}
	})
}

func FuzzCreateRequestValidate(f *testing.F) {
	f.Add("kyiv", "Kyiv", "public", "")
	f.Add("energy-hub_2", "Енергетичний хаб", "private", "line one\nline two\tend")
	f.Add("", "", "", "")
	f.Add("Kyiv", "  ", "Public", "t")
	f.Add("-x", "a\x07b", "public", "a\u0085b")
	f.Add(strings.Repeat("a", 64), strings.Repeat("я", 200), "private", strings.Repeat("t", 1000))
	f.Add(strings.Repeat("a", 65), strings.Repeat("я", 201), "private", strings.Repeat("t", 1001))
	f.Add("kyïv", "a\xffb", "public", "\u2028")
	f.Add("a_", "\u00a0", "public", "\x00")
	f.Fuzz(func(t *testing.T, slug, name, visibility, topic string) {
		req := CreateRequest{Slug: slug, Name: name, Visibility: visibility, Topic: topic}
		var want []string
		if !slugOK(slug) {
			want = append(want, "slug")
		}
		if !textOK(name, true, maxNameRunes) {
			want = append(want, "name")
		}
		if visibility != "public" && visibility != "private" {
			want = append(want, "visibility")
		}
		if !textOK(topic, false, maxTopicRunes) {
			want = append(want, "topic")
		}
		err := req.Validate()
		if err == nil {
			if len(want) > 0 {
				t.Fatalf("accepted %+v with bad %v", req, want)
			}
			svc := &Service{serverName: fuzzServer}
			alias := svc.CityAlias(slug)
			if len(alias) > 255 || !pgSafe(string(alias)) {
				t.Errorf("slug %q makes alias %q", slug, alias)
			}
			if got, err := svc.slugFromAlias("alias", alias); err != nil || got != slug {
				t.Errorf("alias %s gives back slug %q (%v)", alias, got, err)
			}
			return
		}
		got := checkFieldError(t, err, "slug", "name", "visibility", "topic")
		if !slices.Equal(got, want) {
			t.Errorf("%+v: fields %v refused, want %v", req, got, want)
		}
	})
}

func FuzzValidateIDs(f *testing.F) {
	for _, s := range []string{
		"!abc:daarion.space", "!a:b", "!a", "!:", "!a:", "abc:server", "!a b:c", "!a/b:c", "!a\x00:c", "!\xff:s",
		"!" + strings.Repeat("a", 252) + ":c", "#city_kyiv:daarion.space", "#city_:daarion.space", "#city_Kyiv:daarion.space",
		"#city_kyiv:other.org", "#kyiv:daarion.space", "#city_kyiv:daarion.space:8448", "#:", "kyiv", "energy-hub_2", "",
	} {
		f.Add(s)
	}
	svc := &Service{serverName: fuzzServer}
	f.Fuzz(func(t *testing.T, s string) {
		if err := ValidateRoomID("room_id", id.RoomID(s)); err == nil {
			// Room ids from paths and bodies go to the database as text
			// and to the homeserver in URLs.
			if len(s) < 4 || len(s) > 255 || s[0] != '!' || !strings.Contains(s[1:], ":") && len(s) != 44 ||
				strings.ContainsAny(s, " /") || !pgSafe(s) {
				t.Errorf("ValidateRoomID accepted %q", s)
			}
		} else {
			checkFieldError(t, err, "room_id")
		}
		if err := ValidateSlug("slug", s); (err == nil) != slugOK(s) {
			t.Errorf("ValidateSlug(%q) = %v", s, err)
		} else if err != nil {
			checkFieldError(t, err, "slug")
		}
		local, server, err := parseAlias("alias", id.RoomAlias(s))
		if err == nil {
			if local == "" || server == "" || "#"+local+":"+server != s || len(s) > 255 || strings.ContainsAny(s, " \x00") {
				t.Errorf("parseAlias(%q) = %q, %q", s, local, server)
			}
		} else {
			checkFieldError(t, err, "alias")
		}
		if slug, err := svc.slugFromAlias("alias", id.RoomAlias(s)); err == nil {
			if !slugOK(slug) || string(svc.CityAlias(slug)) != s {
				t.Errorf("slugFromAlias(%q) = %q", s, slug)
			}
		} else {
			checkFieldError(t, err, "alias")
		}
	})
}

// argChecker is a database logger that records query arguments PostgreSQL
// could not store; on SQLite the same query would succeed.
type argChecker struct {
	dbutil.DatabaseLogger
	mu  sync.Mutex
	bad []string
}

func (c *argChecker) QueryTiming(ctx context.Context, method, query string, args []any, nrows int, d time.Duration, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, a := range args {
		var s string
		switch v := a.(type) {
		case string:
			s = v
		case id.RoomID:
			s = string(v)
		case id.RoomAlias:
			s = string(v)
		default:
			continue
		}
		if !pgSafe(s) {
			c.bad = append(c.bad, s)
		}
	}
}

func (c *argChecker) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	bad := c.bad
	c.bad = nil
	return bad
}

// openFuzzStore opens a SQLite store whose queries are checked for
// arguments PostgreSQL would refuse, with a few city rooms in it.
func openFuzzStore(f *testing.F) (*Store, *argChecker) {
	tdb := testrig.NewTestDatabase(f, testrig.SQLite)
	db := testrig.OpenDatabase(f, tdb)
	store := NewStore(db)
	for i, slug := range []string{"a_b", "kyiv", "kyiv-2", "lviv", "odesa"} {
		cr := &CityRoom{Slug: slug, RoomID: id.RoomID("!" + slug + ":s"), Alias: id.RoomAlias("#city_" + slug + ":s"), Name: slug, Visibility: "public"}
		if _, err := store.Insert(context.Background(), cr); err != nil {
			f.Fatal(err)
		}
		if i%2 == 0 {
			if err := store.SetArchived(context.Background(), slug, true, ""); err != nil {
				f.Fatal(err)
			}
		}
	}
	checker := &argChecker{DatabaseLogger: dbutil.NoopLogger}
	db.Log = checker
	return store, checker
}

func FuzzListQuery(f *testing.F) {
	for _, q := range []string{
		"", "limit=2", "prefix=kyiv", "prefix=a_", "prefix=ky&limit=1&after=kyiv", "archived=true", "archived=0&limit=500",
		"after=lviv", "after=%FF", "after=%00", "after=K", "prefix=K", "prefix=%", "limit=0", "limit=501", "limit=-1",
		"limit=1e2", "archived=yes", "limit=2&limit=x", "prefix=%zz", "after=a%2Fb&prefix=", ";", "%", "a=1&&&b",
	} {
		f.Add(q)
	}
	store, checker := openFuzzStore(f)
	svc, err := NewService(store, nil, fuzzServer, config.Rooms{MetadataCacheTTL: config.NewDuration("5m")})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, rawQuery string) {
		req := httptest.NewRequest(http.MethodGet, "/internal/matrix/rooms", nil)
		req.URL.RawQuery = rawQuery
		rec := httptest.NewRecorder()
		internalapi.Errors(svc.handleList)(rec, req)
		if bad := checker.take(); len(bad) > 0 {
			t.Fatalf("query %q passed %q to the database, which PostgreSQL refuses (a 500 there)", rawQuery, bad)
		}
		eb := checkAnswer(t, rec)
		q := req.URL.Query()
		if rec.Code != http.StatusOK {
			if rec.Code != http.StatusBadRequest || eb.Error != "M_INVALID_PARAM" ||
				!slices.Contains([]string{"prefix", "archived", "limit", "after"}, eb.Field) {
				t.Errorf("answered %d %s field %q", rec.Code, eb.Error, eb.Field)
			}
			return
		}
		var resp struct {
			Rooms     []CityRoomJSON `json:"rooms"`
			NextAfter *string        `json:"next_after"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil || resp.Rooms == nil {
			t.Fatalf("200 body %s (%v)", rec.Body, err)
		}
		limit := defaultListLimit
		if raw := q.Get("limit"); raw != "" {
			limit, _ = strconv.Atoi(raw)
		}
		if len(resp.Rooms) > limit {
			t.Errorf("%d rooms for limit %d", len(resp.Rooms), limit)
		}
		after, prefix := q.Get("after"), q.Get("prefix")
		for i, r := range resp.Rooms {
			if r.Slug <= after || !strings.HasPrefix(r.Slug, prefix) || i > 0 && r.Slug <= resp.Rooms[i-1].Slug {
				t.Errorf("room %q out of order or filter (after %q, prefix %q)", r.Slug, after, prefix)
			}
			if archived, err := strconv.ParseBool(q.Get("archived")); err == nil && r.Archived != archived {
				t.Errorf("room %q archived=%v, filter %v", r.Slug, r.Archived, archived)
			}
		}
		if (resp.NextAfter != nil) != (len(resp.Rooms) == limit && limit > 0) ||
			resp.NextAfter != nil && *resp.NextAfter != resp.Rooms[len(resp.Rooms)-1].Slug {
			t.Errorf("next_after %v with %d rooms of %d", resp.NextAfter, len(resp.Rooms), limit)
		}
	})
}

// Regression (found by FuzzValidateIDs and FuzzListQuery): a room id or an
// after= that is not UTF-8, or holds NUL, reached PostgreSQL, which refused
// the query: the API answered 500. Both are 400s now, on both databases.
func TestRoomInputsThatCannotBeStored(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		svc, err := NewService(openStore(t, tdb), nil, fuzzServer, config.Rooms{MetadataCacheTTL: config.NewDuration("5m")})
		if err != nil {
			t.Fatal(err)
		}
		api, err := internalapi.New(internalapi.Options{Secret: "rooms-fuzz-secret-0123456789", Logger: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		svc.RegisterRoutes(api)
		for _, tc := range []struct{ method, path, field string }{
			{http.MethodGet, "/internal/matrix/rooms?after=%FF", "after"},
			{http.MethodGet, "/internal/matrix/rooms?after=a%00", "after"},
			{http.MethodPost, "/internal/matrix/rooms/%21%FF%3As/archive", "roomId"},
			{http.MethodPost, "/internal/matrix/rooms/%21%FF%3As/unarchive", "roomId"},
			{http.MethodGet, "/internal/matrix/rooms/%21a%C0%3As", "roomId"},
		} {
			req := httptest.NewRequest(tc.method, tc.path, nil)
			req.Header.Set(internalapi.HeaderToken, "rooms-fuzz-secret-0123456789")
			rec := httptest.NewRecorder()
			api.ServeHTTP(rec, req)
			if eb := checkAnswer(t, rec); rec.Code != http.StatusBadRequest || eb.Field != tc.field {
				t.Errorf("%s %s: %d %s field %q, want 400 naming %s", tc.method, tc.path, rec.Code, eb.Error, eb.Field, tc.field)
			}
		}
	})
}
