package main

import (
	"context"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/daarion/matrix-bridge/internal/benchkit"
)

// The CPU the parts used, from /proc (utime + stime): the bridge process,
// the PostgreSQL cluster (the postmaster and every backend it forked, all
// descending from the child this process started), the webhook receiver
// (a child of this process), Dendrite, and this process itself (the
// senders, the mautrix reference, the NATS server with JetStream, the NATS
// and sync clients, the database watcher). USER_HZ is 100 on Linux.
const userHZ = 100

type cpuReading struct {
	at   time.Time
	snap benchkit.CPUSnap
}

func (r *rig) readCPU() cpuReading {
	return cpuReading{at: time.Now(), snap: benchkit.ReadCPU(func(comm string) string {
		switch {
		case comm == r.bridgeComm:
			return "bridge"
		case strings.HasPrefix(comm, "postgres"):
			return "PostgreSQL"
		case strings.HasPrefix(comm, "dendrite"):
			return "Dendrite"
		case strings.HasPrefix(comm, "python"), strings.HasPrefix(comm, "synapse"):
			return "Synapse"
		case comm == selfComm():
			return "receiver" // the bench binary re-executed with -receiver
		}
		return comm
	})}
}

// cpuUse is the CPU each part used between two readings, in seconds.
type cpuUse struct {
	Wall  float64            `json:"wall_s"`
	Parts map[string]float64 `json:"cpu_s"` // "bench" is this process
	Busy  float64            `json:"machine_busy_s"`
}

func cpuBetween(a, b cpuReading) cpuUse {
	u := cpuUse{Wall: b.at.Sub(a.at).Seconds(), Parts: map[string]float64{}}
	if !a.snap.OK || !b.snap.OK {
		return u
	}
	sec := func(t uint64) float64 { return float64(t) / userHZ }
	u.Parts["bench"] = sec(b.snap.Self - a.snap.Self)
	for name, t := range b.snap.Children {
		if t > a.snap.Children[name] {
			u.Parts[name] = sec(t - a.snap.Children[name])
		}
	}
	u.Busy = sec(benchkit.BusyTicks(a.snap, b.snap))
	return u
}

// perEvent is each part's CPU per event, in microseconds.
func (u cpuUse) perEvent(events int) map[string]float64 {
	out := map[string]float64{}
	for name, s := range u.Parts {
		out[name] = s * 1e6 / float64(max(events, 1))
	}
	return out
}

// String lists the parts' CPU per event and the cores they kept busy.
func (u cpuUse) describe(events int) string {
	per := u.perEvent(events)
	var parts []string
	var mine float64
	for _, name := range slices.Sorted(maps.Keys(u.Parts)) {
		mine += u.Parts[name]
		if u.Parts[name] == 0 {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %.1f µs (%.2f cores)", name, per[name], u.Parts[name]/max(u.Wall, 1e-9)))
	}
	return fmt.Sprintf("CPU per event: %s; machine %.2f of %d cores busy, other processes %.2f",
		strings.Join(parts, ", "), u.Busy/max(u.Wall, 1e-9), runtime.NumCPU(), max(u.Busy-mine, 0)/max(u.Wall, 1e-9))
}

// waitQuiet waits (at most wait) until other processes, not this one or
// its children, use at most limit cores: on a shared machine another
// build or test run would otherwise be in the figures.
func waitQuiet(ctx context.Context, limit float64, wait time.Duration) {
	benchkit.WaitQuiet(ctx, limit, wait, func(a, b benchkit.CPUSnap) (float64, bool) {
		perCPU, ok := benchkit.TicksPerCPU(a, b)
		if !ok {
			return 0, false
		}
		busy := benchkit.BusyTicks(a, b)
		mine := b.Self - a.Self
		for name, t := range b.Children {
			mine += t - min(a.Children[name], t)
		}
		return float64(busy-min(mine, busy)) / perCPU, true
	})
}
