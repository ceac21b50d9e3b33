package mapping

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/identity"
)

var mapper = &Mapper{
	IDs: identity.Mapper{ServerName: "daarion.space", BotLocalpart: "daarion-bot"},
	Rooms: func(roomID string) (string, string) {
		if roomID == "!city:daarion.space" {
			return "#city_kyiv:daarion.space", "kyiv"
		}
		return "", ""
	},
	Origin: func(eventID string) *Origin {
		if eventID == "$sent-by-bridge" {
			return &Origin{Bridge: true, Service: "messenger", IdempotencyKey: "k1"}
		}
		return nil
	},
	Redacted: func(eventID string) *eventlog.Event { return logged[eventID] },
}

// logged are the events the test mapper's Redacted finds in the log, before
// (positions 1 to 5) every event timeline makes (1000) but one.
var logged = positioned(map[string]*eventlog.Event{
	"$reaction-in-log":    timeline("$reaction-in-log", "@agent_sofia:daarion.space", "m.reaction", "-", `{"m.relates_to":{"rel_type":"m.annotation","event_id":"$1","key":"👍"}}`),
	"$stripped-reaction":  timeline("$stripped-reaction", "@alice:daarion.space", "m.reaction", "-", `{}`, `,"unsigned":{"redacted_because":{"type":"m.room.redaction"}}`),
	"$message-in-log":     timeline("$message-in-log", "@alice:daarion.space", "m.room.message", "-", `{"msgtype":"m.text","body":"x"}`),
	"$reaction-elsewhere": roomEvent(otherRoom, "$reaction-elsewhere", "@alice:daarion.space", "m.reaction", "-", `{"m.relates_to":{"rel_type":"m.annotation","event_id":"$1","key":"👍"}}`),
	"$reaction-later":     timeline("$reaction-later", "@alice:daarion.space", "m.reaction", "-", `{"m.relates_to":{"rel_type":"m.annotation","event_id":"$1","key":"👍"}}`),
	"~edu_logged":         ephemeralWithID("~edu_logged", "m.typing", `{"user_ids":[]}`), // of the same room
})

func positioned(events map[string]*eventlog.Event) map[string]*eventlog.Event {
	pos := map[string]int64{"$reaction-in-log": 1, "$stripped-reaction": 2, "$message-in-log": 3, "$reaction-elsewhere": 4, "$reaction-later": 2000, "~edu_logged": 5}
	for eventID, evt := range events {
		evt.Position = pos[eventID]
	}
	return events
}

func timeline(eventID, sender, typ, stateKey, content string, extra ...string) *eventlog.Event {
	sk := ""
	if stateKey != "-" {
		sk = `,"state_key":"` + stateKey + `"`
	}
	return &eventlog.Event{Position: 1000, EventID: eventID, Kind: eventlog.KindTimeline, RoomID: "!city:daarion.space", Type: typ,
		JSON: json.RawMessage(`{"event_id":"` + eventID + `","type":"` + typ + `","sender":"` + sender + `","origin_server_ts":1732445400000` + sk +
			`,"content":` + content + strings.Join(extra, "") + `}`)}
}

func ephemeral(typ, content string) *eventlog.Event {
	return &eventlog.Event{EventID: "~edu_1", Kind: eventlog.KindEphemeral, RoomID: "!city:daarion.space", Type: typ,
		ReceivedAt: time.UnixMilli(1732445500000), JSON: json.RawMessage(`{"type":"` + typ + `","room_id":"!city:daarion.space","content":` + content + `}`)}
}

func ephemeralWithID(eventID, typ, content string) *eventlog.Event {
	evt := ephemeral(typ, content)
	evt.EventID = eventID
	return evt
}

func get(m map[string]any, path string) any {
	var cur any = m
	for _, k := range strings.Split(path, ".") {
		switch v := cur.(type) {
		case map[string]any:
			cur = v[k]
		case *Entity:
			cur = map[string]any{"id": v.ID, "type": v.Type, "matrix_id": v.MatrixID}[k]
		default:
			return nil
		}
	}
	return cur
}

const alice = "@alice:daarion.space"
const sofia = "@agent_sofia:daarion.space"

