package e2e_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/reconcile"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// synapseDB opens Synapse's own database (SQLite in its directory, or its
// PostgreSQL database).
func synapseDB(t *testing.T, s *stack) *sql.DB {
	t.Helper()
	driver, dsn := testrig.SQLiteDriver, testrig.SQLiteURI(filepath.Join(s.hs.Dir, "homeserver.db"))
	if s.homeserverDSN != "" {
		driver, dsn = "postgres", s.homeserverDSN
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// heldTransaction is one of the transactions Synapse holds for the
// appservice while it marks it down.
type heldTransaction struct {
	id     int64
	events []string
}

func heldTransactions(t *testing.T, db *sql.DB) []heldTransaction {
	t.Helper()
	rows, err := db.Query(`SELECT txn_id, event_ids FROM application_services_txns ORDER BY txn_id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []heldTransaction
	for rows.Next() {
		var txn heldTransaction
		var ids string
		if err := rows.Scan(&txn.id, &ids); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(ids), &txn.events); err != nil {
			t.Fatal(err)
		}
		out = append(out, txn)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// withholdFromTheBridge has Synapse hold alice's next messages for the
// appservice (the bridge is down), then deletes the transactions drop
// chooses from Synapse's table: those events will never be pushed, as
// happens to a transaction Synapse stores just after its recoverer found
// none left. It returns every message sent and the ones withheld.
func withholdFromTheBridge(t *testing.T, s *stack, alice *mautrix.Client, roomID id.RoomID, n int,
	drop func(i int, txn heldTransaction) bool) (sent, withheld []id.EventID) {
	t.Helper()
	db := synapseDB(t, s)
	s.bridge.kill()
	for i := range n {
		sent = append(sent, sendText(t, alice, roomID, fmt.Sprintf("held %d", i)))
		// Apart, so that Synapse holds each in a transaction of its own.
		time.Sleep(250 * time.Millisecond)
	}
	var held []heldTransaction
	eventually(t, "Synapse to hold every message for the appservice", 30*time.Second, func() bool {
		held = heldTransactions(t, db)
		count := 0
		for _, txn := range held {
			for _, e := range txn.events {
				if slices.Contains(sent, id.EventID(e)) {
					count++
				}
			}
		}
		return count == n
	})
	for i, txn := range held {
		if !drop(i, txn) {
			continue
		}
		if _, err := db.Exec(`DELETE FROM application_services_txns WHERE txn_id = $1`, txn.id); err != nil {
			t.Fatal(err)
		}
		for _, e := range txn.events {
			withheld = append(withheld, id.EventID(e))
		}
	}
	if len(withheld) == 0 {
		t.Fatalf("no transaction was dropped of %v", held)
	}
	return sent, withheld
}

// messagesInSync reads every m.room.message DTO the sync endpoint has for
// roomID, from the start of the log.
func messagesInSync(t *testing.T, s *stack, roomID id.RoomID) []string {
	t.Helper()
	filter := url.QueryEscape(`{"types":["m.room.message"]}`)
	res := s.api(t, http.MethodGet, "/internal/matrix/sync?since=s0&timeout=0&filter="+filter, nil)
	var body syncAnswer
	if err := json.Unmarshal(res.body, &body); err != nil {
		t.Fatalf("sync answered %s: %v", res.body, err)
	}
	var ids []string
	for _, e := range body.Rooms.Join[roomID.String()].Timeline.Events {
		ids = append(ids, e.EventID)
	}
	return ids
}

// checkRecovered asserts that every withheld event is in the log once,
// marked recovered, and in sync as a DTO; and the pushed ones not marked.
func checkRecovered(t *testing.T, s *stack, roomID id.RoomID, sent, withheld []id.EventID) {
	t.Helper()
	counts := s.waitLogged(sent, 60*time.Second)
	events, err := s.log.Read(context.Background(), 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range events {
		if !slices.Contains(sent, id.EventID(e.EventID)) {
			continue
		}
		if counts[e.EventID] != 1 {
			t.Errorf("%s is in the log %d times", e.EventID, counts[e.EventID])
		}
		if want := slices.Contains(withheld, id.EventID(e.EventID)); reconcile.Recovered(e.TxnID) != want {
			t.Errorf("%s (withheld: %v) is stored under transaction %q", e.EventID, want, e.TxnID)
		}
	}
	inSync := messagesInSync(t, s, roomID)
	for _, e := range sent {
		if !slices.Contains(inSync, e.String()) {
			t.Errorf("%s is not in sync: %v", e, inSync)
		}
	}
}

// Events Synapse never pushed are recovered by the reconcile that follows
// the bridge's start: every event of the room ends in the log, once.
func TestReconcileAfterStartRecoversWhatSynapseNeverSent(t *testing.T) {
	s := newStackWith(t, synapseRig(t), stackOptions{homeserverRateLimits: busyHumans,
		extra: "reconcile:\n  after_start: 1s\n  on_transaction_gap: false\n  interval: 0s\n"})
	s.bridge.waitForLog("Bridge bot registered", 30*time.Second)
	roomID, alias := createCity(t, s, "lighthouse", "Lighthouse", "")
	alice, _ := s.humanJoins("alice", alias)
	before := []id.EventID{sendText(t, alice, roomID, "pushed 0"), sendText(t, alice, roomID, "pushed 1")}
	s.waitLogged(before, 30*time.Second)

	sent, withheld := withholdFromTheBridge(t, s, alice, roomID, 4, func(int, heldTransaction) bool { return true })
	s.bridge = s.startBridge()
	s.bridge.waitForLog(`"trigger":"start"`, 60*time.Second)
	checkRecovered(t, s, roomID, append(before, sent...), withheld)
	if !strings.Contains(s.bridge.logs(), fmt.Sprintf(`"recovered":%d`, len(withheld))) {
		t.Errorf("the bridge did not report %d recovered events:\n%s", len(withheld), tail(s.bridge.logs(), 20))
	}
}

// A transaction Synapse skips while the bridge is up (one it stored for
// its recoverer and never sent) is noticed by the gap in its ids and
// recovered; no reconcile runs at start here.
func TestReconcileOnATransactionGap(t *testing.T) {
	s := newStackWith(t, synapseRig(t), stackOptions{homeserverRateLimits: busyHumans,
		extra: "reconcile:\n  after_start: 0s\n  on_transaction_gap: true\n  interval: 0s\n  min_interval: 0s\n"})
	s.bridge.waitForLog("Bridge bot registered", 30*time.Second)
	roomID, alias := createCity(t, s, "ferry", "Ferry", "")
	alice, _ := s.humanJoins("alice", alias)
	before := []id.EventID{sendText(t, alice, roomID, "pushed 0")}
	s.waitLogged(before, 30*time.Second)

	// Drop one held transaction in the middle: Synapse replays the others.
	sent, withheld := withholdFromTheBridge(t, s, alice, roomID, 5, func(i int, txn heldTransaction) bool { return i == 2 })
	s.bridge = s.startBridge()
	s.bridge.waitForLog(`"trigger":"transaction_gap"`, 60*time.Second)
	checkRecovered(t, s, roomID, append(before, sent...), withheld)
}
