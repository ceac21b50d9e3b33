package jetstream

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/daarion/matrix-bridge/pkg/consumer"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// lockedBuffer is a log sink safe for NATS callbacks on other goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// NATS credentials in delivery.nats_url (nats://user:password@host, or
// nats://token@host) reach neither the sink's errors, which the consumer
// runner logs at every retry, nor its own log. Regression test: the
// not-connected error used to carry the URL as configured, password included.
func TestSecurityNATSCredentialsNotInErrorsOrLogs(t *testing.T) {
	const user, password, token = "bridge", "nats-pass-Q7w2x9Zr", "nats-token-K3v8p1Lm"
	h := newHarness(t, testrig.NewTestDatabase(t, testrig.SQLite))
	h.appendTxn(t, "creds", 3)
	events, err := h.log.Read(h.ctx, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	secrets := []string{password, token}
	check := func(what, text string) {
		t.Helper()
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("%s contains a NATS credential: %s", what, text)
			}
		}
	}

	// NATS unreachable: every batch fails with ErrNotConnected.
	port := strconv.Itoa(testrig.FreeTestPort(t))
	for _, u := range []string{
		"nats://" + user + ":" + password + "@127.0.0.1:" + port,
		"nats://" + token + "@127.0.0.1:" + port,
		user + ":" + password + "@127.0.0.1:" + port + ", nats://" + token + "@127.0.0.1:" + port,
	} {
		logs := &lockedBuffer{}
		sink := h.newSink(t, u, func(o *Options) { o.Logger = zerolog.New(logs).Level(zerolog.TraceLevel) })
		err := sink.HandleEvents(h.ctx, events)
		if !errors.Is(err, ErrNotConnected) {
			t.Fatalf("HandleEvents with NATS down: %v, want ErrNotConnected", err)
		}
		check("the not-connected error", err.Error())
		if !strings.Contains(err.Error(), "127.0.0.1:"+port) {
			t.Errorf("the error no longer says which server: %v", err)
		}
		// The runner logs the error at every retry.
		runnerLogs := &lockedBuffer{}
		runner := consumer.NewRunner("nats-"+strconv.Itoa(len(u)), h.log, sink, fastRunner)
		group := consumer.NewGroup(runner)
		group.Start(zerolog.New(runnerLogs).Level(zerolog.TraceLevel).WithContext(h.ctx))
		testrig.Eventually(t, "a failed batch", 10*time.Second, func() bool { return runner.Failures() > 0 })
		group.Stop()
		sink.Close()
		check("the runner's log", runnerLogs.String())
		check("the sink's log", logs.String())
	}

	// A list entry that does not parse is refused without repeating it.
	_, err = New(h.ctx, Options{URL: "nats://127.0.0.1:4222,nats://u:" + password + "@[bad", Source: h.src})
	if err == nil || !strings.Contains(err.Error(), "invalid NATS URL") {
		t.Fatalf("New with a bad list entry: %v", err)
	}
	check("the invalid-URL error", err.Error())

	// A server that requires the password: connections, a publish, the
	// server going away and the sink's errors meanwhile log no credential.
	srv := testrig.StartNATS(t, testrig.NATSOptions{Username: user, Password: password})
	logs := &lockedBuffer{}
	u := "nats://" + user + ":" + password + "@127.0.0.1:" + strconv.Itoa(srv.Port())
	sink := h.newSink(t, u, func(o *Options) { o.Logger = zerolog.New(logs).Level(zerolog.TraceLevel) })
	testrig.Eventually(t, "the stream to be set up", 20*time.Second, func() bool { return sink.Stats().StreamReady })
	if err = sink.HandleEvents(h.ctx, events); err != nil {
		t.Fatalf("publishing with the password: %v", err)
	}
	srv.Stop()
	testrig.Eventually(t, "the disconnection", 10*time.Second, func() bool { return !sink.Stats().Connected })
	err = sink.HandleEvents(h.ctx, events)
	if err == nil {
		t.Fatal("HandleEvents succeeded with NATS gone")
	}
	check("the error with NATS gone", err.Error())
	sink.Close()
	if !strings.Contains(logs.String(), "Connected to NATS") {
		t.Errorf("the sink never logged its connection:\n%s", logs.String())
	}
	check("the sink's log", logs.String())
}

func TestSecurityRedactURLs(t *testing.T) {
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":                         "nats://127.0.0.1:4222",
		"127.0.0.1:4222":                                "nats://127.0.0.1:4222",
		"nats://u:p@a:4222":                             "nats://redacted@a:4222",
		"nats://tok@a:4222, tls://u:p@b:4222":           "nats://redacted@a:4222,tls://redacted@b:4222",
		"u:p@a:4222":                                    "nats://redacted@a:4222",
		"nats://u:p@[bad":                               "(invalid URL)",
		"nats://a:4222,nats://u:secret%zz@b:4222":       "nats://a:4222,(invalid URL)",
		"nats://a:4222,nats://u:secret@b:4222/?x=1#frg": "nats://a:4222,nats://redacted@b:4222/?x=1#frg",
	} {
		if got := redactURLs(in); got != want {
			t.Errorf("redactURLs(%q) = %q, want %q", in, got, want)
		}
	}
}
