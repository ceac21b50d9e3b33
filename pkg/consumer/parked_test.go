package consumer_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"github.com/daarion/matrix-bridge/pkg/consumer"
	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// poisoned fails for good on the events in poison (a homeserver 404, as a
// tombstone's missing replacement room gives), transiently `transient` times
// on the events in flaky, and records what it handled.
type poisoned struct {
	mu        sync.Mutex
	poison    map[string]bool
	flaky     map[string]bool
	transient int
	handled   []string
}

func (p *poisoned) HandleEvents(_ context.Context, evts []*eventlog.Event) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range evts {
		if p.poison[e.EventID] {
			return mautrix.HTTPError{Response: &http.Response{StatusCode: http.StatusNotFound}, RespError: &mautrix.RespError{ErrCode: "M_NOT_FOUND"}}
		}
		if p.flaky[e.EventID] && p.transient > 0 {
			p.transient--
			return mautrix.HTTPError{Response: &http.Response{StatusCode: http.StatusBadGateway}}
		}
	}
	for _, e := range evts {
		p.handled = append(p.handled, e.EventID)
	}
	return nil
}

func (p *poisoned) cure(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.poison, id)
}

func (p *poisoned) seen() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.handled)
}

func TestPermanentFailureIsParkedAndTheConsumerMovesOn(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		db := testrig.OpenDatabase(t, tdb)
		l := eventlog.New(db)
		parked := consumer.NewParkedStore(db)
		appendN(t, l, "t1", "!r:s", 0, 10)
		h := &poisoned{
			poison: map[string]bool{"$!r:s_3": true, "$!r:s_7": true},
			flaky:  map[string]bool{"$!r:s_5": true}, transient: 2,
		}
		r := consumer.NewRunner("poisoned", l, h, consumer.Options{
			BatchSize: 4, PollInterval: 20 * time.Millisecond, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, Parked: parked,
		})
		go r.Run(ctx)

		// The cursor passes the poison: every other event is handled, in order.
		waitFor(t, "the cursor to pass the last event", func() bool { pos, _ := l.Cursor(ctx, "poisoned"); return pos == 10 })
		want := []string{"$!r:s_0", "$!r:s_1", "$!r:s_2", "$!r:s_4", "$!r:s_5", "$!r:s_6", "$!r:s_8", "$!r:s_9"}
		if got := dedupe(h.seen()); !slices.Equal(got, want) {
			t.Errorf("handled %v, want %v", got, want)
		}
		list, err := parked.List(ctx, consumer.ListOptions{Consumer: "poisoned"})
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 2 || list[0].EventID != "$!r:s_3" || list[1].EventID != "$!r:s_7" || list[0].Attempts != 1 ||
			!strings.Contains(list[0].Error, "M_NOT_FOUND") {
			for _, p := range list {
				t.Errorf("parked %+v", *p)
			}
			t.FailNow()
		}
		if r.ParkedCount() != 2 {
			t.Errorf("ParkedCount = %d, want 2", r.ParkedCount())
		}
		// A transient failure (502) is retried, not parked.
		if counts, _ := parked.Counts(ctx); counts["poisoned"] != 2 {
			t.Errorf("counts %v", counts)
		}

		// A retry of a still-poisoned event keeps it parked with one more attempt.
		if n, err := parked.RequestRetry(ctx, "poisoned", list[1].Position); err != nil || n != 1 {
			t.Fatalf("RequestRetry: %d %v", n, err)
		}
		waitFor(t, "the retry of event 7 to fail again", func() bool {
			p, _ := parked.Get(ctx, "poisoned", list[1].Position)
			return p != nil && p.Attempts == 2 && !p.RetryRequested
		})
		// Once the cause is gone, a retry handles it and it leaves the list.
		h.cure("$!r:s_3")
		if _, err = parked.RequestRetry(ctx, "poisoned", 0); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "event 3 to be handled on retry", func() bool { return slices.Contains(h.seen(), "$!r:s_3") })
		waitFor(t, "event 3 to leave the parked list", func() bool {
			p, _ := parked.Get(ctx, "poisoned", list[0].Position)
			return p == nil
		})
		waitFor(t, "event 7's second retry to fail again", func() bool {
			p, _ := parked.Get(ctx, "poisoned", list[1].Position)
			return p != nil && p.Attempts == 3 && !p.RetryRequested
		})
	})
}

// dedupe drops repeats (a failed batch is handled again from its start).
func dedupe(ids []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}
