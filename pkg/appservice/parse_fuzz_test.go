package appservice

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"

	"github.com/daarion/matrix-bridge/pkg/eventlog"
)

// Realistic transaction bodies, shared by the transaction fuzz targets.
var fuzzTransactionSeeds = []string{
	`{"events":[{"event_id":"$1","room_id":"!r:daarion.test","type":"m.room.message","sender":"@alice:daarion.test","origin_server_ts":1732445400000,"content":{"msgtype":"m.text","body":"hello"}}]}`,
	`{"events":[{"event_id":"$2","room_id":"!r:s","type":"m.room.member","state_key":"@agent_sofia:s","sender":"@agent_sofia:s","content":{"membership":"join"}}],"ephemeral":[{"type":"m.typing","room_id":"!r:s","content":{"user_ids":["@a:s"]}},{"type":"m.presence","sender":"@a:s","content":{"presence":"online"}}]}`,
	`{"events":[],"de.sorunome.msc2409.ephemeral":[{"type":"m.receipt","room_id":"!r:s","content":{"$1":{"m.read":{"@a:s":{"ts":1}}}}}]}`,
	`{"ephemeral":[{"type":"m.typing","room_id":"!r:s","content":{}}],"de.sorunome.msc2409.ephemeral":[{"type":"x"}]}`,
	`{"events":[],"to_device":[{"type":"x"}],"device_lists":{"changed":[]},"device_one_time_keys_count":{}}`,
	`{}`,
	``,
	`[]`,
	`null`,
	`{"events":{}}`,
	`{"events":[1,"x",null]}`,
	`{"events":[{"event_id":"$1","room_id":"!r:s"}]}`,
	`{"events":[{"event_id":5,"room_id":"!r:s","type":"m.x"}]}`,
	`{"events":[{"event_id":"","room_id":"!r:s","type":"m.x"}]}`,
	`{"events":[{"event_id":null,"room_id":"!r:s","type":"m.x"}]}`,
	`{"events":[{"event_id":"$1","room_id":"!r\u0000:s","type":"m.x"}]}`,
	`{"events":[{"event_id":"$1\ud800","room_id":"!r:s","type":"m.x","sender":"@\u00e9:s"}]}`,
	`{"events":[{"event_id":"$1","room_id":"!r:s","type":"m.x","sender":[]}]}`,
	`{"events":[{"event_id":"$1","event_id":"$2","room_id":"!r:s","type":"m.x"}]}`,
	`{"events":[{"event_id":"$1","room_id":"!r:s","type":"m.x"}],"events":"dup"}`,
	`{"ephemeral":"x"}`,
	`{"de.sorunome.msc2409.ephemeral":[{"room_id":"!r:s"}]}`,
	`{"de.sorunome.msc2409.ephemeral":[{"type":"m.presence","sender":"@a:s"}],"de":{"sorunome":{"msc2409":{"ephemeral":[{"type":"nested"}]}}}}`,
	`{"events":[{"event_id":"$` + strings.Repeat("a", 255) + `","room_id":"!r:s","type":"m.x"}]}`,
	`{"events":[{"event_id":"$` + strings.Repeat("a", 256) + `","room_id":"!r:s","type":"m.x"}]}`,
	"{\"events\":[],\"x\":\"\xff\"}",
	`{"events":[{"event_id":"$1","room_id":"!r:s","type":"m.x","content":{"a":[[[[[[[[[[1]]]]]]]]]]}}]} `,
	`{"events":[],"x":` + strings.Repeat("[", maxNestingDepth-1) + strings.Repeat("]", maxNestingDepth-1) + `}`,
	`{"events":[],"x":` + strings.Repeat("[", maxNestingDepth) + strings.Repeat("]", maxNestingDepth) + `}`,
	`{"events":[],"x":"` + strings.Repeat("[", maxNestingDepth) + `"}`,
	`{"events":[],"x":"\\","y":"\"[[{"}`,
}

