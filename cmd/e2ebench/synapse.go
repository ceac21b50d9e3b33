package main

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/internal/benchkit"
	"github.com/daarion/matrix-bridge/pkg/clock"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// The synapse scenario: the homeserver's own ceiling. A real Synapse (as
// in production; testrig's pinned one) pushes the transactions, from real
// clients (mautrix Go clients over the client-server API) each sending
// messages one after another into a room of its own that the bridge's
// agent joined; the signed webhook subscription to "*" goes to the
// receiver process. What is measured is a client's send to the receiver's
// receipt: events/s over the whole phase, and p50/p99 per message.

const agentLocalpart = "agent_sofia"

// busyHumans lifts Synapse's message rate limit (a burst of 10, then one
// per 5 s) so that clients send as fast as they can, as the e2e tests do.
const busyHumans = `rc_message:
  per_second: 10000
  burst_count: 10000`

type synapseResult struct {
	DB       string  `json:"db"`
	Clients  int     `json:"clients"`
	Sent     int     `json:"sent"`
	Received int     `json:"received"`
	Rate     float64 `json:"events_per_s"`
	Latency  latency `json:"send_to_receipt"`
	Call     latency `json:"send_call"`
	CPU      cpuUse  `json:"cpu"`
}

// arrivals are the receiver's first receipt of each event id.
type arrivals struct {
	mu  sync.Mutex
	got map[string]time.Time
}

func (a *arrivals) observe(id string, at time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.got[id]; !ok {
		a.got[id] = at
	}
}

func (a *arrivals) lookup(id string) (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	t, ok := a.got[id]
	return t, ok
}

func (a *arrivals) waitFor(ctx context.Context, ids []string, timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	for {
		missing := 0
		for _, id := range ids {
			if _, ok := a.lookup(id); !ok {
				missing++
			}
		}
		if missing == 0 || time.Now().After(deadline) || !clock.Sleep(ctx, 20*time.Millisecond) {
			return missing
		}
	}
}

type sentMsg struct {
	id          string
	start, done time.Time
}

