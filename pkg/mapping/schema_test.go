package mapping

import (
	"encoding/json"
	"io/fs"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/daarion/matrix-bridge/pkg/eventlog"
)

// Events for the schema tests, shaped as homeservers send them.
const (
	cityRoom  = "!city:daarion.space"
	otherRoom = "!other:daarion.space"
	bob       = "@bob:other.org"
	bot       = "@daarion-bot:daarion.space"
	ephID     = "~edu_0f1e2d3c4b5a69788796a5b4c3d2e1f0"
)

// roomEvent is a timeline event in room; stateKey "-" means none.
func roomEvent(room, eventID, sender, typ, stateKey, content string, extra ...string) *eventlog.Event {
	evt := timeline(eventID, sender, typ, stateKey, content, extra...)
	evt.RoomID = room
	evt.Sender = sender
	return evt
}

// edu is an ephemeral event; room "" is an EDU without a room (presence).
func edu(room, typ, sender, content string) *eventlog.Event {
	obj := map[string]any{"type": typ, "content": json.RawMessage(content)}
	if room != "" {
		obj["room_id"] = room
	}
	if sender != "" {
		obj["sender"] = sender
	}
	raw, _ := json.Marshal(obj)
	return &eventlog.Event{EventID: ephID, Kind: eventlog.KindEphemeral, RoomID: room, Type: typ, Sender: sender,
		ReceivedAt: time.UnixMilli(1732445500123), JSON: raw}
}

type schemaCase struct {
	name string
	evt  *eventlog.Event
	typ  string
}

