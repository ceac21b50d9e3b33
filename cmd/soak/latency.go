package main

import (
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"time"
)

// latencyReport is the normal webhook subscriber's delivery latency, with
// the slow "*" subscriber beside it.
type latencyReport struct {
	Timeout time.Duration // the bridge's webhook attempt timeout
	// Every produced message that reached the normal subscriber: from its
	// origin_server_ts to the receiver's answer.
	All                             int
	OriginP50, OriginP99, OriginMax time.Duration
	// Quiet: messages no fault but the poison and the floods was near
	// (see quietSettle), from origin_server_ts to receipt.
	Quiet                        int
	QuietP50, QuietP99, QuietMax time.Duration
	// Held back: receipt at the normal subscriber minus the time NATS stored
	// the same event. Both sinks are consumers of the same log, woken by the
	// same append; only the webhook deliverer is shared with the slow
	// subscriber. Quiet messages only.
	Held                         int
	HeldP50, HeldP99, HeldMax    time.Duration
	HeldOverTimeout              int // held back by more than one attempt timeout
	SlowRequests, SlowHeld, Slow int // the slow receiver: requests, held past the timeout, accepted
}

// withinTimeout: the slow subscriber held the normal one back by at most one
// attempt timeout (p99).
func (l latencyReport) withinTimeout() bool { return l.Held > 0 && l.HeldP99 <= l.Timeout }

// quietSettle is how long after a fault its effects are counted as under
// way: a killed leader is replaced within the takeover bound; everything
// else is back within seconds (the webhook backoff is 1 s).
func quietSettle(f chaosRecord) time.Duration {
	if f.Kind == faultBridgeKill && f.WasLeader {
		return takeoverBound
	}
	return 5 * time.Second
}

// startupSettle: the first seconds of the load are not quiet either (each
// agent's first send registers its ghost and joins it, every cache is cold,
// the rig has just started).
const startupSettle = 5 * time.Second

// disturbed: the load had just started, or a fault (not a poison or a
// flood, which stop nothing) was under way, or settling, between from and
// to.
func disturbed(loadStart time.Time, faults []chaosRecord, from, to time.Time) bool {
	if from.Before(loadStart.Add(startupSettle)) {
		return true
	}
	for _, f := range faults {
		if f.Kind == faultPoison || f.Kind == faultInviteFlood {
			continue
		}
		if !from.After(f.End.Add(quietSettle(f))) && !to.Before(f.Begin) {
			return true
		}
	}
	return false
}

func measureLatency(loadStart time.Time, produced []message, logEntries []logEntry, hook []hookDelivery, nats []arrival, faults []chaosRecord, timeout time.Duration) latencyReport {
	r := latencyReport{Timeout: timeout}
	entry := map[string]logEntry{}
	for _, e := range logEntries {
		entry[e.EventID] = e
	}
	first := map[string]time.Time{}
	for _, d := range hook {
		if _, ok := first[d.dtoID]; !ok {
			first[d.dtoID] = d.at
		}
	}
	natsAt := map[string]time.Time{}
	for _, a := range nats {
		if _, ok := natsAt[a.DTOID]; !ok && !a.At.IsZero() {
			natsAt[a.DTOID] = a.At
		}
	}
	var all, quiet, held []time.Duration
	for _, m := range produced {
		e, inLog := entry[m.EventID.String()]
		got, ok := first[m.EventID.String()]
		if !inLog || !ok || e.OriginTS == 0 {
			continue
		}
		origin := time.UnixMilli(e.OriginTS)
		all = append(all, got.Sub(origin))
		if disturbed(loadStart, faults, origin, got) {
			continue
		}
		quiet = append(quiet, got.Sub(origin))
		if n, ok := natsAt[m.EventID.String()]; ok {
			h := got.Sub(n)
			held = append(held, h)
			if h > timeout {
				r.HeldOverTimeout++
			}
		}
	}
	r.All, r.OriginP50, r.OriginP99, r.OriginMax = stats(all)
	r.Quiet, r.QuietP50, r.QuietP99, r.QuietMax = stats(quiet)
	r.Held, r.HeldP50, r.HeldP99, r.HeldMax = stats(held)
	return r
}

// writeLatencyCSV writes, per produced message, its times (unix ms): origin,
// in the log, stored by NATS, first receipt at each webhook receiver; and
// whether it counted as quiet.
func writeLatencyCSV(path string, start, loadStart time.Time, produced []message, logEntries []logEntry, hooks map[string][]hookDelivery, nats []arrival, faults []chaosRecord) error {
	entry := map[string]logEntry{}
	for _, e := range logEntries {
		entry[e.EventID] = e
	}
	first := func(ds []hookDelivery) map[string]time.Time {
		m := map[string]time.Time{}
		for _, d := range ds {
			if _, ok := m[d.dtoID]; !ok {
				m[d.dtoID] = d.at
			}
		}
		return m
	}
	normal, slow := first(hooks["webhook"]), first(hooks["webhook-slow"])
	natsAt := map[string]time.Time{}
	for _, a := range nats {
		if _, ok := natsAt[a.DTOID]; !ok {
			natsAt[a.DTOID] = a.At
		}
	}
	rel := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return fmt.Sprintf("%.3f", t.Sub(start).Seconds())
	}
	var b strings.Builder
	b.WriteString("key,producer,room,log_position,origin_s,logged_s,nats_s,webhook_s,webhook_slow_s,quiet\n")
	for _, m := range produced {
		e := entry[m.EventID.String()]
		var origin time.Time
		if e.OriginTS > 0 {
			origin = time.UnixMilli(e.OriginTS)
		}
		got := normal[m.EventID.String()]
		quiet := !origin.IsZero() && !got.IsZero() && !disturbed(loadStart, faults, origin, got)
		fmt.Fprintf(&b, "%s,%s,%s,%d,%s,%s,%s,%s,%s,%v\n", m.Key, m.Producer, m.Room, e.Position, rel(origin), rel(e.Received),
			rel(natsAt[m.EventID.String()]), rel(got), rel(slow[m.EventID.String()]), quiet)
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// stats: count, p50, p99, max.
func stats(v []time.Duration) (n int, p50, p99, maxV time.Duration) {
	if len(v) == 0 {
		return 0, 0, 0, 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	at := func(q float64) time.Duration {
		i := int(math.Ceil(q*float64(len(v)))) - 1
		return v[max(0, min(i, len(v)-1))]
	}
	return len(v), at(0.50), at(0.99), v[len(v)-1]
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%d ms", d.Milliseconds())
}
