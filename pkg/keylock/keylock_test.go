package keylock

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestMutex(t *testing.T) {
	var km Mutex
	var mu sync.Mutex
	inside := map[string]int{}
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprint(i % 3)
			unlock := km.Lock(key)
			mu.Lock()
			inside[key]++
			if inside[key] > 1 {
				t.Errorf("two holders of key %s", key)
			}
			mu.Unlock()
			time.Sleep(time.Millisecond)
			mu.Lock()
			inside[key]--
			mu.Unlock()
			unlock()
		}()
	}
	wg.Wait()
	if n := km.held(); n != 0 {
		t.Errorf("%d locks left behind", n)
	}
}

func TestDifferentKeysDoNotBlock(t *testing.T) {
	var km Mutex
	unlockA := km.Lock("a")
	done := make(chan struct{})
	go func() {
		km.Lock("b")()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("key b waited for key a")
	}
	unlockA()
}

// A second call of one unlock function panics instead of releasing the key
// from whoever holds it now.
func TestUnlockTwicePanics(t *testing.T) {
	var km Mutex
	stale := km.Lock("k")
	stale()
	unlock := km.Lock("k")
	func() {
		defer func() {
			if recover() == nil {
				t.Error("a second unlock did not panic")
			}
		}()
		stale()
	}()
	if n := km.held(); n != 1 {
		t.Errorf("%d keys held after the stale unlock, want 1", n)
	}
	unlock()
	if n := km.held(); n != 0 {
		t.Errorf("%d locks left behind", n)
	}
}
