package rooms

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"maunium.net/go/mautrix/id"
)

// errShutdown answers the fetches a failed test left hanging.
var errShutdown = errors.New("test over")

// fakeFetch is a homeserver whose answers the test gives by hand: each fetch
// blocks until answer is called for it (by start order), its context ends, or
// the test ends.
type fakeFetch struct {
	mu       sync.Mutex
	calls    []*fakeCall
	shutdown chan struct{}
}

type fakeCall struct {
	roomID id.RoomID
	ctx    context.Context
	reply  chan fakeReply
}

type fakeReply struct {
	name string
	err  error
}

func newFakeFetch() *fakeFetch { return &fakeFetch{shutdown: make(chan struct{})} }

func (f *fakeFetch) fetch(ctx context.Context, roomID id.RoomID) (*Metadata, error) {
	call := &fakeCall{roomID: roomID, ctx: ctx, reply: make(chan fakeReply, 1)}
	f.mu.Lock()
	f.calls = append(f.calls, call)
	f.mu.Unlock()
	select {
	case r := <-call.reply:
		if r.err != nil {
			return nil, r.err
		}
		return &Metadata{RoomID: roomID, Name: r.name}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-f.shutdown:
		return nil, errShutdown
	}
}

// started is how many fetches have begun.
func (f *fakeFetch) started() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

func (f *fakeFetch) call(i int) *fakeCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[i]
}

// answer lets the i-th fetch return a room named name.
func (f *fakeFetch) answer(i int, name string) { f.call(i).reply <- fakeReply{name: name} }

// fail lets the i-th fetch return err.
func (f *fakeFetch) fail(i int, err error) { f.call(i).reply <- fakeReply{err: err} }

// close ends every fetch still waiting, so a failed test does not deadlock
// its bubble.
func (f *fakeFetch) close() { close(f.shutdown) }

// fakeClock is the cache's clock, moved by the test.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newTestCache(t *testing.T) (*MetadataCache, *fakeFetch, *fakeClock) {
	t.Helper()
	f := newFakeFetch()
	clock := &fakeClock{now: time.Unix(1000, 0)}
	c := NewMetadataCache(time.Minute, f.fetch)
	c.now = clock.Now
	return c, f, clock
}

type getResult struct {
	name string
	err  error
}

// goGet runs Get in a goroutine; its result arrives on the channel.
func goGet(ctx context.Context, c *MetadataCache, roomID id.RoomID) <-chan getResult {
	out := make(chan getResult, 1)
	go func() {
		meta, err := c.Get(ctx, roomID)
		if err != nil {
			out <- getResult{err: err}
			return
		}
		out <- getResult{name: meta.Name}
	}()
	return out
}

func wantName(t *testing.T, got <-chan getResult, want string) {
	t.Helper()
	r := <-got
	if r.err != nil {
		t.Fatalf("Get failed: %v", r.err)
	}
	if r.name != want {
		t.Fatalf("Get returned %q, want %q", r.name, want)
	}
}

func wantPeek(t *testing.T, c *MetadataCache, roomID id.RoomID, want string) {
	t.Helper()
	meta, ok := c.Peek(roomID)
	switch {
	case want == "" && ok:
		t.Errorf("Peek(%s) = %q, want nothing cached", roomID, meta.Name)
	case want != "" && !ok:
		t.Errorf("Peek(%s) found nothing, want %q", roomID, want)
	case want != "" && meta.Name != want:
		t.Errorf("Peek(%s) = %q, want %q", roomID, meta.Name, want)
	}
}

// A fetch that was under way when the room's state changed read the old
// state: its caller may have it, but the cache must not keep it.
func TestMetadataCacheInvalidateDuringFetch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, f, _ := newTestCache(t)
		defer f.close()
		ctx := t.Context()

		first := goGet(ctx, c, "!r:s")
		synctest.Wait()
		if f.started() != 1 {
			t.Fatalf("%d fetches started, want 1", f.started())
		}
		c.Invalidate("!r:s") // a state event arrives while the fetch runs
		f.answer(0, "old")
		wantName(t, first, "old")
		wantPeek(t, c, "!r:s", "")

		second := goGet(ctx, c, "!r:s")
		synctest.Wait()
		if f.started() != 2 {
			t.Fatalf("the Get after the fetch that raced Invalidate did not fetch again (%d fetches): the stale result was cached", f.started())
		}
		f.answer(1, "new")
		wantName(t, second, "new")
		wantPeek(t, c, "!r:s", "new")
	})
}