func TestMap(t *testing.T) {
	for _, tc := range []struct {
		name  string
		evt   *eventlog.Event
		typ   string // "" = not delivered
		data  map[string]any
		check func(*DTO) bool
	}{
		{"text", timeline("$1", alice, "m.room.message", "-", `{"msgtype":"m.text","body":"Hello\n  world"}`), MessageCreated,
			map[string]any{"msgtype": "m.text", "body": "Hello\n  world", "preview": "Hello world"}, nil},
		{"notice by agent", timeline("$2", sofia, "m.room.message", "-", `{"msgtype":"m.notice","body":"hi"}`), MessageCreated, nil,
			func(d *DTO) bool { return d.Sender.ID == "agent:sofia" && d.Sender.Type == "agent" }},
		{"emote", timeline("$3", alice, "m.room.message", "-", `{"msgtype":"m.emote","body":"waves"}`), MessageCreated, map[string]any{"msgtype": "m.emote"}, nil},
		{"html", timeline("$4", alice, "m.room.message", "-", `{"msgtype":"m.text","body":"b","format":"org.matrix.custom.html","formatted_body":"<b>b</b>"}`), MessageCreated,
			map[string]any{"formatted_body": "<b>b</b>"}, nil},
		{"reply", timeline("$5", alice, "m.room.message", "-", `{"msgtype":"m.text","body":"r","m.relates_to":{"m.in_reply_to":{"event_id":"$q"}}}`), MessageCreated,
			map[string]any{"reply_to_event_id": "$q"}, nil},
		{"thread fallback", timeline("$6", alice, "m.room.message", "-", `{"msgtype":"m.text","body":"t","m.relates_to":{"rel_type":"m.thread","event_id":"$root","is_falling_back":true,"m.in_reply_to":{"event_id":"$root"}}}`), MessageCreated,
			map[string]any{"thread_root_event_id": "$root", "reply_to_event_id": nil}, nil},
		{"mentions", timeline("$7", alice, "m.room.message", "-", `{"msgtype":"m.text","body":"@s","m.mentions":{"user_ids":["@agent_sofia:daarion.space"]}}`), MessageCreated, nil,
			func(d *DTO) bool { return get(d.Data, "mentions.ids").([]string)[0] == "agent:sofia" }},
		{"image", timeline("$8", sofia, "m.room.message", "-", `{"msgtype":"m.image","body":"cat.png","url":"mxc://s/a","info":{"mimetype":"image/png"}}`), MediaUploaded,
			map[string]any{"url": "mxc://s/a", "info.mimetype": "image/png"}, nil},
		{"encrypted attachment", timeline("$8e", alice, "m.room.message", "-", `{"msgtype":"m.file","body":"plan.pdf","file":{"url":"mxc://s/cipher","key":{"kty":"oct","k":"x"},"iv":"i","hashes":{"sha256":"h"},"v":"v2"}}`), MediaUploaded,
			map[string]any{"url": "mxc://s/cipher", "file.url": "mxc://s/cipher", "file.iv": "i", "file.v": "v2"}, nil},
		{"file audio video", timeline("$9", alice, "m.room.message", "-", `{"msgtype":"m.video","body":"v","url":"mxc://s/v"}`), MediaUploaded, nil, nil},
		{"edit", timeline("$10", alice, "m.room.message", "-", `{"msgtype":"m.text","body":"* new","m.new_content":{"msgtype":"m.text","body":"new"},"m.relates_to":{"rel_type":"m.replace","event_id":"$1"}}`), MessageEdited,
			map[string]any{"edited_event_id": "$1", "body": "new", "preview": "new"}, nil},
		{"encrypted, as the homeserver sent it: its clear form has the DTO", timeline("$e1", alice, "m.room.encrypted", "-", `{"algorithm":"m.megolm.v1.aes-sha2","ciphertext":"AwgA","session_id":"s1"}`), "", nil, nil},
		{"encrypted, given up on", timeline("$e2", alice, "m.room.encrypted", "-", `{"algorithm":"m.megolm.v1.aes-sha2","ciphertext":"AwgA","session_id":"s1"}`, `,"net.daarion.undecryptable":{"reason":"no keys"}`), MessageUndecryptable,
			map[string]any{"reason": "no keys", "algorithm": "m.megolm.v1.aes-sha2", "session_id": "s1"}, nil},
		{"encrypted, given up on, without content", timeline("$e3", alice, "m.room.encrypted", "-", `{}`, `,"net.daarion.undecryptable":{"reason":"unparseable"}`), MessageUndecryptable,
			map[string]any{"reason": "unparseable", "algorithm": nil}, nil},
		{"unknown msgtype", timeline("$11", alice, "m.room.message", "-", `{"msgtype":"m.key.verification.request","body":"verify"}`), "", nil, nil},
		{"location", timeline("$11a", alice, "m.room.message", "-", `{"msgtype":"m.location","body":"Location at geo:50.45,30.52","geo_uri":"geo:50.45,30.52;u=35","org.matrix.msc3488.location":{"uri":"geo:50.45,30.52;u=35","description":"Maidan"},"org.matrix.msc3488.asset":{"type":"m.pin"}}`), LocationShared,
			map[string]any{"msgtype": "m.location", "geo_uri": "geo:50.45,30.52;u=35", "description": "Maidan", "asset_type": "m.pin", "preview": "Location at geo:50.45,30.52"}, nil},
		{"location in the extensible block only", timeline("$11b", alice, "m.room.message", "-", `{"msgtype":"m.location","body":"here","m.location":{"uri":"geo:1,2"},"m.asset":{"type":"m.self"}}`), LocationShared,
			map[string]any{"geo_uri": "geo:1,2", "asset_type": "m.self", "description": nil}, nil},
		{"location without a place", timeline("$11c", alice, "m.room.message", "-", `{"msgtype":"m.location","body":"here"}`), "", nil, nil},
		{"location with a bad block", timeline("$11d", alice, "m.room.message", "-", `{"msgtype":"m.location","body":"here","geo_uri":"geo:1,2","m.location":"geo:1,2"}`), "", nil, nil},
		{"a text with an m.location key is still a text", timeline("$11e", alice, "m.room.message", "-", `{"msgtype":"m.text","body":"t","m.location":5,"geo_uri":[]}`), MessageCreated, nil, nil},
		{"sticker", timeline("$11f", alice, "m.sticker", "-", `{"body":"Happy cat","url":"mxc://s/sticker","info":{"mimetype":"image/webp","w":256,"h":256}}`), MediaUploaded,
			map[string]any{"msgtype": "m.image", "sticker": true, "url": "mxc://s/sticker", "body": "Happy cat", "info.mimetype": "image/webp"}, nil},
		{"image is no sticker", timeline("$11g", alice, "m.room.message", "-", `{"msgtype":"m.image","body":"i","url":"mxc://s/i"}`), MediaUploaded, map[string]any{"sticker": nil}, nil},
		{"sticker replying", timeline("$11h", alice, "m.sticker", "-", `{"body":"b","url":"mxc://s/s","m.relates_to":{"m.in_reply_to":{"event_id":"$q"}}}`), MediaUploaded, map[string]any{"reply_to_event_id": "$q"}, nil},
		{"poll (stable)", timeline("$p1", alice, "m.poll.start", "-", `{"m.text":[{"mimetype":"text/plain","body":"Lunch?\n1. Borscht\n2. Varenyky"}],"m.poll":{"kind":"m.disclosed","max_selections":2,"question":{"m.text":[{"body":"Lunch?"}]},"answers":[{"m.id":"b","m.text":[{"body":"Borscht"}]},{"m.id":"v","m.text":[{"body":"Varenyky"}]}]}}`), PollStarted,
			map[string]any{"question": "Lunch?", "kind": "disclosed", "max_selections": 2, "body": "Lunch?\n1. Borscht\n2. Varenyky"},
			func(d *DTO) bool {
				a := d.Data["answers"].([]map[string]any)
				return len(a) == 2 && a[0]["id"] == "b" && a[0]["text"] == "Borscht" && a[1]["id"] == "v"
			}},
		{"poll (unstable, as Element sends it)", timeline("$p2", alice, "org.matrix.msc3381.poll.start", "-", `{"org.matrix.msc3381.poll.start":{"kind":"org.matrix.msc3381.poll.undisclosed","max_selections":1,"question":{"org.matrix.msc1767.text":"Lunch?","body":"Lunch?"},"answers":[{"id":"b","org.matrix.msc1767.text":"Borscht"},{"id":"","org.matrix.msc1767.text":"no id"}]},"org.matrix.msc1767.text":"Lunch?\n1. Borscht"}`), PollStarted,
			map[string]any{"question": "Lunch?", "kind": "undisclosed", "max_selections": 1, "body": "Lunch?\n1. Borscht"},
			func(d *DTO) bool {
				a := d.Data["answers"].([]map[string]any)
				return len(a) == 1 && a[0]["text"] == "Borscht"
			}},
		{"poll of an unknown kind, no max_selections", timeline("$p3", alice, "m.poll.start", "-", `{"m.poll":{"kind":"org.example.ranked","question":{"m.text":"Q"},"answers":[{"m.id":"a","m.text":"A"}]}}`), PollStarted,
			map[string]any{"kind": "undisclosed", "max_selections": 1, "question": "Q", "body": ""}, nil},
		{"poll with 25 answers and max_selections 99", timeline("$p4", alice, "m.poll.start", "-", `{"m.poll":{"max_selections":99,"question":{"m.text":"Q"},"answers":[`+strings.TrimSuffix(strings.Repeat(`{"m.id":"x","m.text":"x"},`, 25), ",")+`]}}`), PollStarted,
			map[string]any{"max_selections": 20}, func(d *DTO) bool { return len(d.Data["answers"].([]map[string]any)) == 20 }},
		{"poll without answers", timeline("$p5", alice, "m.poll.start", "-", `{"m.poll":{"question":{"m.text":"Q"},"answers":[]}}`), "", nil, nil},
		{"poll without a poll block", timeline("$p6", alice, "m.poll.start", "-", `{"m.text":"Q"}`), "", nil, nil},
		{"vote (stable)", timeline("$v1", sofia, "m.poll.response", "-", `{"m.relates_to":{"rel_type":"m.reference","event_id":"$p1"},"m.selections":["b","v"]}`), PollAnswered,
			map[string]any{"poll_event_id": "$p1"}, func(d *DTO) bool { a := d.Data["answers"].([]string); return len(a) == 2 && a[1] == "v" }},
		{"vote (unstable)", timeline("$v2", sofia, "org.matrix.msc3381.poll.response", "-", `{"m.relates_to":{"rel_type":"m.reference","event_id":"$p2"},"org.matrix.msc3381.poll.response":{"answers":["b"]}}`), PollAnswered,
			map[string]any{"poll_event_id": "$p2"}, func(d *DTO) bool { return d.Data["answers"].([]string)[0] == "b" }},
		{"vote withdrawn", timeline("$v3", sofia, "m.poll.response", "-", `{"m.relates_to":{"rel_type":"m.reference","event_id":"$p1"},"m.selections":[]}`), PollAnswered, nil,
			func(d *DTO) bool { a, ok := d.Data["answers"].([]string); return ok && a != nil && len(a) == 0 }},
		{"vote without a relation", timeline("$v4", sofia, "m.poll.response", "-", `{"m.selections":["b"]}`), "", nil, nil},
		{"vote with another relation", timeline("$v5", sofia, "m.poll.response", "-", `{"m.relates_to":{"rel_type":"m.thread","event_id":"$p1"},"m.selections":["b"]}`), "", nil, nil},
		{"poll end (stable, with results)", timeline("$e1", alice, "m.poll.end", "-", `{"m.relates_to":{"rel_type":"m.reference","event_id":"$p1"},"m.text":[{"body":"The poll has closed. Top answer: Borscht"}],"m.poll.results":{"b":3,"v":1.5,"x":-1}}`), PollEnded,
			map[string]any{"poll_event_id": "$p1", "body": "The poll has closed. Top answer: Borscht"},
			func(d *DTO) bool { r := d.Data["results"].(map[string]int64); return len(r) == 1 && r["b"] == 3 }},
		{"poll end (unstable)", timeline("$e2", alice, "org.matrix.msc3381.poll.end", "-", `{"m.relates_to":{"rel_type":"m.reference","event_id":"$p2"},"org.matrix.msc3381.poll.end":{},"org.matrix.msc1767.text":"Ended poll"}`), PollEnded,
			map[string]any{"poll_event_id": "$p2", "body": "Ended poll", "results": nil}, nil},
		{"poll end without a relation", timeline("$e3", alice, "m.poll.end", "-", `{"m.text":"Ended"}`), "", nil, nil},
		{"reaction", timeline("$12", alice, "m.reaction", "-", `{"m.relates_to":{"rel_type":"m.annotation","event_id":"$1","key":"👍"}}`), ReactionAdded,
			map[string]any{"target_event_id": "$1", "key": "👍"}, nil},
		{"redaction (v11 content)", timeline("$13", alice, "m.room.redaction", "-", `{"redacts":"$1","reason":"spam"}`), MessageDeleted,
			map[string]any{"redacted_event_id": "$1", "reason": "spam"}, nil},
		{"redaction (top level)", timeline("$14", alice, "m.room.redaction", "-", `{}`, `,"redacts":"$2"`), MessageDeleted, map[string]any{"redacted_event_id": "$2"}, nil},
		// What the log holds of the redacted event adds optional keys; the
		// type stays messaging.message.deleted (see Versioning in
		// docs/events.md).
		{"redaction of a reaction in the log", timeline("$14a", "@daarion-bot:daarion.space", "m.room.redaction", "-", `{"redacts":"$reaction-in-log","reason":"off-topic"}`), MessageDeleted,
			map[string]any{"redacted_event_id": "$reaction-in-log", "reason": "off-topic", "redacted_type": "m.reaction", "reaction.target_event_id": "$1", "reaction.key": "👍"},
			func(d *DTO) bool {
				return d.Sender.ID == "bridge:bot" && len(d.Data) == 4 && len(d.Data["reaction"].(map[string]any)) == 2
			}},
		{"redaction of a reaction stored redacted", timeline("$14b", alice, "m.room.redaction", "-", `{}`, `,"redacts":"$stripped-reaction"`), MessageDeleted,
			map[string]any{"redacted_event_id": "$stripped-reaction", "redacted_type": "m.reaction", "reaction.target_event_id": nil, "reaction.key": nil},
			func(d *DTO) bool { r, ok := d.Data["reaction"].(map[string]any); return ok && len(r) == 0 }},
		{"redaction of a message in the log", timeline("$14c", alice, "m.room.redaction", "-", `{"redacts":"$message-in-log"}`), MessageDeleted,
			map[string]any{"redacted_event_id": "$message-in-log", "redacted_type": "m.room.message", "reaction": nil}, nil},
		{"redaction of an event not in the log", timeline("$14d", alice, "m.room.redaction", "-", `{"redacts":"$unknown"}`), MessageDeleted,
			map[string]any{"redacted_event_id": "$unknown", "redacted_type": nil, "reaction": nil}, nil},
		{"redaction of a reaction logged after it (a reconcile)", timeline("$14f", alice, "m.room.redaction", "-", `{"redacts":"$reaction-later"}`), MessageDeleted,
			map[string]any{"redacted_event_id": "$reaction-later", "redacted_type": nil, "reaction": nil}, nil},
		{"redaction naming a reaction of another room", timeline("$14e", alice, "m.room.redaction", "-", `{"redacts":"$reaction-elsewhere"}`), MessageDeleted,
			map[string]any{"redacted_event_id": "$reaction-elsewhere", "redacted_type": nil, "reaction": nil}, nil},
		{"redaction naming an ephemeral event", timeline("$14g", alice, "m.room.redaction", "-", `{"redacts":"~edu_logged"}`), MessageDeleted,
			map[string]any{"redacted_event_id": "~edu_logged", "redacted_type": nil}, nil},
		{"join", timeline("$15", alice, "m.room.member", alice, `{"membership":"join","displayname":"Alice"}`), MemberJoined,
			map[string]any{"target.id": "user:alice", "actor.id": "user:alice", "displayname": "Alice"}, nil},
		{"profile change is not a join", timeline("$16", alice, "m.room.member", alice, `{"membership":"join","displayname":"Al"}`, `,"unsigned":{"prev_content":{"membership":"join"}}`), MemberUpdated,
			map[string]any{"target.id": "user:alice", "actor.id": "user:alice", "membership": "join", "displayname": "Al", "prev_displayname": nil}, func(d *DTO) bool { return strings.Join(d.Data["changed"].([]string), ",") == "displayname" }},
		{"avatar and name change", timeline("$16a", alice, "m.room.member", alice, `{"membership":"join","avatar_url":"mxc://s/new"}`, `,"unsigned":{"prev_content":{"membership":"join","displayname":"Alice","avatar_url":"mxc://s/old"}}`), MemberUpdated,
			map[string]any{"avatar_url": "mxc://s/new", "prev_avatar_url": "mxc://s/old", "prev_displayname": "Alice", "displayname": nil},
			func(d *DTO) bool { return strings.Join(d.Data["changed"].([]string), ",") == "avatar_url,displayname" }},
		{"join with an avatar_url that is not a string", timeline("$15a", alice, "m.room.member", alice, `{"membership":"join","avatar_url":5}`), MemberJoined, nil, nil},
		{"profile change to an avatar_url that is not a string", timeline("$16c", alice, "m.room.member", alice, `{"membership":"join","avatar_url":{}}`, `,"unsigned":{"prev_content":{"membership":"join","avatar_url":"mxc://s/a"}}`), MemberUpdated,
			map[string]any{"avatar_url": nil, "prev_avatar_url": "mxc://s/a"}, nil},
		{"join after join, nothing changed", timeline("$16b", alice, "m.room.member", alice, `{"membership":"join","displayname":"Al"}`, `,"unsigned":{"prev_content":{"membership":"join","displayname":"Al"}}`), "", nil, nil},
		{"leave", timeline("$17", alice, "m.room.member", alice, `{"membership":"leave"}`, `,"unsigned":{"prev_content":{"membership":"join"}}`), MemberLeft, map[string]any{"target.id": "user:alice"}, nil},
		{"kick", timeline("$18", "@daarion-bot:daarion.space", "m.room.member", sofia, `{"membership":"leave","reason":"rules"}`), MemberKicked,
			map[string]any{"target.id": "agent:sofia", "actor.id": "bridge:bot", "actor.type": "bridge", "reason": "rules"}, nil},
		{"invite", timeline("$19", alice, "m.room.member", sofia, `{"membership":"invite"}`), MemberInvited, map[string]any{"target.id": "agent:sofia", "actor.id": "user:alice"}, nil},
		{"ban", timeline("$20", alice, "m.room.member", "@bob:other.org", `{"membership":"ban"}`), MemberBanned, map[string]any{"target.id": "matrix:@bob:other.org", "target.type": "remote"}, nil},
		{"unban", timeline("$21", alice, "m.room.member", "@bob:other.org", `{"membership":"leave"}`, `,"unsigned":{"prev_content":{"membership":"ban"}}`), MemberUnbanned, nil, nil},
		{"name", timeline("$22", alice, "m.room.name", "", `{"name":"Kyiv"}`), ChannelUpdated, map[string]any{"field": "name", "value": "Kyiv"}, nil},
		{"topic", timeline("$23", alice, "m.room.topic", "", `{"topic":"t"}`), ChannelUpdated, map[string]any{"field": "topic", "value": "t"}, nil},
		{"avatar", timeline("$24", alice, "m.room.avatar", "", `{"url":"mxc://s/a"}`), ChannelUpdated, map[string]any{"field": "avatar_url", "value": "mxc://s/a"}, nil},
		{"canonical alias", timeline("$25", alice, "m.room.canonical_alias", "", `{"alias":"#city_kyiv:daarion.space"}`), ChannelUpdated, map[string]any{"field": "canonical_alias"}, nil},
		{"pinned events", timeline("$25a", alice, "m.room.pinned_events", "", `{"pinned":["$1","",5,"$2"]}`), ChannelUpdated, map[string]any{"field": "pinned_events", "value": ""},
			func(d *DTO) bool { return strings.Join(d.Data["pinned_event_ids"].([]string), ",") == "$1,$2" }},
		{"nothing pinned", timeline("$25b", alice, "m.room.pinned_events", "", `{}`), ChannelUpdated, nil,
			func(d *DTO) bool {
				p, ok := d.Data["pinned_event_ids"].([]string)
				return ok && p != nil && len(p) == 0
			}},
		{"pinned events with a state_key", timeline("$25c", alice, "m.room.pinned_events", "x", `{"pinned":["$1"]}`), "", nil, nil},
		{"name has no pinned ids", timeline("$25d", alice, "m.room.name", "", `{"name":"n"}`), ChannelUpdated, map[string]any{"pinned_event_ids": nil}, nil},
		{"tombstone", timeline("$26", alice, "m.room.tombstone", "", `{"body":"moved","replacement_room":"!new:daarion.space"}`), ChannelUpgraded,
			map[string]any{"replacement_room_id": "!new:daarion.space"}, nil},
		{"unknown type", timeline("$27", alice, "org.example.custom", "-", `{}`), "", nil, nil},
		{"power levels are not mapped", timeline("$28", alice, "m.room.power_levels", "", `{}`), "", nil, nil},
		{"typing", ephemeral("m.typing", `{"user_ids":["@alice:daarion.space","@agent_sofia:daarion.space"]}`), TypingUpdated, nil,
			func(d *DTO) bool {
				typing := d.Data["typing"].([]*Entity)
				return len(typing) == 2 && typing[1].ID == "agent:sofia" && d.MatrixEventID == "" && d.OccurredAt.UnixMilli() == 1732445500000
			}},
		{"receipt", ephemeral("m.receipt", `{"$1":{"m.read":{"@alice:daarion.space":{"ts":5}}}}`), ReadUpdated, nil,
			func(d *DTO) bool {
				r := d.Data["receipts"].([]map[string]any)
				return len(r) == 1 && r[0]["event_id"] == "$1" && r[0]["user"].(*Entity).ID == "user:alice" && r[0]["ts"] == int64(5)
			}},
		{"presence", ephemeral("m.presence", `{"presence":"online","currently_active":true}`), PresenceUpdated, map[string]any{"presence": "online", "currently_active": true}, nil},
		{"not json", &eventlog.Event{EventID: "$x", Kind: eventlog.KindTimeline, JSON: json.RawMessage(`{`)}, "", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dto := mapper.Map(tc.evt)
			if tc.typ == "" {
				if dto != nil {
					t.Fatalf("mapped to %s, want nothing", dto.Type)
				}
				return
			}
			if dto == nil || dto.Type != tc.typ {
				t.Fatalf("mapped to %+v, want %s", dto, tc.typ)
			}
			if dto.ID != tc.evt.EventID || dto.Version != Version || dto.Room.CitySlug != "kyiv" || dto.Room.MatrixRoomAlias != "#city_kyiv:daarion.space" {
				t.Errorf("envelope = %+v %+v", dto, dto.Room)
			}
			if tc.evt.Kind == eventlog.KindTimeline && (dto.MatrixEventID != tc.evt.EventID || dto.OccurredAt.UnixMilli() != 1732445400000) {
				t.Errorf("timeline envelope: matrix_event_id %q occurred_at %v", dto.MatrixEventID, dto.OccurredAt)
			}
			for path, want := range tc.data {
				if got := get(dto.Data, path); got != want {
					t.Errorf("data.%s = %#v, want %#v", path, got, want)
				}
			}
			if tc.check != nil && !tc.check(dto) {
				t.Errorf("check failed: %s", dto.JSON())
			}
		})
	}
}

