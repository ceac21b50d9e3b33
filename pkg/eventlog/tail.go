package eventlog

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"sync"
)

// Tail bounds: the newest events the indexing process keeps in memory for
// its readers. A consumer that keeps up (the usual case) reads only from
// here; one further behind reads the database until it is back in range.
const (
	tailMaxEvents = 16384
	tailMaxBytes  = 32 << 20
)

// tail is the newest part of the log, as this process's indexer committed
// it: every consumer of the leader reads each batch from memory instead of
// each querying the same rows again.
//
// It is exact or it is off. Armed, it holds every event with a position
// above from (when nothing else writes the log: only the indexer, which is
// fenced to one process and serialised by the append lock). It is armed by
// the indexer, under the append lock, from the log's head; it is disarmed
// when an indexing commit fails (its outcome is unknown: it may have
// committed rows the tail does not hold) and when the indexer stops. Off,
// every read goes to the database.
type tail struct {
	mu     sync.RWMutex
	armed  bool
	from   int64    // the tail holds every event with a position > from
	events []*Event // ascending positions, all > from
	bytes  int
	// disabled (tests) keeps the tail off, to compare with reads from the
	// database.
	disabled bool
}

// arm starts the tail at head (the log's newest position, read under the
// append lock).
func (t *tail) arm(head int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.disabled {
		return
	}
	t.armed, t.from, t.events, t.bytes = true, head, nil, 0
}

func (t *tail) disarm() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.armed, t.events, t.bytes = false, nil, 0
}

func (t *tail) isArmed() bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.armed
}

// add appends events just committed (positions above every held one) and
// drops the oldest beyond the bounds.
func (t *tail) add(events []*Event) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.armed {
		return
	}
	for _, evt := range events {
		t.events = append(t.events, evt)
		t.bytes += len(evt.JSON)
	}
	drop := 0
	for len(t.events)-drop > tailMaxEvents || t.bytes > tailMaxBytes && drop < len(t.events) {
		t.bytes -= len(t.events[drop].JSON)
		drop++
	}
	if drop > 0 {
		t.from = t.events[drop-1].Position
		// Cleared so they can be collected; append moves the rest to a new
		// array when this one is full.
		clear(t.events[:drop])
		t.events = t.events[drop:]
	}
}

// read returns up to limit events after position and true when the tail
// covers that position; false sends the reader to the database.
func (t *tail) read(after int64, limit int) ([]*Event, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if !t.armed || after < t.from {
		return nil, false
	}
	i := sort.Search(len(t.events), func(i int) bool { return t.events[i].Position > after })
	n := min(limit, len(t.events)-i)
	if n <= 0 {
		return nil, true
	}
	// The events are shared by every reader: handlers read them, never
	// change them (as with what the database returns, each gets its own
	// slice).
	return append([]*Event(nil), t.events[i:i+n]...), true
}

// armTail reads the log's head under the append lock and arms the tail
// there: from then on only this process's indexer commits events, and each
// commit adds them. Called by the indexer with appendMu held.
func (l *Log) armTail(ctx context.Context) error {
	var head sql.NullInt64
	err := l.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		if err := l.lockAppends(ctx); err != nil {
			return err
		}
		return l.db.QueryRow(ctx, "SELECT MAX(position) FROM event_log").Scan(&head)
	})
	if err != nil {
		return fmt.Errorf("failed to read the event log head for the in-memory tail: %w", err)
	}
	l.tail.arm(head.Int64)
	return nil
}

// rearmTail arms the tail if it is off (at the indexer's start, and after a
// failed commit).
func (l *Log) rearmTail(ctx context.Context) error {
	if l.tail.isArmed() {
		return nil
	}
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	return l.armTail(ctx)
}
