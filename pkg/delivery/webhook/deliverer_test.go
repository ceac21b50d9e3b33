package webhook

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// The deliverer's own tests: a fake clock (no sleeps), no jitter, and a
// receiver in the HTTP client's transport; the outbox is a SQLite store.

// t0 is the fake clock's start, in whole milliseconds as the store keeps it.
var t0 = time.UnixMilli(1_700_000_000_000)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

func (c *fakeClock) Advance(d time.Duration) { c.Set(c.Now().Add(d)) }

// received is one request as the receiver saw it.
type received struct {
	header http.Header
	body   string
}

// fakeReceiver answers deliveries in place of the network.
type fakeReceiver struct {
	mu  sync.Mutex
	got []received
	// answer gives the status and headers of the n-th request (from 0), or
	// an error as if the connection had failed.
	answer func(n int, r *http.Request) (int, http.Header, error)
}

func (f *fakeReceiver) RoundTrip(r *http.Request) (*http.Response, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	n := len(f.got)
	f.got = append(f.got, received{header: r.Header.Clone(), body: string(body)})
	f.mu.Unlock()
	status, header, err := f.answer(n, r)
	if err != nil {
		return nil, err
	}
	if header == nil {
		header = http.Header{}
	}
	return &http.Response{StatusCode: status, Header: header, Body: http.NoBody, Request: r}, nil
}

func (f *fakeReceiver) ids() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	ids := make([]string, len(f.got))
	for i, r := range f.got {
		ids[i] = r.header.Get("webhook-id")
	}
	return ids
}

func answerAll(status int) func(int, *http.Request) (int, http.Header, error) {
	return func(int, *http.Request) (int, http.Header, error) { return status, nil, nil }
}

type delivererRig struct {
	d     *Deliverer
	store *Store
	clock *fakeClock
	rcv   *fakeReceiver
	sub   *Subscription
	key   queueKey
}

// newDelivererRig returns a deliverer on a fresh SQLite outbox with one
// active subscription and its queue of n deliveries ($1 … $n), due at t0.
func newDelivererRig(t *testing.T, opts DelivererOptions, n int, answer func(int, *http.Request) (int, http.Header, error)) *delivererRig {
	t.Helper()
	ctx := context.Background()
	db := testrig.OpenDatabase(t, testrig.NewTestDatabase(t, testrig.SQLite))
	store := NewStore(db)
	sub := &Subscription{ID: "sub_unit", Service: "svc", URL: "https://hooks.example.org/x", Secret: NewSecret(), RoomFilter: "*", State: StateActive}
	if err := store.CreateSubscription(ctx, sub); err != nil {
		t.Fatal(err)
	}
	var deliveries []*Delivery
	for i := 1; i <= n; i++ {
		deliveries = append(deliveries, &Delivery{SubscriptionID: sub.ID, Position: int64(i), RoomID: "!r:s",
			EventID: fmt.Sprint("$", i), Body: []byte(fmt.Sprintf(`{"n":%d}`, i)), NextAttemptAt: t0})
	}
	if err := store.Enqueue(ctx, deliveries); err != nil {
		t.Fatal(err)
	}
	r := &delivererRig{store: store, clock: &fakeClock{now: t0}, rcv: &fakeReceiver{answer: answer}, sub: sub, key: queueKey{sub.ID, "!r:s"}}
	r.d = NewDeliverer(store, opts)
	r.d.now = r.clock.Now
	r.d.randN = func(n int64) int64 { return n / 2 } // no jitter
	r.d.client.Transport = r.rcv
	return r
}

