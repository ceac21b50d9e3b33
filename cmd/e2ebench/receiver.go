package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/daarion/matrix-bridge/pkg/delivery/webhook"
)

// The webhook receiver runs in a process of its own (issue 15: "to a
// receiver in another process"), as a DAARION service would: this binary
// re-executed with -receiver. It listens on loopback, takes the time of
// each delivery's arrival first, checks the Standard Webhooks signature
// with the subscription's secret, answers 204, and streams one line per
// delivery to its stdout, which the bench reads over a pipe:
//
//	L <url>                                    once, when it listens
//	R <webhook-id> <unix ns> <signature ok 0|1> per delivery
//
// Its stdin carries the signing secret (one line, once the subscription
// exists); at EOF on stdin (the bench is done, or died) it exits.

// runReceiver is the -receiver mode.
func runReceiver() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "receiver:", err)
		return 1
	}
	out := bufio.NewWriterSize(os.Stdout, 64<<10)
	var mu sync.Mutex
	var secret atomic.Pointer[string]
	handler := func(w http.ResponseWriter, r *http.Request) {
		at := time.Now().UnixNano()
		body, _ := io.ReadAll(r.Body)
		id := r.Header.Get("webhook-id")
		ok := "0"
		if s := secret.Load(); s != nil {
			ts, _ := strconv.ParseInt(r.Header.Get("webhook-timestamp"), 10, 64)
			if webhook.Verify(*s, id, ts, body, r.Header.Get("webhook-signature")) {
				ok = "1"
			}
		}
		w.WriteHeader(http.StatusNoContent)
		mu.Lock()
		fmt.Fprintf(out, "R %s %d %s\n", id, at, ok)
		mu.Unlock()
	}
	srv := &http.Server{Handler: http.HandlerFunc(handler), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	mu.Lock()
	fmt.Fprintf(out, "L http://%s/hook\n", ln.Addr())
	_ = out.Flush()
	mu.Unlock()

	// Lines are flushed every 5 ms: the times are taken on arrival, so
	// the flush only delays when the bench learns of them.
	stop := make(chan struct{})
	go func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			mu.Lock()
			_ = out.Flush()
			mu.Unlock()
		}
	}()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		s := strings.TrimSpace(in.Text())
		secret.Store(&s)
	}
	close(stop)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
	mu.Lock()
	_ = out.Flush()
	mu.Unlock()
	return 0
}

// selfComm is this binary's command name in /proc (the receiver's too).
func selfComm() string {
	b, _ := os.ReadFile("/proc/self/comm")
	return strings.TrimSpace(string(b))
}

// receiverProc is the bench's side of the receiver process.
type receiverProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	url    string
	done   chan struct{} // closed when its output ended
	badSig atomic.Int64
}

// startReceiver starts the receiver; observe gets each delivery's id and
// arrival time.
func startReceiver(observe func(id string, at time.Time)) (*receiverProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	rp := &receiverProc{cmd: exec.Command(exe, "-receiver"), done: make(chan struct{})}
	rp.cmd.Stderr = os.Stderr
	// Its own process group, so a ^C meant for the bench does not reach it
	// (the bench stops it). No parent-death signal: that is tied to the
	// forking thread, not the process; if the bench dies, the receiver sees
	// EOF on its stdin and exits.
	rp.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if rp.stdin, err = rp.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := rp.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err = rp.cmd.Start(); err != nil {
		return nil, err
	}
	lines := bufio.NewScanner(stdout)
	lines.Buffer(make([]byte, 0, 64<<10), 1<<20)
	if !lines.Scan() || !strings.HasPrefix(lines.Text(), "L ") {
		rp.kill()
		_ = rp.cmd.Wait()
		return nil, errors.New("the receiver process did not say where it listens")
	}
	rp.url = strings.TrimPrefix(lines.Text(), "L ")
	go func() {
		defer close(rp.done)
		for lines.Scan() {
			f := strings.Fields(lines.Text())
			if len(f) != 4 || f[0] != "R" {
				continue
			}
			ns, _ := strconv.ParseInt(f[2], 10, 64)
			if f[3] != "1" {
				rp.badSig.Add(1)
			}
			observe(f[1], time.Unix(0, ns))
		}
	}()
	return rp, nil
}

// setSecret hands the receiver the subscription's signing secret.
func (rp *receiverProc) setSecret(secret string) error {
	_, err := io.WriteString(rp.stdin, secret+"\n")
	return err
}

// stop closes its stdin (it exits by itself), waits up to 10 s, and kills
// it by its PID otherwise.
func (rp *receiverProc) stop() {
	_ = rp.stdin.Close()
	exited := make(chan struct{})
	go func() { _ = rp.cmd.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		rp.kill()
		<-exited
	}
}

func (rp *receiverProc) kill() {
	if rp.cmd.Process != nil {
		_ = rp.cmd.Process.Kill()
	}
}

// subscribeReceiver starts the receiver process and subscribes it to
// every room's DTOs ("*"), signed with the secret the subscription gets.
func subscribeReceiver(ctx context.Context, b *bridgeRun, observe func(id string, at time.Time)) (*receiverProc, error) {
	recv, err := startReceiver(observe)
	if err != nil {
		return nil, fmt.Errorf("starting the receiver process: %w", err)
	}
	var sub struct {
		Secret string `json:"secret"`
	}
	status, raw, err := b.api.Call(ctx, http.MethodPost, "/internal/matrix/webhook/subscribe", nil,
		map[string]string{"room_id": "*", "webhook_url": recv.url}, &sub)
	if err == nil && (status != http.StatusOK || sub.Secret == "") {
		err = fmt.Errorf("%d %s", status, raw)
	}
	if err == nil {
		err = recv.setSecret(sub.Secret)
	}
	if err != nil {
		recv.stop()
		return nil, fmt.Errorf("subscribing the receiver: %w", err)
	}
	return recv, nil
}
