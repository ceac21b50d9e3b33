package eventlog

import "sync"

// notifier wakes every waiter when the log grows. A waiter takes the current
// channel and blocks on it; notify closes it and installs a fresh one, so a
// wake-up is never missed between reading the log and starting to wait. The
// zero value is ready to use.
type notifier struct {
	mu sync.Mutex
	ch chan struct{}
}

func newNotifier() *notifier {
	return &notifier{ch: make(chan struct{})}
}

func (n *notifier) wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch == nil {
		n.ch = make(chan struct{})
	}
	return n.ch
}

func (n *notifier) notify() {
	n.mu.Lock()
	if n.ch != nil {
		close(n.ch)
	}
	n.ch = make(chan struct{})
	n.mu.Unlock()
}
