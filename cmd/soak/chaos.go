package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"
)

// Fault kinds.
const (
	faultBridgeKill     = "bridge-sigkill"
	faultHomeserverStop = "homeserver-stop"
	faultWebhook500     = "webhook-500"
	faultNATSRestart    = "nats-restart"
	faultPostgresStop   = "postgres-stop"
	faultLeaderFreeze   = "leader-freeze"
	faultPoison         = "poison-event"
	faultInviteFlood    = "invite-flood"
)

var faultKinds = []string{faultBridgeKill, faultHomeserverStop, faultWebhook500, faultNATSRestart, faultPostgresStop,
	faultLeaderFreeze, faultPoison, faultInviteFlood}

// expectedLength is about how long a fault takes from its start to its
// end, for planning: the drawn length, plus for a freeze the takeover (the
// lease's 10 s and a poll) and the step-down, for a flood its invites.
func expectedLength(kind string, down time.Duration, o options) time.Duration {
	switch kind {
	case faultLeaderFreeze:
		return down + 12*time.Second
	case faultPoison:
		return 500 * time.Millisecond
	case faultInviteFlood:
		// Dendrite takes about 150 ms an invite, more as the room fills.
		n := time.Duration(o.FloodInvites)
		return time.Second + n*(150*time.Millisecond+n*500*time.Microsecond)
	}
	return down
}

// fault is one planned fault: at At after the load started, Kind is
// injected and healed Down later.
type fault struct {
	At   time.Duration
	Kind string
	Down time.Duration
}

type plan []fault

func (p plan) String() string {
	var parts []string
	for _, f := range p {
		parts = append(parts, fmt.Sprintf("%s@%.1fs/%.1fs", f.Kind, f.At.Seconds(), f.Down.Seconds()))
	}
	return fmt.Sprintf("%d faults: %s", len(p), strings.Join(parts, " "))
}

// planChaos draws the faults from the seed: every kind once first, in a
// random order, then random kinds, at random gaps, each down for a random
// time in [FaultMin, FaultMax]; none is expected to end within QuietTail of
// the end (expectedLength).
func planChaos(o options) plan {
	rng := rand.New(rand.NewPCG(o.Seed, o.Seed^0x9e3779b97f4a7c15))
	between := func(lo, hi time.Duration) time.Duration {
		if hi <= lo {
			return lo
		}
		return lo + time.Duration(rng.Int64N(int64(hi-lo)))
	}
	kinds := faultKinds
	if len(o.Kinds) > 0 {
		kinds = o.Kinds
	}
	first := append([]string(nil), kinds...)
	rng.Shuffle(len(first), func(i, j int) { first[i], first[j] = first[j], first[i] })
	var p plan
	at := o.Warmup
	for i := 0; o.MaxFaults == 0 || i < o.MaxFaults; i++ {
		kind := kinds[rng.IntN(len(kinds))]
		if i < len(first) {
			kind = first[i]
		}
		down := between(o.FaultMin, o.FaultMax)
		length := expectedLength(kind, down, o)
		if at+length > o.Duration-o.QuietTail {
			break
		}
		p = append(p, fault{At: at, Kind: kind, Down: down})
		at += length + between(o.GapMin, o.GapMax)
	}
	return p
}

// chaosRecord is a fault as it happened.
type chaosRecord struct {
	Kind string
	// Begin and End bound the outage: from the fault to the part answering again.
	Begin, End time.Time

	At      time.Duration // after the load started
	Down    time.Duration // planned time between the fault and the start of its repair
	Outage  time.Duration // from the fault to the part answering again
	Details string
	// Bridge kills: the process killed, and whether it held the lease.
	Process   string
	WasLeader bool
	// Leader freezes.
	Freeze *freezeRecord `json:",omitempty"`
}

type chaosLog struct {
	mu      sync.Mutex
	records []chaosRecord
}

func (c *chaosLog) add(r chaosRecord) {
	c.mu.Lock()
	c.records = append(c.records, r)
	c.mu.Unlock()
}

func (c *chaosLog) list() []chaosRecord {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]chaosRecord(nil), c.records...)
}

