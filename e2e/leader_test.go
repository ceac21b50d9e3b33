package e2e_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// takeoverBound is the promise to operators: a frozen leader is replaced
// within 15 s (lease TTL 10 s + one 1 s poll, and the fence's 5 s cut of a
// transaction the frozen leader held open, overlapping).
const takeoverBound = 15 * time.Second

// Fenced leadership: two bridge processes on one PostgreSQL. The leader is
// frozen (SIGSTOP) mid-stream, the standby takes over within the bound, the
// old leader is thawed (SIGCONT): it writes nothing — no consumer cursor
// moves back — and steps down, and every event reaches the webhook at least
// once, in per-room order. The homeserver plays no part (transactions are
// pushed straight to the processes), so this runs on Synapse only.
func TestFrozenLeaderIsFencedAndReplaced(t *testing.T) {
	s := newStack(t, rig{TestDatabase: testrig.NewTestDatabase(t, testrig.Postgres), homeserver: testrig.Synapse})
	s.bridge.waitForLog("Bridge bot registered", 30*time.Second)

	// The second process: the same database and tokens, its own ports.
	asPortB, apiPortB := freePort(t), freePort(t)
	cfgB := readFile(t, s.configPath)
	cfgB = regexp.MustCompile(`(?m)^    listen: 127\.0\.0\.1:\d+$`).ReplaceAllString(cfgB, fmt.Sprintf("    listen: 127.0.0.1:%d", asPortB))
	cfgB = regexp.MustCompile(`(?m)^    port: \d+$`).ReplaceAllString(cfgB, fmt.Sprintf("    port: %d", apiPortB))
	configB := filepath.Join(s.dir, "config-b.yaml")
	if err := os.WriteFile(configB, []byte(cfgB), 0o600); err != nil {
		t.Fatal(err)
	}
	asURLB := fmt.Sprintf("http://127.0.0.1:%d", asPortB)
	b := s.startBridgeWith(configB, asURLB)
	t.Cleanup(b.kill)
	a := s.bridge

	rc := newReceiver(t)
	rc.subscribe(t, s, map[string]any{"room_id": "*"})

	leaderOf := func() (leading, standby *bridgeProcess, standbyURL string) {
		for {
			switch {
			case strings.Contains(a.logs(), "This process leads"):
				return a, b, asURLB
			case strings.Contains(b.logs(), "This process leads"):
				return b, a, s.cfg.AppService.URL
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	oldLeader, standby, standbyURL := leaderOf()

	// A steady stream into three rooms, pushed to the standby (both
	// processes take transactions; only the leader indexes and delivers).
	const rooms = 3
	var (
		mu     sync.Mutex
		pushed int
	)
	stop, streamDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(streamDone)
		for txn := 0; ; txn++ {
			select {
			case <-stop:
				return
			default:
			}
			var evts []string
			for i := 0; i < 10; i++ {
				n := txn*10 + i
				evts = append(evts, fmt.Sprintf(`{"event_id":"$lease%d","room_id":"!room%d:%s","type":"m.room.message","sender":"@u:%s","origin_server_ts":%d,"content":{"msgtype":"m.text","body":"%d"}}`,
					n, n%rooms, serverName, serverName, time.Now().UnixMilli(), n))
			}
			status := callAppservice(t, standbyURL, http.MethodPut, "/_matrix/app/v1/transactions/lease"+fmt.Sprint(txn), s.cfg.AppService.HSToken,
				[]byte(`{"events":[`+strings.Join(evts, ",")+`]}`))
			if status != 200 {
				t.Errorf("transaction %d: %d", txn, status)
				return
			}
			mu.Lock()
			pushed = (txn + 1) * 10
			mu.Unlock()
			time.Sleep(50 * time.Millisecond)
		}
	}()
	pushedSoFar := func() int { mu.Lock(); defer mu.Unlock(); return pushed }
	eventually(t, "deliveries before the freeze", 30*time.Second, func() bool { return len(rc.received()) >= 100 })

	// Freeze the leader mid-stream.
	if err := syscall.Kill(oldLeader.proc.Pid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozenAt := time.Now()
	thawed := false
	thaw := func() {
		if !thawed {
			thawed = true
			_ = syscall.Kill(oldLeader.proc.Pid(), syscall.SIGCONT)
		}
	}
	t.Cleanup(thaw)
	standby.waitForLog("This process leads", takeoverBound+5*time.Second)
	tookOver := time.Since(frozenAt)
	t.Logf("the standby took over %v after the freeze", tookOver.Round(10*time.Millisecond))
	if tookOver > takeoverBound {
		t.Errorf("takeover took %v, want at most %v", tookOver, takeoverBound)
	}
	eventually(t, "deliveries by the new leader", 30*time.Second, func() bool { return len(rc.received()) >= pushedSoFar()-20 })

	// Thaw the old leader: it must not move any cursor back, and steps down.
	before := cursors(t, s)
	thaw()
	oldLeader.waitForLog("stepping down", 30*time.Second)
	close(stop)
	<-streamDone
	total := pushedSoFar()
	eventually(t, "every event at the webhook", 60*time.Second, func() bool {
		seen := map[string]bool{}
		for _, r := range rc.received() {
			seen[r.dto.ID] = true
		}
		return len(seen) >= total
	})
	after := cursors(t, s)
	for name, pos := range before {
		if after[name] < pos {
			t.Errorf("consumer %s's cursor moved back from %d to %d after the old leader came back", name, pos, after[name])
		}
	}
	// At least once, in order per room: each room's first deliveries come
	// in the order the events were pushed.
	last := map[string]int{}
	firstSeen := map[string]bool{}
	for _, r := range rc.received() {
		if firstSeen[r.dto.ID] || r.dto.Room == nil {
			continue
		}
		firstSeen[r.dto.ID] = true
		var n int
		fmt.Sscanf(r.dto.ID, "$lease%d", &n)
		if prev, ok := last[r.dto.Room.MatrixRoomID]; ok && n < prev {
			t.Errorf("room %s: event %d delivered after %d", r.dto.Room.MatrixRoomID, n, prev)
		}
		last[r.dto.Room.MatrixRoomID] = n
	}
	if fenced := strings.Count(oldLeader.logs(), "fenced"); fenced > 0 {
		t.Logf("the thawed leader's writes refused by the fence: %d", fenced)
	}
}

// cursors reads every consumer's durable cursor.
func cursors(t *testing.T, s *stack) map[string]int64 {
	t.Helper()
	rows, err := s.database.Query(context.Background(), `SELECT name, position FROM consumer_cursor`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var name string
		var pos int64
		if err = rows.Scan(&name, &pos); err != nil {
			t.Fatal(err)
		}
		out[name] = pos
	}
	return out
}
