package testrig

import (
	"errors"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A process that exits on SIGTERM stops cleanly; its output is in its log,
// appended to across runs.
func TestProcessStopsOnSIGTERM(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "p.log")
	for run := 1; run <= 2; run++ {
		p, err := StartProcess(ProcessOptions{Path: "/bin/sh", Args: []string{"-c", "echo started; exec sleep 30"}, LogFile: logPath})
		if err != nil {
			t.Fatal(err)
		}
		Eventually(t, "the process's output", 10*time.Second, func() bool { return strings.Contains(p.LogSince(p.LogOffset()), "started") })
		if run == 2 && p.LogOffset() == 0 {
			t.Error("the second run's log offset is 0: the log was not appended to")
		}
		if err := p.Stop(10 * time.Second); err != nil {
			t.Fatalf("Stop: %v", err)
		}
		if !p.Exited() || p.Err() == nil {
			t.Errorf("after Stop: exited %v, status %v; want exited by a signal", p.Exited(), p.Err())
		}
		if err := p.Stop(time.Second); err != nil {
			t.Errorf("Stop of a stopped process: %v", err)
		}
	}
	if got := strings.Count(TailFile(logPath, 0, 10), "started"); got != 2 {
		t.Errorf("the log holds %d runs' output, want 2", got)
	}
}

// A process that ignores SIGTERM gets SIGKILL after the grace period, and
// Stop says so.
func TestProcessStopEscalates(t *testing.T) {
	p, err := StartProcess(ProcessOptions{Path: "/bin/sh", Args: []string{"-c", `trap "" TERM; echo ready; while :; do sleep 0.1; done`}, LogFile: filepath.Join(t.TempDir(), "p.log")})
	if err != nil {
		t.Fatal(err)
	}
	// The trap is set once the shell has written "ready".
	Eventually(t, "the trap to be set", 10*time.Second, func() bool { return strings.Contains(p.LogSince(0), "ready") })
	start := time.Now()
	err = p.Stop(300 * time.Millisecond)
	if !errors.Is(err, ErrEscalated) {
		t.Fatalf("Stop of a process ignoring SIGTERM: %v, want ErrEscalated", err)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("SIGKILL came after %s, before the grace period", took)
	}
	if !p.Exited() {
		t.Error("the process is still running")
	}
}

// Kill ends a process at once; Signal reaches only it.
func TestProcessKillAndSignal(t *testing.T) {
	p, err := StartProcess(ProcessOptions{Path: "/bin/sleep", Args: []string{"30"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if p.Exited() {
		t.Fatal("the process exited on SIGSTOP/SIGCONT")
	}
	p.Kill()
	select {
	case <-p.Done():
	default:
		t.Fatal("Kill returned before the process exited")
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Errorf("Signal to an exited process: %v", err)
	}
}

func TestStartProcessReportsAMissingProgram(t *testing.T) {
	if _, err := StartProcess(ProcessOptions{Path: filepath.Join(t.TempDir(), "missing")}); err == nil {
		t.Fatal("StartProcess of a missing program succeeded")
	}
}
