package e2e_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// A human on the homeserver talks in a city room the bot created; every event
// the human produced reaches the bridge's log exactly once, the consumers read
// it, and SIGTERM stops the bridge cleanly.
func TestHumanEventsAreLoggedExactlyOnce(t *testing.T) {
	forEachRig(t, func(t *testing.T, tdb rig) {
		s := newStackWith(t, tdb, stackOptions{homeserverRateLimits: busyHumans})
		s.bridge.waitForLog("Bridge bot registered", 30*time.Second)
		if tdb.homeserver == testrig.Synapse {
			// Synapse calls the bridge back and reports how long that took.
			s.bridge.waitForLog(`"homeserver_ms"`, 30*time.Second)
		} else {
			// Dendrite has no appservice ping endpoint; the bridge says so and goes on.
			s.bridge.waitForLog("no appservice ping endpoint", 30*time.Second)
		}

		roomID := s.createCityRoom("e2e")
		alice, joined := s.humanJoins("alice", id.NewRoomAlias("city_e2e", serverName))
		if joined != roomID {
			t.Fatalf("alias resolved to %s, want %s", joined, roomID)
		}
		for i := 0; i < 20; i++ {
			sendText(t, alice, roomID, fmt.Sprintf("message %d", i))
		}
		// Her join and 20 messages. Dendrite's /messages can lag a send by
		// a moment under load: wait for it to show them all.
		var produced []id.EventID
		eventually(t, "the homeserver to show alice's 21 events", 10*time.Second, func() bool {
			produced = eventsBy(t, alice, roomID)
			return len(produced) >= 21
		})
		if len(produced) != 21 {
			t.Fatalf("the homeserver has %d events by alice, want 21", len(produced))
		}
		s.waitLogged(produced, 60*time.Second)

		// The bot's own events come back too (Dendrite and Synapse both echo
		// an appservice's events to it): the room's creation is in the log.
		ctx := context.Background()
		all, err := s.log.Read(ctx, 0, 10000)
		if err != nil {
			t.Fatal(err)
		}
		var sawCreate bool
		for _, e := range all {
			if e.Type == "m.room.create" && e.RoomID == roomID.String() {
				sawCreate = true
			}
			if e.Kind != "timeline" && tdb.homeserver == testrig.Dendrite {
				t.Errorf("Dendrite sent a %s event %s; docs/homeservers.md says it sends none", e.Kind, e.Type)
			}
		}
		if !sawCreate {
			t.Error("the room's m.room.create event is not in the log")
		}

		// The rooms consumer reads the whole log in the real process.
		head, err := s.log.Head(ctx)
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(15 * time.Second)
		for {
			pos, err := s.log.Cursor(ctx, "rooms")
			if err != nil {
				t.Fatal(err)
			}
			if pos >= head {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("rooms consumer is at %d, log head %d", pos, head)
			}
			time.Sleep(50 * time.Millisecond)
		}

		if code := s.bridge.terminate(30 * time.Second); code != 0 {
			t.Errorf("bridge exited %d after SIGTERM:\n%s", code, tail(s.bridge.logs(), 20))
		}
		if countLines(s.bridge.logs(), `"Stopped"`) != 1 {
			t.Errorf("bridge did not log a clean stop:\n%s", tail(s.bridge.logs(), 20))
		}
	})
}

// The bridge is SIGKILLed while a human is posting and restarted: the
// homeserver redelivers, and the log holds every event exactly once.
func TestSIGKILLMidStreamLosesNothing(t *testing.T) {
	forEachRig(t, func(t *testing.T, tdb rig) {
		s := newStackWith(t, tdb, stackOptions{homeserverRateLimits: busyHumans})
		s.bridge.waitForLog("Bridge bot registered", 30*time.Second)
		// A city room: one the reconciler compares with the log (Synapse can
		// leave a transaction unsent as the bridge comes back; see
		// docs/homeservers.md).
		roomID, alias := createCity(t, s, "chaos", "Chaos", "")
		alice, _ := s.humanJoins("alice", alias)

		const total = 60
		var (
			mu   sync.Mutex
			sent int
		)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 0; i < total; i++ {
				sendText(t, alice, roomID, fmt.Sprintf("steady %d", i))
				mu.Lock()
				sent++
				mu.Unlock()
				time.Sleep(25 * time.Millisecond)
			}
		}()
		// Kill once part of the stream is through, and keep it down while the
		// human goes on posting.
		for {
			mu.Lock()
			n := sent
			mu.Unlock()
			if n >= total/4 {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		s.bridge.kill()
		mu.Lock()
		sentAtKill := sent
		mu.Unlock()
		time.Sleep(700 * time.Millisecond)
		mu.Lock()
		sentAtRestart := sent
		mu.Unlock()
		s.bridge = s.startBridge()
		<-done
		if sentAtRestart <= sentAtKill {
			t.Fatalf("no message was sent while the bridge was down (%d at kill, %d at restart)", sentAtKill, sentAtRestart)
		}

		var produced []id.EventID
		eventually(t, "the homeserver to show every event by alice", 10*time.Second, func() bool {
			produced = eventsBy(t, alice, roomID)
			return len(produced) >= total+1
		})
		if len(produced) != total+1 {
			t.Fatalf("the homeserver has %d events by alice, want %d", len(produced), total+1)
		}
		// Dendrite backs off 2 s doubling after failed deliveries.
		s.waitLogged(produced, 120*time.Second)
		if countLines(s.bridge.logs(), "panic") != 0 {
			t.Errorf("bridge panicked:\n%s", s.bridge.logs())
		}
	})
}