// referenceDepth is the plain reading of nestingExceeds: how deeply arrays
// and objects nest outside strings, up to the first closing bracket with no
// opening one.
func referenceDepth(body []byte) int {
	depth, deepest := 0, 0
	inString := false
	for i := 0; i < len(body); i++ {
		c := body[i]
		switch {
		case inString && c == '\\':
			i++
		case inString && c == '"':
			inString = false
		case inString:
		case c == '"':
			inString = true
		case c == '[' || c == '{':
			depth++
			deepest = max(deepest, depth)
		case c == ']' || c == '}':
			if depth--; depth < 0 {
				return deepest
			}
		}
	}
	return deepest
}

// tooDeep reports whether parseTransaction must refuse body for its nesting
// (checked before anything else reads it: the recursive validator is what
// the bound protects).
func tooDeep(body []byte) bool { return referenceDepth(body) > maxNestingDepth }

// checkParsedEvents checks what parseTransaction promises about every event
// it returns: each would be accepted by the log's columns (PostgreSQL text:
// valid UTF-8 without NUL) and indexes what its JSON says.
func checkParsedEvents(t *testing.T, txnID string, body []byte, events []eventlog.IncomingEvent) {
	t.Helper()
	root := gjson.ParseBytes(body)
	timeline := root.Get("events")
	ephemeral := root.Get("ephemeral")
	if !ephemeral.Exists() {
		ephemeral = root.Get(`de\.sorunome\.msc2409\.ephemeral`)
	}
	toDevice := root.Get("to_device")
	if !toDevice.Exists() {
		toDevice = root.Get(`de\.sorunome\.msc2409\.to_device`)
	}
	want := len(timeline.Array()) + len(ephemeral.Array()) + len(toDevice.Array())
	for _, names := range deviceSummaryFields {
		for _, name := range names {
			if v := root.Get(strings.ReplaceAll(name, ".", `\.`)); v.Exists() {
				if v.Type != gjson.Null {
					want++
				}
				break
			}
		}
	}
	if len(events) != want {
		t.Fatalf("parsed %d events, the body holds %d", len(events), want)
	}
	// Kinds come in this order: timeline, ephemeral, to-device, summaries.
	order := map[eventlog.Kind]int{eventlog.KindTimeline: 0, eventlog.KindEphemeral: 1, eventlog.KindToDevice: 2, eventlog.KindDeviceSummary: 3}
	last := 0
	for i, evt := range events {
		rank, known := order[evt.Kind]
		if !known {
			t.Errorf("event %d: kind %q", i, evt.Kind)
		} else if rank < last {
			t.Errorf("event %d: a %s event after a later kind", i, evt.Kind)
		}
		last = max(last, rank)
		switch evt.Kind {
		case eventlog.KindTimeline:
			if evt.EventID == "" || evt.RoomID == "" {
				t.Errorf("event %d: timeline event without id or room: %+v", i, evt)
			}
		case eventlog.KindEphemeral, eventlog.KindToDevice:
			if want := ephemeralEventID(txnID, evt.JSON); evt.EventID != want {
				t.Errorf("event %d: %s id %q, want %q", i, evt.Kind, evt.EventID, want)
			}
		case eventlog.KindDeviceSummary:
			if !strings.HasPrefix(evt.EventID, EphemeralIDPrefix) || evt.RoomID != "" || evt.Sender != "" {
				t.Errorf("event %d: summary %+v", i, evt)
			}
			continue // its JSON is the field's value, not an event
		}
		if evt.Type == "" {
			t.Errorf("event %d: no type", i)
		}
		for name, v := range map[string]string{"event_id": evt.EventID, "room_id": evt.RoomID, "type": evt.Type, "sender": evt.Sender} {
			if len(v) > maxIdentifierBytes || strings.ContainsRune(v, 0) || !utf8.ValidString(v) {
				t.Errorf("event %d: %s %q cannot be stored", i, name, v)
			}
			if name == "event_id" && evt.Kind != eventlog.KindTimeline {
				continue
			}
			if got := gjson.Get(evt.JSON, name); v != "" && StorableIdentifier(got.Str) != v {
				t.Errorf("event %d: %s %q, but its JSON says %s", i, name, v, got.Raw)
			}
		}
		if !strings.HasPrefix(evt.JSON, "{") || !gjson.Valid(evt.JSON) || !utf8.ValidString(evt.JSON) {
			t.Errorf("event %d: JSON is not an object: %q", i, evt.JSON)
		}
	}
}

