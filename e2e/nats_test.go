package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// A human posts steadily while the bridge is SIGKILLed and restarted: the
// JetStream stream holds each DTO exactly once (Nats-Msg-Id = DTO id).
func TestNATSOnceThroughAKill(t *testing.T) {
	forEachRig(t, func(t *testing.T, tdb rig) {
		natsURL := testrig.StartNATS(t, testrig.NATSOptions{}).URL()
		s := newStackWith(t, tdb, stackOptions{extra: "delivery:\n    nats_url: " + natsURL + "\n", homeserverRateLimits: busyHumans})
		s.bridge.waitForLog("Bridge bot registered", 30*time.Second)
		roomID, alias := createCity(t, s, "wharf", "Wharf", "")
		alice, _ := s.humanJoins("alice", alias)

		const total = 40
		var mu sync.Mutex
		var sent []id.EventID
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 0; i < total; i++ {
				evt := sendText(t, alice, roomID, fmt.Sprintf("cargo %d", i))
				mu.Lock()
				sent = append(sent, evt)
				mu.Unlock()
				time.Sleep(20 * time.Millisecond)
			}
		}()
		eventually(t, "a third of the stream", 30*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(sent) >= total/3 })
		s.bridge.kill()
		time.Sleep(500 * time.Millisecond)
		s.bridge = s.startBridge()
		<-done

		js := jetStream(t, natsURL)
		counts := map[string]int{}
		subjects := map[string]string{}
		deadline := time.Now().Add(60 * time.Second)
		for {
			counts = map[string]int{}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			readStream(ctx, js, func(msg natsjs.Msg) {
				var dto struct {
					ID   string `json:"id"`
					Type string `json:"type"`
				}
				_ = json.Unmarshal(msg.Data(), &dto)
				counts[dto.ID]++
				subjects[dto.ID] = msg.Subject()
				if msg.Headers().Get("Nats-Msg-Id") != dto.ID {
					t.Errorf("Nats-Msg-Id %q for DTO %s", msg.Headers().Get("Nats-Msg-Id"), dto.ID)
				}
			})
			cancel()
			missing := 0
			for _, e := range sent {
				if counts[e.String()] == 0 {
					missing++
				}
			}
			if missing == 0 {
				break
			}
			if time.Now().After(deadline) {
				logged := s.loggedEvents()
				for _, e := range sent {
					if counts[e.String()] == 0 {
						t.Errorf("%s never reached NATS; in the bridge's log %d times", e, logged[e.String()])
					}
				}
				t.Fatalf("%d of %d messages never reached NATS", missing, len(sent))
			}
			time.Sleep(time.Second)
		}
		for _, e := range sent {
			if counts[e.String()] != 1 {
				t.Errorf("DTO %s is in the stream %d times", e, counts[e.String()])
			}
			if !strings.HasSuffix(subjects[e.String()], "messaging.message.created") {
				t.Errorf("DTO %s on subject %s", e, subjects[e.String()])
			}
		}
		for dtoID, c := range counts {
			if c != 1 {
				t.Errorf("DTO %s is in the stream %d times", dtoID, c)
			}
		}
	})
}

// readStream gives fn every message of the DAARION stream, in order; none
// when the stream does not exist yet.
func readStream(ctx context.Context, js natsjs.JetStream, fn func(natsjs.Msg)) {
	cons, err := js.OrderedConsumer(ctx, "DAARION_MESSAGING", natsjs.OrderedConsumerConfig{})
	if err != nil {
		return
	}
	for {
		batch, err := cons.Fetch(500, natsjs.FetchMaxWait(500*time.Millisecond))
		if err != nil {
			return
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			fn(msg)
		}
		if n == 0 {
			return
		}
	}
}

// jetStream connects to NATS for the rest of the test.
func jetStream(t *testing.T, natsURL string) natsjs.JetStream {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := natsjs.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}
