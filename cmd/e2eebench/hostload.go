//go:build goolm

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

// Here the bridge runs as a child process beside Synapse and PostgreSQL,
// so the CPU of this process's descendants is split by the child they
// descend from, so that a reader sees what the bridge itself used apart
// from the homeserver.

// readCPU reads the host's load with this process's children named by what
// they run.
func readCPU() benchkit.CPUSnap { return benchkit.ReadCPU(childName) }

// childName names a child process by what it runs.
func childName(comm string) string {
	switch {
	case comm == "bridge":
		return "bridge"
	case strings.HasPrefix(comm, "python"), strings.HasPrefix(comm, "synapse"):
		return "Synapse"
	case strings.HasPrefix(comm, "postgres"):
		return "PostgreSQL"
	}
	return comm
}

// selfTicks is this process's time (the bench and the human's client) with
// its children that ended: those are no longer among the descendants.
func selfTicks(s benchkit.CPUSnap) uint64 { return s.Self + s.Reaped }

// hostNote says how busy the machine was between two readings, in cores:
// the whole machine, this process, each child (the bridge, Synapse,
// PostgreSQL) and everything else (other processes, which distort the
// results when they are busy).
func hostNote(a, b benchkit.CPUSnap) string {
	perCPU, ok := benchkit.TicksPerCPU(a, b)
	if !ok {
		return "host load: unknown (no /proc)"
	}
	cores := func(ticks uint64) float64 { return float64(ticks) / perCPU }
	busy := cores(benchkit.BusyTicks(a, b))
	self := cores(selfTicks(b) - selfTicks(a))
	mine := self
	var parts []string
	for _, name := range slices.Sorted(maps.Keys(b.Children)) {
		if b.Children[name] <= a.Children[name] {
			continue
		}
		c := cores(b.Children[name] - a.Children[name])
		mine += c
		parts = append(parts, fmt.Sprintf("%s %.2f", name, c))
	}
	return fmt.Sprintf("host: %.2f of %d cores busy: e2eebench (sender, human's crypto, receiver) %.2f, %s, other processes %.2f; load avg %s at start, %s at end",
		busy, runtime.NumCPU(), self, strings.Join(parts, ", "), max(busy-mine, 0), a.Load1, b.Load1)
}

// cpuPerEvent is the CPU time each part spent per event between two
// readings taken wall apart: the clearest reading of what an encrypted
// event costs the bridge (and Synapse, and the human's client) beyond a
// clear one, less disturbed by other processes than a latency is.
func cpuPerEvent(a, b benchkit.CPUSnap, wall time.Duration, events int) string {
	perCPU, ok := benchkit.TicksPerCPU(a, b)
	if !ok || events <= 0 {
		return "CPU per event: unknown (no /proc)"
	}
	perEvent := func(ticks uint64) float64 { return float64(ticks) / perCPU * wall.Seconds() * 1000 / float64(events) }
	parts := []string{fmt.Sprintf("e2eebench %.2f", perEvent(selfTicks(b)-selfTicks(a)))}
	for _, name := range slices.Sorted(maps.Keys(b.Children)) {
		if b.Children[name] > a.Children[name] {
			parts = append(parts, fmt.Sprintf("%s %.2f", name, perEvent(b.Children[name]-a.Children[name])))
		}
	}
	return "CPU ms per event: " + strings.Join(parts, ", ")
}

// waitQuiet waits (at most wait) until other processes, not this one's
// children, use at most limit cores, as cmd/rigbench's -quiet-wait does.
func waitQuiet(ctx context.Context, limit float64, wait time.Duration) {
	benchkit.WaitQuiet(ctx, limit, wait, func(a, b benchkit.CPUSnap) (float64, bool) {
		perCPU, ok := benchkit.TicksPerCPU(a, b)
		if !ok {
			return 0, false
		}
		busy := benchkit.BusyTicks(a, b)
		mine := selfTicks(b) - selfTicks(a)
		for name, t := range b.Children {
			mine += t - a.Children[name]
		}
		return float64(busy-min(mine, busy)) / perCPU, true
	})
}
