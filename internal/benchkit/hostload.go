package benchkit

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/daarion/matrix-bridge/pkg/clock"
)

// CPUSnap is a reading of where the machine's CPU time went, from /proc:
// the whole machine, this process, and its descendants (the homeserver,
// PostgreSQL, a bridge run as a child). Everything else is other
// processes, which distort the results when they are busy.
type CPUSnap struct {
	OK          bool
	Total, Idle uint64 // machine, in ticks (all CPUs)
	Self        uint64 // this process, in ticks
	// Reaped is this process's children that have ended and been waited
	// for: their time is no longer in Children.
	Reaped uint64
	// Children is the descendants' time, with their own reaped children,
	// by the name of the child of this process each descends from.
	Children map[string]uint64
	Load1    string
}

// ReadCPU reads /proc; group names a child by its command name (nil: the
// command name itself). Without /proc, OK is false.
func ReadCPU(group func(comm string) string) CPUSnap {
	s := CPUSnap{Children: map[string]uint64{}}
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
		s.Total += v
		if i == 3 || i == 4 { // idle, iowait
			s.Idle += v
		}
	}
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		s.Load1 = strings.Fields(string(la))[0]
	}
	self := os.Getpid()
	parents := map[int]int{}
	names := map[int]string{}
	times := map[int][2]uint64{} // own, reaped children
	paths, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range paths {
		pid, ppid, name, own, reaped, ok := readProcStat(p)
		if !ok {
			continue
		}
		parents[pid], names[pid], times[pid] = ppid, name, [2]uint64{own, reaped}
	}
	s.Self, s.Reaped = times[self][0], times[self][1]
	for pid, t := range times {
		if pid == self {
			continue
		}
		// Walk up to the child of this process that pid descends from.
		top := pid
		for p, hops := parents[pid], 0; p != 0 && hops < 64; p, hops = parents[p], hops+1 {
			if p == self {
				name := names[top]
				if group != nil {
					name = group(name)
				}
				s.Children[name] += t[0] + t[1]
				break
			}
			top = p
		}
	}
	s.OK = true
	return s
}

// ChildrenTotal is the time of all descendants.
func (s CPUSnap) ChildrenTotal() uint64 {
	var n uint64
	for _, t := range s.Children {
		n += t
	}
	return n
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

// TicksPerCPU is how many ticks each CPU counted between two readings: the
// divisor that turns ticks into cores. ok is false when either reading
// failed or they are not in order.
func TicksPerCPU(a, b CPUSnap) (perCPU float64, ok bool) {
	if !a.OK || !b.OK || b.Total <= a.Total {
		return 0, false
	}
	return float64(b.Total-a.Total) / float64(runtime.NumCPU()), true
}

// BusyTicks is the machine's time not idle between two readings.
func BusyTicks(a, b CPUSnap) uint64 { return (b.Total - a.Total) - (b.Idle - a.Idle) }

// WaitQuiet waits (at most wait) until others, the cores two readings 2 s
// apart say other processes used, is at most limit; it reports what it
// saw. It returns at once when others cannot tell (ok false: no /proc).
func WaitQuiet(ctx context.Context, limit float64, wait time.Duration, others func(a, b CPUSnap) (cores float64, ok bool)) {
	deadline := time.Now().Add(wait)
	for ctx.Err() == nil {
		a := ReadCPU(nil)
		if !clock.Sleep(ctx, 2*time.Second) {
			return
		}
		busy, ok := others(a, ReadCPU(nil))
		if !ok || busy <= limit {
			return
		}
		if time.Now().After(deadline) {
			Progress("the machine is still busy (other processes %.2f cores) after waiting %s; going on", busy, wait)
			return
		}
		Progress("waiting for a quieter machine: other processes use %.2f cores (limit %.2f)", busy, limit)
	}
}
