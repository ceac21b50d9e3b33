package eventlog

import (
	"encoding/json"
	"fmt"
	"testing"
)

// The tail keeps the newest events within its bounds, in order, and sends a
// read before its start to the database.
func TestTailBounds(t *testing.T) {
	for _, tc := range []struct {
		name      string
		events    int
		size      int // bytes of each event's JSON
		wantCount int
	}{
		{"under both bounds", 100, 100, 100},
		{"count bound", tailMaxEvents + 500, 10, tailMaxEvents},
		{"byte bound", 1000, tailMaxBytes / 200, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tl tail
			tl.arm(10)
			json := json.RawMessage(fmt.Sprintf("%*s", tc.size, ""))
			for pos := int64(11); pos < int64(11+tc.events); pos += 7 {
				var batch []*Event
				for p := pos; p < min(pos+7, int64(11+tc.events)); p++ {
					batch = append(batch, &Event{Position: p, JSON: json})
				}
				tl.add(batch)
			}
			last := int64(10 + tc.events)
			if len(tl.events) != tc.wantCount || tl.events[len(tl.events)-1].Position != last {
				t.Fatalf("holds %d events up to %d, want %d up to %d", len(tl.events), tl.events[len(tl.events)-1].Position, tc.wantCount, last)
			}
			if tl.bytes > tailMaxBytes {
				t.Errorf("holds %d bytes, over the bound %d", tl.bytes, tailMaxBytes)
			}
			first := tl.events[0].Position
			if _, ok := tl.read(first-2, 10); ok && first > 11 {
				t.Errorf("read after %d (before the tail's start %d) served from the tail", first-2, tl.from)
			}
			got, ok := tl.read(first-1, 5)
			if !ok || len(got) != min(5, tc.wantCount) || got[0].Position != first {
				t.Fatalf("read after %d: %d events from %v (ok %v)", first-1, len(got), got, ok)
			}
			if got, ok := tl.read(last, 5); !ok || len(got) != 0 {
				t.Errorf("read after the last event: %d events (ok %v), want none from the tail", len(got), ok)
			}
			tl.disarm()
			if _, ok := tl.read(last, 5); ok {
				t.Error("a disarmed tail serves reads")
			}
		})
	}
}
