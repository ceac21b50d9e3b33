//go:build goolm

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/daarion/matrix-bridge/pkg/clock"
)

// This is cmd/rigbench's host-load reading (a package main cannot be
// imported), changed in one way: here the bridge runs as a child process
// beside Synapse and PostgreSQL, so the CPU of this process's descendants
// is split by the child they descend from (its command name), so that a
// reader sees what the bridge itself used apart from the homeserver.

// cpuSnap is a reading of where the machine's CPU time went, from /proc.
type cpuSnap struct {
	ok          bool
	total, idle uint64            // machine, in ticks (all CPUs)
	self        uint64            // this process (the bench and the human's client), in ticks
	children    map[string]uint64 // descendants by their top child's name, with their reaped children
	load1       string
}

func readCPU() cpuSnap {
	s := cpuSnap{children: map[string]uint64{}}
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return s
	}
	line, _, _ := strings.Cut(string(data), "\n")
	fields := strings.Fields(line)
	if len(fields) < 5 || fields[0] != "cpu" {
		return s
	}
	for i, f := range fields[1:] {
		if i >= 8 { // guest time is already counted in user
			break
		}
		v, _ := strconv.ParseUint(f, 10, 64)
		s.total += v
		if i == 3 || i == 4 { // idle, iowait
			s.idle += v
		}
	}
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		s.load1 = strings.Fields(string(la))[0]
	}
	self := os.Getpid()
	parents := map[int]int{}
	names := map[int]string{}
	times := map[int]uint64{}
	paths, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range paths {
		pid, ppid, name, own, reaped, ok := readProcStat(p)
		if !ok {
			continue
		}
		parents[pid], names[pid], times[pid] = ppid, name, own+reaped
	}
	s.self = times[self]
	for pid := range times {
		if pid == self {
			continue
		}
		// Walk up to the child of this process that pid descends from.
		top := pid
		for p, hops := parents[pid], 0; p != 0 && hops < 64; p, hops = parents[p], hops+1 {
			if p == self {
				s.children[childName(names[top])] += times[pid]
				break
			}
			top = p
		}
	}
	s.ok = true
	return s
}

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

// readProcStat reads pid, ppid, the command name, utime+stime and cutime+cstime.
func readProcStat(path string) (pid, ppid int, name string, own, reaped uint64, ok bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return
	}
	str := string(data)
	open, closeParen := strings.IndexByte(str, '('), strings.LastIndexByte(str, ')')
	if open < 0 || closeParen < open {
		return
	}
	pid, _ = strconv.Atoi(strings.TrimSpace(str[:open]))
	name = str[open+1 : closeParen]
	f := strings.Fields(str[closeParen+1:]) // f[0] is field 3 (state)
	if len(f) < 15 {
		return
	}
	ppid, _ = strconv.Atoi(f[1])
	num := func(i int) uint64 { v, _ := strconv.ParseUint(f[i], 10, 64); return v }
	return pid, ppid, name, num(11) + num(12), num(13) + num(14), true
}

// hostNote says how busy the machine was between two readings, in cores:
// the whole machine, this process, each child (the bridge, Synapse,
// PostgreSQL) and everything else (other processes, which distort the
// results when they are busy).
func hostNote(a, b cpuSnap) string {
	if !a.ok || !b.ok || b.total <= a.total {
		return "host load: unknown (no /proc)"
	}
	n := float64(runtime.NumCPU())
	perCPU := float64(b.total-a.total) / n
	cores := func(ticks uint64) float64 { return float64(ticks) / perCPU }
	busy := cores((b.total - a.total) - (b.idle - a.idle))
	self := cores(b.self - a.self)
	mine := self
	var parts []string
	var names []string
	for name := range b.children {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if b.children[name] <= a.children[name] {
			continue
		}
		c := cores(b.children[name] - a.children[name])
		mine += c
		parts = append(parts, fmt.Sprintf("%s %.2f", name, c))
	}
	return fmt.Sprintf("host: %.2f of %.0f cores busy: e2eebench (sender, human's crypto, receiver) %.2f, %s, other processes %.2f; load avg %s at start, %s at end",
		busy, n, self, strings.Join(parts, ", "), max(busy-mine, 0), a.load1, b.load1)
}

// cpuPerEvent is the CPU time each part spent per event between two
// readings taken wall apart: the clearest reading of what an encrypted
// event costs the bridge (and Synapse, and the human's client) beyond a
// clear one, less disturbed by other processes than a latency is.
func cpuPerEvent(a, b cpuSnap, wall time.Duration, events int) string {
	if !a.ok || !b.ok || b.total <= a.total || events <= 0 {
		return "CPU per event: unknown (no /proc)"
	}
	perCPU := float64(b.total-a.total) / float64(runtime.NumCPU())
	perEvent := func(ticks uint64) float64 { return float64(ticks) / perCPU * wall.Seconds() * 1000 / float64(events) }
	parts := []string{fmt.Sprintf("e2eebench %.2f", perEvent(b.self-a.self))}
	var names []string
	for name := range b.children {
		if b.children[name] > a.children[name] {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		parts = append(parts, fmt.Sprintf("%s %.2f", name, perEvent(b.children[name]-a.children[name])))
	}
	return "CPU ms per event: " + strings.Join(parts, ", ")
}

// waitQuiet waits (at most wait) until other processes use at most limit
// cores over a 2-second sample, as cmd/rigbench's -quiet-wait does.
func waitQuiet(ctx context.Context, limit float64, wait time.Duration) {
	deadline := time.Now().Add(wait)
	for ctx.Err() == nil {
		a := readCPU()
		if !clock.Sleep(ctx, 2*time.Second) {
			return
		}
		b := readCPU()
		if !a.ok || !b.ok || b.total <= a.total {
			return
		}
		perCPU := float64(b.total-a.total) / float64(runtime.NumCPU())
		mine := b.self - a.self
		for name, t := range b.children {
			mine += t - a.children[name]
		}
		others := float64((b.total-a.total)-(b.idle-a.idle)-min(mine, (b.total-a.total)-(b.idle-a.idle))) / perCPU
		if others <= limit {
			return
		}
		if time.Now().After(deadline) {
			progress("the machine is still busy (other processes %.2f cores) after waiting %s; going on", others, wait)
			return
		}
		progress("waiting for a quieter machine: other processes use %.2f cores (limit %.2f)", others, limit)
	}
}
