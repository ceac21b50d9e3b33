package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/daarion/matrix-bridge/pkg/internalapi"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// One service's slow receiver subscribed to "*" (a queue per room, each
// attempt running into the timeout) does not hold every worker: another
// subscription's deliveries, queued after all of the slow one's, arrive
// within one attempt's timeout.
func TestSlowSubscriberDoesNotStarveAnother(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		db := testrig.OpenDatabase(t, tdb)
		store := NewStore(db)

		slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select { // slower than the attempt timeout
			case <-r.Context().Done():
			case <-time.After(time.Second):
			}
		}))
		defer slow.Close()
		var mu sync.Mutex
		var arrived []time.Time
		fast := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			arrived = append(arrived, time.Now())
			mu.Unlock()
			w.WriteHeader(http.StatusNoContent)
		}))
		defer fast.Close()

		subSlow := &Subscription{ID: "sub_slow", Service: "a", URL: slow.URL, Secret: NewSecret(), RoomFilter: "*", State: StateActive}
		subFast := &Subscription{ID: "sub_fast", Service: "b", URL: fast.URL, Secret: NewSecret(), RoomFilter: "!one:s", State: StateActive}
		for _, sub := range []*Subscription{subSlow, subFast} {
			if err := store.CreateSubscription(ctx, sub); err != nil {
				t.Fatal(err)
			}
		}
		now := time.Now()
		var deliveries []*Delivery
		pos := int64(0)
		for room := 0; room < 40; room++ { // the slow one's: older positions
			for i := 0; i < 2; i++ {
				pos++
				deliveries = append(deliveries, &Delivery{SubscriptionID: subSlow.ID, Position: pos, RoomID: fmt.Sprintf("!r%d:s", room), EventID: fmt.Sprint("$s", pos), Body: []byte(`{}`), NextAttemptAt: now})
			}
		}
		const fastCount = 10
		for i := 0; i < fastCount; i++ {
			pos++
			deliveries = append(deliveries, &Delivery{SubscriptionID: subFast.ID, Position: pos, RoomID: "!one:s", EventID: fmt.Sprint("$f", pos), Body: []byte(`{}`), NextAttemptAt: now})
		}
		if err := store.Enqueue(ctx, deliveries); err != nil {
			t.Fatal(err)
		}

		const timeout = 300 * time.Millisecond
		d := NewDeliverer(store, DelivererOptions{Workers: 4, Timeout: timeout, RetryWindow: time.Hour, MaxBackoff: time.Minute})
		start := time.Now()
		go d.Run(zerolog.Nop().WithContext(ctx))
		deadline := time.Now().Add(20 * time.Second)
		for {
			mu.Lock()
			n := len(arrived)
			mu.Unlock()
			if n >= fastCount {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d deliveries of the other subscription arrived", n, fastCount)
			}
			time.Sleep(10 * time.Millisecond)
		}
		mu.Lock()
		last := arrived[fastCount-1].Sub(start)
		mu.Unlock()
		t.Logf("the other subscription's %d deliveries all arrived %v after the start", fastCount, last.Round(time.Millisecond))
		if last > timeout+200*time.Millisecond {
			t.Errorf("the other subscription waited %v, more than one attempt timeout (%v) behind the slow one", last, timeout)
		}
	})
}

// The slow-subscriber test above passes while either of fairOrder and
// fairShare works; each has its own test here.

// fairOrder interleaves due queues by subscription, each subscription's in
// the order they came (oldest first).
func TestFairOrder(t *testing.T) {
	k := func(sub, room string) queueKey { return queueKey{sub, room} }
	got := fairOrder([]queueKey{k("a", "1"), k("a", "2"), k("a", "3"), k("b", "1"), k("c", "1"), k("b", "2")})
	want := []queueKey{k("a", "1"), k("b", "1"), k("c", "1"), k("a", "2"), k("b", "2"), k("a", "3")}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("fairOrder = %v, want %v", got, want)
	}
}

// fairShare splits the workers evenly among the subscriptions with work,
// due now or in flight, at least one each.
func TestFairShare(t *testing.T) {
	due := []queueKey{{"a", "1"}, {"a", "2"}, {"b", "1"}}
	for _, tc := range []struct {
		workers  int
		inflight map[string]int
		due      []queueKey
		want     int
	}{
		{8, nil, due, 4},
		{8, map[string]int{"c": 1}, due, 2},
		{8, map[string]int{"a": 3}, due, 4},
		{8, map[string]int{"c": 1}, nil, 8},
		{2, map[string]int{"c": 1, "d": 1}, due, 1},
	} {
		d := &Deliverer{opts: DelivererOptions{Workers: tc.workers}, bySub: map[string]int{}}
		for sub, n := range tc.inflight {
			d.bySub[sub] = n
		}
		if got := d.fairShare(tc.due); got != tc.want {
			t.Errorf("%d workers, due %v, in flight %v: share %d, want %d", tc.workers, tc.due, tc.inflight, got, tc.want)
		}
	}
}

// A service may have delivery.max_subscriptions_per_service subscriptions;
// one more is refused (403 M_LIMIT_EXCEEDED) until it deletes one.
func TestSubscriptionsPerServiceAreCapped(t *testing.T) {
	db := testrig.OpenDatabase(t, testrig.NewTestDatabase(t, testrig.SQLite))
	store := NewStore(db)
	api, err := internalapi.New(internalapi.Options{Secret: fuzzSecret, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	NewAPI(store, Policy{MaxPerService: 2}, NewDeliverer(store, DelivererOptions{})).RegisterRoutes(api)
	subscribe := func() (int, string) {
		req := httptest.NewRequest(http.MethodPost, "/internal/matrix/webhook/subscribe", strings.NewReader(`{"room_id":"*","webhook_url":"https://hooks.example.org/x"}`))
		req.Header.Set(internalapi.HeaderToken, fuzzSecret)
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, req)
		var body struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(rec.Body.Bytes(), &body)
		return rec.Code, body.Error
	}
	for i := 0; i < 2; i++ {
		if status, _ := subscribe(); status != 200 {
			t.Fatalf("subscription %d: %d", i+1, status)
		}
	}
	if status, errcode := subscribe(); status != http.StatusForbidden || errcode != "M_LIMIT_EXCEEDED" {
		t.Errorf("a third subscription: %d %s, want 403 M_LIMIT_EXCEEDED", status, errcode)
	}
}