// runChaos injects the planned faults one after the other until the plan
// is done or stop is closed; a fault in progress is always healed first. A
// fault whose time came during a slow repair starts GapMin after it, and
// keeps its length. It returns an error only when a part could not be
// brought back.
func (s *soak) runChaos(ctx context.Context, loadStart time.Time, p plan, stop <-chan struct{}) error {
	var earliest time.Time
	for _, f := range p {
		at := loadStart.Add(f.At)
		if at.Before(earliest) {
			at = earliest
		}
		select {
		case <-stop:
			return nil
		case <-ctx.Done():
			return nil
		case <-time.After(time.Until(at)):
		}
		rec := chaosRecord{Kind: f.Kind, At: time.Since(loadStart), Down: f.Down}
		began := time.Now()
		var err error
		switch f.Kind {
		case faultBridgeKill:
			err = s.faultBridge(ctx, f.Down, &rec)
		case faultHomeserverStop:
			err = s.faultRestart(ctx, s.hs, f.Down, &rec)
		case faultWebhook500:
			s.hook.setFailing(true)
			time.Sleep(f.Down)
			s.hook.setFailing(false)
		case faultNATSRestart:
			s.nats.Stop()
			time.Sleep(f.Down)
			err = s.nats.Start()
		case faultPostgresStop:
			err = s.faultRestart(ctx, s.pg, f.Down, &rec)
		case faultLeaderFreeze:
			err = s.faultFreeze(ctx, f.Down, &rec)
		case faultPoison:
			err = s.faultPoison(ctx, &rec)
		case faultInviteFlood:
			err = s.faultFlood(ctx, &rec)
		}
		rec.Begin, rec.End = began, time.Now()
		earliest = rec.End.Add(s.opts.GapMin)
		rec.Outage = rec.End.Sub(began)
		s.chaos.add(rec)
		extra := ""
		if rec.Details != "" {
			extra = " (" + rec.Details + ")"
		}
		s.logf("chaos: %s for %.1fs, back after %.1fs%s", f.Kind, f.Down.Seconds(), rec.Outage.Seconds(), extra)
		if err != nil {
			return fmt.Errorf("%s: %w", f.Kind, err)
		}
	}
	return nil
}

// faultBridge: SIGKILL (no shutdown code runs) of the process the front
// door forwards to (the one the homeserver and the agents talk to), down
// for d, start again in place. When it held the lease, the other process
// takes over once the lease expires.
func (s *soak) faultBridge(ctx context.Context, d time.Duration, rec *chaosRecord) error {
	sl := s.frontSlot()
	qctx, cancel := context.WithTimeout(ctx, time.Second)
	lead, _, _ := s.leaderNow(qctx)
	cancel()
	rec.Process, rec.WasLeader = sl.name, lead == sl
	s.proc(sl).Kill()
	time.Sleep(d)
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		if err = s.startBridge(ctx, sl); err == nil {
			rec.Details = "process " + sl.name
			if rec.WasLeader {
				rec.Details += ", the leader"
			}
			if attempt > 1 {
				rec.Details += fmt.Sprintf("; started on attempt %d", attempt)
			}
			return nil
		}
		s.logf("chaos: the bridge did not come back (attempt %d): %v", attempt, err)
	}
	return err
}

// restartable is a part the soak stops and starts again in place.
type restartable interface {
	Stop() error
	Start(ctx context.Context) error
}

// faultRestart: stop part, down for d, start it again on the same port and
// data. For Dendrite a stop is SIGTERM (testrig sends SIGKILL after 15 s);
// for PostgreSQL a fast shutdown of the cluster (every connection is cut).
func (s *soak) faultRestart(ctx context.Context, part restartable, d time.Duration, rec *chaosRecord) error {
	began := time.Now()
	if err := part.Stop(); err != nil {
		rec.Details = fmt.Sprintf("stop: %v", err)
	}
	if took := time.Since(began); took > 2*time.Second {
		rec.Details = strings.TrimPrefix(rec.Details+fmt.Sprintf("; stopping took %.1fs", took.Seconds()), "; ")
	}
	time.Sleep(d)
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return part.Start(startCtx)
}
