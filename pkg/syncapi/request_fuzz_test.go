package syncapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/internalapi"
)

func FuzzSyncToken(f *testing.F) {
	for _, s := range []string{"s0", "s1", "s42", "s9223372036854775807", "s9223372036854775808", "s-1", "s+1", "s01", "s00",
		"s", "", "0", "S1", "s1 ", "s１", "s99999999999999999999", "t1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, token string) {
		pos, err := ParseToken(token)
		if err != nil {
			if pos != 0 {
				t.Errorf("refused %q, yet returned %d", token, pos)
			}
			return
		}
		// Only the canonical form parses: it is what Token makes.
		if pos < 0 || Token(pos) != token {
			t.Errorf("ParseToken(%q) = %d, which Token writes as %q", token, pos, Token(pos))
		}
		if back, err := ParseToken(Token(pos)); err != nil || back != pos {
			t.Errorf("Token(%d) does not parse back: %d, %v", pos, back, err)
		}
	})
}

const fuzzMaxTimeout = 30 * time.Second

func FuzzSyncRequest(f *testing.F) {
	for _, tc := range []struct{ query, filter string }{
		{"since=s0&timeout=0", ""},
		{"since=s42&timeout=1000", `{"rooms":["!a:daarion.test"],"types":["m.room.message","m.typing"],"limit":100}`},
		{"timeout=99999999999999999999", `{"types":["m.room.*","*"]}`},
		{"timeout=-99999999999999999999", `{"rooms":null,"types":null,"limit":null}`},
		{"timeout=-5&since=s1", `{}`},
		{"timeout=1.5", ""},
		{"timeout=", ""},
		{"since=", ""},
		{"since=s01", ""},
		{"since=s-1", ""},
		{"", `[]`},
		{"", `null`},
		{"", `{"rooms":[]}`},
		{"", `{"rooms":["a"]}`},
		{"", `{"rooms":[""]}`},
		{"", `{"rooms":[1]}`},
		{"", `{"rooms":"!a:s"}`},
		{"", `{"types":["m.*.x"]}`},
		{"", `{"types":["` + strings.Repeat("t", 256) + `"]}`},
		{"", `{"limit":0}`},
		{"", `{"limit":1001}`},
		{"", `{"limit":1.0}`},
		{"", `{"limit":"5"}`},
		{"", `{"limit":5} x`},
		{"", `{"limit":5}  `},
		{"", `{"other":1}`},
		{"", `{"rooms":["!a:s"],"rooms":["!b:s"]}`},
		{"", "{\"rooms\":[\"!\xff:s\"]}"},
		{"filter=%7B%7D&filter=x", ""},
		{"%zz=1&since=s1", ""},
	} {
		f.Add(tc.query, tc.filter)
	}
	h := New(nil, Options{MaxTimeout: fuzzMaxTimeout})
	f.Fuzz(func(t *testing.T, rawQuery, filterText string) {
		if filterText != "" {
			if rawQuery != "" {
				rawQuery += "&"
			}
			rawQuery += "filter=" + url.QueryEscape(filterText)
		}
		r := httptest.NewRequest(http.MethodGet, Path, nil)
		r.URL.RawQuery = rawQuery
		rec := httptest.NewRecorder()
		req, err := h.parseRequest(r)
		q := r.URL.Query()
		if err != nil {
			internalapi.WriteError(rec, r, err)
			var eb struct{ Error, Message, Field string }
			if req != nil || rec.Code != http.StatusBadRequest || json.Unmarshal(rec.Body.Bytes(), &eb) != nil ||
				eb.Error != internalapi.ErrInvalidParam || eb.Message == "" {
				t.Fatalf("refusal %d %s", rec.Code, rec.Body)
			}
			if eb.Field != "since" && eb.Field != "timeout" && eb.Field != "filter" && !strings.HasPrefix(eb.Field, "filter.") {
				t.Errorf("refusal names %q", eb.Field)
			}
			return
		}
		if rec.Body.Len() != 0 {
			t.Errorf("accepted, yet answered %s", rec.Body)
		}
		if req.timeout < 0 || req.timeout > fuzzMaxTimeout {
			t.Errorf("timeout %v outside [0, %v]", req.timeout, fuzzMaxTimeout)
		}
		if !q.Has("timeout") && req.timeout != fuzzMaxTimeout {
			t.Errorf("no timeout given, yet waiting %v", req.timeout)
		}
		if ms, err := strconv.ParseInt(q.Get("timeout"), 10, 64); err == nil && ms > 0 && ms < fuzzMaxTimeout.Milliseconds() &&
			req.timeout != time.Duration(ms)*time.Millisecond {
			t.Errorf("timeout=%d gives %v", ms, req.timeout)
		}
		if req.hasSince != q.Has("since") || req.hasSince && Token(req.since) != q.Get("since") {
			t.Errorf("since %q gives %v %d", q.Get("since"), req.hasSince, req.since)
		}
		fl := &req.filter
		if fl.limit < 1 || fl.limit > MaxLimit {
			t.Errorf("limit %d", fl.limit)
		}
		for room := range fl.rooms {
			if !strings.HasPrefix(room, "!") || len(room) > maxIdentifierBytes || !utf8.ValidString(room) {
				t.Errorf("filter room %q", room)
			}
		}
		for typ := range fl.types {
			if typ == "" || strings.Contains(typ, "*") || !utf8.ValidString(typ) {
				t.Errorf("filter type %q", typ)
			}
		}
		for _, p := range fl.prefixes {
			if strings.Contains(p, "*") {
				t.Errorf("filter prefix %q", p)
			}
		}
		// The filter keeps exactly what it names.
		for room := range fl.rooms {
			evt := &eventlog.Event{Kind: eventlog.KindTimeline, RoomID: room, Type: "m.room.message", JSON: json.RawMessage(`{}`)}
			if fl.types == nil && !fl.match(evt) {
				t.Errorf("filter drops an event of its room %q", room)
			}
		}
		for typ := range fl.types {
			evt := &eventlog.Event{Kind: eventlog.KindEphemeral, Type: typ, JSON: json.RawMessage(`{}`)}
			if !fl.match(evt) {
				t.Errorf("filter drops an event of its type %q", typ)
			}
		}
		if fl.match(&eventlog.Event{Kind: eventlog.KindTimeline, Type: "m.room.message", JSON: json.RawMessage(`{}`)}) {
			t.Error("filter keeps a timeline event without a room")
		}
	})
}