// Without Redacted (the caller passes none), a redaction names the
// redacted event only, that of a reaction too.
func TestRedactionWithoutLookup(t *testing.T) {
	m := &Mapper{IDs: mapper.IDs, Rooms: mapper.Rooms}
	dto := m.Map(timeline("$r", alice, "m.room.redaction", "-", `{"redacts":"$reaction-in-log"}`))
	if dto == nil || dto.Type != MessageDeleted || dto.Data["redacted_event_id"] != "$reaction-in-log" || len(dto.Data) != 2 {
		t.Errorf("redaction without a lookup: %+v", dto)
	}
}

// MapAll: every event has at most one DTO of its own (Map's); a redaction
// of a reaction the log holds from before it, in its room (the condition of
// redacted_type m.reaction), is messaging.message.deleted and then
// messaging.reaction.removed, with the deletion's envelope under an id
// derived from the redaction's.
func TestMapAll(t *testing.T) {
	noLookup := &Mapper{IDs: mapper.IDs, Rooms: mapper.Rooms}
	for _, tc := range []struct {
		name    string
		m       *Mapper
		evt     *eventlog.Event
		types   []string
		removed map[string]any // data of the reaction.removed, exactly
	}{
		{"a reaction in the log, taken back by a moderator", mapper, timeline("$un1", "@daarion-bot:daarion.space", "m.room.redaction", "-", `{"redacts":"$reaction-in-log","reason":"off-topic"}`),
			[]string{MessageDeleted, ReactionRemoved}, map[string]any{"reaction_event_id": "$reaction-in-log", "target_event_id": "$1", "key": "👍", "reason": "off-topic"}},
		{"a reaction in the log, top-level redacts, no reason", mapper, timeline("$un2", alice, "m.room.redaction", "-", `{}`, `,"redacts":"$reaction-in-log"`),
			[]string{MessageDeleted, ReactionRemoved}, map[string]any{"reaction_event_id": "$reaction-in-log", "target_event_id": "$1", "key": "👍", "reason": ""}},
		{"a reaction stored redacted: what it was on is unknown", mapper, timeline("$un3", alice, "m.room.redaction", "-", `{"redacts":"$stripped-reaction"}`),
			[]string{MessageDeleted, ReactionRemoved}, map[string]any{"reaction_event_id": "$stripped-reaction", "reason": ""}},
		{"an echo: both carry the origin", mapper, timeline("$sent-by-bridge", sofia, "m.room.redaction", "-", `{"redacts":"$reaction-in-log"}`),
			[]string{MessageDeleted, ReactionRemoved}, map[string]any{"reaction_event_id": "$reaction-in-log", "target_event_id": "$1", "key": "👍", "reason": ""}},
		{"a message in the log", mapper, timeline("$un4", alice, "m.room.redaction", "-", `{"redacts":"$message-in-log"}`), []string{MessageDeleted}, nil},
		{"an event not in the log", mapper, timeline("$un5", alice, "m.room.redaction", "-", `{"redacts":"$unknown"}`), []string{MessageDeleted}, nil},
		{"a reaction logged after the redaction (a reconcile)", mapper, timeline("$un6", alice, "m.room.redaction", "-", `{"redacts":"$reaction-later"}`), []string{MessageDeleted}, nil},
		{"a reaction of another room", mapper, timeline("$un7", alice, "m.room.redaction", "-", `{"redacts":"$reaction-elsewhere"}`), []string{MessageDeleted}, nil},
		{"an ephemeral event", mapper, timeline("$un8", alice, "m.room.redaction", "-", `{"redacts":"~edu_logged"}`), []string{MessageDeleted}, nil},
		{"no lookup", noLookup, timeline("$un9", alice, "m.room.redaction", "-", `{"redacts":"$reaction-in-log"}`), []string{MessageDeleted}, nil},
		{"a redaction naming nothing", mapper, timeline("$un10", alice, "m.room.redaction", "-", `{}`), nil, nil},
		{"a reaction", mapper, timeline("$12", alice, "m.reaction", "-", `{"m.relates_to":{"rel_type":"m.annotation","event_id":"$1","key":"👍"}}`), []string{ReactionAdded}, nil},
		{"typing", mapper, ephemeral("m.typing", `{"user_ids":[]}`), []string{TypingUpdated}, nil},
		{"unmapped", mapper, timeline("$27", alice, "org.example.custom", "-", `{}`), nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dtos := tc.m.MapAll(tc.evt)
			var types []string
			for _, d := range dtos {
				types = append(types, d.Type)
			}
			if strings.Join(types, ",") != strings.Join(tc.types, ",") || len(dtos) > MaxDTOsPerEvent {
				t.Fatalf("MapAll = %v, want %v", types, tc.types)
			}
			if len(dtos) == 0 {
				if tc.m.Map(tc.evt) != nil {
					t.Error("Map made a DTO, MapAll none")
				}
				return
			}
			// The first is Map's, unchanged.
			if first, again := dtos[0], tc.m.Map(tc.evt); string(first.JSON()) != string(again.JSON()) || first.ID != tc.evt.EventID {
				t.Errorf("MapAll's first %s is not Map's %s", first.JSON(), again.JSON())
			}
			for _, d := range dtos {
				if err := Validate(d.JSON()); err != nil {
					t.Errorf("%s: %v", d.JSON(), err)
				}
			}
			if tc.removed == nil {
				return
			}
			deleted, removed := dtos[0], dtos[1]
			if removed.ID != ReactionRemovedID(tc.evt.EventID) || !regexp.MustCompile(`^~rr_[0-9a-f]{32}$`).MatchString(removed.ID) {
				t.Errorf("id %q, want ~rr_ and 32 hex digits derived from %s", removed.ID, tc.evt.EventID)
			}
			if removed.MatrixEventID != tc.evt.EventID || removed.Version != Version || !removed.OccurredAt.Equal(deleted.OccurredAt) ||
				*removed.Room != *deleted.Room || *removed.Sender != *deleted.Sender ||
				(removed.Origin == nil) != (deleted.Origin == nil) || removed.Origin != nil && *removed.Origin != *deleted.Origin {
				t.Errorf("envelope %s, want the deletion's %s", removed.JSON(), deleted.JSON())
			}
			if len(removed.Data) != len(tc.removed) {
				t.Errorf("data %v, want %v", removed.Data, tc.removed)
			}
			for k, want := range tc.removed {
				if removed.Data[k] != want {
					t.Errorf("data.%s = %#v, want %#v", k, removed.Data[k], want)
				}
			}
			if (tc.evt.EventID == "$sent-by-bridge") != (removed.Origin != nil) {
				t.Errorf("origin %+v", removed.Origin)
			}
			// Mapping again (another sink, a retry) gives the same DTOs.
			if again := tc.m.MapAll(tc.evt); string(again[1].JSON()) != string(removed.JSON()) {
				t.Errorf("mapped again: %s, then %s", removed.JSON(), again[1].JSON())
			}
		})
	}
}

