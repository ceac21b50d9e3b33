package main

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Percentiles come from a plain sorted slice of every sample (no histogram
// library): a run records at most -max-txns samples per scenario, so keeping
// them all is cheap and the percentiles are exact (nearest rank).

// recorder collects durations from the server side (handler, Append). It is
// shared between the HTTP server's goroutines and the driver.
type recorder struct {
	mu      sync.Mutex
	on      bool
	samples []time.Duration
}

func (r *recorder) add(d time.Duration) {
	r.mu.Lock()
	if r.on {
		r.samples = append(r.samples, d)
	}
	r.mu.Unlock()
}

// start discards what was recorded so far and records from now on.
func (r *recorder) start() {
	r.mu.Lock()
	r.on = true
	r.samples = r.samples[:0]
	r.mu.Unlock()
}

// stop stops recording and returns the samples.
func (r *recorder) stop() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.on = false
	return slices.Clone(r.samples)
}

// Latency is a summary of durations, in milliseconds.
type Latency struct {
	Count int     `json:"count"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// summarize sorts samples in place and returns exact nearest-rank percentiles.
func summarize(samples []time.Duration) *Latency {
	if len(samples) == 0 {
		return nil
	}
	slices.Sort(samples)
	var sum time.Duration
	for _, d := range samples {
		sum += d
	}
	rank := func(p float64) time.Duration {
		// Nearest rank: the smallest sample with at least p of all samples at or below it.
		i := int(float64(len(samples))*p+0.999999999) - 1
		return samples[max(0, min(i, len(samples)-1))]
	}
	return &Latency{
		Count: len(samples),
		Mean:  ms(sum / time.Duration(len(samples))),
		P50:   ms(rank(0.50)),
		P90:   ms(rank(0.90)),
		P99:   ms(rank(0.99)),
		P999:  ms(rank(0.999)),
		Max:   ms(samples[len(samples)-1]),
	}
}

// cpuSnapshot is CPU time used so far by this process (client and server
// together: everything is in-process) and by the PostgreSQL cluster.
type cpuSnapshot struct {
	at       time.Time
	self     time.Duration
	postgres time.Duration
	// Machine-wide, from /proc/stat: busy time in tasks (user, nice,
	// system), in interrupts, and stolen by the hypervisor.
	busy, irq, steal time.Duration
}

func takeCPU(postmasterPID int) cpuSnapshot {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	s := cpuSnapshot{at: time.Now(), self: time.Duration(ru.Utime.Nano() + ru.Stime.Nano())}
	if postmasterPID > 0 {
		s.postgres = processTreeCPU(postmasterPID)
	}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		f := strings.Fields(line)
		if len(f) >= 9 && f[0] == "cpu" {
			tick := func(i int) time.Duration {
				n, _ := strconv.ParseInt(f[i], 10, 64)
				return time.Duration(n) * clockTick
			}
			s.busy = tick(1) + tick(2) + tick(3)
			s.irq = tick(6) + tick(7)
			s.steal = tick(8)
		}
	}
	return s
}

// Noise is what else used the machine's CPUs during a measured phase, in
// percent of all CPUs: other processes (busy time not spent by this process
// or the PostgreSQL cluster), interrupts (including this benchmark's own
// loopback networking), and time stolen by the hypervisor.
type Noise struct {
	OtherPct float64 `json:"other_processes_pct"`
	IRQPct   float64 `json:"irq_pct"`
	StealPct float64 `json:"steal_pct"`
}

func noise(a, b cpuSnapshot, ncpu int) Noise {
	wall := float64(b.at.Sub(a.at)) * float64(ncpu)
	if wall <= 0 {
		return Noise{}
	}
	other := (b.busy - a.busy) - (b.self - a.self) - (b.postgres - a.postgres)
	return Noise{
		OtherPct: max(0, 100*float64(other)/wall),
		IRQPct:   100 * float64(b.irq-a.irq) / wall,
		StealPct: 100 * float64(b.steal-a.steal) / wall,
	}
}

// clockTick is USER_HZ, 100 on every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// processTreeCPU sums user+system time of the postmaster and its children
// (backends, WAL writer, checkpointer, ...) from /proc.
func processTreeCPU(root int) time.Duration {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	var total time.Duration
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// Fields after the parenthesised command name: state ppid ... utime(14) stime(15).
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 13 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		if pid != root && ppid != root {
			continue
		}
		utime, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		total += time.Duration(utime+stime) * clockTick
	}
	return total
}

func postmasterPID(dataDir string) int {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(line))
	return pid
}

// WAL is PostgreSQL's WAL activity during the measured phase, from
// pg_stat_wal. Backends flush their counters about once a second, so counts
// per transaction are approximate; the average sync time is not affected.
type WAL struct {
	Records      int64   `json:"records"`
	FPI          int64   `json:"full_page_images"`
	Bytes        int64   `json:"bytes"`
	Writes       int64   `json:"writes"`
	Syncs        int64   `json:"syncs"`
	WriteTimeMS  float64 `json:"write_time_ms"`
	SyncTimeMS   float64 `json:"sync_time_ms"`
	FPIPerTxn    float64 `json:"full_page_images_per_txn"`
	SyncsPerTxn  float64 `json:"syncs_per_txn"`
	BytesPerTxn  float64 `json:"bytes_per_txn"`
	AvgSyncMS    float64 `json:"avg_sync_ms"`
	AvgWriteMS   float64 `json:"avg_write_ms"`
	SyncMSPerTxn float64 `json:"sync_ms_per_txn"`
}

func resetWAL(ctx context.Context, admin *sql.DB) error {
	_, err := admin.ExecContext(ctx, "SELECT pg_stat_reset_shared('wal')")
	return err
}

func readWAL(ctx context.Context, admin *sql.DB, txns int) (*WAL, error) {
	var w WAL
	err := admin.QueryRowContext(ctx, `SELECT wal_records, wal_fpi, wal_bytes, wal_write, wal_sync, wal_write_time, wal_sync_time FROM pg_stat_wal`).
		Scan(&w.Records, &w.FPI, &w.Bytes, &w.Writes, &w.Syncs, &w.WriteTimeMS, &w.SyncTimeMS)
	if err != nil {
		return nil, err
	}
	if txns > 0 {
		w.SyncsPerTxn = float64(w.Syncs) / float64(txns)
		w.FPIPerTxn = float64(w.FPI) / float64(txns)
		w.BytesPerTxn = float64(w.Bytes) / float64(txns)
		w.SyncMSPerTxn = w.SyncTimeMS / float64(txns)
	}
	if w.Syncs > 0 {
		w.AvgSyncMS = w.SyncTimeMS / float64(w.Syncs)
	}
	if w.Writes > 0 {
		w.AvgWriteMS = w.WriteTimeMS / float64(w.Writes)
	}
	return &w, nil
}
