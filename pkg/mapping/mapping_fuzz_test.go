package mapping

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/daarion/matrix-bridge/pkg/appservice"
	"github.com/daarion/matrix-bridge/pkg/eventlog"
)

func FuzzMap(f *testing.F) {
	for _, evt := range []string{
		`{"event_id":"$m1","room_id":"!city:daarion.space","type":"m.room.message","sender":"@alice:daarion.space","origin_server_ts":1732445400000,"content":{"msgtype":"m.text","body":"Привіт  \n світ","format":"org.matrix.custom.html","formatted_body":"<b>Привіт</b>","m.mentions":{"user_ids":["@agent_sofia:daarion.space","bad"],"room":true}}}`,
		`{"event_id":"$m2","room_id":"!r:s","type":"m.room.message","sender":"@agent_sofia:daarion.space","content":{"msgtype":"m.image","body":"cat.png","url":"mxc://s/a","info":{"mimetype":"image/png","size":10},"filename":"cat.png"}}`,
		`{"event_id":"$m3","room_id":"!r:s","type":"m.room.message","sender":"@a:s","content":{"msgtype":"m.text","body":"* new","m.new_content":{"msgtype":"m.text","body":"new"},"m.relates_to":{"rel_type":"m.replace","event_id":"$m1"}}}`,
		`{"event_id":"$m4","room_id":"!r:s","type":"m.room.message","sender":"@a:s","content":{"msgtype":"m.notice","body":"x","m.relates_to":{"rel_type":"m.thread","event_id":"$root","is_falling_back":true,"m.in_reply_to":{"event_id":"$root"}}}}`,
		`{"event_id":"$m5","room_id":"!r:s","type":"m.room.message","sender":"@a:s","content":{"msgtype":"m.location","body":"geo"}}`,
		`{"event_id":"$m6","room_id":"!r:s","type":"m.room.message","sender":"@a:s","content":{"body":"no msgtype"}}`,
		`{"event_id":"$r1","room_id":"!r:s","type":"m.reaction","sender":"@a:s","content":{"m.relates_to":{"rel_type":"m.annotation","event_id":"$m1","key":"👍"}}}`,
		`{"event_id":"$d1","room_id":"!r:s","type":"m.room.redaction","sender":"@a:s","redacts":"$m1","content":{"reason":"spam"}}`,
		`{"event_id":"$d2","room_id":"!r:s","type":"m.room.redaction","sender":"@a:s","content":{"redacts":"$m1"}}`,
		`{"event_id":"$j1","room_id":"!r:s","type":"m.room.member","sender":"@agent_sofia:daarion.space","state_key":"@agent_sofia:daarion.space","content":{"membership":"join","displayname":"Sofia"}}`,
		`{"event_id":"$j2","room_id":"!r:s","type":"m.room.member","sender":"@a:s","state_key":"@a:s","content":{"membership":"join"},"unsigned":{"prev_content":{"membership":"join"}}}`,
		`{"event_id":"$k1","room_id":"!r:s","type":"m.room.member","sender":"@mod:s","state_key":"@b:s","content":{"membership":"leave","reason":"bye"},"prev_content":{"membership":"ban"}}`,
		`{"event_id":"$k2","room_id":"!r:s","type":"m.room.member","sender":"@mod:s","state_key":"@b:s","content":{"membership":"ban"}}`,
		`{"event_id":"$k3","room_id":"!r:s","type":"m.room.member","sender":"@b:s","state_key":"@b:s","content":{"membership":"invite"}}`,
		`{"event_id":"$n1","room_id":"!r:s","type":"m.room.name","sender":"@a:s","state_key":"","content":{"name":"Kyiv"}}`,
		`{"event_id":"$n2","room_id":"!r:s","type":"m.room.topic","sender":"@a:s","state_key":"x","content":{"topic":"t"}}`,
		`{"event_id":"$n3","room_id":"!r:s","type":"m.room.avatar","sender":"@a:s","state_key":"","content":{"url":5}}`,
		`{"event_id":"$j3","room_id":"!r:s","type":"m.room.member","sender":"@a:s","state_key":"@a:s","content":{"membership":"join","displayname":"A","avatar_url":"mxc://s/a"},"unsigned":{"prev_content":{"membership":"join","displayname":"B"}}}`,
		`{"event_id":"$d3","room_id":"!city:daarion.space","type":"m.room.redaction","sender":"@a:s","content":{"redacts":"$reaction-in-log","reason":"x"}}`,
		`{"event_id":"$d4","room_id":"!city:daarion.space","type":"m.room.redaction","sender":"@a:s","redacts":"$stripped-reaction","content":{}}`,
		`{"event_id":"$d5","room_id":"!city:daarion.space","type":"m.room.redaction","sender":"@a:s","content":{"redacts":"$message-in-log"}}`,
		`{"event_id":"$s1","room_id":"!r:s","type":"m.sticker","sender":"@a:s","content":{"body":"cat","url":"mxc://s/c","info":{"mimetype":"image/webp"}}}`,
		`{"event_id":"$l1","room_id":"!r:s","type":"m.room.message","sender":"@a:s","content":{"msgtype":"m.location","body":"geo","geo_uri":"geo:1,2","org.matrix.msc3488.location":{"uri":"geo:1,2","description":"d"},"m.asset":{"type":"m.pin"}}}`,
		`{"event_id":"$p1","room_id":"!r:s","type":"m.poll.start","sender":"@a:s","content":{"m.text":[{"body":"Q?"}],"m.poll":{"kind":"m.disclosed","max_selections":1e30,"question":{"m.text":[{"body":"Q?"}]},"answers":[{"m.id":"a","m.text":[{"body":"A"}]}]}}}`,
		`{"event_id":"$p2","room_id":"!r:s","type":"org.matrix.msc3381.poll.start","sender":"@a:s","content":{"org.matrix.msc3381.poll.start":{"kind":"x","max_selections":-3,"question":{"org.matrix.msc1767.text":"Q"},"answers":[{"id":"a","org.matrix.msc1767.text":"A"}]},"org.matrix.msc1767.text":"Q"}}`,
		`{"event_id":"$p3","room_id":"!r:s","type":"m.poll.response","sender":"@a:s","content":{"m.relates_to":{"rel_type":"m.reference","event_id":"$p1"},"m.selections":["a"]}}`,
		`{"event_id":"$p4","room_id":"!r:s","type":"org.matrix.msc3381.poll.response","sender":"@a:s","content":{"m.relates_to":{"rel_type":"m.reference","event_id":"$p2"},"org.matrix.msc3381.poll.response":{"answers":[]}}}`,
		`{"event_id":"$p5","room_id":"!r:s","type":"m.poll.end","sender":"@a:s","content":{"m.relates_to":{"rel_type":"m.reference","event_id":"$p1"},"m.text":"done","m.poll.results":{"a":1e300,"b":2}}}`,
		`{"event_id":"$n4","room_id":"!r:s","type":"m.room.pinned_events","sender":"@a:s","state_key":"","content":{"pinned":["$m1",null,{}]}}`,
		`{"event_id":"$t1","room_id":"!r:s","type":"m.room.tombstone","sender":"@a:s","state_key":"","content":{"body":"moved","replacement_room":"!new:s"}}`,
		`{"event_id":"$x","room_id":"!r:s","type":"m.room.message","sender":"@a:s","origin_server_ts":-5,"content":null}`,
		`{"event_id":"$x","room_id":"!r:s","type":"m.room.message","sender":"@a:s","origin_server_ts":"soon","content":{"msgtype":"m.text","body":"x"}}`,
		`{"event_id":"$x","room_id":"!r:s","type":"m.room.message","sender":"@a:s","origin_server_ts":253402300799999,"content":{"msgtype":"m.text","body":"x"}}`,
	} {
		f.Add([]byte(evt), false, int64(1732445500000))
	}
	for _, evt := range []string{
		`{"type":"m.typing","room_id":"!city:daarion.space","content":{"user_ids":["@alice:daarion.space","@agent_sofia:daarion.space"]}}`,
		`{"type":"m.typing","room_id":"!r:s","content":{"user_ids":null}}`,
		`{"type":"m.receipt","room_id":"!r:s","content":{"$m1":{"m.read":{"@a:s":{"ts":1},"@b:s":{"ts":2,"thread_id":"main"}},"m.read.private":{"@a:s":{}}}}}`,
		`{"type":"m.receipt","room_id":"!r:s","content":{"$m1":{"m.read":null}}}`,
		`{"type":"m.presence","sender":"@a:s","content":{"presence":"online","last_active_ago":5,"currently_active":true,"status_msg":"hi"}}`,
		`{"type":"m.presence","sender":"@a:s","content":{}}`,
		`{"type":"m.something","room_id":"!r:s","content":{}}`,
	} {
		f.Add([]byte(evt), true, int64(1732445500000))
	}
	m := &Mapper{
		IDs:    mapper.IDs,
		Rooms:  mapper.Rooms,
		Origin: mapper.Origin,
		// The same lookup as the table tests: some redactions name an
		// event it holds.
		Redacted: mapper.Redacted,
	}
	f.Fuzz(func(t *testing.T, raw []byte, ephemeral bool, receivedAt int64) {
		// The log holds what the transaction parser accepted: build the
		// event the same way.
		key := "events"
		if ephemeral {
			key = "ephemeral"
		}
		body := append(append([]byte(`{"`+key+`":[`), raw...), ']', '}')
		parsed, err := appservice.ParseTransaction("fuzz-txn", body)
		if err != nil || len(parsed) != 1 {
			return
		}
		in := parsed[0]
		evt := &eventlog.Event{Position: 1000, EventID: in.EventID, Kind: in.Kind, RoomID: in.RoomID, Type: in.Type,
			Sender: in.Sender, TxnID: "fuzz-txn", ReceivedAt: time.UnixMilli(receivedAt), JSON: json.RawMessage(in.JSON)}
		dtos := m.MapAll(evt)
		if len(dtos) > MaxDTOsPerEvent {
			t.Errorf("%d DTOs of one event", len(dtos))
		}
		for i, dto := range dtos {
			checkFuzzedDTO(t, evt, dto, i)
		}
	})
}

