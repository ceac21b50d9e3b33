package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/daarion/matrix-bridge/pkg/appservice"
	"github.com/daarion/matrix-bridge/pkg/consumer"
	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

func TestMain(m *testing.M) { os.Exit(testrig.RunTests(m)) }

func openLog(t *testing.T, tdb testrig.TestDatabase) *eventlog.Log {
	t.Helper()
	return eventlog.New(testrig.OpenDatabase(t, tdb))
}

// appendN stores n timeline events of room in transaction txn the
// production way: it journals the transaction's body and indexes it with the
// appservice parser.
func appendN(t *testing.T, l *eventlog.Log, txn string, room string, from, n int) {
	t.Helper()
	evts := make([]string, n)
	for i := range evts {
		evts[i] = fmt.Sprintf(`{"event_id":"$%s_%d","room_id":%q,"type":"m.room.message","content":{}}`, room, from+i, room)
	}
	ctx := context.Background()
	if err := l.Journal(ctx, txn, []byte(`{"events":[`+strings.Join(evts, ",")+`]}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := l.IndexPending(ctx, appservice.ParseTransaction); err != nil {
		t.Fatal(err)
	}
}

// recorder fails its first `failures` batches, then records event ids.
type recorder struct {
	mu       sync.Mutex
	failures int
	ids      []string
	calls    int
}

func (r *recorder) HandleEvents(_ context.Context, evts []*eventlog.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.failures > 0 {
		r.failures--
		return errors.New("subscriber down")
	}
	for _, e := range evts {
		r.ids = append(r.ids, e.EventID)
	}
	return nil
}

func (r *recorder) seen() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.ids...)
}

// waitFor waits up to 15 s for cond.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testrig.Eventually(t, what, 15*time.Second, cond)
}

var fast = consumer.Options{BatchSize: 7, PollInterval: 50 * time.Millisecond, MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}

// idleSource tells when a runner has read everything: its read found nothing.
type idleSource struct {
	consumer.Source
	idle chan struct{}
}

func (s *idleSource) Read(ctx context.Context, after int64, limit int) ([]*eventlog.Event, error) {
	events, err := s.Source.Read(ctx, after, limit)
	if err == nil && len(events) == 0 {
		select {
		case s.idle <- struct{}{}:
		default:
		}
	}
	return events, err
}

func TestRunnerDeliversEverythingInOrderThroughFailures(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx := context.Background()
		l := openLog(t, tdb)
		appendN(t, l, "t1", "!a", 0, 20)

		rec := &recorder{failures: 3}
		source := &idleSource{Source: l, idle: make(chan struct{}, 1)}
		woken := fast
		woken.PollInterval = time.Hour // no poll: only the append's wake-up
		runner := consumer.NewRunner("rec", source, rec, woken)
		group := consumer.NewGroup(runner)
		group.Start(ctx)
		select {
		case <-source.idle:
		case <-time.After(15 * time.Second):
			t.Fatal("the runner never caught up with the first 20 events")
		}
		// Appended while the runner waits: it is woken, not polled.
		appendN(t, l, "t2", "!a", 20, 10)
		waitFor(t, "30 events", func() bool { return len(rec.seen()) >= 30 })
		group.Stop()

		got := rec.seen()
		if len(got) != 30 {
			t.Fatalf("handled %d events, want 30", len(got))
		}
		for i, id := range got {
			if want := fmt.Sprintf("$!a_%d", i); id != want {
				t.Fatalf("event %d = %s, want %s (order lost)", i, id, want)
			}
		}
		if runner.Failures() != 3 {
			t.Errorf("failures = %d, want 3", runner.Failures())
		}
		head, _ := l.Head(ctx)
		if pos, err := l.Cursor(ctx, "rec"); err != nil || pos != head {
			t.Errorf("saved cursor = %d (%v), want head %d", pos, err, head)
		}
	})
}

func TestRunnerResumesFromItsCursor(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx := context.Background()
		l := openLog(t, tdb)
		appendN(t, l, "t1", "!b", 0, 5)
		first := &recorder{}
		g := consumer.NewGroup(consumer.NewRunner("resume", l, first, fast))
		g.Start(ctx)
		waitFor(t, "first 5", func() bool { return len(first.seen()) == 5 })
		g.Stop()

		appendN(t, l, "t2", "!b", 5, 3)
		second := &recorder{}
		g = consumer.NewGroup(consumer.NewRunner("resume", l, second, fast))
		g.Start(ctx)
		waitFor(t, "next 3", func() bool { return len(second.seen()) == 3 })
		g.Stop()
		if got := second.seen(); got[0] != "$!b_5" || got[2] != "$!b_7" {
			t.Errorf("after restart the consumer got %v, want $!b_5..$!b_7", got)
		}

		// Another consumer has its own cursor and starts at the beginning.
		other := &recorder{}
		g = consumer.NewGroup(consumer.NewRunner("other", l, other, fast))
		g.Start(ctx)
		waitFor(t, "all 8", func() bool { return len(other.seen()) == 8 })
		g.Stop()
	})
}

// A consumer that never succeeds must not hold up appends or other consumers.
func TestFailingConsumerDelaysOnlyItself(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx := context.Background()
		l := openLog(t, tdb)
		broken := &recorder{failures: 1 << 30}
		healthy := &recorder{}
		g := consumer.NewGroup(
			consumer.NewRunner("broken", l, broken, fast),
			consumer.NewRunner("healthy", l, healthy, fast),
		)
		g.Start(ctx)
		defer g.Stop()
		for i := 0; i < 5; i++ {
			appendN(t, l, fmt.Sprintf("t%d", i), "!c", i*4, 4)
		}
		waitFor(t, "healthy consumer", func() bool { return len(healthy.seen()) == 20 })
		if len(broken.seen()) != 0 {
			t.Error("broken consumer recorded events")
		}
		if pos, _ := l.Cursor(ctx, "broken"); pos != 0 {
			t.Errorf("broken consumer's cursor moved to %d", pos)
		}
	})
}

// countingSource counts cursor saves.
type countingSource struct {
	consumer.Source
	mu    sync.Mutex
	saves []int64
}

func (s *countingSource) SaveCursor(ctx context.Context, name string, pos int64) error {
	s.mu.Lock()
	s.saves = append(s.saves, pos)
	s.mu.Unlock()
	return s.Source.SaveCursor(ctx, name, pos)
}

func (s *countingSource) saved() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int64(nil), s.saves...)
}

// The cursor is saved at most every SaveInterval while events flow, not
// once per batch; what was handled since is saved when the runner stops.
func TestRunnerCoalescesCursorSaves(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx := context.Background()
		l := openLog(t, tdb)
		appendN(t, l, "t1", "!a", 0, 35) // 5 batches of 7
		head, _ := l.Head(ctx)

		rec := &recorder{}
		source := &countingSource{Source: l}
		opts := fast
		opts.SaveInterval = time.Hour
		group := consumer.NewGroup(consumer.NewRunner("rec", source, rec, opts))
		group.Start(ctx)
		waitFor(t, "35 events", func() bool { return len(rec.seen()) == 35 })
		group.Stop()
		saves := source.saved()
		if len(saves) != 2 || saves[1] != head {
			t.Errorf("saves at %v for 5 batches, want 2: the first batch's and the head %d at the stop", saves, head)
		}
		if pos, err := l.Cursor(ctx, "rec"); err != nil || pos != head {
			t.Errorf("saved cursor %d (%v), want the head %d", pos, err, head)
		}
	})
}

// A consumer that has caught up saves what it handled within SaveInterval,
// without waiting for more events or a stop.
func TestRunnerSavesTheCursorOnceCaughtUp(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx := context.Background()
		l := openLog(t, tdb)
		appendN(t, l, "t1", "!a", 0, 35)
		head, _ := l.Head(ctx)

		opts := fast
		opts.SaveInterval = 100 * time.Millisecond
		opts.PollInterval = time.Hour // the poll would not save anyway
		group := consumer.NewGroup(consumer.NewRunner("rec", l, &recorder{}, opts))
		group.Start(ctx)
		defer group.Stop()
		waitFor(t, "the cursor at the head", func() bool {
			pos, _ := l.Cursor(ctx, "rec")
			return pos == head
		})
	})
}