// schemaCases covers every DTO type, with the edge cases of each.
func schemaCases() []schemaCase {
	msg := func(eventID, sender, content string) *eventlog.Event {
		return roomEvent(cityRoom, eventID, sender, "m.room.message", "-", content)
	}
	member := func(eventID, sender, target, content string, extra ...string) *eventlog.Event {
		return roomEvent(cityRoom, eventID, sender, "m.room.member", target, content, extra...)
	}
	state := func(eventID, typ, content string) *eventlog.Event {
		return roomEvent(cityRoom, eventID, alice, typ, "", content)
	}
	prev := func(membership string) string {
		return `,"unsigned":{"prev_content":{"membership":"` + membership + `"}}`
	}
	return []schemaCase{
		{"text", msg("$text", alice, `{"msgtype":"m.text","body":"Hello\n  world"}`), MessageCreated},
		{"text in a room that is not a city room", roomEvent(otherRoom, "$other", alice, "m.room.message", "-", `{"msgtype":"m.text","body":"hi"}`), MessageCreated},
		{"notice by an agent, an echo", msg("$sent-by-bridge", sofia, `{"msgtype":"m.notice","body":"Hello from Sofia!"}`), MessageCreated},
		{"emote", msg("$emote", alice, `{"msgtype":"m.emote","body":"waves"}`), MessageCreated},
		{"empty body", msg("$empty", alice, `{"msgtype":"m.text","body":""}`), MessageCreated},
		{"long body", msg("$long", alice, `{"msgtype":"m.text","body":"`+strings.Repeat("слово ", 100)+`"}`), MessageCreated},
		{"html", msg("$html", alice, `{"msgtype":"m.text","body":"Hello DAARION","format":"org.matrix.custom.html","formatted_body":"<p>Hello <strong>DAARION</strong></p>"}`), MessageCreated},
		{"format without formatted_body is dropped", msg("$fmt", alice, `{"msgtype":"m.text","body":"x","format":"org.matrix.custom.html"}`), MessageCreated},
		{"reply", msg("$reply", alice, `{"msgtype":"m.text","body":"> <@bob:other.org> q\n\nanswer","m.relates_to":{"m.in_reply_to":{"event_id":"$question"}}}`), MessageCreated},
		{"thread reply", msg("$threadreply", alice, `{"msgtype":"m.text","body":"in thread","m.relates_to":{"rel_type":"m.thread","event_id":"$root","is_falling_back":false,"m.in_reply_to":{"event_id":"$earlier"}}}`), MessageCreated},
		{"thread with fallback", msg("$threadfb", alice, `{"msgtype":"m.text","body":"t","m.relates_to":{"rel_type":"m.thread","event_id":"$root","is_falling_back":true,"m.in_reply_to":{"event_id":"$root"}}}`), MessageCreated},
		{"mentions", msg("$mentions", alice, `{"msgtype":"m.text","body":"@Sofia @bob","m.mentions":{"user_ids":["@agent_sofia:daarion.space","@bob:other.org","@daarion-bot:daarion.space"],"room":true}}`), MessageCreated},
		{"empty mentions", msg("$nomentions", alice, `{"msgtype":"m.text","body":"x","m.mentions":{}}`), MessageCreated},
		{"image with info", msg("$image", sofia, `{"msgtype":"m.image","body":"cat.png","url":"mxc://daarion.space/cat","info":{"mimetype":"image/png","size":102400,"w":640,"h":480,"thumbnail_url":"mxc://daarion.space/cat-thumb","thumbnail_info":{"mimetype":"image/png","w":64,"h":48}}}`), MediaUploaded},
		{"file with filename and caption", msg("$file", alice, `{"msgtype":"m.file","body":"the report, see page 3","filename":"report.pdf","url":"mxc://daarion.space/report","info":{"mimetype":"application/pdf","size":5000},"format":"org.matrix.custom.html","formatted_body":"the <b>report</b>"}`), MediaUploaded},
		{"audio in a thread", msg("$audio", alice, `{"msgtype":"m.audio","body":"voice.ogg","url":"mxc://daarion.space/voice","info":{"duration":4200},"m.relates_to":{"rel_type":"m.thread","event_id":"$root"}}`), MediaUploaded},
		{"video without info", msg("$video", bob, `{"msgtype":"m.video","body":"v.mp4","url":"mxc://other.org/v"}`), MediaUploaded},
		{"info null", msg("$infonull", alice, `{"msgtype":"m.image","body":"x.png","url":"mxc://daarion.space/x","info":null}`), MediaUploaded},
		{"encrypted attachment without url", msg("$enc", alice, `{"msgtype":"m.file","body":"secret.bin","file":{"url":"mxc://daarion.space/enc"}}`), MediaUploaded},
		{"sticker", roomEvent(cityRoom, "$sticker", alice, "m.sticker", "-", `{"body":"Happy cat","url":"mxc://daarion.space/sticker","info":{"mimetype":"image/webp","w":256,"h":256,"size":12000}}`), MediaUploaded},
		{"sticker without info", roomEvent(cityRoom, "$sticker2", bob, "m.sticker", "-", `{"body":"","url":"mxc://other.org/s"}`), MediaUploaded},
		{"location", msg("$loc", alice, `{"msgtype":"m.location","body":"Location at geo:50.4501,30.5234","geo_uri":"geo:50.4501,30.5234;u=35","org.matrix.msc3488.location":{"uri":"geo:50.4501,30.5234;u=35","description":"Maidan Nezalezhnosti"},"org.matrix.msc3488.asset":{"type":"m.pin"},"org.matrix.msc3488.ts":1732445400000}`), LocationShared},
		{"location, minimal", msg("$loc2", sofia, `{"msgtype":"m.location","body":"","geo_uri":"geo:0,0"}`), LocationShared},
		{"location in a thread", msg("$loc3", alice, `{"msgtype":"m.location","body":"here","m.location":{"uri":"geo:1,2"},"m.asset":{"type":"m.self"},"m.relates_to":{"rel_type":"m.thread","event_id":"$root"}}`), LocationShared},
		{"poll (stable)", roomEvent(cityRoom, "$poll", alice, "m.poll.start", "-", `{"m.text":[{"mimetype":"text/plain","body":"Lunch?\n1. Borscht\n2. Varenyky"}],"m.poll":{"kind":"m.disclosed","max_selections":1,"question":{"m.text":[{"body":"Lunch?"}]},"answers":[{"m.id":"borscht","m.text":[{"body":"Borscht"}]},{"m.id":"varenyky","m.text":[{"body":"Varenyky"}]}]}}`), PollStarted},
		{"poll (unstable) in a thread", roomEvent(cityRoom, "$poll2", alice, "org.matrix.msc3381.poll.start", "-", `{"org.matrix.msc3381.poll.start":{"kind":"org.matrix.msc3381.poll.undisclosed","max_selections":2,"question":{"org.matrix.msc1767.text":"Lunch?"},"answers":[{"id":"b","org.matrix.msc1767.text":"Borscht"},{"id":"v"}]},"org.matrix.msc1767.text":"Lunch?","m.relates_to":{"rel_type":"m.thread","event_id":"$root"}}`), PollStarted},
		{"poll with a long question", roomEvent(cityRoom, "$poll3", alice, "m.poll.start", "-", `{"m.poll":{"question":{"m.text":"`+strings.Repeat("питання ", 60)+`"},"answers":[{"m.id":"a"}]}}`), PollStarted},
		{"vote (stable)", roomEvent(cityRoom, "$vote", sofia, "m.poll.response", "-", `{"m.relates_to":{"rel_type":"m.reference","event_id":"$poll"},"m.selections":["borscht"]}`), PollAnswered},
		{"vote (unstable)", roomEvent(cityRoom, "$vote2", bob, "org.matrix.msc3381.poll.response", "-", `{"m.relates_to":{"rel_type":"m.reference","event_id":"$poll2"},"org.matrix.msc3381.poll.response":{"answers":["b","v"]}}`), PollAnswered},
		{"vote withdrawn", roomEvent(cityRoom, "$vote3", sofia, "m.poll.response", "-", `{"m.relates_to":{"rel_type":"m.reference","event_id":"$poll"}}`), PollAnswered},
		{"poll end with results", roomEvent(cityRoom, "$pollend", alice, "m.poll.end", "-", `{"m.relates_to":{"rel_type":"m.reference","event_id":"$poll"},"m.text":[{"body":"The poll has closed. Top answer: Borscht"}],"m.poll.results":{"borscht":3,"varenyky":1}}`), PollEnded},
		{"encrypted attachment", msg("$encfile", alice, `{"msgtype":"m.file","body":"plan.pdf","file":{"url":"mxc://s/cipher","key":{"kty":"oct","alg":"A256CTR","k":"x","key_ops":["encrypt","decrypt"],"ext":true},"iv":"i","hashes":{"sha256":"h"},"v":"v2"},"info":{"mimetype":"application/pdf","size":3}}`), MediaUploaded},
		{"encrypted, given up on", roomEvent(cityRoom, "$enc", alice, "m.room.encrypted", "-", `{"algorithm":"m.megolm.v1.aes-sha2","ciphertext":"AwgAEn...","session_id":"X3l6sess","sender_key":"k","device_id":"ALICEDEV"}`, `,"net.daarion.undecryptable":{"reason":"no keys for session X3l6sess within 10m0s"}`), MessageUndecryptable},
		{"poll end (unstable)", roomEvent(cityRoom, "$pollend2", alice, "org.matrix.msc3381.poll.end", "-", `{"m.relates_to":{"rel_type":"m.reference","event_id":"$poll2"},"org.matrix.msc3381.poll.end":{},"org.matrix.msc1767.text":"Ended poll"}`), PollEnded},
		{"edit with formatted body", msg("$edit", alice, `{"msgtype":"m.text","body":"* new *text*","format":"org.matrix.custom.html","formatted_body":"* new <em>text</em>","m.new_content":{"msgtype":"m.text","body":"new *text*","format":"org.matrix.custom.html","formatted_body":"new <em>text</em>"},"m.relates_to":{"rel_type":"m.replace","event_id":"$text"}}`), MessageEdited},
		{"edit without new content", msg("$edit2", alice, `{"msgtype":"m.text","body":"* fixed","m.relates_to":{"rel_type":"m.replace","event_id":"$text"}}`), MessageEdited},
		{"edit of a media caption", msg("$edit3", alice, `{"msgtype":"m.image","body":"* new caption","m.new_content":{"msgtype":"m.image","body":"new caption"},"m.relates_to":{"rel_type":"m.replace","event_id":"$image"}}`), MessageEdited},
		{"reaction", roomEvent(cityRoom, "$react", alice, "m.reaction", "-", `{"m.relates_to":{"rel_type":"m.annotation","event_id":"$text","key":"👍"}}`), ReactionAdded},
		{"redaction (v11 content) with reason", roomEvent(cityRoom, "$redact", alice, "m.room.redaction", "-", `{"redacts":"$text","reason":"Spam"}`), MessageDeleted},
		{"redaction (top level) without reason", roomEvent(cityRoom, "$redact2", alice, "m.room.redaction", "-", `{}`, `,"redacts":"$react"`), MessageDeleted},
		{"redaction of a reaction in the log", roomEvent(cityRoom, "$unreact", sofia, "m.room.redaction", "-", `{"redacts":"$reaction-in-log"}`), MessageDeleted},
		{"redaction of a reaction by a moderator, with reason", roomEvent(cityRoom, "$unreact2", bot, "m.room.redaction", "-", `{"reason":"spam"}`, `,"redacts":"$reaction-in-log"`), MessageDeleted},
		{"redaction of a reaction stored redacted", roomEvent(cityRoom, "$unreact3", alice, "m.room.redaction", "-", `{"redacts":"$stripped-reaction"}`), MessageDeleted},
		{"redaction of a message in the log", roomEvent(cityRoom, "$redact3", alice, "m.room.redaction", "-", `{"redacts":"$message-in-log"}`), MessageDeleted},
		{"join with displayname", member("$join", alice, alice, `{"membership":"join","displayname":"Alice"}`), MemberJoined},
		{"join after invite", member("$join2", sofia, sofia, `{"membership":"join"}`, prev("invite")), MemberJoined},
		{"display name changed", member("$profile", alice, alice, `{"membership":"join","displayname":"Alice K."}`, `,"unsigned":{"prev_content":{"membership":"join","displayname":"Alice"}}`), MemberUpdated},
		{"avatar set, name removed (prev_content at top level)", member("$profile2", sofia, sofia, `{"membership":"join","avatar_url":"mxc://daarion.space/sofia"}`, `,"prev_content":{"membership":"join","displayname":"Sofia"}`), MemberUpdated},
		{"invite", member("$invite", alice, sofia, `{"membership":"invite","displayname":"Sofia"}`), MemberInvited},
		{"invite with reason", member("$invite2", bot, "@carol:daarion.space", `{"membership":"invite","reason":"welcome"}`), MemberInvited},
		{"leave", member("$leave", alice, alice, `{"membership":"leave"}`, prev("join")), MemberLeft},
		{"invite rejected", member("$reject", sofia, sofia, `{"membership":"leave","reason":"busy"}`, prev("invite")), MemberLeft},
		{"kick with reason", member("$kick", bot, sofia, `{"membership":"leave","reason":"Violation of rules"}`, prev("join")), MemberKicked},
		{"invite withdrawn", member("$withdraw", alice, "@carol:daarion.space", `{"membership":"leave"}`, prev("invite")), MemberKicked},
		{"ban with reason", member("$ban", alice, bob, `{"membership":"ban","reason":"spam"}`, prev("join")), MemberBanned},
		{"unban with reason", member("$unban", alice, bob, `{"membership":"leave","reason":"appeal accepted"}`, prev("ban")), MemberUnbanned},
		{"unban (prev_content at top level)", member("$unban2", alice, bob, `{"membership":"leave"}`, `,"prev_content":{"membership":"ban"}`), MemberUnbanned},
		{"name", state("$name", "m.room.name", `{"name":"Kyiv"}`), ChannelUpdated},
		{"topic", state("$topic", "m.room.topic", `{"topic":"Main DAARION.city channel"}`), ChannelUpdated},
		{"topic removed", state("$topic2", "m.room.topic", `{}`), ChannelUpdated},
		{"avatar", state("$avatar", "m.room.avatar", `{"url":"mxc://daarion.space/avatar"}`), ChannelUpdated},
		{"canonical alias", state("$alias", "m.room.canonical_alias", `{"alias":"#city_kyiv:daarion.space","alt_aliases":[]}`), ChannelUpdated},
		{"pinned events", state("$pins", "m.room.pinned_events", `{"pinned":["$text","$image"]}`), ChannelUpdated},
		{"nothing pinned", state("$pins2", "m.room.pinned_events", `{"pinned":[]}`), ChannelUpdated},
		{"tombstone", state("$tomb", "m.room.tombstone", `{"body":"This room has been replaced","replacement_room":"!new:daarion.space"}`), ChannelUpgraded},
		{"typing, several users", edu(cityRoom, "m.typing", "", `{"user_ids":["@alice:daarion.space","@agent_sofia:daarion.space","@bob:other.org","@daarion-bot:daarion.space"]}`), TypingUpdated},
		{"typing, nobody", edu(otherRoom, "m.typing", "", `{"user_ids":[]}`), TypingUpdated},
		{"receipts with thread_id", edu(cityRoom, "m.receipt", "", `{"$text":{"m.read":{"@alice:daarion.space":{"ts":1732445400500,"thread_id":"main"},"@agent_sofia:daarion.space":{"ts":1732445400600,"thread_id":"$root"}}},"$image":{"m.read":{"@bob:other.org":{"ts":1732445400700}}}}`), ReadUpdated},
		{"receipt without ts", edu(cityRoom, "m.receipt", "", `{"$text":{"m.read":{"@alice:daarion.space":{}}}}`), ReadUpdated},
		{"presence with status_msg, no room", edu("", "m.presence", alice, `{"presence":"online","last_active_ago":2478593,"currently_active":true,"status_msg":"Making cupcakes"}`), PresenceUpdated},
		{"presence, minimal", edu("", "m.presence", bob, `{"presence":"offline"}`), PresenceUpdated},
	}
}