// checkParseError checks a rejection: a 400 M_NOT_JSON or M_BAD_JSON, and
// M_BAD_JSON below the top level names its field.
func checkParseError(t *testing.T, body []byte, err *mautrix.RespError) {
	t.Helper()
	if err.StatusCode != 400 {
		t.Errorf("rejection with status %d: %+v", err.StatusCode, err)
	}
	// A body nested too deeply is refused first, naming the nesting, as
	// M_BAD_JSON with no field (it may not even be JSON).
	if deep, nesting := tooDeep(body), strings.Contains(err.Err, "deeper than"); deep || nesting {
		if !deep || !nesting || err.ErrCode != mautrix.MBadJSON.ErrCode {
			t.Errorf("body %d deep refused with %s %q", referenceDepth(body), err.ErrCode, err.Err)
		}
		return
	}
	switch err.ErrCode {
	case mautrix.MNotJSON.ErrCode:
		if utf8.Valid(body) && gjson.ValidBytes(body) {
			t.Errorf("valid JSON rejected as M_NOT_JSON: %s", err.Err)
		}
	case mautrix.MBadJSON.ErrCode:
		if !gjson.ParseBytes(body).IsObject() {
			return // the top level is not an object: no field to name
		}
		field, _ := err.ExtraData["field"].(string)
		if field == "" || !strings.Contains(err.Err, field) {
			t.Errorf("M_BAD_JSON %q does not name its field (field %q)", err.Err, field)
		}
		top, _, _ := strings.Cut(field, "[")
		top, _, _ = strings.Cut(top, ".")
		if top != "events" && top != "ephemeral" && !strings.HasPrefix(field, "de.sorunome.msc2409.ephemeral") {
			t.Errorf("M_BAD_JSON names %q, not a transaction field", field)
		}
	default:
		t.Errorf("unexpected errcode %s: %s", err.ErrCode, err.Err)
	}
	if _, jerr := json.Marshal(err); jerr != nil {
		t.Errorf("rejection cannot be encoded: %v", jerr)
	}
}

func FuzzParseTransaction(f *testing.F) {
	for i, body := range fuzzTransactionSeeds {
		f.Add("txn"+string(rune('a'+i)), []byte(body))
	}
	f.Add("", []byte(`{"ephemeral":[{"type":"m.typing","room_id":"!r:s"}]}`))
	f.Fuzz(func(t *testing.T, txnID string, body []byte) {
		events, err := parseTransaction(txnID, body)
		if err != nil {
			if events != nil {
				t.Errorf("rejected, yet returned %d events", len(events))
			}
			checkParseError(t, body, err)
			return
		}
		if tooDeep(body) {
			t.Fatalf("accepted a body nested %d deep", referenceDepth(body))
		}
		if !utf8.Valid(body) || !gjson.ValidBytes(body) || !gjson.ParseBytes(body).IsObject() {
			t.Fatalf("accepted a body that is not a UTF-8 JSON object")
		}
		checkParsedEvents(t, txnID, body, events)
		// Deterministic: a resent transaction gives the same events (and
		// so the same ephemeral ids, stored once).
		again, err := parseTransaction(txnID, body)
		if err != nil || !reflect.DeepEqual(events, again) {
			t.Errorf("parsing twice differs: %v", err)
		}
	})
}

// nestingExceeds agrees with the plain byte-by-byte reading of it, for any
// bytes and limit.
func FuzzNestingExceeds(f *testing.F) {
	for _, body := range fuzzTransactionSeeds {
		f.Add([]byte(body), uint8(3))
	}
	for _, body := range []string{`"\\"[[`, `"\\\"[[`, `["\\\\",[[]]]`, `]]][[[[[`, `"[[[`, `{"a":"\u0022[[["}`, `\"[[[`} {
		f.Add([]byte(body), uint8(1))
	}
	f.Fuzz(func(t *testing.T, body []byte, limit uint8) {
		want := referenceDepth(body) > int(limit)
		if got := nestingExceeds(body, int(limit)); got != want {
			t.Errorf("nestingExceeds(%q, %d) = %v, the plain reading says %v", body, limit, got, want)
		}
	})
}
