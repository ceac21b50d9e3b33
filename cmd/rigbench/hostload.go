package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/daarion/matrix-bridge/pkg/clock"
)

// cpuSnap is a reading of where the machine's CPU time went, from /proc:
// the whole machine, this process (the bridge and the load generator), and
// its descendants (Dendrite, PostgreSQL and its backends). Everything else
// is other processes, which distort the results when they are busy.
type cpuSnap struct {
	ok          bool
	total, idle uint64 // machine, in ticks (all CPUs)
	self        uint64 // this process, in ticks
	children    uint64 // descendants, in ticks (with their reaped children)
	load1       string
}

func readCPU() cpuSnap {
	var s cpuSnap
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
		v, _ := strconv.ParseUint(f, 10, 64)
		if i >= 8 { // guest time is already counted in user
			break
		}
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
	times := map[int][2]uint64{} // own, reaped children
	paths, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range paths {
		pid, ppid, own, reaped, ok := readProcStat(p)
		if !ok {
			continue
		}
		parents[pid] = ppid
		times[pid] = [2]uint64{own, reaped}
	}
	s.self = times[self][0]
	for pid := range times {
		for p, hops := parents[pid], 0; p != 0 && hops < 64; p, hops = parents[p], hops+1 {
			if p == self {
				s.children += times[pid][0] + times[pid][1]
				break
			}
		}
	}
	s.ok = true
	return s
}

// readProcStat reads pid, ppid, utime+stime and cutime+cstime.
func readProcStat(path string) (pid, ppid int, own, reaped uint64, ok bool) {
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
	f := strings.Fields(str[closeParen+1:]) // f[0] is field 3 (state)
	if len(f) < 15 {
		return
	}
	ppid, _ = strconv.Atoi(f[1])
	num := func(i int) uint64 { v, _ := strconv.ParseUint(f[i], 10, 64); return v }
	return pid, ppid, num(11) + num(12), num(13) + num(14), true
}

// usage is where CPU went between two readings, in cores.
type usage struct {
	ok                           bool
	cores                        float64
	busy, self, children, others float64
	loadStart, loadEnd           string
}

func cpuUsage(a, b cpuSnap) usage {
	if !a.ok || !b.ok || b.total <= a.total {
		return usage{}
	}
	n := float64(runtime.NumCPU())
	elapsed := float64(b.total-a.total) / n // ticks per CPU
	cores := func(ticks uint64) float64 { return float64(ticks) / elapsed }
	u := usage{ok: true, cores: n, loadStart: a.load1, loadEnd: b.load1}
	u.busy = cores((b.total - a.total) - (b.idle - a.idle))
	u.self = cores(b.self - a.self)
	if b.children > a.children {
		u.children = cores(b.children - a.children)
	}
	u.others = max(u.busy-u.self-u.children, 0)
	return u
}

// hostNote says how busy the machine was between two readings.
func hostNote(a, b cpuSnap) string {
	u := cpuUsage(a, b)
	if !u.ok {
		return "host load: unknown (no /proc)"
	}
	return fmt.Sprintf("host: %.2f of %.0f cores busy: rigbench (bridge + load generator) %.2f, its Dendrite + PostgreSQL %.2f, other processes %.2f; load avg %s at start, %s at end",
		u.busy, u.cores, u.self, u.children, u.others, u.loadStart, u.loadEnd)
}

// waitQuiet waits (at most wait) until other processes use at most limit
// cores over a 2-second sample; it reports what it saw.
func waitQuiet(ctx context.Context, limit float64, wait time.Duration) {
	deadline := time.Now().Add(wait)
	for ctx.Err() == nil {
		a := readCPU()
		if !clock.Sleep(ctx, 2*time.Second) {
			return
		}
		u := cpuUsage(a, readCPU())
		if !u.ok || u.others+u.children <= limit {
			return
		}
		if time.Now().After(deadline) {
			progress("the machine is still busy (other processes %.2f cores) after waiting %s; going on", u.others+u.children, wait)
			return
		}
		progress("waiting for a quieter machine: other processes use %.2f cores (limit %.2f)", u.others+u.children, limit)
	}
}
