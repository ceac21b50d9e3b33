package eventlog

import "time"

// pacer spreads the transaction path's wait over every answer instead of
// making one answer in twenty wait for a whole indexing commit. Past the
// soft mark (half the limit) each transaction is given a slot of its
// events' indexing time, events / the indexer's measured rate, scaled by how
// deep the backlog is in the band between the soft mark and the limit (0 at
// the mark, 1 three quarters of the way, 2 at the limit): a proportional
// controller that holds the backlog where the push and the indexer run at
// the same rate, so the answers come at the indexer's pace, each held back
// by a few milliseconds, and the hard wait at the limit is a backstop.
// The zero value measures nothing yet and delays nothing.
type pacer struct {
	// rate is the indexer's speed, events/s: a moving average over the
	// commits it made while it had more to do (back to back, so its
	// throughput is what it can do).
	rate     float64
	lastDone time.Time
	wasBusy  bool
	// next is when the next paced transaction's slot ends.
	next time.Time
}

// rateWeight is how much one commit's speed moves the average.
const rateWeight = 0.25

// indexed records a commit that took indexed events out of the backlog,
// remaining left behind it.
func (p *pacer) indexed(indexed, remaining int, now time.Time) {
	if p.wasBusy && indexed > 0 {
		if elapsed := now.Sub(p.lastDone).Seconds(); elapsed > 0 {
			sample := float64(indexed) / elapsed
			if p.rate == 0 {
				p.rate = sample
			} else {
				p.rate += rateWeight * (sample - p.rate)
			}
		}
	}
	p.lastDone, p.wasBusy = now, remaining > 0
}

// delay is how long a transaction of events, committed at now with pending
// events behind the indexer, waits before its answer (limit > 0).
func (p *pacer) delay(events, pending, limit int, now time.Time) time.Duration {
	soft := limit / 2
	if pending < soft || p.rate <= 0 || events <= 0 {
		return 0
	}
	depth := 2 * float64(pending-soft) / float64(max(limit-soft, 1))
	slot := time.Duration(float64(events) / p.rate * depth * float64(time.Second))
	// A transaction that took longer than its slot to arrive has used it
	// up: at most one slot of credit, so a burst after a pause is paced too.
	if earliest := now.Add(-slot); p.next.Before(earliest) {
		p.next = earliest
	}
	p.next = p.next.Add(slot)
	return max(p.next.Sub(now), 0)
}
