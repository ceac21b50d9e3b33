package mapping

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/daarion/matrix-bridge/pkg/appservice"
	"github.com/daarion/matrix-bridge/pkg/eventlog"
)

// secret is in every piece of content the strip cases carry: none of it
// may survive.
const secret = "SECRET-7f3c"

func TestStripContent(t *testing.T) {
	ev := func(typ, content string, extra ...string) string {
		return `{"event_id":"$e","room_id":"!city:daarion.space","type":"` + typ + `","sender":"@alice:daarion.space","origin_server_ts":1732445400000,"content":` +
			content + strings.Join(extra, "") + `}`
	}
	for _, tc := range []struct {
		name string
		in   string
		// want is the stripped event; "" means unchanged.
		want string
	}{
		{"text", ev("m.room.message", `{"msgtype":"m.text","body":"`+secret+`"}`),
			`{"content":{"msgtype":"m.text"},"event_id":"$e","origin_server_ts":1732445400000,"room_id":"!city:daarion.space","sender":"@alice:daarion.space","type":"m.room.message","unsigned":{"net.daarion.confidential":true}}`},
		{"html reply with mentions", ev("m.room.message", `{"msgtype":"m.text","body":"> q\n\n`+secret+`","format":"org.matrix.custom.html","formatted_body":"<b>`+secret+`</b>",`+
			`"m.relates_to":{"m.in_reply_to":{"event_id":"$q","note":"`+secret+`"},"x":"`+secret+`"},"m.mentions":{"user_ids":["@bob:s"],"room":false}}`),
			`{"content":{"m.mentions":{"room":false,"user_ids":["@bob:s"]},"m.relates_to":{"m.in_reply_to":{"event_id":"$q"}},"msgtype":"m.text"},"event_id":"$e","origin_server_ts":1732445400000,"room_id":"!city:daarion.space","sender":"@alice:daarion.space","type":"m.room.message","unsigned":{"net.daarion.confidential":true}}`},
		{"thread", ev("m.room.message", `{"msgtype":"m.notice","body":"`+secret+`","m.relates_to":{"rel_type":"m.thread","event_id":"$root","is_falling_back":true,"m.in_reply_to":{"event_id":"$root"}}}`),
			`{"content":{"m.relates_to":{"event_id":"$root","is_falling_back":true,"m.in_reply_to":{"event_id":"$root"},"rel_type":"m.thread"},"msgtype":"m.notice"},"event_id":"$e","origin_server_ts":1732445400000,"room_id":"!city:daarion.space","sender":"@alice:daarion.space","type":"m.room.message","unsigned":{"net.daarion.confidential":true}}`},
		{"edit", ev("m.room.message", `{"msgtype":"m.text","body":"* `+secret+`","m.new_content":{"msgtype":"m.text","body":"`+secret+`"},"m.relates_to":{"rel_type":"m.replace","event_id":"$orig"}}`),
			`{"content":{"m.relates_to":{"event_id":"$orig","rel_type":"m.replace"},"msgtype":"m.text"},"event_id":"$e","origin_server_ts":1732445400000,"room_id":"!city:daarion.space","sender":"@alice:daarion.space","type":"m.room.message","unsigned":{"net.daarion.confidential":true}}`},
		{"image, unsigned kept to the allow-list", ev("m.room.message", `{"msgtype":"m.image","body":"`+secret+`.png","filename":"`+secret+`","url":"mxc://s/`+secret+`","info":{"thumbnail_url":"mxc://s/`+secret+`"}}`,
			`,"unsigned":{"age":5,"transaction_id":"t1","m.relations":{"m.replace":{"content":{"body":"`+secret+`"}}},"redacted_because":{"content":{"reason":"`+secret+`"}}}`),
			`{"content":{"msgtype":"m.image"},"event_id":"$e","origin_server_ts":1732445400000,"room_id":"!city:daarion.space","sender":"@alice:daarion.space","type":"m.room.message","unsigned":{"age":5,"net.daarion.confidential":true,"transaction_id":"t1"}}`},
		{"encrypted attachment", ev("m.room.message", `{"msgtype":"m.file","body":"`+secret+`","file":{"url":"mxc://s/`+secret+`","key":{"k":"`+secret+`"}}}`),
			`{"content":{"msgtype":"m.file"},"event_id":"$e","origin_server_ts":1732445400000,"room_id":"!city:daarion.space","sender":"@alice:daarion.space","type":"m.room.message","unsigned":{"net.daarion.confidential":true}}`},
		{"sticker", ev("m.sticker", `{"body":"`+secret+`","url":"mxc://s/`+secret+`"}`),
			`{"content":{},"event_id":"$e","origin_server_ts":1732445400000,"room_id":"!city:daarion.space","sender":"@alice:daarion.space","type":"m.sticker","unsigned":{"net.daarion.confidential":true}}`},
		{"location", ev("m.room.message", `{"msgtype":"m.location","body":"`+secret+`","geo_uri":"geo:1,2;`+secret+`","m.location":{"uri":"geo:`+secret+`","description":"`+secret+`"}}`),
			`{"content":{"msgtype":"m.location"},"event_id":"$e","origin_server_ts":1732445400000,"room_id":"!city:daarion.space","sender":"@alice:daarion.space","type":"m.room.message","unsigned":{"net.daarion.confidential":true}}`},
		{"poll start", ev("m.poll.start", `{"m.text":[{"body":"`+secret+`"}],"m.poll":{"kind":"m.disclosed","max_selections":2,"question":{"m.text":[{"body":"`+secret+`"}]},"answers":[{"m.id":"a","m.text":[{"body":"`+secret+`"}]},"junk"]}}`),
			`{"content":{"m.poll":{"answers":[{"m.id":"a"}],"kind":"m.disclosed","max_selections":2}},"event_id":"$e","origin_server_ts":1732445400000,"room_id":"!city:daarion.space","sender":"@alice:daarion.space","type":"m.poll.start","unsigned":{"net.daarion.confidential":true}}`},
		{"unstable poll start", ev("org.matrix.msc3381.poll.start", `{"org.matrix.msc1767.text":"`+secret+`","org.matrix.msc3381.poll.start":{"question":{"org.matrix.msc1767.text":"`+secret+`"},"answers":[{"id":"a","org.matrix.msc1767.text":"`+secret+`"}]}}`),
			`{"content":{"org.matrix.msc3381.poll.start":{"answers":[{"id":"a"}]}},"event_id":"$e","origin_server_ts":1732445400000,"room_id":"!city:daarion.space","sender":"@alice:daarion.space","type":"org.matrix.msc3381.poll.start","unsigned":{"net.daarion.confidential":true}}`},
		{"poll response", ev("m.poll.response", `{"m.relates_to":{"rel_type":"m.reference","event_id":"$p"},"m.selections":["a",5],"body":"`+secret+`"}`),
			`{"content":{"m.relates_to":{"event_id":"$p","rel_type":"m.reference"},"m.selections":["a"]},"event_id":"$e","origin_server_ts":1732445400000,"room_id":"!city:daarion.space","sender":"@alice:daarion.space","type":"m.poll.response","unsigned":{"net.daarion.confidential":true}}`},
		{"poll end", ev("m.poll.end", `{"m.relates_to":{"rel_type":"m.reference","event_id":"$p"},"m.text":"`+secret+`","m.poll.results":{"a":3}}`),
			`{"content":{"m.poll.results":{"a":3},"m.relates_to":{"event_id":"$p","rel_type":"m.reference"}},"event_id":"$e","origin_server_ts":1732445400000,"room_id":"!city:daarion.space","sender":"@alice:daarion.space","type":"m.poll.end","unsigned":{"net.daarion.confidential":true}}`},
		{"reaction keeps its key", ev("m.reaction", `{"m.relates_to":{"rel_type":"m.annotation","event_id":"$m","key":"👍"},"shortcode":"`+secret+`"}`),
			`{"content":{"m.relates_to":{"event_id":"$m","key":"👍","rel_type":"m.annotation"}},"event_id":"$e","origin_server_ts":1732445400000,"room_id":"!city:daarion.space","sender":"@alice:daarion.space","type":"m.reaction","unsigned":{"net.daarion.confidential":true}}`},
		{"redaction keeps what it redacts", ev("m.room.redaction", `{"redacts":"$m","reason":"`+secret+`"}`, `,"redacts":"$m"`),
			`{"content":{"redacts":"$m"},"event_id":"$e","origin_server_ts":1732445400000,"redacts":"$m","room_id":"!city:daarion.space","sender":"@alice:daarion.space","type":"m.room.redaction","unsigned":{"net.daarion.confidential":true}}`},
		{"any other message-like type", ev("m.call.invite", `{"offer":{"sdp":"`+secret+`"}}`, `,"x_extra":"`+secret+`"`),
			`{"content":{},"event_id":"$e","origin_server_ts":1732445400000,"room_id":"!city:daarion.space","sender":"@alice:daarion.space","type":"m.call.invite","unsigned":{"net.daarion.confidential":true}}`},
		{"content not an object", ev("m.room.message", `"`+secret+`"`),
			`{"content":{},"event_id":"$e","origin_server_ts":1732445400000,"room_id":"!city:daarion.space","sender":"@alice:daarion.space","type":"m.room.message","unsigned":{"net.daarion.confidential":true}}`},
		{"state is not message content", ev("m.room.topic", `{"topic":"the topic"}`, `,"state_key":""`), ""},
		{"member", ev("m.room.member", `{"membership":"join","displayname":"Alice"}`, `,"state_key":"@alice:daarion.space"`), ""},
		{"encrypted stays what decryption needs", ev("m.room.encrypted", `{"algorithm":"m.megolm.v1.aes-sha2","ciphertext":"AwgA"}`), ""},
		{"not an object", `["` + secret + `"]`, `{"content":{},"unsigned":{"net.daarion.confidential":true}}`},
		{"not JSON", `{"body":"` + secret, `{"content":{},"unsigned":{"net.daarion.confidential":true}}`},
		{"null", `null`, `{"content":{},"unsigned":{"net.daarion.confidential":true}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := StripContent([]byte(tc.in))
			want := tc.want
			if want == "" {
				want = tc.in
			}
			if string(got) != want {
				t.Errorf("StripContent(%s)\n got %s\nwant %s", tc.in, got, want)
			}
			if strings.Contains(string(got), secret) {
				t.Errorf("content survived: %s", got)
			}
			if again := StripContent(got); string(again) != string(got) {
				t.Errorf("stripping again changed it:\n%s\n%s", got, again)
			}
			if IsStripped(got) != (tc.want != "") {
				t.Errorf("IsStripped(%s) = %v", got, IsStripped(got))
			}
		})
	}
}

// Every case of the schema tests, in a confidential room: the same DTO
// type (with a location that names no place left, still a location), no
// content key, confidential: true, and it matches its schema.
func TestConfidentialDTOs(t *testing.T) {
	m := *mapper
	m.Confidential = func(roomID string) bool { return roomID == cityRoom }
	for _, tc := range schemaCases() {
		t.Run(tc.name, func(t *testing.T) {
			clear := mapper.MapAll(tc.evt)
			dtos := m.MapAll(tc.evt)
			if len(dtos) != len(clear) {
				t.Fatalf("%d DTOs, %d in a room that is not confidential", len(dtos), len(clear))
			}
			for i, dto := range dtos {
				if dto.Type != clear[i].Type || dto.ID != clear[i].ID {
					t.Errorf("DTO %d is %s %s, not %s %s", i, dto.Type, dto.ID, clear[i].Type, clear[i].ID)
				}
				if dto.Confidential != (tc.evt.RoomID == cityRoom) {
					t.Errorf("confidential = %v in %s", dto.Confidential, tc.evt.RoomID)
				}
				if err := Validate(dto.JSON()); err != nil {
					t.Errorf("%s\ndoes not match its schema: %v", dto.JSON(), err)
				}
				if !dto.Confidential {
					continue
				}
				for _, key := range contentKeys[dto.Type] {
					if _, ok := dto.Data[key]; ok {
						t.Errorf("%s kept %s: %s", dto.Type, key, dto.JSON())
					}
				}
				if answers, ok := dto.Data["answers"].([]map[string]any); ok {
					for _, a := range answers {
						if _, ok := a["text"]; ok {
							t.Errorf("a poll answer kept its text: %s", dto.JSON())
						}
					}
				}
			}
		})
	}
}

// The confidential DTOs of messages full of one marker hold none of it,
// whether the log holds them whole (stored before the room was marked) or
// stripped (indexed since), and are the same either way.
func TestConfidentialDTOsCarryNoContent(t *testing.T) {
	m := *mapper
	m.Confidential = func(string) bool { return true }
	for _, tc := range []struct {
		typ, content string
		want         map[string]any // data keys that must stay
	}{
		{"m.room.message", `{"msgtype":"m.text","body":"` + secret + `","format":"org.matrix.custom.html","formatted_body":"<i>` + secret + `</i>","m.relates_to":{"m.in_reply_to":{"event_id":"$q"}}}`,
			map[string]any{"msgtype": "m.text", "reply_to_event_id": "$q"}},
		{"m.room.message", `{"msgtype":"m.text","body":"* ` + secret + `","m.new_content":{"msgtype":"m.text","body":"` + secret + `"},"m.relates_to":{"rel_type":"m.replace","event_id":"$orig"}}`,
			map[string]any{"edited_event_id": "$orig"}},
		{"m.room.message", `{"msgtype":"m.video","body":"` + secret + `","url":"mxc://s/` + secret + `","info":{"mimetype":"video/mp4"}}`,
			map[string]any{"msgtype": "m.video"}},
		{"m.room.message", `{"msgtype":"m.location","body":"` + secret + `","geo_uri":"geo:` + secret + `","m.asset":{"type":"m.pin"}}`,
			map[string]any{"msgtype": "m.location"}},
		{"m.poll.start", `{"m.poll":{"question":{"m.text":"` + secret + `"},"answers":[{"m.id":"a1","m.text":"` + secret + `"}]}}`,
			map[string]any{"kind": "undisclosed", "max_selections": 1}},
		{"m.poll.end", `{"m.relates_to":{"rel_type":"m.reference","event_id":"$p"},"m.text":"` + secret + `"}`,
			map[string]any{"poll_event_id": "$p"}},
		{"m.room.redaction", `{"redacts":"$m","reason":"` + secret + `"}`,
			map[string]any{"redacted_event_id": "$m"}},
	} {
		t.Run(tc.typ+" "+tc.content, func(t *testing.T) {
			whole := roomEvent(cityRoom, "$e", alice, tc.typ, "-", tc.content)
			stripped := *whole
			stripped.JSON = StripContent(whole.JSON)
			a, b := m.Map(whole), m.Map(&stripped)
			if a == nil || b == nil {
				t.Fatalf("no DTO: %v %v", a, b)
			}
			if string(a.JSON()) != string(b.JSON()) {
				t.Errorf("whole and stripped differ:\n%s\n%s", a.JSON(), b.JSON())
			}
			if strings.Contains(string(a.JSON()), secret) {
				t.Errorf("content survived: %s", a.JSON())
			}
			var data map[string]any
			_ = json.Unmarshal(mustJSON(a.Data), &data)
			for key, want := range tc.want {
				if got, _ := json.Marshal(data[key]); string(got) != string(mustJSON(want)) {
					t.Errorf("data.%s = %s, want %s", key, got, mustJSON(want))
				}
			}
			if err := Validate(a.JSON()); err != nil {
				t.Errorf("%s\ndoes not match its schema: %v", a.JSON(), err)
			}
		})
	}
}

func mustJSON(v any) []byte {
	data, _ := json.Marshal(v)
	return data
}

func FuzzStripContent(f *testing.F) {
	for _, seed := range []string{
		`{"event_id":"$m1","type":"m.room.message","sender":"@a:s","content":{"msgtype":"m.text","body":"x","m.relates_to":{"m.in_reply_to":{"event_id":"$q"}}}}`,
		`{"event_id":"$p1","type":"m.poll.start","sender":"@a:s","content":{"m.poll":{"answers":[{"m.id":"a"}],"max_selections":1e400}}}`,
		`{"event_id":"$j","room_id":"!city:daarion.space","type":"m.room.member","sender":"@a:s","state_key":"@a:s","content":{"membership":"join"}}`,
		`{"type":"m.room.message","state_key":null,"content":{"m.mentions":{"user_ids":[1,"@b:s"]}},"unsigned":[]}`,
		`{"event_id":"$r","room_id":"!city:daarion.space","type":"m.room.redaction","sender":"@a:s","redacts":"$m1","content":{"reason":"spam"}}`,
		`[]`, `"x"`, `{}`,
	} {
		f.Add([]byte(seed))
	}
	m := *mapper
	m.Confidential = func(string) bool { return true }
	f.Fuzz(func(t *testing.T, in []byte) {
		out := StripContent(in)
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(out, &obj); err != nil || obj == nil {
			t.Fatalf("StripContent(%q) = %q, not a JSON object", in, out)
		}
		if again := StripContent(out); string(again) != string(out) {
			t.Errorf("not idempotent:\n%s\n%s", out, again)
		}
		// What the log holds passed the transaction parser: a stripped
		// event of it still does, and maps to valid DTOs.
		parsed, err := appservice.ParseTransaction("fuzz-txn", append(append([]byte(`{"events":[`), in...), ']', '}'))
		if err != nil || len(parsed) != 1 || parsed[0].Kind != eventlog.KindTimeline {
			return
		}
		stripped := StripContent([]byte(parsed[0].JSON))
		if again, err := appservice.ParseTransaction("fuzz-txn", append(append([]byte(`{"events":[`), stripped...), ']', '}')); err != nil || len(again) != 1 ||
			again[0].EventID != parsed[0].EventID || again[0].RoomID != parsed[0].RoomID || again[0].Type != parsed[0].Type || again[0].Sender != parsed[0].Sender {
			t.Fatalf("the stripped event %s no longer parses as %s did: %v", stripped, parsed[0].JSON, err)
		}
		evt := &eventlog.Event{Position: 1000, EventID: parsed[0].EventID, Kind: eventlog.KindTimeline, RoomID: parsed[0].RoomID,
			Type: parsed[0].Type, Sender: parsed[0].Sender, JSON: json.RawMessage(parsed[0].JSON)}
		for i, dto := range m.MapAll(evt) {
			checkFuzzedDTO(t, evt, dto, i)
			if !dto.Confidential {
				t.Errorf("not confidential: %s", dto.JSON())
			}
			for _, key := range contentKeys[dto.Type] {
				if _, ok := dto.Data[key]; ok {
					t.Errorf("%s kept %s: %s", dto.Type, key, dto.JSON())
				}
			}
		}
	})
}
