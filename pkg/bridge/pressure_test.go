package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// With no process leading, answered transactions pile up in the journal:
// health turns degraded (no leader, journal backlog), and at the hard limit
// transactions are answered 503, so the homeserver backs off instead of the
// database filling up. Once a leader drains the journal, they are taken again.
func TestJournalBackpressure(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		cfg := testConfig(t, tdb)
		cfg.AppService.MaxJournalBacklog = 3
		cfg.Health.MaxJournalBacklog = 2
		b, err := newStarted(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = b.Stop(context.Background()) }()
		ctx := context.Background()
		// Another process holds the lease (and does nothing): no indexer runs here.
		if _, err := b.DB.Exec(ctx, `INSERT INTO leader_lease (name, holder, epoch, expires_at) VALUES ('consumers', 'elsewhere', 1000, $1)
			ON CONFLICT (name) DO UPDATE SET holder = 'elsewhere', epoch = 1000, expires_at = $1`, time.Now().Add(time.Hour).UnixMilli()); err != nil {
			t.Fatal(err)
		}
		testrig.Eventually(t, "this process to stop leading", 20*time.Second, func() bool { return !b.Leader.Leading() })

		push := func(txn string) int {
			req, _ := http.NewRequest(http.MethodPut, "http://"+b.AppserviceAddr()+"/_matrix/app/v1/transactions/"+txn,
				strings.NewReader(fmt.Sprintf(`{"events":[{"event_id":"$%s","room_id":"!r:s","type":"m.room.message","sender":"@u:s","content":{}}]}`, txn)))
			req.Header.Set("Authorization", "Bearer hs")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode
		}
		for i := 0; i < 3; i++ {
			if status := push(fmt.Sprint("t", i)); status != 200 {
				t.Fatalf("transaction %d: %d", i, status)
			}
		}
		health := func() map[string]any {
			resp, err := http.Get("http://" + b.InternalAPIAddr() + "/healthz")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var h map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&h)
			return h
		}
		testrig.Eventually(t, "the sampler to see the backlog", 20*time.Second, func() bool { return health()["journal_backlog"] == float64(3) })
		h := health()
		degraded, _ := h["degraded"].([]any)
		if h["leader"] != "another process" || !slices.Contains(degraded, any("journal backlog")) {
			t.Errorf("health %v", h)
		}
		if status := push("t3"); status != http.StatusServiceUnavailable {
			t.Errorf("transaction past the hard limit: %d, want 503", status)
		}

		// The other process goes; this one takes over and drains the journal.
		if _, err := b.DB.Exec(ctx, `UPDATE leader_lease SET expires_at = 0`); err != nil {
			t.Fatal(err)
		}
		testrig.Eventually(t, "the journal to drain", 20*time.Second, func() bool { return health()["journal_backlog"] == float64(0) })
		if status := push("t4"); status != 200 {
			t.Errorf("transaction after the drain: %d", status)
		}
		if h = health(); h["leader"] != "this process" || h["degraded"] != nil {
			t.Errorf("health after the drain: %v", h)
		}
	})
}
