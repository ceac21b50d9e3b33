package delivery

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/identity"
	"github.com/daarion/matrix-bridge/pkg/messaging"
	"github.com/daarion/matrix-bridge/pkg/rooms"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

func TestMain(m *testing.M) { os.Exit(testrig.RunTests(m)) }

// The room lookups the DTO source keeps are bounded: a stream over more
// rooms than the bound never holds more than it.
func TestRoomLookupsAreBounded(t *testing.T) {
	tdb := testrig.NewTestDatabase(t, testrig.SQLite)
	db := testrig.OpenDatabase(t, tdb)
	const bound = 50
	s := newDTOSource(identity.Mapper{ServerName: "s"}, rooms.NewStore(db), messaging.NewIdempotencyStore(db), eventlog.New(db), bound)
	for i := 0; i < 500; i++ {
		if _, err := s.room(context.Background(), fmt.Sprintf("!room%d:s", i)); err != nil {
			t.Fatal(err)
		}
		if n := s.rooms.Len(); n > bound {
			t.Fatalf("after %d rooms the source keeps %d lookups, more than %d", i+1, n, bound)
		}
	}
}
