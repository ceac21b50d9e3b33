package eventlog

import (
	"context"
	"testing"
	"time"
)

// The pacer measures the indexer over the commits it made back to back, and
// gives a transaction in the band between half the limit and the limit a
// slot of its events' indexing time scaled by the backlog's depth.
func TestPacerSlots(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	ms := func(n float64) time.Duration { return time.Duration(n * float64(time.Millisecond)) }
	measured := func() *pacer {
		p := &pacer{}
		p.indexed(500, 9000, t0)                            // the first commit: nothing to measure from
		p.indexed(2000, 8000, t0.Add(100*time.Millisecond)) // 2,000 in 100 ms: 20,000 events/s
		return p
	}
	if p := measured(); p.rate != 20000 {
		t.Fatalf("rate %v events/s after 2,000 events in 100 ms, want 20,000", p.rate)
	}
	cases := []struct {
		name                   string
		events, pending, limit int
		want                   time.Duration
	}{
		{"below the soft mark", 100, 9999, 20000, 0},
		{"at the soft mark", 100, 10000, 20000, 0},
		{"three quarters: the events' indexing time", 100, 15000, 20000, ms(5)},
		{"at the limit: twice it", 100, 20000, 20000, ms(10)},
		{"a quarter in", 200, 12500, 20000, ms(5)},
		{"no events", 0, 15000, 20000, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// The first transaction's slot began a slot ago (its own
			// arrival's credit); the second, at the same instant, waits
			// for a whole one.
			p, now := measured(), t0.Add(time.Second)
			if first := p.delay(c.events, c.pending, c.limit, now); first != 0 {
				t.Errorf("the first waited %v, want 0", first)
			}
			if got := p.delay(c.events, c.pending, c.limit, now); got != c.want {
				t.Errorf("delay %v, want %v", got, c.want)
			}
		})
	}

	// Unmeasured (no back-to-back commit yet): no delay.
	if got := (&pacer{}).delay(100, 20000, 20000, t0); got != 0 {
		t.Errorf("unmeasured pacer delayed %v", got)
	}
	// A commit after an idle indexer measures nothing: the time between
	// included the idling.
	p := &pacer{}
	p.indexed(100, 0, t0)
	p.indexed(100, 0, t0.Add(time.Second))
	if p.rate != 0 {
		t.Errorf("rate %v measured across an idle indexer", p.rate)
	}

	// Slots follow each other: one transaction in flight that takes 2 ms
	// from its arrival to its commit waits the other 3 ms of its 5 ms
	// slot, so they come at the indexer's rate; one that took longer than
	// its slot does not wait; three at one instant wait 0, 5 and 10 ms.
	p = measured()
	now := t0.Add(time.Second)
	p.delay(100, 15000, 20000, now)
	if w := p.delay(100, 15000, 20000, now.Add(ms(2))); w != ms(3) {
		t.Errorf("2 ms into its slot, waited %v, want 3 ms", w)
	}
	if w := p.delay(100, 15000, 20000, now.Add(ms(5+7))); w != 0 {
		t.Errorf("7 ms into its 5 ms slot, waited %v, want 0", w)
	}
	later := now.Add(time.Second)
	if a, b, c := p.delay(100, 15000, 20000, later), p.delay(100, 15000, 20000, later), p.delay(100, 15000, 20000, later); a != 0 || b != ms(5) || c != ms(10) {
		t.Errorf("three at once waited %v, %v and %v, want 0, 5 ms and 10 ms", a, b, c)
	}
}

// Pace waits for the pacer's slot below the limit: with the indexer measured
// at 20,000 events/s, the backlog three quarters of the way to the limit and
// the slots booked 50 ms ahead, a 100-event transaction waits those 50 ms
// and its own 5 ms (and returns at once with nothing behind).
func TestPaceWaitsForItsSlot(t *testing.T) {
	l := &Log{}
	ctx := context.Background()
	l.handoff.setActive(true)
	if waited := l.Pace(ctx, 100, 20000, time.Second); waited != 0 {
		t.Fatalf("waited %v with nothing behind", waited)
	}
	l.handoff.put(1, []byte("{}"), make([]IncomingEvent, 15000))
	l.handoff.mu.Lock()
	l.handoff.pace.rate, l.handoff.pace.next = 20000, time.Now().Add(50*time.Millisecond)
	l.handoff.mu.Unlock()
	if waited := l.Pace(ctx, 100, 20000, time.Second); waited < 50*time.Millisecond || waited >= time.Second {
		t.Errorf("waited %v below the limit, want its slot: 50 ms booked ahead and its own 5 ms", waited)
	}
}