// The ids of reaction.removed are ~rr_ + 32 lowercase hex digits, one per
// redaction, never a Matrix event id or an ephemeral id.
func TestReactionRemovedID(t *testing.T) {
	a, b := ReactionRemovedID("$a:s"), ReactionRemovedID("$b:s")
	if a == b || a != ReactionRemovedID("$a:s") || len(a) != len(ReactionRemovedIDPrefix)+32 || !strings.HasPrefix(a, ReactionRemovedIDPrefix) {
		t.Errorf("ids %q and %q", a, b)
	}
	// A pinned value: the id is part of the DTO contract (deduplication
	// across releases), so the derivation may not change.
	if got := ReactionRemovedID("$unreact1:daarion.city"); got != "~rr_376cea7881ddb0c3d2cfd961ba653a5e" {
		t.Errorf("ReactionRemovedID($unreact1:daarion.city) = %q", got)
	}
}

func TestRedacts(t *testing.T) {
	for _, tc := range []struct {
		evt  *eventlog.Event
		want string
	}{
		{timeline("$r1", alice, "m.room.redaction", "-", `{"redacts":"$a"}`), "$a"},
		{timeline("$r2", alice, "m.room.redaction", "-", `{}`, `,"redacts":"$b"`), "$b"},
		{timeline("$r3", alice, "m.room.redaction", "-", `{}`), ""},
		{timeline("$r4", alice, "m.room.message", "-", `{"redacts":"$a"}`), ""},
		{&eventlog.Event{EventID: "$x", Kind: eventlog.KindTimeline, JSON: json.RawMessage(`{`)}, ""},
		{ephemeral("m.room.redaction", `{"redacts":"$a"}`), ""},
	} {
		if got := Redacts(tc.evt); got != tc.want {
			t.Errorf("Redacts(%s) = %q, want %q", tc.evt.JSON, got, tc.want)
		}
	}
}

