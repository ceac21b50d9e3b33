package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/daarion/matrix-bridge/pkg/clock"
	"github.com/daarion/matrix-bridge/pkg/leader"
)

// takeoverBound is the promise to operators (docs/architecture.md): a frozen
// leader is replaced within 15 s (lease TTL 10 s, a standby's 1 s poll, and
// the fence's 5 s cut of a transaction the frozen leader held open,
// overlapping).
const takeoverBound = 15 * time.Second

// freezeRecord is what one leader freeze showed.
type freezeRecord struct {
	Frozen, Standby string // process names
	Rerouted        bool   // the front door was moved off the frozen process first
	EpochBefore     int64
	EpochAfter      int64
	// TakeoverLease is from the SIGSTOP to the lease row naming the standby
	// with a higher epoch (0: not within the bound's wait).
	TakeoverLease time.Duration
	// TakeoverHealth is from the SIGSTOP to the standby's /healthz saying
	// "leader": "this process" (0: not seen).
	TakeoverHealth time.Duration
	// FrozenFor is from the SIGSTOP to the SIGCONT.
	FrozenFor time.Duration
	// SteppedDown is from the SIGCONT to the thawed process logging that
	// it steps down (0: not within 30 s); StepDownLine is that line's message.
	SteppedDown  time.Duration
	StepDownLine string
	// CursorsBack counts consumer cursors that were further before the thaw
	// than after the step-down: a write of the thawed process.
	CursorsBack     int
	CursorsBackList []string
	// LeaseKept: after the step-down the lease still names the standby
	// with the epoch it took.
	LeaseKept bool
	// Fenced counts the thawed process's log lines after the thaw with the
	// fence's error (leader.ErrFenced: writes it tried and was refused).
	Fenced   int
	Problems []string
}

// ok: taken over within the bound, the thawed process stepped down and
// wrote nothing.
func (f *freezeRecord) ok() bool {
	return f.TakeoverLease > 0 && f.TakeoverLease <= takeoverBound && f.SteppedDown > 0 && f.CursorsBack == 0 && f.LeaseKept && len(f.Problems) == 0
}

// pidOfHolder reads the pid from a lease holder, "host/pid/random".
func pidOfHolder(holder string) int {
	parts := strings.Split(holder, "/")
	if len(parts) < 3 {
		return 0
	}
	pid, _ := strconv.Atoi(parts[len(parts)-2])
	return pid
}

// leaderNow is the slot whose process holds an unexpired lease (nil when
// none does), and the lease.
func (s *soak) leaderNow(ctx context.Context) (*slot, *leader.Lease, error) {
	l, err := leader.Current(ctx, s.db)
	if err != nil || !l.Held(time.Now()) {
		return nil, l, err
	}
	pid := pidOfHolder(l.Holder)
	for _, sl := range s.slots {
		if p := s.proc(sl); p != nil && p.Pid() == pid && !p.Exited() {
			return sl, l, nil
		}
	}
	return nil, l, nil
}

// waitForLeader waits until sl's process holds the lease.
func (s *soak) waitForLeader(ctx context.Context, sl *slot, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		got, _, err := s.leaderNow(qctx)
		cancel()
		if err == nil && got == sl {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bridge process %s did not take the leader lease within %s (%v)", sl.name, timeout, err)
		}
		if !clock.Sleep(ctx, 100*time.Millisecond) {
			return ctx.Err()
		}
	}
}

