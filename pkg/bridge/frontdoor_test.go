package bridge

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/daarion/matrix-bridge/pkg/config"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// Two processes on one PostgreSQL, the leader never polling (1 h): a
// transaction the other one (the front door) takes must wake the leader's
// indexer by notification, within seconds. Twice, the second after the
// first is in the log, so neither start-up read can be what found it.
func TestNonLeaderTransactionsWakeTheLeader(t *testing.T) {
	tdb := testrig.NewTestDatabase(t, testrig.Postgres)
	start := func() *Bridge {
		cfg := testConfig(t, tdb)
		cfg.Database.PollInterval = config.NewDuration("1h")
		b, err := newStarted(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Stop(context.Background()) })
		return b
	}
	a, b := start(), start()
	testrig.Eventually(t, "a leader", 20*time.Second, func() bool { return a.Leader.Leading() || b.Leader.Leading() })
	front := a
	if a.Leader.Leading() {
		front = b
	}
	// Let the leader's start-up reads (the indexer's first, and the one once
	// its listener listens) pass.
	time.Sleep(500 * time.Millisecond)
	ctx := context.Background()
	for i := range 2 {
		eventID := fmt.Sprintf("$front%d", i)
		body := fmt.Sprintf(`{"events":[{"event_id":%q,"room_id":"!r:s","type":"m.room.message","sender":"@u:s","content":{"msgtype":"m.text","body":"hi"}}]}`, eventID)
		req, _ := http.NewRequest(http.MethodPut, "http://"+front.AppserviceAddr()+"/_matrix/app/v1/transactions/"+eventID, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer hs")
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("transaction %s: %v %v", eventID, resp, err)
		}
		resp.Body.Close()
		testrig.Eventually(t, eventID+" in the log", 5*time.Second, func() bool {
			evts, _ := front.EventLog.Read(ctx, 0, 100)
			for _, e := range evts {
				if e.EventID == eventID {
					return true
				}
			}
			return false
		})
	}
}
