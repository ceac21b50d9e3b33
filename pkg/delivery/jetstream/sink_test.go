package jetstream

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	natsjs "github.com/nats-io/nats.go/jetstream"

	"github.com/daarion/matrix-bridge/pkg/consumer"
	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

func checkStats(t *testing.T, sink *Sink, published, duplicates int64) {
	t.Helper()
	st := sink.Stats()
	if st.Published != published || st.Duplicates != duplicates {
		t.Errorf("stats: published %d, duplicates %d; want %d, %d", st.Published, st.Duplicates, published, duplicates)
	}
}

// Every DTO arrives once, in log order, on <prefix><type> with its id as
// Nats-Msg-Id.
func TestSinkPublishesEveryDTOOnce(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		h := newHarness(t, tdb)
		srv := testrig.StartNATS(t, testrig.NATSOptions{})
		sink := h.newSink(t, srv.URL(), nil)
		// Connected before the first batch, no batch may fail.
		testrig.Eventually(t, "the stream to be set up", 20*time.Second, func() bool { return sink.Stats().StreamReady })
		runner, _ := h.startRunner(t, sink, fastRunner)

		h.appendTxn(t, "txn1", 10)
		h.appendTxn(t, "txn2", 1)
		h.appendTxn(t, "txn3", 19)
		h.waitCaughtUp(t, runner, 30*time.Second)

		got := readStream(t, srv.URL(), DefaultStream, DefaultSubjectPrefix, h.sent)
		if got[0].subject != "daarion.messaging.message.created" || got[3].subject != "daarion.messaging.reaction.added" {
			t.Errorf("subjects %q, %q", got[0].subject, got[3].subject)
		}
		for i, r := range got {
			if r.seq != uint64(i+1) {
				t.Errorf("message %d has stream sequence %d", i, r.seq)
			}
		}
		checkStats(t, sink, 30, 0)
		if st := sink.Stats(); !st.Connected || !st.StreamReady || st.FailedBatches != 0 {
			t.Errorf("stats %+v", st)
		}
		if runner.Failures() != 0 {
			t.Errorf("runner failed %d batches", runner.Failures())
		}
	})
}

// A NATS outage delays delivery but loses and duplicates nothing.
func TestSinkSurvivesNATSOutage(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		h := newHarness(t, tdb)
		srv := testrig.StartNATS(t, testrig.NATSOptions{})
		url := srv.URL()
		sink := h.newSink(t, url, nil)
		runner, _ := h.startRunner(t, sink, fastRunner)

		h.appendTxn(t, "before", 12)
		h.waitCaughtUp(t, runner, 30*time.Second)
		checkStats(t, sink, 12, 0)

		srv.Stop()
		testrig.Eventually(t, "the sink to notice the outage", 10*time.Second, func() bool { return !sink.Stats().Connected })
		handled := runner.Position()
		failures := runner.Failures()

		h.appendTxn(t, "during1", 9)
		h.appendTxn(t, "during2", 3)
		testrig.Eventually(t, "a failed batch during the outage", 10*time.Second, func() bool { return runner.Failures() > failures })
		// The handler must fail fast, not hang: several retries pass.
		testrig.Eventually(t, "retries during the outage", 10*time.Second, func() bool { return runner.Failures() > failures+2 })
		if runner.Position() != handled || h.cursor(t) != handled {
			t.Fatalf("the cursor moved during the outage: position %d, saved %d, want %d", runner.Position(), h.cursor(t), handled)
		}

		// Again on the same port and store directory.
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		h.waitCaughtUp(t, runner, 30*time.Second)
		h.appendTxn(t, "after", 5)
		h.waitCaughtUp(t, runner, 30*time.Second)

		readStream(t, srv.URL(), DefaultStream, DefaultSubjectPrefix, h.sent)
		checkStats(t, sink, 29, 0)
		if st := sink.Stats(); !st.Connected || st.FailedBatches == 0 {
			t.Errorf("stats %+v", st)
		}
	})
}

