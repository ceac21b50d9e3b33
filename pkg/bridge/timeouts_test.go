package bridge

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/daarion/matrix-bridge/pkg/config"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// testTimeouts are short, for tests against a real listener.
var testTimeouts = serverTimeouts{
	Header:      time.Second,
	BodyGrace:   300 * time.Millisecond,
	BodyMinRate: 256 << 10,
	Answer:      2 * time.Second,
	Idle:        400 * time.Millisecond,
}

// startServer serves handler on loopback with the timeouts t, the way the
// bridge's listeners do.
func startServer(t *testing.T, handler http.Handler, timeouts serverTimeouts) string {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := newServer(handler, timeouts)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = server.Serve(listener)
	}()
	t.Cleanup(func() {
		_ = server.Close()
		<-done
	})
	return listener.Addr().String()
}

// readClosed waits up to within for the peer to close conn; it returns how
// long that took, or fails.
func readClosed(t *testing.T, conn net.Conn, r *bufio.Reader, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	_ = conn.SetReadDeadline(start.Add(within))
	_, err := io.Copy(io.Discard, r)
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		t.Fatalf("the connection is still open after %v", within)
	}
	return time.Since(start)
}

// A kept-alive connection that sends no next request is closed after Idle.
func TestIdleKeepAliveConnectionIsClosed(t *testing.T) {
	addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}), testTimeouts)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	for i := range 2 { // the connection is reused, then left idle
		if _, err = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: bridge\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Close {
			t.Fatalf("request %d: %d, close %v", i, resp.StatusCode, resp.Close)
		}
	}
	if took := readClosed(t, conn, r, 5*time.Second); took < testTimeouts.Idle/2 {
		t.Errorf("closed after %v, before the idle timeout %v", took, testTimeouts.Idle)
	}
}

// A body sent one byte at a time is cut off soon after BodyGrace, however
// long its Content-Length says it is.
func TestTrickledBodyIsCutOff(t *testing.T) {
	timeouts := testTimeouts
	timeouts.BodyMinRate = 1000 // the trickle below is 20 bytes per second
	type result struct {
		n   int
		err error
	}
	read := make(chan result, 1)
	addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		read <- result{len(body), err}
		if err != nil {
			http.Error(w, "failed to read the body", http.StatusBadRequest)
		}
	}), timeouts)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const length = 200 // 10 s at this pace
	start := time.Now()
	if _, err = fmt.Fprintf(conn, "PUT /_matrix/app/v1/transactions/t HTTP/1.1\r\nHost: bridge\r\nContent-Length: %d\r\n\r\n", length); err != nil {
		t.Fatal(err)
	}
	stopSending := make(chan struct{})
	defer close(stopSending)
	go func() {
		for range length {
			select {
			case <-stopSending:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if _, err := conn.Write([]byte("x")); err != nil {
				return
			}
		}
	}()
	select {
	case res := <-read:
		if res.err == nil || res.n >= length {
			t.Fatalf("the handler read %d bytes, error %v; want the body cut off", res.n, res.err)
		}
		if took := time.Since(start); took < timeouts.BodyGrace || took > timeouts.BodyGrace+2*time.Second {
			t.Errorf("cut off after %v, want soon after the grace of %v", took, timeouts.BodyGrace)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the trickled body is still being read after 5 s")
	}
	readClosed(t, conn, bufio.NewReader(conn), 3*time.Second)
}

// A large body at a good pace is read whole even though it takes far longer
// than BodyGrace, and the handler may then take its time to answer: the body's
// deadlines do not end the request's context.
func TestLargeBodyAndSlowAnswersAreNotCutOff(t *testing.T) {
	const size = 4 << 20 // 4 MiB at up to 3 MiB/s, against a minimum of 256 KiB/s
	handlerWait := testTimeouts.BodyGrace + 500*time.Millisecond
	addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil || (r.Method == http.MethodPut && n != size) {
			http.Error(w, fmt.Sprintf("read %d bytes: %v", n, err), http.StatusBadRequest)
			return
		}
		select {
		case <-r.Context().Done():
			return // no answer: the client sees the connection close
		case <-time.After(handlerWait):
		}
		_, _ = io.WriteString(w, "ok")
	}), testTimeouts)

	body, writer := io.Pipe()
	defer body.Close()
	go func() {
		chunk := make([]byte, 32<<10)
		for sent := 0; sent < size; sent += len(chunk) {
			if _, err := writer.Write(chunk); err != nil {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		_ = writer.Close()
	}()
	for _, tc := range []struct {
		name string
		req  func() (*http.Request, error)
	}{
		{"large body", func() (*http.Request, error) {
			req, err := http.NewRequest(http.MethodPut, "http://"+addr+"/_matrix/app/v1/transactions/big", body)
			if req != nil {
				req.ContentLength = size
			}
			return req, err
		}},
		{"small body, slow answer", func() (*http.Request, error) {
			return http.NewRequest(http.MethodPost, "http://"+addr+"/internal/matrix/send", strings.NewReader(`{}`))
		}},
		{"no body, slow answer", func() (*http.Request, error) {
			return http.NewRequest(http.MethodGet, "http://"+addr+"/internal/matrix/sync", nil)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := tc.req()
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("after %v: %v", time.Since(start), err)
			}
			answer, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || string(answer) != "ok" {
				t.Fatalf("answered %d %q after %v", resp.StatusCode, answer, time.Since(start))
			}
		})
	}
}

