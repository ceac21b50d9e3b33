// Package keylock serialises work per key inside one process: one city room
// slug, one (sender, room) pair. Waiters for a key are served in the order
// they called Lock (first in, first out), so one sender's messages keep
// their arrival order. Keys nobody holds or waits for are dropped.
package keylock

import "sync"

// Mutex is a set of mutexes by key. The zero value is ready to use.
type Mutex struct {
	mu    sync.Mutex
	locks map[string]*entry // a key is present while it is held
}

// entry is a held key and the callers of Lock waiting for it, in order.
type entry struct {
	waiters []chan struct{}
}

// Lock takes the lock of key, after every caller that asked for it before,
// and returns its unlock function, which must be called once.
func (k *Mutex) Lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = make(map[string]*entry)
	}
	e, held := k.locks[key]
	if !held {
		e = &entry{}
		k.locks[key] = e
		k.mu.Unlock()
		return k.unlocker(key, e)
	}
	turn := make(chan struct{})
	e.waiters = append(e.waiters, turn)
	k.mu.Unlock()
	<-turn // the holder has handed the key over
	return k.unlocker(key, e)
}

// unlocker hands key to its first waiter, or drops it when none waits.
func (k *Mutex) unlocker(key string, e *entry) func() {
	done := false
	return func() {
		k.mu.Lock()
		defer k.mu.Unlock()
		if done {
			panic("keylock: unlock of key " + key + " called twice")
		}
		done = true
		if len(e.waiters) == 0 {
			delete(k.locks, key)
			return
		}
		next := e.waiters[0]
		e.waiters[0] = nil
		e.waiters = e.waiters[1:]
		close(next)
	}
}

// held counts the keys with a holder or a waiter (for tests).
func (k *Mutex) held() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.locks)
}

// waiting counts the callers of Lock waiting for key (for tests).
func (k *Mutex) waiting(key string) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	if e, ok := k.locks[key]; ok {
		return len(e.waiters)
	}
	return 0
}
