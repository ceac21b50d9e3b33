package internalapi

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"
)

// The request bodies of the internal API's endpoints, as their handlers
// declare them (pkg/rooms/http.go, pkg/messaging/send.go and membership.go,
// pkg/delivery/webhook/http.go). The packages fuzz their own types too;
// these copies let the decoder be fuzzed across every shape at once.
type (
	fuzzCityRoomBody struct {
		Slug       string `json:"slug"`
		Name       string `json:"name"`
		Visibility string `json:"visibility"`
		Topic      string `json:"topic"`
	}
	fuzzCreateRoomBody struct {
		Name          string `json:"name"`
		Topic         string `json:"topic"`
		Visibility    string `json:"visibility"`
		RoomAliasName string `json:"room_alias_name"`
		Preset        string `json:"preset"`
		InitialState  []struct {
			Type     string          `json:"type"`
			StateKey *string         `json:"state_key"`
			Content  json.RawMessage `json:"content"`
		} `json:"initial_state"`
		PowerLevelContentOverride json.RawMessage `json:"power_level_content_override"`
		CreationContent           json.RawMessage `json:"creation_content"`
	}
	fuzzArchiveBody struct {
		Reason string `json:"reason"`
	}
	fuzzSendBody struct {
		RoomID         id.RoomID       `json:"room_id"`
		CitySlug       string          `json:"city_slug"`
		Sender         string          `json:"sender"`
		SenderMatrixID id.UserID       `json:"sender_matrix_id"`
		MsgType        string          `json:"msgtype"`
		Body           string          `json:"body"`
		Format         string          `json:"format"`
		FormattedBody  string          `json:"formatted_body"`
		RelatesTo      json.RawMessage `json:"relates_to"`
		Mentions       *struct {
			UserIDs []id.UserID `json:"user_ids"`
			Room    bool        `json:"room"`
		} `json:"mentions"`
		URL      string          `json:"url"`
		Info     json.RawMessage `json:"info"`
		FileName string          `json:"filename"`
	}
	fuzzReactionBody struct {
		RoomID          id.RoomID `json:"room_id"`
		CitySlug        string    `json:"city_slug"`
		EventID         string    `json:"event_id"`
		Reactor         string    `json:"reactor"`
		ReactorMatrixID id.UserID `json:"reactor_matrix_id"`
		Emoji           string    `json:"emoji"`
	}
	fuzzMembershipBody struct {
		RoomID          id.RoomID `json:"room_id"`
		CitySlug        string    `json:"city_slug"`
		UserID          string    `json:"user_id"`
		Inviter         string    `json:"inviter"`
		InviterMatrixID id.UserID `json:"inviter_matrix_id"`
		Kicker          string    `json:"kicker"`
		KickerMatrixID  id.UserID `json:"kicker_matrix_id"`
		Reason          string    `json:"reason"`
	}
	fuzzSubscribeBody struct {
		RoomID     string   `json:"room_id"`
		CitySlug   string   `json:"city_slug"`
		WebhookURL string   `json:"webhook_url"`
		Events     []string `json:"events"`
	}
	fuzzCounts struct {
		Limit  int     `json:"limit"`
		Size   uint32  `json:"size"`
		Ratio  float64 `json:"ratio"`
		Flag   *bool   `json:"flag"`
		Nested struct {
			Deep map[string][]int `json:"deep"`
		} `json:"nested"`
	}
)

// fuzzShapes makes a fresh destination of each shape.
var fuzzShapes = []func() any{
	func() any { return new(fuzzCityRoomBody) },
	func() any { return new(fuzzCreateRoomBody) },
	func() any { return new(map[string]*string) }, // PUT /rooms/{roomId}/name|topic|avatar
	func() any { return new(fuzzArchiveBody) },
	func() any { return new(fuzzSendBody) },
	func() any { return new(fuzzReactionBody) },
	func() any { return new(fuzzMembershipBody) },
	func() any { return new(fuzzSubscribeBody) },
	func() any { return new(fuzzCounts) },
}

const (
	fuzzToken     = "fuzz-internal-secret-0123456789"
	fuzzBodyLimit = 2048
)

// decodeErrorBody is the shape of every internal API error.
type decodeErrorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
	Field   string `json:"field"`
}