func runSynapse(ctx context.Context, base *rig, s *settings, db string, rep *report) error {
	sr, err := startRig(ctx, rigOptions{dir: filepath.Join(base.dir, db+"-synapse-rig"), bin: base.bin, logLevel: base.logLevel,
		nats: base.nats, pg: base.pg, kind: testrig.Synapse, rateLimits: busyHumans,
		extra: "agents:\n    provision_unknown: [\"sofia\"]\n    accept_invites_into: [any]\n"})
	if err != nil {
		return err
	}
	defer sr.close()
	b, err := sr.startBridge(ctx, db, "synapse")
	if err != nil {
		return err
	}
	defer b.stopKeep(s.keep)
	arr := &arrivals{got: map[string]time.Time{}}
	recv, err := subscribeReceiver(ctx, b, arr.observe)
	if err != nil {
		return err
	}
	defer recv.stop()

	// One client and one room each, the agent invited and joined (the
	// bridge accepts the invite): the appservice gets the room's events.
	agent := id.NewUserID(agentLocalpart, serverName)
	clients := make([]*mautrix.Client, s.synapseClients)
	rooms := make([]id.RoomID, s.synapseClients)
	for i := range clients {
		if clients[i], err = sr.hs.RegisterUser(ctx, fmt.Sprintf("e2bhuman%d", i), randomToken(), false); err != nil {
			return err
		}
		resp, err := clients[i].CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: fmt.Sprintf("e2ebench %d", i), Invite: []id.UserID{agent}})
		if err != nil {
			return fmt.Errorf("creating a room: %w", err)
		}
		rooms[i] = resp.RoomID
	}
	for i, room := range rooms {
		if err := waitMember(ctx, clients[i], room, agent, 60*time.Second); err != nil {
			return fmt.Errorf("%w\n%s", err, b.logTail(10))
		}
	}

	send := func(ctx context.Context, i, n int, what string) ([]sentMsg, int, string) {
		var out []sentMsg
		errs, lastErr := 0, ""
		for k := 0; k < n && ctx.Err() == nil; k++ {
			t0 := time.Now()
			resp, err := clients[i].SendMessageEvent(ctx, rooms[i], event.EventMessage,
				&event.MessageEventContent{MsgType: event.MsgText, Body: fmt.Sprintf("e2ebench %s %d from client %d", what, k, i)})
			if err != nil {
				errs, lastErr = errs+1, err.Error()
				continue
			}
			out = append(out, sentMsg{id: resp.EventID.String(), start: t0, done: time.Now()})
		}
		return out, errs, lastErr
	}
	run := func(n int, what string) ([]sentMsg, int, string) {
		var mu sync.Mutex
		var all []sentMsg
		errs, lastErr := 0, ""
		var wg sync.WaitGroup
		for i := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				got, e, le := send(ctx, i, n, what)
				mu.Lock()
				all, errs = append(all, got...), errs+e
				if le != "" {
					lastErr = le
				}
				mu.Unlock()
			}()
		}
		wg.Wait()
		return all, errs, lastErr
	}
	ids := func(ms []sentMsg) []string {
		out := make([]string, len(ms))
		for i, m := range ms {
			out[i] = m.id
		}
		return out
	}
	warm, _, _ := run(5, "warm-up")
	arr.waitFor(ctx, ids(warm), 60*time.Second)

	benchkit.Progress("[%s] synapse: %d clients send %d messages each", db, s.synapseClients, s.synapseMessages)
	cpu0 := sr.readCPU()
	msgs, errs, lastErr := run(s.synapseMessages, "message")
	if len(msgs) == 0 {
		return fmt.Errorf("no message sent: %s", lastErr)
	}
	missing := arr.waitFor(ctx, ids(msgs), s.drainTimeout)
	cpu := cpuBetween(cpu0, sr.readCPU())
	var lat, call []time.Duration
	first, last := msgs[0].start, time.Time{}
	for _, m := range msgs {
		call = append(call, m.done.Sub(m.start))
		if m.start.Before(first) {
			first = m.start
		}
		if at, ok := arr.lookup(m.id); ok {
			lat = append(lat, at.Sub(m.start))
			if at.After(last) {
				last = at
			}
		}
	}
	out := synapseResult{DB: db, Clients: s.synapseClients, Sent: len(msgs), Received: len(lat),
		Latency: toLatency(benchkit.Summarize(lat)), Call: toLatency(benchkit.Summarize(call)), CPU: cpu}
	if !last.IsZero() {
		out.Rate = float64(len(lat)) / last.Sub(first).Seconds()
	}
	rep.Rows = append(rep.Rows,
		benchkit.NewRow(db, fmt.Sprintf("synapse: %d clients → Synapse → bridge → webhook", s.synapseClients), "client send → receiver's receipt",
			out.Latency.summary, missing+errs, out.Rate, "events/s"),
		benchkit.NewRow(db, fmt.Sprintf("synapse: %d clients' send calls", s.synapseClients), "PUT /send → 200 (Synapse)",
			out.Call.summary, errs, float64(len(msgs))/msgs[len(msgs)-1].done.Sub(first).Seconds(), "msg/s"))
	rep.Note("[%s] synapse: %d of %d messages reached the webhook (%d sends failed%s); %s", db, len(lat), len(msgs), errs, lastErrNote(lastErr), cpu.describe(len(msgs)))
	rep.Synapse = append(rep.Synapse, out)
	return nil
}

func lastErrNote(e string) string {
	if e == "" {
		return ""
	}
	return "; last: " + e
}

// waitMember waits until user has joined room, as cli sees the room.
func waitMember(ctx context.Context, cli *mautrix.Client, room id.RoomID, user id.UserID, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if resp, err := cli.JoinedMembers(ctx, room); err == nil {
			if _, ok := resp.Joined[user]; ok {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not join %s within %s", user, room, timeout)
		}
		if !clock.Sleep(ctx, 200*time.Millisecond) {
			return ctx.Err()
		}
	}
}