func TestMappedDTOsMatchTheirSchemas(t *testing.T) {
	covered := map[string]bool{}
	for _, tc := range schemaCases() {
		t.Run(tc.name, func(t *testing.T) {
			// Every DTO of the event: a redaction of a reaction has a second
			// one, messaging.reaction.removed.
			dtos := mapper.MapAll(tc.evt)
			if len(dtos) == 0 || dtos[0].Type != tc.typ {
				t.Fatalf("mapped to %+v, want %s first", dtos, tc.typ)
			}
			for _, dto := range dtos {
				covered[dto.Type] = true
				if err := Validate(dto.JSON()); err != nil {
					t.Errorf("%s\ndoes not match its schema: %v", dto.JSON(), err)
				}
			}
		})
	}
	for _, typ := range Types {
		if !covered[typ] {
			t.Errorf("no case maps to %s", typ)
		}
	}
}

// The cases' edge cases are what the schemas say they are.
func TestSchemaCasesShape(t *testing.T) {
	dtos := map[string]map[string]any{}
	for _, tc := range schemaCases() {
		var obj map[string]any
		if err := json.Unmarshal(mapper.Map(tc.evt).JSON(), &obj); err != nil {
			t.Fatal(err)
		}
		dtos[tc.name] = obj
	}
	data := func(name string) map[string]any { return dtos[name]["data"].(map[string]any) }
	if _, ok := dtos["presence with status_msg, no room"]["room"]; ok {
		t.Error("presence has a room")
	}
	if d := data("thread reply"); d["thread_root_event_id"] != "$root" || d["reply_to_event_id"] != "$earlier" {
		t.Errorf("thread reply: %v", d)
	}
	if ids, ok := data("empty mentions")["mentions"].(map[string]any)["ids"].([]any); !ok || len(ids) != 0 {
		t.Errorf("empty mentions: ids %v (array: %v), want []", ids, ok)
	}
	if info, ok := data("info null")["info"]; ok {
		t.Errorf("info null: %v present, want it left out", info)
	}
	if _, ok := data("video without info")["info"]; ok {
		t.Error("info without content.info")
	}
	if _, ok := dtos["notice by an agent, an echo"]["origin"]; !ok {
		t.Error("echo without origin")
	}
	if r := data("receipts with thread_id")["receipts"].([]any); len(r) != 3 {
		t.Errorf("receipts: %v", r)
	}
	if room := dtos["text in a room that is not a city room"]["room"].(map[string]any); len(room) != 1 {
		t.Errorf("room of a room that is not a city room: %v", room)
	}
	if d := data("sticker"); d["sticker"] != true || d["msgtype"] != "m.image" {
		t.Errorf("sticker: %v", d)
	}
	if _, ok := data("image with info")["sticker"]; ok {
		t.Error("an image is marked a sticker")
	}
	if p := data("nothing pinned")["pinned_event_ids"].([]any); len(p) != 0 {
		t.Errorf("nothing pinned: %v", p)
	}
	if a, ok := data("vote withdrawn")["answers"].([]any); !ok || len(a) != 0 {
		t.Errorf("vote withdrawn: answers %v (array: %v), want []", a, ok)
	}
	if d := data("redaction of a reaction stored redacted"); d["redacted_type"] != "m.reaction" || len(d["reaction"].(map[string]any)) != 0 {
		t.Errorf("a stripped reaction: %v", d)
	}
	if d := data("redaction of a reaction in the log")["reaction"].(map[string]any); d["target_event_id"] != "$1" || d["key"] != "👍" {
		t.Errorf("a reaction in the log: %v", d)
	}
	if d := data("redaction of a message in the log"); d["redacted_type"] != "m.room.message" || d["reaction"] != nil {
		t.Errorf("a message in the log: %v", d)
	}
	if d := data("redaction (v11 content) with reason"); d["redacted_type"] != nil || d["reaction"] != nil {
		t.Errorf("an event the log does not hold: %v", d)
	}
	if d := data("avatar set, name removed (prev_content at top level)"); d["displayname"] != nil || d["prev_displayname"] != "Sofia" || len(d["changed"].([]any)) != 2 {
		t.Errorf("profile change: %v", d)
	}
}