// The sink never holds up the bridge's start: with NATS down New returns at
// once, HandleEvents fails fast, and delivery starts when NATS comes up.
func TestSinkStartsWithoutNATS(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		h := newHarness(t, tdb)
		port := testrig.FreeTestPort(t)
		url := "nats://127.0.0.1:" + strconv.Itoa(port)

		start := time.Now()
		sink := h.newSink(t, url, nil)
		if took := time.Since(start); took > time.Second {
			t.Errorf("New took %s with NATS down", took)
		}
		h.appendTxn(t, "early", 6)
		events, err := h.log.Read(h.ctx, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		start = time.Now()
		err = sink.HandleEvents(h.ctx, events)
		if !errors.Is(err, ErrNotConnected) {
			t.Errorf("HandleEvents with NATS down: %v, want ErrNotConnected", err)
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("HandleEvents took %s with NATS down", took)
		}
		// A batch without DTOs needs no NATS.
		if err = sink.HandleEvents(h.ctx, nil); err != nil {
			t.Errorf("HandleEvents of nothing: %v", err)
		}

		runner, _ := h.startRunner(t, sink, fastRunner)
		testrig.Eventually(t, "a failed batch", 10*time.Second, func() bool { return runner.Failures() > 0 })

		srv := testrig.StartNATS(t, testrig.NATSOptions{Port: port})
		h.waitCaughtUp(t, runner, 30*time.Second)
		readStream(t, srv.URL(), DefaultStream, DefaultSubjectPrefix, h.sent)
		checkStats(t, sink, 6, 0)
	})
}

// halfThenFail publishes the first half of the first batch through the sink
// and then fails, as a bridge killed in the middle of a batch would.
type halfThenFail struct {
	sink   *Sink
	failed atomic.Bool
	half   chan int
}

func (f *halfThenFail) HandleEvents(ctx context.Context, events []*eventlog.Event) error {
	if len(events) < 2 || f.failed.Load() {
		return f.sink.HandleEvents(ctx, events)
	}
	half := len(events) / 2
	if err := f.sink.HandleEvents(ctx, events[:half]); err != nil {
		return err
	}
	f.failed.Store(true)
	f.half <- half
	return errors.New("simulated crash after publishing half of the batch")
}

// A runner stopped mid-batch (the cursor not advanced past events already
// published) or restarted from an older cursor re-publishes, and JetStream
// drops the re-publishes by Nats-Msg-Id: every DTO is in the stream once.
func TestSinkRestartRepublishesWithoutDuplicates(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		h := newHarness(t, tdb)
		srv := testrig.StartNATS(t, testrig.NATSOptions{})
		url := srv.URL()

		// First process: publishes half a batch, fails, and is killed before
		// it retries.
		sinkA := h.newSink(t, url, nil)
		testrig.Eventually(t, "the stream to be set up", 20*time.Second, func() bool { return sinkA.Stats().StreamReady })
		crash := &halfThenFail{sink: sinkA, half: make(chan int, 1)}
		slow := fastRunner
		slow.BatchSize = 100
		slow.MinBackoff, slow.MaxBackoff = time.Hour, time.Hour
		_, groupA := h.startRunner(t, crash, slow)
		h.appendTxn(t, "first", 10)
		var half int
		select {
		case half = <-crash.half:
		case <-time.After(30 * time.Second):
			t.Fatal("the first batch was not handled")
		}
		groupA.Stop()
		sinkA.Close()
		if half != 5 {
			t.Fatalf("published %d of the first batch, want 5", half)
		}
		if pos := h.cursor(t); pos != 0 {
			t.Fatalf("the cursor advanced to %d past a failed batch", pos)
		}
		checkStats(t, sinkA, 5, 0)

		// Second process: resumes from the saved cursor.
		sinkB := h.newSink(t, url, nil)
		runnerB, groupB := h.startRunner(t, sinkB, fastRunner)
		h.appendTxn(t, "second", 10)
		h.waitCaughtUp(t, runnerB, 30*time.Second)
		groupB.Stop()
		sinkB.Close()
		checkStats(t, sinkB, 15, 5)
		readStream(t, url, DefaultStream, DefaultSubjectPrefix, h.sent)

		// Third process: the cursor is rewound (say, restored from an older
		// backup) to the 7th event.
		events, err := h.log.Read(h.ctx, 0, 7)
		if err != nil {
			t.Fatal(err)
		}
		if err = h.log.SaveCursor(h.ctx, consumerName, events[6].Position); err != nil {
			t.Fatal(err)
		}
		sinkC := h.newSink(t, url, nil)
		runnerC, _ := h.startRunner(t, sinkC, fastRunner)
		h.appendTxn(t, "third", 4)
		h.waitCaughtUp(t, runnerC, 30*time.Second)
		checkStats(t, sinkC, 4, 13)
		readStream(t, url, DefaultStream, DefaultSubjectPrefix, h.sent)
	})
}

