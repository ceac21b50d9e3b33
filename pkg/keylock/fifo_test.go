package keylock

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// Waiters for one key acquire it in the order they called Lock, and a Lock
// called after theirs (here: the releaser locking again at once, which a
// plain mutex lets barge ahead of the waiter it has just woken) comes last.
// Each waiter is started only once the one before it is provably waiting.
// Several rounds, because a plain mutex keeps the order some of the time.
func TestWaitersAcquireInLockOrder(t *testing.T) {
	const rounds, n = 10, 10
	var km Mutex
	want := make([]int, n+1)
	for i := range want {
		want[i] = i
	}
	for round := range rounds {
		unlock := km.Lock("k")
		var order []int // appended by holders of "k" only
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				unlock := km.Lock("k")
				order = append(order, i)
				unlock()
			}()
			waitForWaiters(t, &km, "k", i+1)
		}
		unlock()
		unlock = km.Lock("k")
		order = append(order, n)
		unlock()
		wg.Wait()
		if !slices.Equal(order, want) {
			t.Fatalf("round %d: acquired in the order %v, want %v", round, order, want)
		}
		if h := km.held(); h != 0 {
			t.Fatalf("round %d: %d keys left behind", round, h)
		}
	}
}

// waitForWaiters waits until n callers of Lock(key) are waiting.
func waitForWaiters(t *testing.T, km *Mutex, key string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for km.waiting(key) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d waiters for %q, want %d", km.waiting(key), key, n)
		}
		time.Sleep(50 * time.Microsecond)
	}
}
