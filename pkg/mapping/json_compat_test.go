package mapping

import (
	stdjson "encoding/json"
	"reflect"
	"testing"
	"time"

	json "github.com/segmentio/encoding/json"

	"github.com/daarion/matrix-bridge/pkg/eventlog"
)

// The mapper decodes and encodes with github.com/segmentio/encoding/json
// (a third of the standard library's time): what it decodes from an event,
// and each DTO's encoding, must be the standard library's exactly.
func FuzzJSONMatchesTheStandardLibrary(f *testing.F) {
	for _, evt := range []string{
		`{"event_id":"$m1","room_id":"!r:s","type":"m.room.message","sender":"@alice:s","origin_server_ts":1732445400000,"content":{"msgtype":"m.text","body":"Привіт <b>&</b>  \n світ \u2028","format":"org.matrix.custom.html","formatted_body":"<b>x</b>","m.mentions":{"user_ids":["@agent_sofia:s"],"room":true}}}`,
		`{"event_id":"$m2","room_id":"!r:s","type":"m.room.message","sender":"@a:s","content":{"msgtype":"m.image","body":"cat.png","url":"mxc://s/a","info":{"mimetype":"image/png","size":1e3,"w":-1.5}}}`,
		`{"event_id":"$m3","room_id":"!r:s","type":"m.room.message","sender":"@a:s","content":{"MsgType":"m.text","BODY":"case","body":"dup","body":"last"}}`,
		`{"event_id":"$m4","room_id":"!r:s","type":"m.room.message","sender":"@a:s","content":{"msgtype":"m.text","body":"bad \xff utf8"}}`,
		`{"event_id":"$j1","room_id":"!r:s","type":"m.room.member","sender":"@a:s","state_key":"@a:s","content":{"membership":"join","displayname":null},"unsigned":{"prev_content":{"membership":"invite"}}}`,
		`{"event_id":"$p1","room_id":"!r:s","type":"m.poll.start","sender":"@a:s","content":{"m.poll":{"kind":"m.disclosed","max_selections":1e30,"question":{"m.text":[{"body":"Q?"}]},"answers":[{"m.id":"a","m.text":[{"body":"A"}]}]}}}`,
		`{"type":"m.receipt","room_id":"!r:s","content":{"$m1":{"m.read":{"@a:s":{"ts":1},"@b:s":{"ts":2,"thread_id":"main"}}}}}`,
		`{"event_id":"$x","room_id":"!r:s","type":"m.room.message","sender":"@a:s","origin_server_ts":"soon","content":[1,2]}`,
	} {
		f.Add([]byte(evt))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var ours, std rawEvent
		errOurs, errStd := json.Unmarshal(data, &ours), stdjson.Unmarshal(data, &std)
		if (errOurs == nil) != (errStd == nil) {
			t.Fatalf("decoding %q: error %v, the standard library's %v", data, errOurs, errStd)
		}
		if errOurs != nil {
			return
		}
		if !reflect.DeepEqual(ours, std) {
			t.Fatalf("decoding %q:\n %#v\nthe standard library:\n %#v", data, ours, std)
		}
		var c1, c2 messageContent
		if e1, e2 := json.Unmarshal(std.Content, &c1), stdjson.Unmarshal(std.Content, &c2); (e1 == nil) != (e2 == nil) || e1 == nil && !reflect.DeepEqual(c1, c2) {
			t.Fatalf("decoding the content %q: %v %#v, the standard library: %v %#v", std.Content, e1, c1, e2, c2)
		}
		var a1, a2 any
		if e1, e2 := json.Unmarshal(std.Content, &a1), stdjson.Unmarshal(std.Content, &a2); (e1 == nil) != (e2 == nil) || e1 == nil && !reflect.DeepEqual(a1, a2) {
			t.Fatalf("decoding the content %q as any: %v %#v, the standard library: %v %#v", std.Content, e1, a1, e2, a2)
		}
		kind := eventlog.KindTimeline
		if std.EventID == "" {
			kind = eventlog.KindEphemeral
		}
		evt := &eventlog.Event{Position: 7, Kind: kind, EventID: std.EventID, RoomID: "!r:s", Type: std.Type, Sender: std.Sender,
			ReceivedAt: time.UnixMilli(1732445400000), JSON: data}
		for _, dto := range mapper.MapAll(evt) {
			want, err := stdjson.Marshal(dto)
			if err != nil {
				t.Fatalf("the standard library cannot encode %#v: %v", dto, err)
			}
			if got := dto.JSON(); string(got) != string(want) {
				t.Fatalf("DTO of %q:\n %s\nthe standard library:\n %s", data, got, want)
			}
		}
	})
}