// The stream is created when missing, with the subjects, file storage and a
// duplicate window of at least 15 minutes, and reused when present.
func TestSinkStream(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		h := newHarness(t, tdb)

		streamInfo := func(t *testing.T, url, name string) *natsjs.StreamInfo {
			t.Helper()
			stream, err := connectJS(t, url).Stream(h.ctx, name)
			if err != nil {
				t.Fatalf("stream %s: %v", name, err)
			}
			return stream.CachedInfo()
		}
		waitReady := func(t *testing.T, sink *Sink) {
			t.Helper()
			testrig.Eventually(t, "the stream to be set up", 20*time.Second, func() bool { return sink.Stats().StreamReady })
		}

		t.Run("created when missing", func(t *testing.T) {
			srv := testrig.StartNATS(t, testrig.NATSOptions{})
			url := srv.URL()
			cases := []struct {
				stream, prefix string
				window, want   time.Duration
			}{
				{"", "", 0, 15 * time.Minute},
				{"CITY", "city.", time.Hour, time.Hour},
				{"TOWN", "town.v1.", time.Second, 15 * time.Minute},
			}
			for _, c := range cases {
				sink := h.newSink(t, url, func(o *Options) {
					o.Stream, o.SubjectPrefix, o.DuplicateWindow = c.stream, c.prefix, c.window
				})
				waitReady(t, sink)
				name, prefix := c.stream, c.prefix
				if name == "" {
					name, prefix = DefaultStream, DefaultSubjectPrefix
				}
				cfg := streamInfo(t, url, name).Config
				if len(cfg.Subjects) != 1 || cfg.Subjects[0] != prefix+"messaging.>" {
					t.Errorf("stream %s subjects %q, want [%smessaging.>]", name, cfg.Subjects, prefix)
				}
				if cfg.Storage != natsjs.FileStorage {
					t.Errorf("stream %s storage %s", name, cfg.Storage)
				}
				if cfg.Duplicates != c.want {
					t.Errorf("stream %s duplicate window %s, want %s", name, cfg.Duplicates, c.want)
				}
			}

			// Publishing with a custom prefix.
			sink := h.newSink(t, url, func(o *Options) { o.Stream, o.SubjectPrefix = "CITY", "city." })
			runner, group := h.startRunner(t, sink, fastRunner)
			h.appendTxn(t, "custom", 4)
			h.waitCaughtUp(t, runner, 30*time.Second)
			group.Stop()
			got := readStream(t, url, "CITY", "city.", h.sent)
			if got[0].subject != "city.messaging.message.created" {
				t.Errorf("subject %q", got[0].subject)
			}

			// A stream deleted under a running sink is created again.
			js := connectJS(t, url)
			if err := js.DeleteStream(h.ctx, "CITY"); err != nil {
				t.Fatal(err)
			}
			if err := h.log.SaveCursor(h.ctx, consumerName, 0); err != nil {
				t.Fatal(err)
			}
			runner, _ = h.startRunner(t, sink, fastRunner)
			h.waitCaughtUp(t, runner, 30*time.Second)
			readStream(t, url, "CITY", "city.", h.sent)
		})

		t.Run("reused when present", func(t *testing.T) {
			srv := testrig.StartNATS(t, testrig.NATSOptions{})
			url := srv.URL()
			js := connectJS(t, url)
			made, err := js.CreateStream(h.ctx, natsjs.StreamConfig{
				Name:        DefaultStream,
				Description: "made by ops",
				Subjects:    []string{"daarion.messaging.>"},
				Storage:     natsjs.FileStorage,
				Duplicates:  20 * time.Minute,
				MaxMsgs:     100000,
			})
			if err != nil {
				t.Fatal(err)
			}
			if err = h.log.SaveCursor(h.ctx, consumerName, h.head(t)); err != nil {
				t.Fatal(err)
			}
			h.sent = nil

			sink := h.newSink(t, url, nil)
			waitReady(t, sink)
			runner, _ := h.startRunner(t, sink, fastRunner)
			h.appendTxn(t, "reuse", 3)
			h.waitCaughtUp(t, runner, 30*time.Second)
			readStream(t, url, DefaultStream, DefaultSubjectPrefix, h.sent)

			info := streamInfo(t, url, DefaultStream)
			cfg := info.Config
			if cfg.Description != "made by ops" || cfg.Duplicates != 20*time.Minute || cfg.MaxMsgs != 100000 {
				t.Errorf("the existing stream's config changed: %+v", cfg)
			}
			if !info.Created.Equal(made.CachedInfo().Created) {
				t.Errorf("the stream was re-created: %s, was %s", info.Created, made.CachedInfo().Created)
			}
		})

		t.Run("small window raised", func(t *testing.T) {
			srv := testrig.StartNATS(t, testrig.NATSOptions{})
			url := srv.URL()
			js := connectJS(t, url)
			_, err := js.CreateStream(h.ctx, natsjs.StreamConfig{
				Name:       DefaultStream,
				Subjects:   []string{"daarion.messaging.>"},
				Storage:    natsjs.FileStorage,
				Duplicates: time.Minute,
			})
			if err != nil {
				t.Fatal(err)
			}
			sink := h.newSink(t, url, nil)
			waitReady(t, sink)
			if got := streamInfo(t, url, DefaultStream).Config.Duplicates; got != MinDuplicateWindow {
				t.Errorf("duplicate window %s, want %s", got, MinDuplicateWindow)
			}
		})
	})
}

