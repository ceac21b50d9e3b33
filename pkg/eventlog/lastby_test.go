package eventlog_test

import (
	"context"
	"testing"

	"github.com/daarion/matrix-bridge/pkg/testrig"
)

func TestLastBy(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx := context.Background()
		l := openLog(t, tdb)
		evts := events("a", 5) // alice's messages at positions 1–5
		reaction := timelineEvent("$r", "!room:daarion.test")
		reaction.Type = "m.reaction"
		bob := timelineEvent("$b", "!room:daarion.test")
		bob.Sender = "@bob:daarion.test"
		evts = append(evts, reaction, bob) // positions 6 and 7
		mustAppend(t, l, "t1", evts)
		for _, tc := range []struct {
			name, sender, eventType string
			window                  int64
			want                    string // "" for none
		}{
			{"newest message, not the later reaction", "@alice:daarion.test", "m.room.message", 100, "$a4"},
			{"the reaction", "@alice:daarion.test", "m.reaction", 100, "$r"},
			{"another sender", "@bob:daarion.test", "m.room.message", 100, "$b"},
			{"outside the window", "@alice:daarion.test", "m.room.message", 2, ""},
			{"nobody", "@carol:daarion.test", "m.room.message", 100, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				evt, err := l.LastBy(ctx, tc.sender, tc.eventType, tc.window)
				if err != nil {
					t.Fatal(err)
				}
				got := ""
				if evt != nil {
					got = evt.EventID
				}
				if got != tc.want {
					t.Errorf("LastBy = %q, want %q", got, tc.want)
				}
			})
		}
	})
}