// valid returns a mapped DTO as a JSON object, for the negative tests.
func valid(t *testing.T, evt *eventlog.Event) map[string]any {
	t.Helper()
	raw := mapper.Map(evt).JSON()
	if err := Validate(raw); err != nil {
		t.Fatalf("the base DTO is invalid: %v", err)
	}
	var obj map[string]any
	if err := json.Unmarshal(raw, &obj); err != nil {
		t.Fatal(err)
	}
	return obj
}

func TestValidateRejects(t *testing.T) {
	text := func(t *testing.T) map[string]any {
		return valid(t, roomEvent(cityRoom, "$text", alice, "m.room.message", "-", `{"msgtype":"m.text","body":"hi"}`))
	}
	kick := func(t *testing.T) map[string]any {
		return valid(t, roomEvent(cityRoom, "$kick", bot, "m.room.member", sofia, `{"membership":"leave","reason":"rules"}`))
	}
	typing := func(t *testing.T) map[string]any {
		return valid(t, edu(cityRoom, "m.typing", "", `{"user_ids":["@alice:daarion.space"]}`))
	}
	pins := func(t *testing.T) map[string]any {
		return valid(t, roomEvent(cityRoom, "$pins", alice, "m.room.pinned_events", "", `{"pinned":["$text"]}`))
	}
	topic := func(t *testing.T) map[string]any {
		return valid(t, roomEvent(cityRoom, "$topic", alice, "m.room.topic", "", `{"topic":"t"}`))
	}
	unreact := func(t *testing.T) map[string]any {
		return valid(t, roomEvent(cityRoom, "$unreact", sofia, "m.room.redaction", "-", `{"redacts":"$reaction-in-log"}`))
	}
	removed := func(t *testing.T) map[string]any {
		t.Helper()
		dtos := mapper.MapAll(roomEvent(cityRoom, "$unreact", sofia, "m.room.redaction", "-", `{"redacts":"$reaction-in-log"}`))
		if len(dtos) != 2 || dtos[1].Type != ReactionRemoved {
			t.Fatalf("no reaction.removed: %+v", dtos)
		}
		raw := dtos[1].JSON()
		if err := Validate(raw); err != nil {
			t.Fatalf("the base DTO is invalid: %v", err)
		}
		var obj map[string]any
		if err := json.Unmarshal(raw, &obj); err != nil {
			t.Fatal(err)
		}
		return obj
	}
	profile := func(t *testing.T) map[string]any {
		return valid(t, roomEvent(cityRoom, "$profile", alice, "m.room.member", alice, `{"membership":"join","displayname":"Al"}`, `,"unsigned":{"prev_content":{"membership":"join"}}`))
	}
	poll := func(t *testing.T) map[string]any {
		return valid(t, roomEvent(cityRoom, "$poll", alice, "m.poll.start", "-", `{"m.poll":{"question":{"m.text":"Q"},"answers":[{"m.id":"a","m.text":"A"}]}}`))
	}
	vote := func(t *testing.T) map[string]any {
		return valid(t, roomEvent(cityRoom, "$vote", alice, "m.poll.response", "-", `{"m.relates_to":{"rel_type":"m.reference","event_id":"$poll"},"m.selections":["a"]}`))
	}
	location := func(t *testing.T) map[string]any {
		return valid(t, roomEvent(cityRoom, "$loc", alice, "m.room.message", "-", `{"msgtype":"m.location","body":"here","geo_uri":"geo:1,2"}`))
	}
	presence := func(t *testing.T) map[string]any {
		return valid(t, edu("", "m.presence", alice, `{"presence":"online"}`))
	}
	data := func(obj map[string]any) map[string]any { return obj["data"].(map[string]any) }
	for _, tc := range []struct {
		name   string
		base   func(*testing.T) map[string]any
		change func(map[string]any)
		want   string // in the error
	}{
		// Missing required fields.
		{"no id", text, func(o map[string]any) { delete(o, "id") }, "missing property 'id'"},
		{"no type", text, func(o map[string]any) { delete(o, "type") }, "missing property 'type'"},
		{"no version", text, func(o map[string]any) { delete(o, "version") }, "missing property 'version'"},
		{"no occurred_at", text, func(o map[string]any) { delete(o, "occurred_at") }, "missing property 'occurred_at'"},
		{"no data", text, func(o map[string]any) { delete(o, "data") }, "missing property 'data'"},
		{"room event without room", text, func(o map[string]any) { delete(o, "room") }, "missing property 'room'"},
		{"room event without sender", text, func(o map[string]any) { delete(o, "sender") }, "missing property 'sender'"},
		{"room event without matrix_event_id", text, func(o map[string]any) { delete(o, "matrix_event_id") }, "missing property 'matrix_event_id'"},
		{"no data.body", text, func(o map[string]any) { delete(data(o), "body") }, "missing property 'body'"},
		{"no data.preview", text, func(o map[string]any) { delete(data(o), "preview") }, "missing property 'preview'"},
		{"no data.target", kick, func(o map[string]any) { delete(data(o), "target") }, "missing property 'target'"},
		{"no data.actor", kick, func(o map[string]any) { delete(data(o), "actor") }, "missing property 'actor'"},
		{"no data.typing", typing, func(o map[string]any) { delete(data(o), "typing") }, "missing property 'typing'"},
		{"typing without room", typing, func(o map[string]any) { delete(o, "room") }, "missing property 'room'"},
		{"presence without sender", presence, func(o map[string]any) { delete(o, "sender") }, "missing property 'sender'"},
		{"no sender.matrix_id", text, func(o map[string]any) { delete(o["sender"].(map[string]any), "matrix_id") }, "missing property 'matrix_id'"},
		{"no room.matrix_room_id", text, func(o map[string]any) { delete(o["room"].(map[string]any), "matrix_room_id") }, "missing property 'matrix_room_id'"},
		{"alias without slug", text, func(o map[string]any) { delete(o["room"].(map[string]any), "city_slug") }, "'city_slug' required"},
		{"format without formatted_body", text, func(o map[string]any) { data(o)["format"] = "org.matrix.custom.html" }, "'formatted_body' required"},
		// Extra fields.
		{"extra envelope field", text, func(o map[string]any) { o["channel_id"] = "uuid" }, "'channel_id' not allowed"},
		{"extra data field", text, func(o map[string]any) { data(o)["content_preview"] = "hi" }, "'content_preview' not allowed"},
		{"extra member data field", kick, func(o map[string]any) { data(o)["role"] = "agent" }, "'role' not allowed"},
		{"extra room field", text, func(o map[string]any) { o["room"].(map[string]any)["name"] = "Kyiv" }, "'name' not allowed"},
		{"extra sender field", text, func(o map[string]any) { o["sender"].(map[string]any)["displayname"] = "Alice" }, "'displayname' not allowed"},
		{"extra origin field", text, func(o map[string]any) { o["origin"] = map[string]any{"bridge": true, "agent": "x"} }, "'agent' not allowed"},
		// Wrong version.
		{"version 2", text, func(o map[string]any) { o["version"] = 2 }, "at '/version'"},
		{"version 0", text, func(o map[string]any) { o["version"] = 0 }, "at '/version'"},
		{"version as a string", text, func(o map[string]any) { o["version"] = "1" }, "at '/version'"},
		// Wrong sender ids.
		{"sender id without a known prefix", text, func(o map[string]any) { o["sender"].(map[string]any)["id"] = "person:alice" }, "'person:alice' does not match"},
		{"sender id without prefix", text, func(o map[string]any) { o["sender"].(map[string]any)["id"] = "alice" }, "'alice' does not match"},
		{"sender id as a Matrix id", text, func(o map[string]any) { o["sender"].(map[string]any)["id"] = "@alice:daarion.space" }, "'@alice:daarion.space' does not match"},
		{"sender id prefix not its type", text, func(o map[string]any) { o["sender"].(map[string]any)["id"] = "agent:alice" }, "'agent:alice' does not match pattern '^user:'"},
		{"bridge other than bridge:bot", kick, func(o map[string]any) { data(o)["actor"].(map[string]any)["id"] = "bridge:other" }, "at '/data/actor/id'"},
		{"unknown sender type", text, func(o map[string]any) { o["sender"].(map[string]any)["type"] = "robot" }, "at '/sender/type'"},
		{"target id without prefix", kick, func(o map[string]any) { data(o)["target"].(map[string]any)["id"] = "sofia" }, "'sofia' does not match"},
		// Other wrong values.
		{"unknown type", text, func(o map[string]any) { o["type"] = "messaging.message.pinned" }, "unknown DTO type"},
		{"type of other data", text, func(o map[string]any) { o["type"] = ReactionAdded }, "missing properties 'target_event_id', 'key'"},
		{"member type and membership disagree", kick, func(o map[string]any) { data(o)["membership"] = "ban" }, "at '/data/membership'"},
		{"occurred_at not a date-time", text, func(o map[string]any) { o["occurred_at"] = "yesterday" }, "is not valid date-time"},
		{"occurred_at as a number", text, func(o map[string]any) { o["occurred_at"] = 1732445400000 }, "at '/occurred_at'"},
		{"origin.bridge false", text, func(o map[string]any) { o["origin"] = map[string]any{"bridge": false} }, "at '/origin/bridge'"},
		{"ephemeral with matrix_event_id", typing, func(o map[string]any) { o["matrix_event_id"] = "$x" }, "at '/matrix_event_id'"},
		{"ephemeral with origin", typing, func(o map[string]any) { o["origin"] = map[string]any{"bridge": true} }, "at '/origin'"},
		{"ephemeral with a Matrix event id", typing, func(o map[string]any) { o["id"] = "$x" }, "at '/id'"},
		{"room event with a bridge id", text, func(o map[string]any) { o["id"] = ephID }, "at '/id'"},
		{"unknown msgtype", text, func(o map[string]any) { data(o)["msgtype"] = "m.location" }, "at '/data/msgtype'"},
		{"body not a string", text, func(o map[string]any) { data(o)["body"] = 5 }, "at '/data/body'"},
		{"preview too long", text, func(o map[string]any) { data(o)["preview"] = strings.Repeat("x", PreviewRunes+1) }, "at '/data/preview'"},
		{"data not an object", text, func(o map[string]any) { o["data"] = []any{} }, "at '/data'"},
		// The new types.
		{"pinned_events without ids", pins, func(o map[string]any) { delete(data(o), "pinned_event_ids") }, "missing property 'pinned_event_ids'"},
		{"pinned_events with a value", pins, func(o map[string]any) { data(o)["value"] = "$text" }, "at '/data/value'"},
		{"pinned ids on a topic", topic, func(o map[string]any) { data(o)["pinned_event_ids"] = []any{} }, "at '/data/pinned_event_ids'"},
		{"redacted reaction, key without target", unreact, func(o map[string]any) { delete(data(o)["reaction"].(map[string]any), "target_event_id") }, "'target_event_id' required"},
		{"redacted reaction with another key", unreact, func(o map[string]any) { data(o)["reaction"].(map[string]any)["reactor"] = "x" }, "at '/data/reaction'"},
		{"redacted reaction without the reaction", unreact, func(o map[string]any) { delete(data(o), "reaction") }, "missing property 'reaction'"},
		{"reaction of a redacted message", unreact, func(o map[string]any) { data(o)["redacted_type"] = "m.room.message" }, "at '/data'"},
		{"reaction without redacted_type", unreact, func(o map[string]any) { delete(data(o), "redacted_type") }, "at '/data'"},
		{"redacted_type empty", unreact, func(o map[string]any) { data(o)["redacted_type"] = "" }, "at '/data/redacted_type'"},
		{"reaction removed with the redaction's id", removed, func(o map[string]any) { o["id"] = o["matrix_event_id"] }, "at '/id'"},
		{"reaction removed with an ephemeral id", removed, func(o map[string]any) { o["id"] = ephID }, "at '/id'"},
		{"reaction removed with a short id", removed, func(o map[string]any) { o["id"] = "~rr_0f1e" }, "at '/id'"},
		{"a message with a reaction.removed id", text, func(o map[string]any) { o["id"] = ReactionRemovedID("$text") }, "at '/id'"},
		{"reaction removed without matrix_event_id", removed, func(o map[string]any) { delete(o, "matrix_event_id") }, "missing property 'matrix_event_id'"},
		{"reaction removed without sender", removed, func(o map[string]any) { delete(o, "sender") }, "missing property 'sender'"},
		{"reaction removed without the reaction", removed, func(o map[string]any) { delete(data(o), "reaction_event_id") }, "missing property 'reaction_event_id'"},
		{"reaction removed without reason", removed, func(o map[string]any) { delete(data(o), "reason") }, "missing property 'reason'"},
		{"reaction removed, key without target", removed, func(o map[string]any) { delete(data(o), "target_event_id") }, "'target_event_id' required"},
		{"reaction removed, nested like the deletion", removed, func(o map[string]any) { data(o)["reaction"] = map[string]any{} }, "'reaction' not allowed"},
		{"reaction removed with redacted_type", removed, func(o map[string]any) { data(o)["redacted_type"] = "m.reaction" }, "'redacted_type' not allowed"},
		{"profile change with nothing changed", profile, func(o map[string]any) { data(o)["changed"] = []any{} }, "at '/data/changed'"},
		{"profile change of another field", profile, func(o map[string]any) { data(o)["changed"] = []any{"membership"} }, "at '/data/changed/0'"},
		{"profile change, membership not join", profile, func(o map[string]any) { data(o)["membership"] = "leave" }, "at '/data/membership'"},
		{"poll without answers", poll, func(o map[string]any) { data(o)["answers"] = []any{} }, "at '/data/answers'"},
		{"poll of an unknown kind", poll, func(o map[string]any) { data(o)["kind"] = "m.disclosed" }, "at '/data/kind'"},
		{"poll with max_selections 0", poll, func(o map[string]any) { data(o)["max_selections"] = 0 }, "at '/data/max_selections'"},
		{"vote without a poll", vote, func(o map[string]any) { delete(data(o), "poll_event_id") }, "missing property 'poll_event_id'"},
		{"vote with numbers", vote, func(o map[string]any) { data(o)["answers"] = []any{1} }, "at '/data/answers/0'"},
		{"location without geo_uri", location, func(o map[string]any) { delete(data(o), "geo_uri") }, "missing property 'geo_uri'"},
		{"sticker false", text, func(o map[string]any) {
			o["type"] = MediaUploaded
			data(o)["url"] = ""
			data(o)["msgtype"] = "m.image"
			data(o)["sticker"] = false
		}, "at '/data/sticker'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obj := tc.base(t)
			tc.change(obj)
			raw, _ := json.Marshal(obj)
			err := Validate(raw)
			if err == nil {
				t.Fatalf("valid: %s", raw)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q\ndoes not contain %q", err, tc.want)
			}
		})
	}
	for _, raw := range []string{``, `{`, `[]`, `"messaging.message.created"`, `{"type":5}`, `{} {}`} {
		if Validate([]byte(raw)) == nil {
			t.Errorf("%q is valid", raw)
		}
	}
}