func TestOriginMarksEchoes(t *testing.T) {
	dto := mapper.Map(timeline("$sent-by-bridge", sofia, "m.room.message", "-", `{"msgtype":"m.notice","body":"x"}`))
	if dto.Origin == nil || !dto.Origin.Bridge || dto.Origin.IdempotencyKey != "k1" || dto.Origin.Service != "messenger" {
		t.Errorf("origin = %+v", dto.Origin)
	}
	if dto := mapper.Map(timeline("$other", alice, "m.room.message", "-", `{"msgtype":"m.text","body":"x"}`)); dto.Origin != nil {
		t.Errorf("a human's event has origin %+v", dto.Origin)
	}
}

func TestHugeTimestampKeepsTheDTOEncodable(t *testing.T) {
	evt := &eventlog.Event{EventID: "$far", Kind: eventlog.KindTimeline, RoomID: "!city:daarion.space", Type: "m.room.message",
		ReceivedAt: time.UnixMilli(1732445400000),
		JSON:       json.RawMessage(`{"event_id":"$far","type":"m.room.message","sender":"@alice:daarion.space","origin_server_ts":253402300800000,"content":{"msgtype":"m.text","body":"x"}}`)}
	dto := mapper.Map(evt)
	if dto == nil || len(dto.JSON()) == 0 || dto.OccurredAt.UnixMilli() != 1732445400000 {
		t.Fatalf("DTO of an event from year 10000: %+v", dto)
	}
}

