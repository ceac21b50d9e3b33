//go:build goolm

package main

import (
	"context"
	"fmt"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/internal/benchkit"
	"github.com/daarion/matrix-bridge/pkg/mapping"
)

// settings bound every phase: a count, and a time after which a phase
// stops sending even if the count is not reached.
type settings struct {
	humanMessages int
	agentMessages int
	warmup        int
	phaseTimeout  time.Duration
	drainTimeout  time.Duration
	quietWait     time.Duration
	quietCores    float64
}

// sent is one message of the human's, with when its send started and
// returned.
type sent struct {
	id          string
	start, done time.Time
}

// humanResult is one room's run of the human's messages to the webhook.
type humanResult struct {
	sends   []sent
	errors  int
	lastErr string
	// missing DTOs after the drain; behind: not yet received when the
	// last send returned (the bridge fell behind the sender by that many).
	missing, behind int
	latency         benchkit.Summary // send start → webhook receipt
	call            benchkit.Summary // the client's send call (with its encryption)
	after           benchkit.Summary // send returned → webhook receipt: the pipeline without the client's own send
	span            time.Duration
	sendSpan        time.Duration // first send start → last send returned
	// otherTypes counts DTOs of the phase that are not message.created
	// (an undecryptable one, say).
	otherTypes map[string]int
}

// rate is the end-to-end rate: DTOs received over first send → last DTO.
func (r *humanResult) rate() float64 {
	if r.span <= 0 {
		return 0
	}
	return float64(r.latency.N) / r.span.Seconds()
}

// warmUp sends n messages into room and waits for their DTOs, so that the
// timed phase starts on a warm path (connections, caches, and in an
// encrypted room the first room key already shared with the agent's
// device). It returns how long the first send took.
func warmUp(ctx context.Context, h *human, rc *receiver, room id.RoomID, n int, what string) (time.Duration, error) {
	var first time.Duration
	ids := make([]string, 0, n)
	for i := range n {
		t0 := time.Now()
		evt, err := h.send(ctx, room, fmt.Sprintf("e2eebench warm-up %s %d", what, i))
		if err != nil {
			return 0, fmt.Errorf("warming up the %s room: %w", what, err)
		}
		if i == 0 {
			first = time.Since(t0)
		}
		ids = append(ids, evt.String())
	}
	if missing := rc.waitFor(ctx, ids, 90*time.Second); missing > 0 {
		return 0, fmt.Errorf("warming up the %s room: %d of %d DTOs never reached the webhook", what, missing, n)
	}
	return first, nil
}

// humanPhase has the human send s.humanMessages messages one after
// another, as fast as one sender can, into room, then waits for their DTOs.
func humanPhase(ctx context.Context, h *human, rc *receiver, room id.RoomID, s *settings, what string) (*humanResult, error) {
	r := &humanResult{otherTypes: map[string]int{}}
	deadline := time.Now().Add(s.phaseTimeout)
	for i := 0; i < s.humanMessages && ctx.Err() == nil && time.Now().Before(deadline); i++ {
		t0 := time.Now()
		evt, err := h.send(ctx, room, fmt.Sprintf("e2eebench %s message %d", what, i))
		if err != nil {
			r.errors, r.lastErr = r.errors+1, err.Error()
			continue
		}
		r.sends = append(r.sends, sent{id: evt.String(), start: t0, done: time.Now()})
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(r.sends) == 0 {
		return nil, fmt.Errorf("%s room: no send succeeded (%d errors, last: %s)", what, r.errors, r.lastErr)
	}
	ids := make([]string, len(r.sends))
	for i, x := range r.sends {
		ids[i] = x.id
	}
	lastDone := r.sends[len(r.sends)-1].done
	r.missing = rc.waitFor(ctx, ids, s.drainTimeout)
	got := rc.lookup(ids)
	var lat, call, after []time.Duration
	var last time.Time
	for _, x := range r.sends {
		call = append(call, x.done.Sub(x.start))
		a, ok := got[x.id]
		if !ok {
			continue
		}
		lat = append(lat, a.at.Sub(x.start))
		after = append(after, a.at.Sub(x.done))
		if a.at.After(last) {
			last = a.at
		}
		if a.at.After(lastDone) {
			r.behind++
		}
		if a.typ != mapping.MessageCreated {
			r.otherTypes[a.typ]++
		}
	}
	r.latency, r.call, r.after = benchkit.Summarize(lat), benchkit.Summarize(call), benchkit.Summarize(after)
	first := r.sends[0].start
	r.span, r.sendSpan = last.Sub(first), lastDone.Sub(first)
	return r, nil
}

// agentResult is one room's run of the agent's sends through the bridge.
type agentResult struct {
	calls   benchkit.Summary // POST /internal/matrix/send, client side
	errors  int
	lastErr string
	ids     []string
	span    time.Duration
}

// agentPhase sends s.agentMessages messages as the agent, sequentially,
// after s.warmup untimed ones (the first encrypted one shares the agent's
// room key with the human's device); it returns the first warm-up's time.
func agentPhase(ctx context.Context, st *stack, room id.RoomID, s *settings, what string) (*agentResult, time.Duration, error) {
	var cold time.Duration
	for i := range s.warmup {
		_, d, err := benchkit.SendAsAgent(ctx, st.api, room, agentEntity, "", fmt.Sprintf("e2eebench agent warm-up %s %d", what, i))
		if err != nil {
			return nil, 0, fmt.Errorf("warming up the agent in the %s room: %w", what, err)
		}
		if i == 0 {
			cold = d
		}
	}
	r := &agentResult{}
	var durs []time.Duration
	start := time.Now()
	deadline := start.Add(s.phaseTimeout)
	for i := 0; i < s.agentMessages && ctx.Err() == nil && time.Now().Before(deadline); i++ {
		evt, d, err := benchkit.SendAsAgent(ctx, st.api, room, agentEntity, "", fmt.Sprintf("e2eebench agent %s message %d", what, i))
		if err != nil {
			r.errors, r.lastErr = r.errors+1, err.Error()
			continue
		}
		durs = append(durs, d)
		r.ids = append(r.ids, evt)
	}
	r.span = time.Since(start)
	r.calls = benchkit.Summarize(durs)
	return r, cold, ctx.Err()
}