// Every type has a schema file, and every schema file but the envelope is a
// type; each names itself consistently.
func TestSchemaFilesAreTheTypes(t *testing.T) {
	if _, err := schemas(); err != nil {
		t.Fatal(err)
	}
	names, err := fs.Glob(SchemaFiles(), "*")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, typ := range Types {
		want = append(want, typ+".json")
	}
	want = append(want, EnvelopeSchema)
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("schema files %v, want %v", names, want)
	}
	for _, name := range names {
		data, err := fs.ReadFile(SchemaFiles(), name)
		if err != nil {
			t.Fatal(err)
		}
		var sch struct {
			Schema     string `json:"$schema"`
			ID         string `json:"$id"`
			Title      string `json:"title"`
			Properties struct {
				Type struct {
					Const string `json:"const"`
					Enum  []string
				} `json:"type"`
			} `json:"properties"`
			AllOf []struct {
				Ref string `json:"$ref"`
			} `json:"allOf"`
		}
		if err := json.Unmarshal(data, &sch); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if sch.Schema != "https://json-schema.org/draft/2020-12/schema" || sch.ID != SchemaBaseURL+name {
			t.Errorf("%s: $schema %q, $id %q", name, sch.Schema, sch.ID)
		}
		if name == EnvelopeSchema {
			if !slices.Equal(sch.Properties.Type.Enum, Types) {
				t.Errorf("envelope type enum %v, want %v", sch.Properties.Type.Enum, Types)
			}
			continue
		}
		typ := strings.TrimSuffix(name, ".json")
		if sch.Title != typ || sch.Properties.Type.Const != typ || len(sch.AllOf) == 0 || sch.AllOf[0].Ref != EnvelopeSchema {
			t.Errorf("%s: title %q, type const %q, allOf %v", name, sch.Title, sch.Properties.Type.Const, sch.AllOf)
		}
	}
}