func TestMetadataCacheConcurrentGetsShareOneFetch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, f, _ := newTestCache(t)
		defer f.close()
		ctx := t.Context()

		const n = 20
		results := make([]<-chan getResult, n)
		for i := range results {
			results[i] = goGet(ctx, c, "!r:s")
		}
		synctest.Wait()
		if f.started() != 1 {
			t.Fatalf("%d concurrent Gets started %d fetches, want 1", n, f.started())
		}
		f.answer(0, "v1")
		for _, r := range results {
			wantName(t, r, "v1")
		}
		wantPeek(t, c, "!r:s", "v1")
		// Other rooms are fetched on their own.
		other := goGet(ctx, c, "!o:s")
		synctest.Wait()
		if f.started() != 2 {
			t.Fatalf("a Get for another room started no fetch of its own (%d fetches)", f.started())
		}
		f.answer(1, "o1")
		wantName(t, other, "o1")
	})
}

// A Get that arrives after Invalidate must read the new state: it may not
// join a fetch that began before the invalidation. Whichever fetch finishes
// last, the newer result is what the cache keeps, even when the clock did not
// move between the two fetches.
func TestMetadataCacheGetAfterInvalidateStartsNewFetch(t *testing.T) {
	for _, tc := range []struct {
		name     string
		tick     time.Duration
		oldFirst bool
	}{
		{"old fetch finishes first", time.Second, true},
		{"new fetch finishes first", time.Second, false},
		{"old fetch finishes first, same clock reading", 0, true},
		{"new fetch finishes first, same clock reading", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				c, f, clock := newTestCache(t)
				defer f.close()
				ctx := t.Context()

				before := goGet(ctx, c, "!r:s")
				synctest.Wait()
				clock.Advance(tc.tick)
				c.Invalidate("!r:s")
				after := goGet(ctx, c, "!r:s")
				synctest.Wait()
				if f.started() != 2 {
					t.Fatalf("the Get after Invalidate joined the fetch from before it (%d fetches, want 2)", f.started())
				}
				if tc.oldFirst {
					f.answer(0, "old")
					wantName(t, before, "old")
					f.answer(1, "new")
					wantName(t, after, "new")
				} else {
					f.answer(1, "new")
					wantName(t, after, "new")
					f.answer(0, "old")
					wantName(t, before, "old")
				}
				wantPeek(t, c, "!r:s", "new")
			})
		})
	}
}

// The callers of a failed fetch share its error; the failure is not cached.
func TestMetadataCacheFetchErrorShared(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, f, _ := newTestCache(t)
		defer f.close()
		ctx := t.Context()

		a, b := goGet(ctx, c, "!r:s"), goGet(ctx, c, "!r:s")
		synctest.Wait()
		f.fail(0, ErrNotFound)
		for _, r := range []<-chan getResult{a, b} {
			if err := (<-r).err; !errors.Is(err, ErrNotFound) {
				t.Fatalf("Get returned error %v, want ErrNotFound", err)
			}
		}
		retry := goGet(ctx, c, "!r:s")
		synctest.Wait()
		if f.started() != 2 {
			t.Fatalf("the Get after a failed fetch did not fetch again (%d fetches)", f.started())
		}
		f.answer(1, "v1")
		wantName(t, retry, "v1")
	})
}

// One caller giving up does not end the fetch for the others; when every
// caller has given up the fetch is stopped and the next Get starts afresh.
func TestMetadataCacheCallerCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, f, _ := newTestCache(t)
		defer f.close()

		ctxA, cancelA := context.WithCancel(t.Context())
		ctxB, cancelB := context.WithCancel(t.Context())
		defer cancelB()
		a, b := goGet(ctxA, c, "!r:s"), goGet(ctxB, c, "!r:s")
		synctest.Wait()
		cancelA()
		if err := (<-a).err; !errors.Is(err, context.Canceled) {
			t.Fatalf("the cancelled Get returned %v, want context.Canceled", err)
		}
		if err := f.call(0).ctx.Err(); err != nil {
			t.Fatalf("one caller's cancellation ended the shared fetch: %v", err)
		}
		f.answer(0, "v1")
		wantName(t, b, "v1")

		// Every caller gives up.
		c.Invalidate("!r:s")
		ctxC, cancelC := context.WithCancel(t.Context())
		abandoned := goGet(ctxC, c, "!r:s")
		synctest.Wait()
		cancelC()
		if err := (<-abandoned).err; !errors.Is(err, context.Canceled) {
			t.Fatalf("the cancelled Get returned %v, want context.Canceled", err)
		}
		synctest.Wait()
		if err := f.call(1).ctx.Err(); !errors.Is(err, context.Canceled) {
			t.Fatalf("a fetch nobody waits for was not stopped (its context: %v)", err)
		}
		wantPeek(t, c, "!r:s", "")
		next := goGet(t.Context(), c, "!r:s")
		synctest.Wait()
		if f.started() != 3 {
			t.Fatalf("the Get after an abandoned fetch did not fetch again (%d fetches)", f.started())
		}
		f.answer(2, "v2")
		wantName(t, next, "v2")
	})
}