func TestNewValidatesOptions(t *testing.T) {
	h := newHarness(t, testrig.NewTestDatabase(t, testrig.SQLite))
	for _, c := range []struct {
		name string
		opts Options
		want string
	}{
		{"no URL", Options{Source: h.src}, "URL is required"},
		{"bad URL", Options{URL: "nats://", Source: h.src}, "invalid NATS URL"},
		{"no source", Options{URL: "nats://127.0.0.1:4222"}, "Source is required"},
		{"bad stream", Options{URL: "nats://127.0.0.1:4222", Source: h.src, Stream: "a.b"}, "invalid stream name"},
		{"prefix without dot", Options{URL: "nats://127.0.0.1:4222", Source: h.src, SubjectPrefix: "daarion"}, "invalid subject prefix"},
		{"prefix wildcard", Options{URL: "nats://127.0.0.1:4222", Source: h.src, SubjectPrefix: "*."}, "invalid subject prefix"},
	} {
		t.Run(c.name, func(t *testing.T) {
			sink, err := New(h.ctx, c.opts)
			if err == nil {
				sink.Close()
				t.Fatal("New accepted the options")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q, want %q", err, c.want)
			}
		})
	}

	// Close without NATS ever reachable returns promptly; afterwards
	// HandleEvents fails.
	sink, err := New(h.ctx, Options{URL: "127.0.0.1:" + strconv.Itoa(testrig.FreeTestPort(t)), Source: h.src, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	h.appendTxn(t, "closed", 1)
	events, err := h.log.Read(h.ctx, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	sink.Close()
	sink.Close()
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Close took %s", took)
	}
	if err = sink.HandleEvents(h.ctx, events); !errors.Is(err, ErrClosed) {
		t.Errorf("HandleEvents after Close: %v", err)
	}
	var _ consumer.Handler = sink
}