func TestPreview(t *testing.T) {
	long := strings.Repeat("слово ", 100)
	p := Preview(long)
	if r := []rune(p); len(r) != PreviewRunes || !strings.HasSuffix(p, "…") {
		t.Errorf("preview of a long body has %d runes: %q", len(r), p)
	}
	if Preview(" a\t\nb  ") != "a b" {
		t.Errorf("whitespace not collapsed: %q", Preview(" a\t\nb  "))
	}
}

// previewByFields is Preview as it was first written (join the fields, cut
// the runes): the single pass must give the same text.
func previewByFields(body string) string {
	s := strings.Join(strings.FieldsFunc(body, unicode.IsSpace), " ")
	if r := []rune(s); len(r) > PreviewRunes {
		return string(r[:PreviewRunes-1]) + "…"
	}
	return s
}

func TestPreviewIsFieldsJoinedAndCut(t *testing.T) {
	cases := []string{"", " ", "a", " a ", "a  b", "\u00a0x\u2003y\n", strings.Repeat("x", PreviewRunes-1),
		strings.Repeat("x", PreviewRunes), strings.Repeat("x", PreviewRunes+1), strings.Repeat("x", PreviewRunes-1) + " y",
		strings.Repeat("x", PreviewRunes-2) + " y", strings.Repeat("x", PreviewRunes-1) + " ", strings.Repeat("ж ", PreviewRunes),
		strings.Repeat("x", PreviewRunes) + " y", "bad \xff\xfe utf8", strings.Repeat("\xff", PreviewRunes+3),
		// What plainPreview takes and what it leaves to the general pass.
		"a b", "a b ", "a  b", " a", "a\tb", strings.Repeat("ab ", PreviewRunes), strings.Repeat("x", PreviewRunes-1) + "  y",
		strings.Repeat("x", PreviewRunes) + "   ", strings.Repeat("x", PreviewRunes-2) + " y" + strings.Repeat(" ", 9),
		strings.Repeat("x", PreviewRunes+1) + "\xff", strings.Repeat("x", PreviewRunes-1) + "é"}
	for _, body := range cases {
		// Invalid UTF-8 comes out as U+FFFD either way once encoded as JSON.
		if got, want := string([]rune(Preview(body))), string([]rune(previewByFields(body))); got != want {
			t.Errorf("Preview(%q) = %q, want %q", body, got, want)
		}
	}
}

func FuzzPreview(f *testing.F) {
	f.Add("a  b\tc")
	f.Add(strings.Repeat("слово ", 60))
	f.Add(strings.Repeat("word ", 60))
	f.Fuzz(func(t *testing.T, body string) {
		if got, want := string([]rune(Preview(body))), string([]rune(previewByFields(body))); got != want {
			t.Errorf("Preview(%q) = %q, want %q", body, got, want)
		}
	})
}
