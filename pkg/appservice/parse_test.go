package appservice

import (
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/daarion/matrix-bridge/pkg/eventlog"
)

func TestParseTransaction(t *testing.T) {
	msg := `{"event_id":"$1","room_id":"!r:s","type":"m.room.message","sender":"@a:s","content":{"body":"x"}}`
	typing := `{"type":"m.typing","room_id":"!r:s","content":{"user_ids":["@a:s"]}}`
	presence := `{"type":"m.presence","sender":"@a:s","content":{"presence":"online"}}`
	toDevice := `{"type":"m.room.encrypted","sender":"@a:s","to_user_id":"@bot:s","to_device_id":"DEV","content":{"algorithm":"m.olm.v1.curve25519-aes-sha2"}}`
	cases := []struct {
		name      string
		body      string
		wantErr   string // errcode
		wantField string // the field the error names
		wantKinds []eventlog.Kind
	}{
		{name: "timeline", body: `{"events":[` + msg + `]}`, wantKinds: []eventlog.Kind{eventlog.KindTimeline}},
		{name: "stable ephemeral", body: `{"events":[],"ephemeral":[` + typing + `,` + presence + `]}`,
			wantKinds: []eventlog.Kind{eventlog.KindEphemeral, eventlog.KindEphemeral}},
		{name: "unstable ephemeral", body: `{"events":[` + msg + `],"de.sorunome.msc2409.ephemeral":[` + typing + `]}`,
			wantKinds: []eventlog.Kind{eventlog.KindTimeline, eventlog.KindEphemeral}},
		{name: "stable wins over unstable", body: `{"ephemeral":[` + typing + `],"de.sorunome.msc2409.ephemeral":[` + typing + `,` + presence + `]}`,
			wantKinds: []eventlog.Kind{eventlog.KindEphemeral}},
		{name: "no events key", body: `{}`},
		{name: "unknown keys ignored", body: `{"events":[],"org.example.other":[{"type":"x"}]}`},
		// MSC4203 to-device and MSC3202 summaries, stable and unstable names.
		{name: "stable to-device and device lists", body: `{"events":[],"to_device":[` + toDevice + `],"device_lists":{"changed":["@a:s"],"left":[]}}`,
			wantKinds: []eventlog.Kind{eventlog.KindToDevice, eventlog.KindDeviceSummary}},
		{name: "unstable to-device (Synapse)", body: `{"events":[],"de.sorunome.msc2409.to_device":[` + toDevice + `,` + toDevice + `]}`,
			wantKinds: []eventlog.Kind{eventlog.KindToDevice, eventlog.KindToDevice}},
		{name: "stable to-device wins", body: `{"to_device":[` + toDevice + `],"de.sorunome.msc2409.to_device":[` + toDevice + `,` + toDevice + `]}`,
			wantKinds: []eventlog.Kind{eventlog.KindToDevice}},
		{name: "empty to-device", body: `{"de.sorunome.msc2409.to_device":[]}`},
		{name: "unstable summaries (Synapse)", body: `{"org.matrix.msc3202.device_lists":{"changed":[],"left":["@b:s"]},` +
			`"org.matrix.msc3202.device_one_time_key_counts":{"@bot:s":{"DEV":{"signed_curve25519":5}}},` +
			`"org.matrix.msc3202.device_one_time_keys_count":{"@bot:s":{"DEV":{"signed_curve25519":5}}},` +
			`"org.matrix.msc3202.device_unused_fallback_key_types":{"@bot:s":{"DEV":["signed_curve25519"]}}}`,
			wantKinds: []eventlog.Kind{eventlog.KindDeviceSummary, eventlog.KindDeviceSummary, eventlog.KindDeviceSummary}},
		{name: "to-device not array", body: `{"de.sorunome.msc2409.to_device":{}}`, wantErr: "M_BAD_JSON", wantField: "de.sorunome.msc2409.to_device"},
		{name: "to-device without type", body: `{"to_device":[{"sender":"@a:s"}]}`, wantErr: "M_BAD_JSON", wantField: "to_device[0].type"},
		{name: "device lists not object", body: `{"org.matrix.msc3202.device_lists":[]}`, wantErr: "M_BAD_JSON", wantField: "org.matrix.msc3202.device_lists"},
		{name: "not json", body: `{"events":[`, wantErr: "M_NOT_JSON"},
		{name: "empty body", body: ``, wantErr: "M_NOT_JSON"},
		{name: "invalid utf-8", body: "{\"events\":[],\"x\":\"\xff\"}", wantErr: "M_NOT_JSON"},
		{name: "array root", body: `[]`, wantErr: "M_BAD_JSON"},
		{name: "events not array", body: `{"events":{}}`, wantErr: "M_BAD_JSON", wantField: "events"},
		{name: "event not object", body: `{"events":[1]}`, wantErr: "M_BAD_JSON", wantField: "events[0]"},
		{name: "missing event_id", body: `{"events":[` + msg + `,{"room_id":"!r:s","type":"m.x"}]}`, wantErr: "M_BAD_JSON", wantField: "events[1].event_id"},
		{name: "event_id not string", body: `{"events":[{"event_id":5,"room_id":"!r:s","type":"m.x"}]}`, wantErr: "M_BAD_JSON", wantField: "events[0].event_id"},
		{name: "missing room_id", body: `{"events":[{"event_id":"$1","type":"m.x"}]}`, wantErr: "M_BAD_JSON", wantField: "events[0].room_id"},
		{name: "missing type", body: `{"events":[{"event_id":"$1","room_id":"!r:s"}]}`, wantErr: "M_BAD_JSON", wantField: "events[0].type"},
		{name: "sender not string", body: `{"events":[{"event_id":"$1","room_id":"!r:s","type":"m.x","sender":[]}]}`, wantErr: "M_BAD_JSON", wantField: "events[0].sender"},
		// What the log's columns cannot hold is stored, indexed by a storable
		// copy (TestStorableIdentifier), never refused: a refused
		// transaction is resent for ever and stalls every event after it.
		{name: "event_id too long", body: `{"events":[{"event_id":"$` + strings.Repeat("a", 300) + `","room_id":"!r:s","type":"m.x"}]}`, wantKinds: []eventlog.Kind{eventlog.KindTimeline}},
		{name: "NUL in room_id", body: `{"events":[{"event_id":"$1","room_id":"!r\u0000:s","type":"m.x"}]}`, wantKinds: []eventlog.Kind{eventlog.KindTimeline}},
		{name: "NUL in type (Dendrite lets a client create it)", body: `{"events":[{"event_id":"$1","room_id":"!r:s","type":"m.\u0000x","state_key":""}]}`, wantKinds: []eventlog.Kind{eventlog.KindTimeline}},
		{name: "ephemeral not array", body: `{"ephemeral":"x"}`, wantErr: "M_BAD_JSON", wantField: "ephemeral"},
		{name: "ephemeral without type", body: `{"de.sorunome.msc2409.ephemeral":[{"room_id":"!r:s"}]}`, wantErr: "M_BAD_JSON", wantField: "de.sorunome.msc2409.ephemeral[0].type"},
		{name: "nested to the limit", body: nested(maxNestingDepth)},
		{name: "nested a level too deep", body: nested(maxNestingDepth + 1), wantErr: "M_BAD_JSON"},
		{name: "nested too deep, not JSON either", body: `{"x":` + strings.Repeat("[", maxNestingDepth), wantErr: "M_BAD_JSON"},
		{name: "brackets in strings do not nest", body: `{"events":[],"x":"` + strings.Repeat("[", 2*maxNestingDepth) + `"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			evts, err := parseTransaction("txn", []byte(tc.body))
			if tc.wantErr != "" {
				if err == nil {
					t.Fatalf("parsed %d events, want %s", len(evts), tc.wantErr)
				}
				if err.ErrCode != tc.wantErr {
					t.Errorf("errcode = %s, want %s (%s)", err.ErrCode, tc.wantErr, err.Err)
				}
				if tc.wantField != "" && (err.ExtraData["field"] != tc.wantField || !strings.Contains(err.Err, tc.wantField)) {
					t.Errorf("error %q (field %v) does not name %s", err.Err, err.ExtraData["field"], tc.wantField)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error %s: %s", err.ErrCode, err.Err)
			}
			if len(evts) != len(tc.wantKinds) {
				t.Fatalf("got %d events, want %d", len(evts), len(tc.wantKinds))
			}
			for i, evt := range evts {
				if evt.Kind != tc.wantKinds[i] {
					t.Errorf("event %d kind = %s, want %s", i, evt.Kind, tc.wantKinds[i])
				}
				if evt.EventID == "" || evt.Type == "" || evt.JSON == "" {
					t.Errorf("event %d is missing its id, type or JSON: %+v", i, evt)
				}
			}
		})
	}
}

func TestParseKeepsEventJSONAndFields(t *testing.T) {
	msg := `{"event_id":"$1","room_id":"!r:s","type":"m.room.message","sender":"@a:s","content":{"body":"\u00e9 \"q\""}}`
	evts, err := parseTransaction("txn", []byte(`{"events": [ `+msg+` ]}`))
	if err != nil {
		t.Fatal(err)
	}
	evt := evts[0]
	if evt.JSON != msg || evt.EventID != "$1" || evt.RoomID != "!r:s" || evt.Type != "m.room.message" || evt.Sender != "@a:s" {
		t.Errorf("parsed %+v", evt)
	}
}

func TestEphemeralIDs(t *testing.T) {
	raw := `{"type":"m.typing","room_id":"!r:s","content":{"user_ids":[]}}`
	a, b := ephemeralEventID("t1", raw), ephemeralEventID("t1", raw)
	if a != b || !strings.HasPrefix(a, EphemeralIDPrefix) {
		t.Errorf("same transaction resent gives ids %s and %s", a, b)
	}
	if c := ephemeralEventID("t2", raw); c == a {
		t.Error("the same typing state in a later transaction got the same id")
	}
}

// nested returns a transaction body whose arrays and objects nest depth
// levels deep: the body, then arrays.
func nested(depth int) string {
	return `{"events":[],"x":` + strings.Repeat("[", depth-1) + strings.Repeat("]", depth-1) + `}`
}

func TestNestingExceeds(t *testing.T) {
	for _, tc := range []struct {
		name string
		body string
		want bool // deeper than 2
	}{
		{"flat", `{"a":1}`, false},
		{"at the limit", `{"a":[1]}`, false},
		{"over the limit", `{"a":[[1]]}`, true},
		{"siblings do not add up", `[[1],[2],{"a":1}]`, false},
		{"brackets in a string", `{"a":"[[[{{{"}`, false},
		{"escaped quote keeps the string open", `{"a":"\"[[[{{{"}`, false},
		{"escaped backslash closes the string", `{"a":"\\","b":[[1]]}`, true},
		{"three backslashes escape the quote", `{"a":"\\\"[[["}`, false},
		{"backslash run at the string's start", `["\\\\",[[]]]`, true},
		{"unicode escape of a quote", `{"a":"\u0022[[["}`, false},
		{"key with brackets", `{"[[[":{"b":[]}}`, true},
		{"unterminated string", `{"a":"[[[[`, false},
		{"closing first is not JSON", `]]]][[[[[[`, false},
		{"deep after a closed value", `{}` + `[[[[`, true},
		{"empty", ``, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := nestingExceeds([]byte(tc.body), 2); got != tc.want {
				t.Errorf("nestingExceeds(%s, 2) = %v, want %v", tc.body, got, tc.want)
			}
			if want := referenceDepth([]byte(tc.body)) > 2; want != tc.want {
				t.Errorf("the reference scan says %v", want)
			}
		})
	}
}

// Regression: a body of ten million nested arrays (20 MB, under the default
// body limit) took gjson's recursive validator past Go's 1 GB stack limit,
// a fatal error that killed the bridge (and the indexer again, on every
// start, had it been journalled). It is refused before the validator now.
func TestDeeplyNestedBodyIsRefused(t *testing.T) {
	const depth = 10_000_000
	body := make([]byte, 0, 2*depth+100)
	body = append(body, `{"events":[{"event_id":"$1","room_id":"!r:s","type":"m.x","content":`...)
	body = append(body, strings.Repeat("[", depth)...)
	body = append(body, strings.Repeat("]", depth)...)
	body = append(body, "}]}"...)
	evts, err := parseTransaction("txn", body)
	if err == nil || err.ErrCode != "M_BAD_JSON" || !strings.Contains(err.Err, "deeper than") {
		t.Fatalf("parsed %d events, %v; want M_BAD_JSON naming the nesting", len(evts), err)
	}
}

// BenchmarkParseTransaction: a 100-event transaction whose message bodies are
// full of escaped quotes, the nesting scan's worst case (it jumps from quote
// to quote).
func BenchmarkParseTransaction(b *testing.B) {
	var evts []string
	for i := range 100 {
		evts = append(evts, `{"event_id":"$ev`+strconv.Itoa(i)+`","room_id":"!room:daarion.test","type":"m.room.message",`+
			`"sender":"@alice:daarion.test","origin_server_ts":1732445400000,"unsigned":{"age":12},`+
			`"content":{"msgtype":"m.text","body":"`+strings.Repeat(`hello \"world\" `, 20)+`","m.relates_to":{"rel_type":"m.thread","event_id":"$root"}}}`)
	}
	body := []byte(`{"events":[` + strings.Join(evts, ",") + `]}`)
	b.Run("parse", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := parseTransaction("txn", body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("nesting", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		for b.Loop() {
			if nestingExceeds(body, maxNestingDepth) {
				b.Fatal("too deep")
			}
		}
	})
}

func TestStorableIdentifier(t *testing.T) {
	long := "$" + strings.Repeat("a", 300)
	longer := "$" + strings.Repeat("a", 301)
	runes := strings.Repeat("✓", 100) // 300 bytes of three-byte runes
	for _, tc := range []struct {
		name, in string
		same     bool // returned as it is
	}{
		{"ordinary", "m.room.message", true},
		{"255 bytes", "$" + strings.Repeat("a", 254), true},
		{"NUL", "m.\x00x", false},
		{"too long", long, false},
		{"too long, runes", runes, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := StorableIdentifier(tc.in)
			if (got == tc.in) != tc.same {
				t.Errorf("StorableIdentifier(%q) = %q, same %v, want same %v", tc.in, got, got == tc.in, tc.same)
			}
			if len(got) > maxIdentifierBytes || strings.ContainsRune(got, 0) || !utf8.ValidString(got) {
				t.Errorf("StorableIdentifier(%q) = %q cannot be stored", tc.in, got)
			}
			if StorableIdentifier(tc.in) != got {
				t.Error("not deterministic")
			}
		})
	}
	if StorableIdentifier(long) == StorableIdentifier(longer) {
		t.Error("two long ids with the same start are one id")
	}
	if got := StorableIdentifier("m.\x00x"); got != "m.\uFFFDx" {
		t.Errorf("NUL = %q, want U+FFFD in its place", got)
	}
}