// docs/events.md documents every type.
func TestEventsDocCoversEveryType(t *testing.T) {
	doc, err := os.ReadFile("../../docs/events.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range Types {
		if !strings.Contains(string(doc), "### `"+typ+"`") {
			t.Errorf("docs/events.md has no section for %s", typ)
		}
	}
}

// Every DTO in docs/events.md (a json block with a version, or a webhook
// body's dto) matches its schema.
func TestEventsDocExamplesMatchTheSchemas(t *testing.T) {
	doc, err := os.ReadFile("../../docs/events.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := strings.Split(string(doc), "```json\n")[1:]
	seen := map[string]bool{}
	for _, block := range blocks {
		block, _, _ = strings.Cut(block, "\n```")
		var obj map[string]json.RawMessage
		if err := json.Unmarshal([]byte(block), &obj); err != nil {
			continue // not an object: an entity or a fragment
		}
		dto := []byte(block)
		if obj["dto"] != nil {
			dto = obj["dto"]
		} else if obj["version"] == nil {
			continue
		}
		var env struct{ Type string }
		_ = json.Unmarshal(dto, &env)
		seen[env.Type] = true
		if err := Validate(dto); err != nil {
			t.Errorf("docs/events.md example:\n%s\n%v", dto, err)
		}
	}
	for _, typ := range Types {
		if !seen[typ] {
			t.Errorf("docs/events.md has no example of %s", typ)
		}
	}
}