// checkFuzzedDTO checks the part-th DTO of a fuzzed event.
func checkFuzzedDTO(t *testing.T, evt *eventlog.Event, dto *DTO, part int) {
	wantID := evt.EventID
	if part > 0 {
		wantID = ReactionRemovedID(evt.EventID)
	}
	switch {
	case part > 0 && dto.Type != ReactionRemoved:
		t.Errorf("DTO %d of an event is %s", part, dto.Type)
	case dto.ID == "" || dto.ID != wantID:
		t.Errorf("DTO id %q for event %q", dto.ID, evt.EventID)
	case !slices.Contains(Types, dto.Type):
		t.Errorf("DTO type %q", dto.Type)
	case dto.Version != Version || Version != 1:
		t.Errorf("DTO version %d", dto.Version)
	case dto.Data == nil:
		t.Errorf("DTO without data")
	case (dto.Room == nil) != (evt.RoomID == "") || dto.Room != nil && dto.Room.MatrixRoomID != evt.RoomID:
		t.Errorf("DTO room %+v for room %q", dto.Room, evt.RoomID)
	case evt.Kind == eventlog.KindTimeline && dto.MatrixEventID != evt.EventID:
		t.Errorf("matrix_event_id %q", dto.MatrixEventID)
	case dto.Sender != nil && (dto.Sender.ID == "" || dto.Sender.Type == ""):
		t.Errorf("sender %+v", dto.Sender)
	}
	// The DTO goes out as JSON (webhooks, JetStream).
	out := dto.JSON()
	if len(out) == 0 {
		t.Fatalf("DTO %+v does not encode", dto)
	}
	var back struct {
		ID      string `json:"id"`
		Type    string `json:"type"`
		Version int    `json:"version"`
	}
	if err := json.Unmarshal(out, &back); err != nil || back.ID != dto.ID || back.Type != dto.Type || back.Version != 1 {
		t.Errorf("DTO JSON %s does not read back (%v)", out, err)
	}
	if strings.Contains(string(out), `"data":null`) {
		t.Errorf("DTO JSON without data: %s", out)
	}
}