func FuzzDecodeJSON(f *testing.F) {
	seeds := []struct {
		shape int
		ct    string
		body  string
	}{
		{0, "application/json", `{"slug":"kyiv","name":"Kyiv","visibility":"public","topic":"Київ"}`},
		{1, "", `{"name":"x","initial_state":[{"type":"m.room.join_rules","state_key":"","content":{"join_rule":"invite"}}],"power_level_content_override":{"users":{"@a:s":100}},"creation_content":{"m.federate":false}}`},
		{2, "application/json; charset=utf-8", `{"name":"New name"}`},
		{2, "", `{"name":null}`},
		{2, "", `null`},
		{3, "", `{"reason":"done"}`},
		{4, "application/json", `{"room_id":"!r:s","sender":"agent:sofia","body":"hi","relates_to":{"m.in_reply_to":{"event_id":"$x"}},"mentions":{"user_ids":["@a:s"],"room":true}}`},
		{4, "", `{"city_slug":"kyiv","sender_matrix_id":"@a:s","msgtype":"m.image","body":"cat.png","url":"mxc://s/a","info":{"size":10}}`},
		{5, "", `{"room_id":"!r:s","event_id":"$e","reactor":"agent:sofia","emoji":"👍"}`},
		{6, "", `{"room_id":"!r:s","user_id":"@bob:s","reason":"spam"}`},
		{7, "", `{"room_id":"*","webhook_url":"https://hooks.example/x","events":["messaging.message.created"]}`},
		{8, "", `{"limit":5,"size":7,"ratio":0.5,"flag":true,"nested":{"deep":{"a":[1,2]}}}`},
		{0, "text/plain", `{"slug":"kyiv"}`},
		{0, "application/json; charset", `{}`},
		{0, "", ``},
		{0, "", `   `},
		{0, "", `{"slug":"kyiv"`},
		{0, "", `{"slug":"kyiv"} {}`},
		{0, "", `{"slug":"kyiv"} x`},
		{0, "", `[]`},
		{0, "", `"x"`},
		{0, "", `{"slug":5}`},
		{0, "", `{"sluggish":"x"}`},
		{0, "", `{"Slug":"case-insensitive match"}`},
		{4, "", `{"mentions":{"user_ids":[1]}}`},
		{4, "", `{"mentions":{"extra":1}}`},
		{7, "", `{"events":"x"}`},
		{8, "", `{"limit":1e3}`},
		{8, "", `{"size":-1}`},
		{8, "", `{"limit":99999999999999999999}`},
		{8, "", `{"nested":{"deep":{"a":["x"]}}}`},
		{2, "", `{"name":5}`},
		{0, "", "{\"slug\":\"\xff\"}"},
		{0, "", `{"slug":"\ud800"}`},
		{0, "", `{"slug":"` + strings.Repeat("x", 3000) + `"}`},
	}
	for _, s := range seeds {
		f.Add(s.shape, s.ct, []byte(s.body), false)
	}
	f.Add(0, "", []byte(`{"slug":"`+strings.Repeat("x", 3000)+`"}`), true)
	f.Add(0, "", []byte(`{"slug":"x"}`+strings.Repeat(" ", 3000)), true)

	api, err := New(Options{Secret: fuzzToken, MaxBodyBytes: fuzzBodyLimit, Logger: zerolog.Nop()})
	if err != nil {
		f.Fatal(err)
	}
	var decoded any
	var decodedOK bool
	for i, shape := range fuzzShapes {
		api.Handle(http.MethodPost, fmt.Sprintf("/decode/%d", i), ScopeRooms, func(w http.ResponseWriter, r *http.Request) error {
			decoded = shape()
			err := DecodeJSON(r, decoded)
			if decodedOK = err == nil; decodedOK {
				WriteJSON(w, http.StatusOK, decoded)
			}
			return err
		})
	}

	f.Fuzz(func(t *testing.T, shape int, contentType string, body []byte, chunked bool) {
		if shape < 0 {
			shape = -shape
		}
		shape %= len(fuzzShapes)
		if strings.ContainsAny(contentType, "\r\n") {
			return // would end the header early: not the body under test
		}
		var raw bytes.Buffer
		fmt.Fprintf(&raw, "POST /decode/%d HTTP/1.1\r\nHost: api\r\n%s: %s\r\n", shape, HeaderToken, fuzzToken)
		if contentType != "" {
			fmt.Fprintf(&raw, "Content-Type: %s\r\n", contentType)
		}
		if chunked { // no Content-Length: the limit is met while reading
			raw.WriteString("Transfer-Encoding: chunked\r\n\r\n")
			if len(body) > 0 {
				fmt.Fprintf(&raw, "%x\r\n%s\r\n", len(body), body)
			}
			raw.WriteString("0\r\n\r\n")
		} else {
			fmt.Fprintf(&raw, "Content-Length: %d\r\n\r\n%s", len(body), body)
		}
		req, err := http.ReadRequest(bufio.NewReader(&raw))
		if err != nil {
			return // the server refuses it before any handler
		}
		ct := req.Header.Get("Content-Type")
		decoded, decodedOK = nil, false
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, req)

		if rec.Code >= 500 {
			t.Fatalf("answered %d: %s", rec.Code, rec.Body)
		}
		if decodedOK {
			if rec.Code != http.StatusOK {
				t.Fatalf("decoded, yet answered %d", rec.Code)
			}
			if len(body) > fuzzBodyLimit || !json.Valid(body) {
				t.Errorf("accepted %d bytes that are not one JSON value within the limit", len(body))
			}
			if mt, _, err := mime.ParseMediaType(ct); ct != "" && (err != nil || mt != "application/json") {
				t.Errorf("accepted Content-Type %q", ct)
			}
			checkRoundTrip(t, decoded, fuzzShapes[shape]())
			return
		}
		if decoded == nil && rec.Code != http.StatusRequestEntityTooLarge {
			t.Fatalf("the handler did not run: %d %s", rec.Code, rec.Body)
		}
		var eb decodeErrorBody
		if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb.Error == "" || eb.Message == "" {
			t.Fatalf("error answer %d is not {error, message}: %q", rec.Code, rec.Body)
		}
		switch rec.Code {
		case http.StatusUnsupportedMediaType:
			mt, _, err := mime.ParseMediaType(ct)
			if eb.Error != ErrNotJSON || ct == "" || (err == nil && mt == "application/json") {
				t.Errorf("415 %s for Content-Type %q", eb.Error, ct)
			}
		case http.StatusRequestEntityTooLarge:
			if eb.Error != ErrTooLarge || len(body) <= fuzzBodyLimit {
				t.Errorf("413 %s for %d bytes (limit %d)", eb.Error, len(body), fuzzBodyLimit)
			}
		case http.StatusBadRequest:
			switch eb.Error {
			case ErrNotJSON:
				if len(body) <= fuzzBodyLimit && json.Valid(body) {
					t.Errorf("valid JSON %q refused as M_NOT_JSON: %s", body, eb.Message)
				}
			case ErrBadJSON:
				// A type problem: the body starts with a JSON value (what
				// follows it is not looked at then).
				var v any
				if json.NewDecoder(bytes.NewReader(body)).Decode(&v) != nil {
					t.Errorf("invalid JSON refused as M_BAD_JSON, not M_NOT_JSON: %s", eb.Message)
				}
				// A struct's field of the wrong type is named. (Known gap,
				// not fixed here: encoding/json does not name a map value of
				// the wrong type, so PUT /rooms/{roomId}/name with
				// {"name": 5} answers "request body must be a string".)
				trimmed := bytes.TrimSpace(body)
				_, isMap := fuzzShapes[shape]().(*map[string]*string)
				if len(trimmed) > 0 && trimmed[0] == '{' && eb.Field == "" && !isMap &&
					eb.Message != ": unknown field" { // the unknown key is "" itself
					t.Errorf("M_BAD_JSON for an object does not name the field: %s", eb.Message)
				}
				if eb.Field != "" && !strings.HasPrefix(eb.Message, eb.Field+": ") {
					t.Errorf("message %q does not start with its field %q", eb.Message, eb.Field)
				}
			default:
				t.Errorf("400 with error %s", eb.Error)
			}
		default:
			t.Errorf("answered %d %s", rec.Code, eb.Error)
		}
	})
}

// checkRoundTrip: what DecodeJSON accepted encodes to JSON that decodes
// (strictly, again) to the same value.
func checkRoundTrip(t *testing.T, decoded, fresh any) {
	t.Helper()
	first, err := json.Marshal(decoded)
	if err != nil {
		t.Fatalf("decoded value does not encode: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(first))
	dec.DisallowUnknownFields()
	if err = dec.Decode(fresh); err != nil {
		t.Fatalf("re-encoded %s does not decode: %v", first, err)
	}
	second, err := json.Marshal(fresh)
	if err != nil || !bytes.Equal(first, second) {
		t.Errorf("round trip differs:\n%s\n%s", first, second)
	}
	if reflect.TypeOf(decoded) != reflect.TypeOf(fresh) {
		t.Errorf("decoded into %T, not %T", decoded, fresh)
	}
}