// run runs the deliverer until the test ends.
func (r *delivererRig) run(t *testing.T) {
	ctx, cancel := context.WithCancel(zerolog.Nop().WithContext(context.Background()))
	done := make(chan struct{})
	go func() { defer close(done); r.d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func (r *delivererRig) drain() { r.d.drain(zerolog.Nop().WithContext(context.Background()), r.key) }

func (r *delivererRig) head(t *testing.T) []*Delivery {
	t.Helper()
	head, err := r.store.QueueHead(context.Background(), r.key, 100)
	if err != nil {
		t.Fatal(err)
	}
	return head
}

func (r *delivererRig) counts(t *testing.T) (pending, dead int64) {
	t.Helper()
	pending, dead, err := r.store.Counts(context.Background(), r.sub.ID)
	if err != nil {
		t.Fatal(err)
	}
	return pending, dead
}

// A queue is delivered in order, each delivery signed per Standard Webhooks
// at the clock's time, and the delivered rows leave the outbox.
func TestDrainDeliversInOrderSigned(t *testing.T) {
	r := newDelivererRig(t, DelivererOptions{RetryWindow: time.Hour, MaxBackoff: time.Hour, UserAgent: "ua/1"}, 3, answerAll(http.StatusNoContent))
	r.drain()
	if ids := r.rcv.ids(); strings.Join(ids, " ") != "$1 $2 $3" {
		t.Fatalf("received %v, want $1 $2 $3", ids)
	}
	for i, got := range r.rcv.got {
		ts := got.header.Get("webhook-timestamp")
		if ts != strconv.FormatInt(t0.Unix(), 10) {
			t.Errorf("delivery %d: webhook-timestamp %s, want the clock's %d", i, ts, t0.Unix())
		}
		if !Verify(r.sub.Secret, got.header.Get("webhook-id"), t0.Unix(), []byte(got.body), got.header.Get("webhook-signature")) {
			t.Errorf("delivery %d: signature %q does not verify", i, got.header.Get("webhook-signature"))
		}
		if want := fmt.Sprintf(`{"n":%d}`, i+1); got.body != want {
			t.Errorf("delivery %d: body %s, want %s", i, got.body, want)
		}
		if got.header.Get("Content-Type") != "application/json" || got.header.Get("User-Agent") != "ua/1" {
			t.Errorf("delivery %d: headers %v", i, got.header)
		}
	}
	if pending, dead := r.counts(t); pending != 0 || dead != 0 {
		t.Errorf("pending %d dead %d after delivering, want 0 and 0", pending, dead)
	}
	if s := r.d.Stats(); s != (Stats{Delivered: 3}) {
		t.Errorf("stats %+v", s)
	}
}

// A failed head waits for its retry, at the backoff or the receiver's
// Retry-After, whichever is later but never past the end of the retry
// window, and the rows behind it wait with it.
func TestFailedAttemptIsRetriedLater(t *testing.T) {
	for _, tc := range []struct {
		name       string
		status     int
		retryAfter string
		connErr    error
		wantNext   time.Duration // after t0
		wantReason string        // a part of it
	}{
		{"500", http.StatusInternalServerError, "", nil, time.Second, "receiver answered 500"},
		{"redirect is a failure", http.StatusFound, "", nil, time.Second, "receiver answered 302"},
		{"connection failed", 0, "", errors.New("connection refused"), time.Second, "connection refused"},
		{"Retry-After seconds", http.StatusTooManyRequests, "120", nil, 120 * time.Second, "receiver answered 429"},
		{"Retry-After date", http.StatusServiceUnavailable, t0.Add(5 * time.Minute).UTC().Format(http.TimeFormat), nil, 5 * time.Minute, "receiver answered 503"},
		{"Retry-After shorter than the backoff", http.StatusServiceUnavailable, t0.Add(-time.Minute).UTC().Format(http.TimeFormat), nil, time.Second, "receiver answered 503"},
		{"Retry-After invalid", http.StatusServiceUnavailable, "0.5", nil, time.Second, "receiver answered 503"},
		{"Retry-After past the window", http.StatusTooManyRequests, "7200", nil, time.Hour, "receiver answered 429"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			answer := func(n int, _ *http.Request) (int, http.Header, error) {
				if n > 0 {
					return http.StatusOK, nil, nil
				}
				h := http.Header{}
				if tc.retryAfter != "" {
					h.Set("Retry-After", tc.retryAfter)
				}
				h.Set("Location", "https://elsewhere.example.org/")
				return tc.status, h, tc.connErr
			}
			r := newDelivererRig(t, DelivererOptions{RetryWindow: time.Hour, MaxBackoff: time.Hour}, 2, answer)
			r.drain()
			if ids := r.rcv.ids(); len(ids) != 1 {
				t.Fatalf("received %v, want only $1 before its retry", ids)
			}
			head := r.head(t)
			if len(head) != 2 {
				t.Fatalf("%d pending, want 2", len(head))
			}
			first := head[0]
			if first.Attempts != 1 || !first.NextAttemptAt.Equal(t0.Add(tc.wantNext)) || !first.FirstFailedAt.Equal(t0) ||
				!strings.Contains(first.LastError, tc.wantReason) {
				t.Errorf("after the failure: attempts %d, next %v after t0, first failed %v after t0, error %q; want 1, %v, 0, %q",
					first.Attempts, first.NextAttemptAt.Sub(t0), first.FirstFailedAt.Sub(t0), first.LastError, tc.wantNext, tc.wantReason)
			}
			if s := r.d.Stats(); s != (Stats{Failed: 1}) {
				t.Errorf("stats %+v", s)
			}

			r.clock.Set(t0.Add(tc.wantNext - time.Millisecond))
			r.drain()
			if ids := r.rcv.ids(); len(ids) != 1 {
				t.Fatalf("received %v, want nothing more before the retry is due", ids)
			}
			r.clock.Set(t0.Add(tc.wantNext))
			r.drain()
			if ids := r.rcv.ids(); strings.Join(ids, " ") != "$1 $1 $2" {
				t.Errorf("received %v, want $1 $1 $2", ids)
			}
			if pending, dead := r.counts(t); pending != 0 || dead != 0 {
				t.Errorf("pending %d dead %d after the retry, want 0 and 0", pending, dead)
			}
		})
	}
}

// A delivery that keeps failing is retried at 1 s, 2 s, 4 s … (capped at
// MaxBackoff), once more at the end of the retry window, then goes to the
// dead-letter list, and the queue moves on to the next row.
func TestFailingDeliveryIsDeadLetteredAtTheEndOfTheWindow(t *testing.T) {
	answer := func(_ int, r *http.Request) (int, http.Header, error) {
		if r.Header.Get("webhook-id") == "$1" {
			return http.StatusInternalServerError, nil, nil
		}
		return http.StatusOK, nil, nil
	}
	r := newDelivererRig(t, DelivererOptions{RetryWindow: 10 * time.Second, MaxBackoff: 4 * time.Second}, 2, answer)
	var attempts []time.Duration // of $1, after t0
	for range 20 {
		if head := r.head(t); len(head) == 0 || head[0].EventID != "$1" {
			break
		}
		attempts = append(attempts, r.clock.Now().Sub(t0))
		r.drain()
		if head := r.head(t); len(head) > 0 && head[0].EventID == "$1" {
			r.clock.Set(head[0].NextAttemptAt)
		}
	}
	want := []time.Duration{0, time.Second, 3 * time.Second, 7 * time.Second, 10 * time.Second}
	if fmt.Sprint(attempts) != fmt.Sprint(want) {
		t.Errorf("$1 attempted at %v after t0, want %v", attempts, want)
	}
	if ids := r.rcv.ids(); strings.Join(ids, " ") != "$1 $1 $1 $1 $1 $2" {
		t.Errorf("received %v, want $1 five times, then $2", ids)
	}
	dead, err := r.store.DeadLetters(context.Background(), r.sub.ID, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != 1 || dead[0].EventID != "$1" || dead[0].Attempts != 5 || dead[0].LastError != "receiver answered 500" {
		t.Errorf("dead letters %+v, want $1 after 5 attempts", dead)
	}
	if pending, _ := r.counts(t); pending != 0 {
		t.Errorf("%d pending, want 0", pending)
	}
	if s := r.d.Stats(); s != (Stats{Delivered: 1, Failed: 4, DeadLettered: 1}) {
		t.Errorf("stats %+v", s)
	}
}

// 410 Gone disables the subscription and keeps what is queued.
func TestGoneDisablesTheSubscription(t *testing.T) {
	r := newDelivererRig(t, DelivererOptions{RetryWindow: time.Hour, MaxBackoff: time.Hour}, 2, answerAll(http.StatusGone))
	r.drain()
	r.drain() // not active any more: nothing is sent
	if ids := r.rcv.ids(); len(ids) != 1 {
		t.Errorf("received %v, want only $1", ids)
	}
	sub, err := r.store.Subscription(context.Background(), r.sub.ID)
	if err != nil {
		t.Fatal(err)
	}
	if sub.State != StateDisabled || sub.StateReason != "receiver answered 410 Gone" {
		t.Errorf("subscription %s (%q), want disabled", sub.State, sub.StateReason)
	}
	if head := r.head(t); len(head) != 2 || head[0].Attempts != 0 {
		t.Errorf("queue after 410: %d rows, want both, untouched", len(head))
	}
	if s := r.d.Stats(); s != (Stats{Disabled: 1}) {
		t.Errorf("stats %+v", s)
	}
}

// A drain holds its worker for at most one attempt's timeout: after that it
// stops before the next row, and what it delivered is marked.
func TestDrainYieldsAfterTheTimeout(t *testing.T) {
	var r *delivererRig
	answer := func(int, *http.Request) (int, http.Header, error) {
		r.clock.Advance(3 * time.Second) // each delivery takes 3 s
		return http.StatusOK, nil, nil
	}
	r = newDelivererRig(t, DelivererOptions{Timeout: 5 * time.Second, RetryWindow: time.Hour, MaxBackoff: time.Hour}, 5, answer)
	r.drain() // $1 at 0 s, $2 at 3 s; at 6 s the 5 s are over
	if ids := r.rcv.ids(); strings.Join(ids, " ") != "$1 $2" {
		t.Errorf("received %v, want $1 $2", ids)
	}
	if head := r.head(t); len(head) != 3 || head[0].EventID != "$3" {
		t.Errorf("%d pending, want $3 … $5", len(head))
	}
	if s := r.d.Stats(); s != (Stats{Delivered: 2}) {
		t.Errorf("stats %+v", s)
	}
}

// Wake makes a waiting deliverer look at the outbox at once; it never
// polls here (an hour). The delivery comes due on the fake clock only after
// the deliverer's first look found nothing due, so only the Wake finds it.
func TestWakeStartsADueDelivery(t *testing.T) {
	r := newDelivererRig(t, DelivererOptions{PollInterval: time.Hour, RetryWindow: time.Hour, MaxBackoff: time.Hour}, 0, answerAll(http.StatusNoContent))
	if err := r.store.Enqueue(context.Background(), []*Delivery{{SubscriptionID: r.sub.ID, Position: 1, RoomID: "!r:s",
		EventID: "$later", Body: []byte(`{}`), NextAttemptAt: t0.Add(time.Minute)}}); err != nil {
		t.Fatal(err)
	}
	looked := make(chan struct{}, 1)
	r.d.now = func() time.Time {
		now := r.clock.Now()
		select {
		case looked <- struct{}{}:
		default:
		}
		return now
	}
	r.run(t)
	select {
	case <-looked:
	case <-time.After(5 * time.Second):
		t.Fatal("the deliverer never looked at the outbox")
	}
	r.clock.Advance(time.Minute)
	r.d.Wake()
	deadline := time.Now().Add(5 * time.Second)
	for len(r.rcv.ids()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the woken deliverer did not deliver the due row")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Queued starts the queues of rows the fan-out has just committed without
// reading the outbox: this deliverer never polls (an hour), is not woken,
// and read the outbox only once, before the rows were queued.
func TestQueuedStartsTheirQueuesWithoutAnOutboxRead(t *testing.T) {
	r := newDelivererRig(t, DelivererOptions{PollInterval: time.Hour, RetryWindow: time.Hour, MaxBackoff: time.Hour}, 0, answerAll(http.StatusNoContent))
	reads := make(chan struct{}, 100)
	r.d.outboxRead = func() { reads <- struct{}{} }
	r.run(t)
	select {
	case <-reads:
	case <-time.After(5 * time.Second):
		t.Fatal("the deliverer never read the outbox")
	}
	var rows []*Delivery
	for i, room := range []string{"!a:s", "!b:s", "!a:s", "!b:s", "!a:s"} {
		rows = append(rows, &Delivery{SubscriptionID: r.sub.ID, Position: int64(i + 1), RoomID: room,
			EventID: fmt.Sprint("$", i+1), Body: []byte(`{}`), NextAttemptAt: t0})
	}
	if err := r.store.Enqueue(context.Background(), rows); err != nil {
		t.Fatal(err)
	}
	r.d.Queued(rows)
	testrig.Eventually(t, "the queued rows delivered", 5*time.Second, func() bool { return r.d.Stats().Delivered == 5 })
	var a, b []string
	for _, id := range r.rcv.ids() {
		if n := id[1:]; n == "1" || n == "3" || n == "5" {
			a = append(a, id)
		} else {
			b = append(b, id)
		}
	}
	if strings.Join(a, " ") != "$1 $3 $5" || strings.Join(b, " ") != "$2 $4" {
		t.Errorf("per room: %v and %v, want $1 $3 $5 and $2 $4", a, b)
	}
	if len(reads) != 0 {
		t.Errorf("the outbox was read %d more times", len(reads))
	}
	// Deleted by the acker before the drains returned.
	if pending, dead := r.counts(t); pending != 0 || dead != 0 {
		t.Errorf("outbox after delivery: %d pending, %d dead", pending, dead)
	}
}

// A retry this process scheduled starts when it is due, without an outbox
// read: the deliverer here reads the outbox once (at start; it never polls)
// and its first attempt fails, with a 50 ms backoff.
func TestScheduledRetryStartsWithoutAnOutboxRead(t *testing.T) {
	answer := func(n int, _ *http.Request) (int, http.Header, error) {
		if n == 0 {
			return http.StatusServiceUnavailable, nil, nil
		}
		return http.StatusNoContent, nil, nil
	}
	r := newDelivererRig(t, DelivererOptions{PollInterval: time.Hour, RetryWindow: time.Hour, MaxBackoff: 50 * time.Millisecond}, 1, answer)
	r.d.now = time.Now
	reads := make(chan struct{}, 100)
	r.d.outboxRead = func() { reads <- struct{}{} }
	r.run(t)
	testrig.Eventually(t, "the retry delivered", 5*time.Second, func() bool { return r.d.Stats().Delivered == 1 })
	if s := r.d.Stats(); s.Failed != 1 {
		t.Errorf("stats %+v, want one failure before the delivery", s)
	}
	if len(reads) != 1 {
		t.Errorf("the outbox was read %d times, want once", len(reads))
	}
}

// backoff is 1 s doubling per attempt, capped at MaxBackoff, ±20%.
func TestBackoff(t *testing.T) {
	mid := func(n int64) int64 { return n / 2 }
	low := func(int64) int64 { return 0 }
	high := func(n int64) int64 { return n - 1 }
	for _, tc := range []struct {
		attempts int
		randN    func(int64) int64
		want     time.Duration
	}{
		{0, mid, time.Second},
		{1, mid, 2 * time.Second},
		{5, mid, 32 * time.Second},
		{6, mid, time.Minute}, // 64 s, capped
		{30, mid, time.Minute},
		{1000, mid, time.Minute}, // no overflow
		{0, low, 800 * time.Millisecond},
		{0, high, 1200 * time.Millisecond},
		{9, low, 48 * time.Second},
		{9, high, 72 * time.Second},
	} {
		d := &Deliverer{opts: DelivererOptions{MaxBackoff: time.Minute}, randN: tc.randN}
		if got := d.backoff(tc.attempts); got != tc.want {
			t.Errorf("backoff(%d) = %v, want %v", tc.attempts, got, tc.want)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  time.Duration
	}{
		{"", 0},
		{"120", 2 * time.Minute},
		{"0", 0},
		{"-5", 0},
		{"1.5", 0},
		{"soon", 0},
		{t0.Add(90 * time.Second).UTC().Format(http.TimeFormat), 90 * time.Second},
		{t0.Add(-time.Hour).UTC().Format(http.TimeFormat), 0},
	} {
		if got := parseRetryAfter(tc.value, t0); got != tc.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", tc.value, got, tc.want)
		}
	}
}
