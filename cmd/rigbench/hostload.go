package main

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/daarion/matrix-bridge/internal/benchkit"
)

// usage is where CPU went between two readings, in cores: the whole
// machine, this process (the bridge and the load generator), its
// descendants (Dendrite, PostgreSQL and its backends), and other processes.
type usage struct {
	ok                           bool
	cores                        float64
	busy, self, children, others float64
	loadStart, loadEnd           string
}

func cpuUsage(a, b benchkit.CPUSnap) usage {
	perCPU, ok := benchkit.TicksPerCPU(a, b)
	if !ok {
		return usage{}
	}
	cores := func(ticks uint64) float64 { return float64(ticks) / perCPU }
	u := usage{ok: true, cores: float64(runtime.NumCPU()), loadStart: a.Load1, loadEnd: b.Load1}
	u.busy = cores(benchkit.BusyTicks(a, b))
	u.self = cores(b.Self - a.Self)
	if ca, cb := a.ChildrenTotal(), b.ChildrenTotal(); cb > ca {
		u.children = cores(cb - ca)
	}
	u.others = max(u.busy-u.self-u.children, 0)
	return u
}

// hostNote says how busy the machine was between two readings.
func hostNote(a, b benchkit.CPUSnap) string {
	u := cpuUsage(a, b)
	if !u.ok {
		return "host load: unknown (no /proc)"
	}
	return fmt.Sprintf("host: %.2f of %.0f cores busy: rigbench (bridge + load generator) %.2f, its Dendrite + PostgreSQL %.2f, other processes %.2f; load avg %s at start, %s at end",
		u.busy, u.cores, u.self, u.children, u.others, u.loadStart, u.loadEnd)
}

// waitQuiet waits (at most wait) until everything but rigbench itself,
// its Dendrite and PostgreSQL included, uses at most limit cores.
func waitQuiet(ctx context.Context, limit float64, wait time.Duration) {
	benchkit.WaitQuiet(ctx, limit, wait, func(a, b benchkit.CPUSnap) (float64, bool) {
		u := cpuUsage(a, b)
		return u.others + u.children, u.ok
	})
}
