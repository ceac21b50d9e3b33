package mapping

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/daarion/matrix-bridge/pkg/eventlog"
)

// BenchmarkMapMessage is what a sink spends on one text message: mapping
// it and encoding its DTO.
func BenchmarkMapMessage(b *testing.B) {
	evt := &eventlog.Event{Position: 1, Kind: eventlog.KindTimeline, EventID: "$abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", RoomID: "!room:daarion.space",
		Type: "m.room.message", Sender: "@alice:daarion.space", ReceivedAt: time.UnixMilli(1732445400000),
		JSON: json.RawMessage(`{"event_id":"$abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG","type":"m.room.message","room_id":"!room:daarion.space","sender":"@alice:daarion.space","origin_server_ts":1732445400000,"unsigned":{"age":12},"content":{"msgtype":"m.text","body":"The quick brown fox jumps over the lazy dog, again and again, until the city square is full of foxes and dogs and the evening comes.","m.mentions":{}}}`)}
	b.ReportAllocs()
	for b.Loop() {
		for _, dto := range mapper.MapAll(evt) {
			_ = dto.JSON()
		}
	}
}
