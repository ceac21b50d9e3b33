package e2e_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"
)

// A long-poll started before a human speaks returns that message promptly.
// The bridge never polls its database here (noPoll): the long-poll answers
// in time only if the transaction wakes the indexer and the indexed events
// wake the sync.
func TestSyncReturnsNewEventsPromptly(t *testing.T) {
	forEachRig(t, func(t *testing.T, tdb rig) {
		s := newStackWith(t, tdb, stackOptions{database: noPoll})
		s.bridge.waitForLog("Bridge bot registered", 30*time.Second)
		roomID, alias := createCity(t, s, "market", "Market", "")
		alice, _ := s.humanJoins("alice", alias)

		head := s.api(t, http.MethodGet, "/internal/matrix/sync?timeout=0", nil).str("next_batch")
		if head == "" {
			t.Fatal("no next_batch")
		}
		type result struct {
			res  apiResult
			took time.Duration
		}
		done := make(chan result, 1)
		go func() {
			start := time.Now()
			// Only messages: alice's join may still be on its way to the log.
			filter := url.QueryEscape(`{"types":["m.room.message"]}`)
			res := s.api(t, http.MethodGet, "/internal/matrix/sync?timeout=20000&filter="+filter+"&since="+head, nil)
			done <- result{res, time.Since(start)}
		}()
		time.Sleep(300 * time.Millisecond) // the long-poll is waiting
		msg := sendText(t, alice, roomID, "fresh fish").String()
		var r result
		select {
		case r = <-done:
		case <-time.After(25 * time.Second):
			t.Fatal("the long-poll did not return")
		}
		if r.took > 10*time.Second {
			t.Errorf("the long-poll returned after %s, not promptly", r.took)
		}
		var body syncAnswer
		if err := json.Unmarshal(r.res.body, &body); err != nil {
			t.Fatal(err)
		}
		found := false
		for _, e := range body.Rooms.Join[roomID.String()].Timeline.Events {
			found = found || e.EventID == msg
		}
		if !found || body.NextBatch == head {
			t.Errorf("sync answered %s; want %s in room %s", r.res.body, msg, roomID)
		}
		if res := s.api(t, http.MethodGet, "/internal/matrix/sync?since=bogus", nil); res.status != 400 || res.str("field") != "since" {
			t.Errorf("bad since: %d %s", res.status, res.body)
		}
	})
}

// syncAnswer is what the tests read of a sync answer: the events' ids by
// room.
type syncAnswer struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]struct {
			Timeline struct {
				Events []struct {
					EventID string `json:"event_id"`
				} `json:"events"`
			} `json:"timeline"`
		} `json:"join"`
	} `json:"rooms"`
}
