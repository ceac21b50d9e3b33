package eventlog

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.mau.fi/util/dbutil"
)

// handoffMaxBytes bounds the bodies held for the indexer: past it a
// transaction is journalled as before and the indexer reads it back.
const handoffMaxBytes = 64 << 20

// handoff passes what the transaction path has already parsed to the
// indexer of the same process, so that a journalled body is neither read
// back from the database nor parsed a second time. It is only a cache of
// the journal: a row it does not hold (journalled by another process,
// before a restart, past the bound) is read and parsed from the database.
type handoff struct {
	mu     sync.Mutex
	byseq  map[int64]handedOff
	bytes  int
	events int  // the events of the rows held: the indexer's backlog here
	active bool // only while this process indexes
	// indexed is notified when rows leave (see Pace).
	indexed notifier
	pace    pacer
}

type handedOff struct {
	body   []byte
	events []IncomingEvent
}

// put holds a journalled row's body and events for the indexer.
func (h *handoff) put(seq int64, body []byte, events []IncomingEvent) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.active || h.bytes+len(body) > handoffMaxBytes {
		return
	}
	if h.byseq == nil {
		h.byseq = make(map[int64]handedOff)
	}
	h.byseq[seq] = handedOff{body: body, events: events}
	h.bytes += len(body)
	h.events += len(events)
}

// take returns the row's handed-off body and events, if held.
func (h *handoff) take(seq int64) (handedOff, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	entry, ok := h.byseq[seq]
	return entry, ok
}

// done drops rows that left the journal (indexed or parked), and any held
// row older than the oldest in the journal (indexed by another process).
func (h *handoff) done(seqs []int64, oldest int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	before := h.events
	for _, seq := range seqs {
		h.drop(seq)
	}
	for seq := range h.byseq {
		if seq < oldest {
			h.drop(seq)
		}
	}
	h.pace.indexed(before-h.events, h.events, time.Now())
	h.indexed.notify()
}

func (h *handoff) drop(seq int64) {
	if entry, ok := h.byseq[seq]; ok {
		h.bytes -= len(entry.body)
		h.events -= len(entry.events)
		delete(h.byseq, seq)
	}
}

// backlog returns the events held, and a channel closed when rows next
// leave.
func (h *handoff) backlog() (int, <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.events, h.indexed.wait()
}

// paceDelay is the pacer's delay for a transaction of events (see pacer).
func (h *handoff) paceDelay(events, limit int) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.pace.delay(events, h.events, limit, time.Now())
}

// setActive starts or stops holding rows (the indexer's start and stop); a
// stop forgets what is held.
func (h *handoff) setActive(active bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.active, h.byseq, h.bytes, h.events = active, nil, 0, 0
	h.pace = pacer{}
	h.indexed.notify()
}

// Pace holds the transaction path back while this process's indexer is
// behind (events journalled here and not yet in the log): past half of
// limit by a share of the transaction's events' indexing time (see pacer),
// and at limit events or more until the backlog is below limit; after
// maxWait at most, or when ctx ends. It says how long it waited. Called
// after the commit of a transaction of events and before its answer, it
// makes the homeserver send no faster than the log takes events in, so the
// journal stays bounded under a sustained push instead of growing for as
// long as the push lasts; the homeserver keeps what it has not sent. limit
// 0 (or a process that does not index): no wait.
func (l *Log) Pace(ctx context.Context, events, limit int, maxWait time.Duration) time.Duration {
	if limit <= 0 {
		return 0
	}
	share := l.handoff.paceDelay(events, limit)
	pending, changed := l.handoff.backlog()
	if share == 0 && pending < limit {
		return 0
	}
	start := time.Now()
	timer := time.NewTimer(maxWait)
	defer timer.Stop()
	if share > 0 {
		slot := time.NewTimer(share)
		defer slot.Stop()
		select {
		case <-slot.C:
		case <-timer.C:
			return time.Since(start)
		case <-ctx.Done():
			return time.Since(start)
		}
		pending, changed = l.handoff.backlog()
	}
	for pending >= limit {
		select {
		case <-changed:
		case <-timer.C:
			return time.Since(start)
		case <-ctx.Done():
			return time.Since(start)
		}
		pending, changed = l.handoff.backlog()
	}
	return time.Since(start)
}

// JournalParsed is Journal for a caller that has parsed the body already
// (the transaction path): events must be what the indexer's parser returns
// for body. When this process runs the indexer it indexes them without
// reading the body back or parsing it again. Neither body nor events may be
// changed by the caller afterwards.
func (l *Log) JournalParsed(ctx context.Context, txnID string, body []byte, events []IncomingEvent) error {
	seq, err := l.journalRow(ctx, txnID, body)
	if err != nil {
		return err
	}
	l.handoff.put(seq, body, events)
	l.journal.wakeIndexer()
	if l.db.Dialect == dbutil.Postgres {
		l.journal.notifyJournalled(ctx)
	}
	return nil
}

// readBodies fills in the bodies of rows not handed off, in one query.
func (l *Log) readBodies(ctx context.Context, rows []journalRow) error {
	var seqs []any
	var marks []string
	missing := make(map[int64]*journalRow)
	for i := range rows {
		if entry, ok := l.handoff.take(rows[i].seq); ok {
			rows[i].handed = &entry
			continue
		}
		seqs = append(seqs, rows[i].seq)
		marks = append(marks, fmt.Sprintf("$%d", len(seqs)))
		missing[rows[i].seq] = &rows[i]
	}
	if len(seqs) == 0 {
		return nil
	}
	res, err := l.db.Query(ctx, `SELECT seq, body FROM txn_journal WHERE seq IN (`+strings.Join(marks, ", ")+`)`, seqs...)
	if err != nil {
		return fmt.Errorf("failed to read journalled bodies: %w", err)
	}
	defer res.Close()
	for res.Next() {
		var seq int64
		var body string
		if err = res.Scan(&seq, &body); err != nil {
			return fmt.Errorf("failed to read journalled bodies: %w", err)
		}
		if row := missing[seq]; row != nil {
			row.body, row.hasBody = body, true
		}
	}
	if err = res.Err(); err != nil {
		return fmt.Errorf("failed to read journalled bodies: %w", err)
	}
	return nil
}