// faultFreeze: SIGSTOP of the process holding the lease, for longer than
// the lease (until the standby took it, then d more), then SIGCONT. The
// front door is moved to the standby before the freeze, so the homeserver
// and the agents go on; requests already in flight to the frozen process
// wait for the thaw. It measures the takeover (the lease row, and the
// standby's /healthz), then checks that the thawed process steps down and
// writes nothing (no consumer cursor moves back, the lease stays the
// standby's).
func (s *soak) faultFreeze(ctx context.Context, d time.Duration, rec *chaosRecord) error {
	fr := &freezeRecord{}
	rec.Freeze = fr
	var lead *slot
	var lease *leader.Lease
	deadline := time.Now().Add(takeoverBound + 5*time.Second)
	for lead == nil {
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		lead, lease, _ = s.leaderNow(qctx)
		cancel()
		if lead != nil {
			break
		}
		if time.Now().After(deadline) {
			fr.Problems = append(fr.Problems, "no process held the lease to be frozen")
			rec.Details = fr.Problems[0]
			return nil
		}
		if !clock.Sleep(ctx, 100*time.Millisecond) {
			return nil
		}
	}
	standby := s.slots[1-lead.index]
	fr.Frozen, fr.Standby, fr.EpochBefore = lead.name, standby.name, lease.Epoch
	if s.front.targetIndex() == lead.index {
		s.front.setTarget(standby.index)
		fr.Rerouted = true
	}
	frozen, other := s.proc(lead), s.proc(standby)
	if err := frozen.Signal(syscall.SIGSTOP); err != nil {
		return fmt.Errorf("SIGSTOP of process %s: %w", lead.name, err)
	}
	frozenAt := time.Now()
	thawed := false
	thaw := func() {
		if !thawed {
			thawed = true
			_ = frozen.Signal(syscall.SIGCONT)
			fr.FrozenFor = time.Since(frozenAt)
		}
	}
	defer thaw()

	// The standby's own view, polled beside the lease row.
	healthDone := make(chan struct{})
	stopHealth := make(chan struct{})
	go func() {
		defer close(healthDone)
		hc := &http.Client{Timeout: time.Second}
		for {
			select {
			case <-stopHealth:
				return
			case <-time.After(100 * time.Millisecond):
			}
			resp, err := hc.Get(standby.apiURL + "/healthz")
			if err != nil {
				continue
			}
			var h struct {
				Leader string `json:"leader"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&h)
			resp.Body.Close()
			if h.Leader == "this process" {
				fr.TakeoverHealth = time.Since(frozenAt)
				return
			}
		}
	}()
	wait := time.Now().Add(takeoverBound + 15*time.Second)
	for time.Now().Before(wait) && ctx.Err() == nil {
		qctx, cancel := context.WithTimeout(ctx, time.Second)
		l, err := leader.Current(qctx, s.db)
		cancel()
		if err == nil && l != nil && l.Epoch > fr.EpochBefore && pidOfHolder(l.Holder) == other.Pid() {
			fr.TakeoverLease, fr.EpochAfter = time.Since(frozenAt), l.Epoch
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if fr.TakeoverLease == 0 {
		fr.Problems = append(fr.Problems, fmt.Sprintf("process %s did not take the lease within %s of the freeze", standby.name, takeoverBound+15*time.Second))
	}
	// Frozen for d more: longer than the lease for sure.
	clock.Sleep(ctx, d)
	// Let the health poller finish (it has had its chance).
	select {
	case <-healthDone:
	case <-time.After(2 * time.Second):
	}
	close(stopHealth)
	<-healthDone

	before, err := s.readCursors(ctx)
	if err != nil {
		fr.Problems = append(fr.Problems, "cursors before the thaw: "+err.Error())
	}
	offset := frozen.LogSize()
	thaw()
	thawedAt := time.Now()
	s.logf("chaos: leader-freeze: process %s frozen for %.1fs; the lease went to %s after %.1fs (epoch %d → %d); thawed",
		lead.name, fr.FrozenFor.Seconds(), standby.name, fr.TakeoverLease.Seconds(), fr.EpochBefore, fr.EpochAfter)
	for time.Since(thawedAt) < 30*time.Second && ctx.Err() == nil {
		if line := findLogLine(frozen.LogSince(offset), "stepping down"); line != "" {
			fr.SteppedDown, fr.StepDownLine = time.Since(thawedAt), line
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if fr.SteppedDown == 0 {
		fr.Problems = append(fr.Problems, fmt.Sprintf("the thawed process %s did not log that it steps down within 30s", lead.name))
	}
	// Its consumers stop after the step-down; give a late write the time
	// to land before looking.
	clock.Sleep(ctx, time.Second)
	after, err := s.readCursors(ctx)
	if err != nil {
		fr.Problems = append(fr.Problems, "cursors after the step-down: "+err.Error())
	}
	for name, pos := range before {
		if after[name] < pos {
			fr.CursorsBack++
			fr.CursorsBackList = append(fr.CursorsBackList, fmt.Sprintf("%s %d → %d", name, pos, after[name]))
		}
	}
	qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	l, err := leader.Current(qctx, s.db)
	cancel()
	fr.LeaseKept = err == nil && l != nil && l.Epoch == fr.EpochAfter && pidOfHolder(l.Holder) == other.Pid()
	fr.Fenced = countLines(frozen.LogSince(offset), leader.ErrFenced.Error())
	rec.Details = fr.summary()
	return nil
}

func (f *freezeRecord) summary() string {
	if f.Frozen == "" {
		return strings.Join(f.Problems, "; ")
	}
	health := "not seen"
	if f.TakeoverHealth > 0 {
		health = fmt.Sprintf("%.1fs", f.TakeoverHealth.Seconds())
	}
	s := fmt.Sprintf("froze %s (epoch %d), lease taken by %s after %.1fs (epoch %d; its /healthz said so after %s), frozen %.1fs; stepped down %s after the thaw (%q); cursors moved back %d; lease kept %v; writes refused by the fence %d",
		f.Frozen, f.EpochBefore, f.Standby, f.TakeoverLease.Seconds(), f.EpochAfter, health, f.FrozenFor.Seconds(),
		ms(f.SteppedDown), f.StepDownLine, f.CursorsBack, f.LeaseKept, f.Fenced)
	if f.Rerouted {
		s += "; front door moved to " + f.Standby + " first"
	}
	if len(f.Problems) > 0 {
		s += "; PROBLEMS: " + strings.Join(f.Problems, "; ")
	}
	return s
}

// findLogLine returns the message of the first JSON log line containing
// substr ("" when none does).
func findLogLine(log, substr string) string {
	for line := range strings.SplitSeq(log, "\n") {
		if !strings.Contains(line, substr) {
			continue
		}
		var l struct {
			Message string `json:"message"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Message != "" {
			return l.Message
		}
		return line
	}
	return ""
}

func countLines(log, substr string) int {
	n := 0
	for line := range strings.SplitSeq(log, "\n") {
		if strings.Contains(line, substr) {
			n++
		}
	}
	return n
}

// readCursors reads every consumer's cursor.
func (s *soak) readCursors(ctx context.Context) (map[string]int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return consumerCursors(ctx, s.db)
}
