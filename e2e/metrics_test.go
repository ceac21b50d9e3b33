package e2e_test

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// scrape reads /metrics into "name{labels}" → value.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// sum adds the samples of a family whose labels contain every fragment.
func sum(m map[string]float64, family string, fragments ...string) (total float64, found bool) {
	for key, v := range m {
		name := key
		if i := strings.IndexByte(key, '{'); i >= 0 {
			name = key[:i]
		}
		if name != family {
			continue
		}
		ok := true
		for _, f := range fragments {
			ok = ok && strings.Contains(key, f)
		}
		if ok {
			total += v
			found = true
		}
	}
	return total, found
}

func TestMetricsMove(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, r rig) {
		port := freePort(t)
		s := newStackWith(t, r, stackOptions{
			internalAPI: `    services:
        - name: flood
          token: flood-service-token-0123456789
          scopes: [rooms]
    rate_limit:
        requests_per_second: 20
        burst: 20`,
			extra: fmt.Sprintf("metrics:\n    listen: 127.0.0.1:%d\n%s", port, fastRetries),
		})
		s.bridge.waitForLog("Bridge bot registered", 30*time.Second)
		url := fmt.Sprintf("http://127.0.0.1:%d/metrics", port)
		before := scrape(t, url)

		roomID, alias := createCity(t, s, "metrics", "Metrics", "")
		alice, _ := s.humanJoins("alice", alias)
		rc := newReceiver(t)
		rc.subscribe(t, s, map[string]any{"room_id": "*"})
		sendText(t, alice, roomID, "count me")
		eventually(t, "a webhook delivery", 20*time.Second, func() bool { return len(rc.received()) > 0 })
		for i := 0; i < 30; i++ {
			s.apiAs(t, "flood-service-token-0123456789", http.MethodGet, "/internal/matrix/rooms", nil)
		}

		moved := func(name string, family string, fragments ...string) {
			t.Helper()
			eventually(t, name+" to move", 15*time.Second, func() bool {
				after := scrape(t, url)
				a, okA := sum(after, family, fragments...)
				b, _ := sum(before, family, fragments...)
				return okA && a > b
			})
		}
		moved("transactions", "daarion_bridge_transactions_total", `result="ok"`)
		moved("events by type", "daarion_bridge_events_received_total", `type="m.room.message"`)
		moved("commit latency", "daarion_bridge_transaction_commit_seconds_count")
		moved("log position", "daarion_bridge_log_position")
		moved("API requests", "daarion_bridge_internal_api_requests_total", `route="/internal/matrix/rooms/create"`, `service="internal"`, `status="200"`)
		moved("API latency", "daarion_bridge_internal_api_request_seconds_count", `route="/internal/matrix/rooms/create"`)
		moved("rate limited", "daarion_bridge_internal_api_rate_limited_total", `service="flood"`)
		moved("homeserver calls", "daarion_bridge_homeserver_requests_total", `endpoint="POST /_matrix/client/v3/createRoom"`, `result="2xx"`)
		moved("homeserver latency", "daarion_bridge_homeserver_request_seconds_count", `endpoint="POST /_matrix/client/v3/createRoom"`)
		moved("webhook deliveries", "daarion_bridge_deliveries_total", `sink="webhook"`, `result="delivered"`)
		if v, ok := sum(scrape(t, url), "daarion_bridge_leader"); !ok || v != 1 {
			t.Errorf("leader gauge = %v (%v), want 1 for the only process", v, ok)
		}

		// Lag and failures exist per consumer; the lag drains to zero.
		after := scrape(t, url)
		for _, consumer := range []string{"rooms", "agents", "webhooks"} {
			if _, ok := sum(after, "daarion_bridge_consumer_lag_events", `consumer="`+consumer+`"`); !ok {
				t.Errorf("no consumer_lag_events for %s", consumer)
			}
			if _, ok := sum(after, "daarion_bridge_consumer_failures_total", `consumer="`+consumer+`"`); !ok {
				t.Errorf("no consumer_failures_total for %s", consumer)
			}
		}
		eventually(t, "the webhooks consumer to catch up", 15*time.Second, func() bool {
			lag, ok := sum(scrape(t, url), "daarion_bridge_consumer_lag_events", `consumer="webhooks"`)
			return ok && lag == 0
		})

		// A receiver that fails: failed deliveries, then a dead letter.
		rc.setFail(true)
		sendText(t, alice, roomID, "into the void")
		before = scrape(t, url)
		moved("failed deliveries", "daarion_bridge_deliveries_total", `sink="webhook"`, `result="failed"`)
		eventually(t, "a dead letter in the gauge", 20*time.Second, func() bool {
			dead, ok := sum(scrape(t, url), "daarion_bridge_webhook_deliveries", `state="dead"`)
			return ok && dead >= 1
		})
		if _, ok := sum(after, "daarion_bridge_unmapped_events_total"); !ok {
			t.Error("no unmapped_events_total")
		}
	})
}