// The TTL counts from the start of the fetch, the latest the state read can
// be from.
func TestMetadataCacheTTLFromFetchStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, f, clock := newTestCache(t)
		defer f.close()

		r := goGet(t.Context(), c, "!r:s")
		synctest.Wait()
		clock.Advance(40 * time.Second)
		f.answer(0, "v1")
		wantName(t, r, "v1")
		wantPeek(t, c, "!r:s", "v1")
		clock.Advance(20 * time.Second)
		wantPeek(t, c, "!r:s", "")
	})
}

// A panicking fetch fails its Gets instead of the process.
func TestMetadataCacheFetchPanic(t *testing.T) {
	panics := true
	c := NewMetadataCache(time.Minute, func(_ context.Context, roomID id.RoomID) (*Metadata, error) {
		if panics {
			panic("boom")
		}
		return &Metadata{RoomID: roomID, Name: "v1"}, nil
	})
	if _, err := c.Get(t.Context(), "!r:s"); err == nil {
		t.Fatal("Get of a panicking fetch succeeded")
	}
	panics = false
	if meta, err := c.Get(t.Context(), "!r:s"); err != nil || meta.Name != "v1" {
		t.Fatalf("Get after a panicking fetch = %v, %v; want v1", meta, err)
	}
}

func TestMetadataCacheBounded(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1000, 0)}
	c := NewMetadataCache(time.Minute, func(_ context.Context, roomID id.RoomID) (*Metadata, error) {
		return &Metadata{RoomID: roomID, Name: string(roomID)}, nil
	})
	c.now = clock.Now
	c.maxEntries = 3
	get := func(roomID id.RoomID) {
		t.Helper()
		if _, err := c.Get(t.Context(), roomID); err != nil {
			t.Fatal(err)
		}
	}
	wantSize := func(n int) {
		t.Helper()
		if len(c.entries) != n || c.order.Len() != n || len(c.inflight) != 0 {
			t.Fatalf("cache holds %d entries, %d in eviction order, %d fetches; want %d, %d, 0",
				len(c.entries), c.order.Len(), len(c.inflight), n, n)
		}
	}

	get("!a:s")
	get("!b:s")
	get("!c:s")
	wantPeek(t, c, "!a:s", "!a:s") // read: a second chance
	get("!d:s")                    // evicts b, the oldest not read
	wantSize(3)
	wantPeek(t, c, "!b:s", "")
	wantPeek(t, c, "!a:s", "!a:s")
	get("!e:s") // a was read again, so c goes
	wantSize(3)
	wantPeek(t, c, "!c:s", "")
	for _, roomID := range []id.RoomID{"!a:s", "!d:s", "!e:s"} {
		wantPeek(t, c, roomID, string(roomID))
	}

	// A stale entry goes first, read or not.
	clock.Advance(2 * time.Minute)
	get("!a:s") // refetched: the newest entry
	get("!f:s")
	wantSize(3)
	wantPeek(t, c, "!a:s", "!a:s")
	wantPeek(t, c, "!f:s", "!f:s")

	// Invalidating rooms the cache never saw leaves nothing behind.
	for i := range 1000 {
		c.Invalidate(id.RoomID(fmt.Sprintf("!never%d:s", i)))
	}
	c.Invalidate("!a:s")
	c.Invalidate("!f:s")
	c.Invalidate("!e:s")
	wantSize(0)
}

func BenchmarkMetadataCachePeek(b *testing.B) {
	c := NewMetadataCache(time.Hour, func(_ context.Context, roomID id.RoomID) (*Metadata, error) {
		return &Metadata{RoomID: roomID, Name: "room"}, nil
	})
	if _, err := c.Get(context.Background(), "!r:s"); err != nil {
		b.Fatal(err)
	}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, ok := c.Peek("!r:s"); !ok {
				b.Fatal("not cached")
			}
		}
	})
}
