package delivery

import (
	"github.com/tidwall/gjson"

	"github.com/daarion/matrix-bridge/pkg/eventlog"
)

// asRoomEvents shows the clear form of an encrypted event (journalled by
// pkg/e2ee under a log id of its own) as the room event it is: its Matrix
// event id, which is its DTO's id and what the echo and redaction lookups
// know it by. The encrypted original maps to no DTO; the clear form does.
func asRoomEvents(events []*eventlog.Event) []*eventlog.Event {
	var out []*eventlog.Event
	for i, evt := range events {
		if evt.Kind != eventlog.KindDecrypted {
			if out != nil {
				out = append(out, evt)
			}
			continue
		}
		if out == nil {
			out = append(make([]*eventlog.Event, 0, len(events)), events[:i]...)
		}
		clear := *evt
		clear.Kind = eventlog.KindTimeline
		clear.EventID = gjson.GetBytes(evt.JSON, "event_id").Str
		out = append(out, &clear)
	}
	if out == nil {
		return events
	}
	return out
}

// encryptedOriginal tells the encrypted form of an event, which has no DTO
// of its own (its clear form or an undecryptable DTO follows) and so does
// not count as unmapped.
func encryptedOriginal(evt *eventlog.Event) bool {
	return evt.Kind == eventlog.KindTimeline && evt.Type == "m.room.encrypted"
}