// A handler that takes longer than Answer gets its context ended and the
// client no answer; the connection is not held for ever.
func TestAnswerTimeoutEndsTheRequest(t *testing.T) {
	ended := make(chan time.Duration, 2)
	addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
			ended <- time.Since(start)
		case <-time.After(3 * testTimeouts.Answer):
			ended <- -1
		}
		// Clearly past the write deadline too (the context ends at the
		// same instant, and a loaded machine can run this first).
		time.Sleep(200 * time.Millisecond)
		_, _ = io.WriteString(w, "too late")
	}), testTimeouts)
	for _, body := range []io.Reader{nil, strings.NewReader("{}")} {
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/", body)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			t.Errorf("got an answer (%d) after the answer timeout", resp.StatusCode)
		}
		if took := <-ended; took < 0 || took > testTimeouts.Answer+time.Second {
			t.Errorf("request context ended after %v, want about %v", took, testTimeouts.Answer)
		}
	}
}

func TestTimeoutsFitTheLongestWaits(t *testing.T) {
	for _, tc := range []struct {
		syncMS int
		want   time.Duration // longest sync long-poll
	}{{30000, 30 * time.Second}, {0, 60 * time.Second}, {900000, 15 * time.Minute}} {
		cfg := config.Default()
		cfg.Delivery.SyncTimeoutMS = tc.syncMS
		if got := syncMaxTimeout(cfg); got != tc.want {
			t.Errorf("sync_timeout_ms %d: longest sync %v, want %v", tc.syncMS, got, tc.want)
		}
		api := internalAPITimeouts(syncMaxTimeout(cfg), 3*time.Minute)
		if api.Answer <= tc.want || api.Answer <= 3*time.Minute {
			t.Errorf("sync_timeout_ms %d: internal API answer timeout %v is not above the waits", tc.syncMS, api.Answer)
		}
	}
	if as := appserviceTimeouts(); as.Answer <= time.Minute {
		t.Errorf("appservice answer timeout %v is not above the commit timeout", as.Answer)
	}
	// A 32 MiB transaction and a 50 MiB upload at the minimum rate.
	for _, size := range []int64{32 << 20, 50 << 20} {
		if took := time.Duration(size / bodyMinRate * int64(time.Second)); took > 15*time.Minute {
			t.Errorf("a %d-byte body may take %v at the minimum rate", size, took)
		}
	}
}

// Every listener of a running bridge has header, read, write and idle
// timeouts; the internal API's write timeout is above its longest sync.
func TestEveryListenerHasTimeouts(t *testing.T) {
	cfg := testConfig(t, testrig.NewTestDatabase(t, testrig.SQLite))
	cfg.Metrics.Listen = "127.0.0.1:0"
	cfg.Delivery.SyncTimeoutMS = 10 * 60 * 1000
	b, err := newStarted(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Stop(context.Background())
	for name, server := range map[string]*http.Server{"appservice": b.asServer, "internal API": b.apiServer, "metrics": b.metricsSrv} {
		if server == nil {
			t.Fatalf("%s: no server", name)
		}
		if server.ReadHeaderTimeout <= 0 || server.ReadTimeout <= 0 || server.WriteTimeout <= 0 || server.IdleTimeout <= 0 {
			t.Errorf("%s: header %v, read %v, write %v, idle %v", name,
				server.ReadHeaderTimeout, server.ReadTimeout, server.WriteTimeout, server.IdleTimeout)
		}
	}
	if b.apiServer.WriteTimeout <= 10*time.Minute || b.apiServer.ReadTimeout <= 10*time.Minute {
		t.Errorf("internal API: read %v, write %v; the longest sync is 10 minutes", b.apiServer.ReadTimeout, b.apiServer.WriteTimeout)
	}

}

// metrics.pprof serves Go's profiler on the metrics listener, and only then.
func TestMetricsListenerServesPprofOnlyWhenAsked(t *testing.T) {
	for _, on := range []bool{false, true} {
		port, err := testrig.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		cfg := testConfig(t, testrig.NewTestDatabase(t, testrig.SQLite))
		cfg.Metrics.Listen = fmt.Sprintf("127.0.0.1:%d", port)
		cfg.Metrics.Pprof = on
		b, err := newStarted(cfg)
		if err != nil {
			t.Fatal(err)
		}
		for path, want := range map[string]int{"/metrics": http.StatusOK, "/debug/pprof/goroutine?debug=1": map[bool]int{false: http.StatusNotFound, true: http.StatusOK}[on]} {
			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, path))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("pprof %v: GET %s: %d, want %d", on, path, resp.StatusCode, want)
			} else if on && strings.HasPrefix(path, "/debug/") && !strings.Contains(string(body), "goroutine profile") {
				t.Errorf("pprof on: GET %s: not a goroutine profile: %.200s", path, body)
			}
		}
		b.Stop(context.Background())
	}
}
