package main

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"
)

// TestChaosSoakShort is the soak in `make test`: under a minute of load,
// every kind of fault once, then 0 lost and 0 out of order at both sinks.
// SOAK_SEED=<n> replays a chaos plan.
func TestChaosSoakShort(t *testing.T) {
	if testing.Short() {
		t.Skip("the chaos soak runs the whole rig; skipped with -short")
	}
	o := defaultOptions()
	o.Duration = 45 * time.Second
	o.Humans, o.Agents, o.Rooms, o.Rate = 2, 2, 2, 6
	o.Warmup, o.GapMin, o.GapMax = 3*time.Second, time.Second, 2*time.Second
	o.FaultMin, o.FaultMax, o.MaxFaults, o.QuietTail = time.Second, 2*time.Second, len(faultKinds), 2*time.Second
	o.MsgTimeout, o.Drain, o.Progress = 60*time.Second, 60*time.Second, 10*time.Second
	o.Dir = t.TempDir()
	o.Keep = true // t.TempDir removes it
	if v := os.Getenv("SOAK_SEED"); v != "" {
		seed, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("SOAK_SEED: %v", err)
		}
		o.Seed = seed
	} else {
		o.Seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (SOAK_SEED=%d replays the chaos plan)", o.Seed, o.Seed)
	if p := planChaos(o); len(p) != len(faultKinds) {
		t.Fatalf("the plan has %d faults, want one of each kind: %s", len(p), p)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out := &lineLogger{t: t}
	rep, err := run(ctx, o, out)
	if err != nil {
		t.Fatalf("soak rig: %v", err)
	}
	var buf bytes.Buffer
	rep.print(&buf)
	t.Log(buf.String())
	if !rep.ok() {
		t.Errorf("the soak failed (seed %d): lost, out of order or duplicated events; see the report", o.Seed)
	}
	if !rep.Drained {
		t.Errorf("the drain did not finish within %s", o.Drain)
	}
	for _, k := range faultKinds {
		if rep.ChaosCounts[k] < 1 {
			t.Errorf("no %s fault was injected", k)
		}
	}
	if rep.Produced < int(o.Duration.Seconds()*o.Rate/3) {
		t.Errorf("only %d messages were produced", rep.Produced)
	}
	if n := len(rep.DuplicatedEvent); n > 0 {
		// Known, and not the bridge's delivery: see docs/reliability.md.
		t.Logf("note: %d duplicated events (one message, two Matrix events): %v", n, rep.DuplicatedByCause)
	}
	if len(rep.Abandoned) > 0 {
		t.Errorf("%d sends were abandoned", len(rep.Abandoned))
	}
}

// lineLogger writes each line to the test log.
type lineLogger struct {
	t   *testing.T
	mu  sync.Mutex
	buf []byte
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		l.t.Log(string(l.buf[:i]))
		l.buf = l.buf[i+1:]
	}
}

// The judge: losses, redeliveries, inversions and duplicated events are
// told apart.
func TestAnalyse(t *testing.T) {
	room := id.RoomID("!r:x")
	msgs := []message{
		{Key: "a-1", Producer: "a", Room: room, EventID: "$1", Seq: 1},
		{Key: "a-2", Producer: "a", Room: room, EventID: "$2", Seq: 2},
		{Key: "b-1", Producer: "b", Room: room, EventID: "$3", Seq: 1, Human: true},
	}
	log := []logEntry{
		{Position: 10, EventID: "$1", RoomID: string(room), Key: "a-1"},
		{Position: 11, EventID: "$2", RoomID: string(room), Key: "a-2"},
		{Position: 12, EventID: "$3", RoomID: string(room), Key: "b-1"},
		{Position: 13, EventID: "$4", RoomID: string(room), Key: "b-1"}, // the same message twice
	}
	sinks := map[string][]arrival{
		// A redelivery of $1 after $2 is no inversion; $3 is lost.
		"good": {{DTOID: "$1", Key: "a-1"}, {DTOID: "$2", Key: "a-2"}, {DTOID: "$1", Key: "a-1"}},
		// $2 before $1: one inversion.
		"bad": {{DTOID: "$2", Key: "a-2"}, {DTOID: "$1", Key: "a-1"}, {DTOID: "$3", Key: "b-1"}},
	}
	r := analyse(time.Now(), msgs, log, sinks, nil)
	if r.ProducedInLog != 3 || len(r.MissingFromLog) != 0 || r.UnknownInLog != 0 {
		t.Errorf("log: %d in, missing %v, unknown %d", r.ProducedInLog, r.MissingFromLog, r.UnknownInLog)
	}
	if len(r.DuplicatedEvent) != 1 || !strings.Contains(r.DuplicatedEvent[0], "b-1:") || r.DuplicatedByCause[dupHuman] != 1 {
		t.Errorf("duplicated events: %v", r.DuplicatedEvent)
	}
	bad, good := r.Sinks[0], r.Sinks[1]
	if good.Name != "good" || good.Lost != 1 || good.Redelivered != 1 || good.OutOfOrder != 0 {
		t.Errorf("good sink: %+v", good)
	}
	if bad.Name != "bad" || bad.Lost != 0 || bad.Redelivered != 0 || bad.OutOfOrder != 1 {
		t.Errorf("bad sink: %+v", bad)
	}
	if r.ok() {
		t.Error("a report with losses and an inversion passed")
	}
}

func TestPlanHasEveryKindFirst(t *testing.T) {
	o := defaultOptions()
	for seed := uint64(1); seed <= 20; seed++ {
		o.Seed = seed
		p := planChaos(o)
		seen := map[string]bool{}
		for _, f := range p[:len(faultKinds)] {
			seen[f.Kind] = true
			if f.Down < o.FaultMin || f.Down > o.FaultMax {
				t.Errorf("seed %d: fault %s lasts %s", seed, f.Kind, f.Down)
			}
		}
		if len(seen) != len(faultKinds) {
			t.Errorf("seed %d: the first faults are %s", seed, p)
		}
		if last := p[len(p)-1]; last.At+last.Down > o.Duration-o.QuietTail {
			t.Errorf("seed %d: the last fault ends at %s", seed, last.At+last.Down)
		}
		if again := planChaos(o); again.String() != p.String() {
			t.Errorf("seed %d: the plan is not reproducible", seed)
		}
	}
}
