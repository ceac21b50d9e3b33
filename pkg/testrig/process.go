package testrig

import (
	"bufio"
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// ProcessOptions configures StartProcess. Only Path is required.
type ProcessOptions struct {
	// Path is the program; Args its arguments (without the program name).
	Path string
	Args []string
	// Dir is the working directory; "" is this process's.
	Dir string
	// Env is the environment; nil is this process's.
	Env []string
	// LogFile receives the process's stdout and stderr, appended to
	// (created if missing). It is closed when the process exits.
	LogFile string
	// Output receives stdout and stderr instead, when LogFile is "".
	// Neither set: both are discarded.
	Output io.Writer
	// Credential runs the process as another user (nil: as this one).
	Credential *syscall.Credential
	// DeathSignal is what the kernel sends the process if this one dies
	// (Pdeathsig); default SIGKILL.
	DeathSignal syscall.Signal
}

// Process is a child process started by StartProcess: a direct child in a
// process group of its own (a ^C meant for this process does not reach it),
// sent DeathSignal by the kernel if this process dies, so a crashed test or
// tool does not leave it running. Every signal goes to its PID and nothing
// else. Its methods are safe for concurrent use.
type Process struct {
	name    string
	pid     int
	done    chan struct{} // closed once the process has exited and been reaped
	err     error         // exit status, valid after done is closed
	logPath string
	// logOffset is the size of LogFile before this process wrote to it.
	logOffset int64
}

// ErrEscalated is wrapped by Stop when the process outlasted its grace
// period and had to be sent a harder signal (in the end SIGKILL).
var ErrEscalated = errors.New("did not stop within its grace period")

// StartProcess starts the program from a goroutine locked to its OS thread:
// the parent-death signal is tied to the thread that forked the child, so
// the thread lives as long as the child does.
func StartProcess(opts ProcessOptions) (*Process, error) {
	p := &Process{name: filepath.Base(opts.Path), done: make(chan struct{}), logPath: opts.LogFile}
	out := opts.Output
	var logFile *os.File
	if opts.LogFile != "" {
		f, err := os.OpenFile(opts.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, err
		}
		p.logOffset, _ = f.Seek(0, io.SeekEnd)
		logFile, out = f, f
	}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if logFile != nil {
			defer logFile.Close()
		}
		cmd := exec.Command(opts.Path, opts.Args...)
		cmd.Dir = opts.Dir
		cmd.Env = opts.Env
		cmd.Stdout, cmd.Stderr = out, out
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Credential: opts.Credential,
			Setpgid:    true,
			Pdeathsig:  cmp.Or(opts.DeathSignal, syscall.SIGKILL),
		}
		if err := cmd.Start(); err != nil {
			started <- err
			close(p.done)
			return
		}
		p.pid = cmd.Process.Pid
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("starting %s: %w", opts.Path, err)
	}
	return p, nil
}

// Pid is the process id.
func (p *Process) Pid() int { return p.pid }

// Done is closed once the process has exited and been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is the exit status (nil: exit code 0); valid once Exited.
func (p *Process) Err() error {
	if !p.Exited() {
		return nil
	}
	return p.err
}

// Signal sends sig to the process (and nothing else), unless it has exited.
func (p *Process) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return nil
	}
	if err := syscall.Kill(p.pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signalling %s (pid %d): %w", p.name, p.pid, err)
	}
	return nil
}

// Kill sends SIGKILL (no shutdown code runs) and waits for the exit.
func (p *Process) Kill() {
	if p.Signal(syscall.SIGKILL) == nil {
		<-p.done
	}
}

// Stop sends the signals in order (none given: SIGTERM), waiting up to grace
// after each for the process to exit, then SIGKILL. It returns nil when the
// process exited after the first signal (or had exited already), an error
// wrapping ErrEscalated when it took a later one.
func (p *Process) Stop(grace time.Duration, signals ...syscall.Signal) error {
	if len(signals) == 0 {
		signals = []syscall.Signal{syscall.SIGTERM}
	}
	if signals[len(signals)-1] != syscall.SIGKILL {
		signals = append(signals, syscall.SIGKILL)
	}
	for i, sig := range signals {
		if p.Exited() {
			return nil
		}
		if err := p.Signal(sig); err != nil {
			return err
		}
		select {
		case <-p.done:
			if i > 0 {
				return fmt.Errorf("%s (pid %d) did not exit within %v of %v; sent %v: %w", p.name, p.pid, grace, signals[0], sig, ErrEscalated)
			}
			return nil
		case <-time.After(grace):
		}
	}
	return fmt.Errorf("%s (pid %d) did not exit after SIGKILL", p.name, p.pid)
}

// LogPath is ProcessOptions.LogFile.
func (p *Process) LogPath() string { return p.logPath }

// LogOffset is the size LogFile had before this process wrote to it: what
// this run wrote starts there.
func (p *Process) LogOffset() int64 { return p.logOffset }

// LogSize is the size of LogFile now.
func (p *Process) LogSize() int64 {
	fi, err := os.Stat(p.logPath)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// LogSince returns LogFile from offset on (64 MiB at the most).
func (p *Process) LogSince(offset int64) string {
	f, err := os.Open(p.logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err = f.Seek(offset, io.SeekStart); err != nil {
		return ""
	}
	data, _ := io.ReadAll(io.LimitReader(f, 64<<20))
	return string(data)
}

// TailFile returns the last n lines of the file at path from offset on; ""
// when it cannot be read.
func TailFile(path string, offset int64, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return ""
	}
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// LastLines returns the last n lines of s.
func LastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
