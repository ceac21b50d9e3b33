package mapping

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

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
}

func timeline(eventID, sender, typ, stateKey, content string, extra ...string) *eventlog.Event {
	sk := ""
	if stateKey != "-" {
		sk = `,"state_key":"` + stateKey + `"`
	}
	return &eventlog.Event{EventID: eventID, Kind: eventlog.KindTimeline, RoomID: "!city:daarion.space", Type: typ,
		JSON: json.RawMessage(`{"event_id":"` + eventID + `","type":"` + typ + `","sender":"` + sender + `","origin_server_ts":1732445400000` + sk +
			`,"content":` + content + strings.Join(extra, "") + `}`)}
}

func ephemeral(typ, content string) *eventlog.Event {
	return &eventlog.Event{EventID: "~edu_1", Kind: eventlog.KindEphemeral, RoomID: "!city:daarion.space", Type: typ,
		ReceivedAt: time.UnixMilli(1732445500000), JSON: json.RawMessage(`{"type":"` + typ + `","room_id":"!city:daarion.space","content":` + content + `}`)}
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
		{"file audio video", timeline("$9", alice, "m.room.message", "-", `{"msgtype":"m.video","body":"v","url":"mxc://s/v"}`), MediaUploaded, nil, nil},
		{"edit", timeline("$10", alice, "m.room.message", "-", `{"msgtype":"m.text","body":"* new","m.new_content":{"msgtype":"m.text","body":"new"},"m.relates_to":{"rel_type":"m.replace","event_id":"$1"}}`), MessageEdited,
			map[string]any{"edited_event_id": "$1", "body": "new", "preview": "new"}, nil},
		{"unknown msgtype", timeline("$11", alice, "m.room.message", "-", `{"msgtype":"m.location","body":"here"}`), "", nil, nil},
		{"reaction", timeline("$12", alice, "m.reaction", "-", `{"m.relates_to":{"rel_type":"m.annotation","event_id":"$1","key":"👍"}}`), ReactionAdded,
			map[string]any{"target_event_id": "$1", "key": "👍"}, nil},
		{"redaction (v11 content)", timeline("$13", alice, "m.room.redaction", "-", `{"redacts":"$1","reason":"spam"}`), MessageDeleted,
			map[string]any{"redacted_event_id": "$1", "reason": "spam"}, nil},
		{"redaction (top level)", timeline("$14", alice, "m.room.redaction", "-", `{}`, `,"redacts":"$2"`), MessageDeleted, map[string]any{"redacted_event_id": "$2"}, nil},
		{"join", timeline("$15", alice, "m.room.member", alice, `{"membership":"join","displayname":"Alice"}`), MemberJoined,
			map[string]any{"target.id": "user:alice", "actor.id": "user:alice", "displayname": "Alice"}, nil},
		{"profile change is not a join", timeline("$16", alice, "m.room.member", alice, `{"membership":"join","displayname":"Al"}`, `,"unsigned":{"prev_content":{"membership":"join"}}`), "", nil, nil},
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
