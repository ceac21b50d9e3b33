package eventlog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.mau.fi/util/dbutil"

	"github.com/daarion/matrix-bridge/pkg/leader"
)

// Log is the durable event log.
type Log struct {
	db *dbutil.Database

	// appendMu serialises the indexer's commits inside this process. Only
	// one indexer runs at a time anyway, and waiting here is cheaper than
	// waiting on a database lock.
	appendMu sync.Mutex
	// sqliteWrites, on SQLite, queues this process's busiest writers —
	// the transaction path's journal insert, the indexer's commit, cursor
	// saves — in Go: SQLite has one writer at a time, and a writer that finds
	// the lock taken polls for it, sleeping 1, 2, 5, 10, … 100 ms between
	// tries (its busy handler), so a 4 ms wait became 10 or 25. A writer
	// queued here takes the lock the moment the last one lets go. (A
	// channel of one, not a mutex, so that a wait ends with its context.)
	sqliteWrites chan struct{}
	journal      *journal
	// tail holds the newest events while this process indexes (see tail);
	// handoff the transaction path's parsed events for the indexer.
	tail    tail
	handoff handoff

	changed *notifier
}

// New returns the log stored in db (already upgraded).
func New(db *dbutil.Database) *Log {
	l := &Log{db: db, changed: newNotifier(), journal: &journal{db: db, wake: make(chan struct{}, 1)}, sqliteWrites: make(chan struct{}, 1)}
	return l
}

// sqliteWrite queues a write on SQLite (see sqliteWrites) until its turn
// or ctx's end; the returned function lets the next one go. Nothing on
// PostgreSQL.
func (l *Log) sqliteWrite(ctx context.Context) (func(), error) {
	if l.db.Dialect != dbutil.SQLite {
		return func() {}, nil
	}
	select {
	case l.sqliteWrites <- struct{}{}:
		return func() { <-l.sqliteWrites }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for SQLite's writer: %w", ctx.Err())
	}
}

// Close releases prepared statements.
func (l *Log) Close() error {
	l.journal.prepMu.Lock()
	if l.journal.insert != nil {
		_ = l.journal.insert.Close()
		l.journal.insert = nil
	}
	l.journal.prepMu.Unlock()
	return nil
}

// Changed returns a channel that is closed when events are next appended by
// this process. Take it before reading the log so no append is missed.
func (l *Log) Changed() <-chan struct{} {
	return l.changed.wait()
}

const readEventsQuery = `
	SELECT position, event_id, kind, room_id, event_type, sender, txn_id, received_at, event_json
	FROM event_log WHERE position > $1 ORDER BY position LIMIT $2
`

// Read returns up to limit events after position, in log order: from the
// in-memory tail when this process indexes and after is in its range, else
// from the database.
func (l *Log) Read(ctx context.Context, after int64, limit int) ([]*Event, error) {
	if events, ok := l.tail.read(after, limit); ok {
		return events, nil
	}
	rows, err := l.db.Query(ctx, readEventsQuery, after, limit)
	events, err := dbutil.NewRowIterWithError(rows, scanEvent, err).AsList()
	if err != nil {
		return nil, fmt.Errorf("failed to read the event log after position %d: %w", after, err)
	}
	return events, nil
}

const lastTimelineEventQuery = `
	SELECT position, event_id, kind, room_id, event_type, sender, txn_id, received_at, event_json
	FROM event_log WHERE position > $1 AND sender = $2 AND event_type = $3 AND kind = 'timeline'
	ORDER BY position DESC LIMIT 1
`

// LastBy returns sender's newest timeline event of eventType among the
// newest `window` positions of the log (a bounded scan), nil when there is
// none.
func (l *Log) LastBy(ctx context.Context, sender, eventType string, window int64) (*Event, error) {
	head, err := l.Head(ctx)
	if err != nil {
		return nil, err
	}
	evt, err := scanEvent(l.db.QueryRow(ctx, lastTimelineEventQuery, head-window, sender, eventType))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("failed to find the last %s of %s in the event log: %w", eventType, sender, err)
	}
	return evt, nil
}

func scanEvent(row dbutil.Scannable) (*Event, error) {
	return (&Event{}).Scan(row)
}

// Head returns the position of the newest event, 0 when the log is empty.
func (l *Log) Head(ctx context.Context) (int64, error) {
	var head sql.NullInt64
	err := l.db.QueryRow(ctx, "SELECT MAX(position) FROM event_log").Scan(&head)
	if err != nil {
		return 0, fmt.Errorf("failed to read the event log head: %w", err)
	}
	return head.Int64, nil
}

// Count returns how many events the log holds.
func (l *Log) Count(ctx context.Context) (int64, error) {
	return l.count(ctx, "SELECT COUNT(*) FROM event_log", "the event log")
}

// count runs a COUNT query; what names the rows counted, for the error.
func (l *Log) count(ctx context.Context, query, what string) (int64, error) {
	var n int64
	if err := l.db.QueryRow(ctx, query).Scan(&n); err != nil {
		return 0, fmt.Errorf("failed to count %s: %w", what, err)
	}
	return n, nil
}

const getTransactionQuery = `
	SELECT txn_id, first_seen_at, last_seen_at, attempts, event_count, stored_count
	FROM as_transaction WHERE txn_id = $1
`

// Transaction returns the audit record of a transaction id, nil when unseen.
func (l *Log) Transaction(ctx context.Context, txnID string) (*Transaction, error) {
	txn, err := (&Transaction{}).Scan(l.db.QueryRow(ctx, getTransactionQuery, txnID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("failed to read transaction %s: %w", txnID, err)
	}
	return txn, nil
}

const (
	getCursorQuery  = `SELECT position FROM consumer_cursor WHERE name = $1`
	saveCursorQuery = `
		INSERT INTO consumer_cursor (name, position, updated_at) VALUES ($1, $2, $3)
		ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at
	`
)

// Cursor returns the saved position of a consumer, 0 when it has none.
func (l *Log) Cursor(ctx context.Context, consumer string) (int64, error) {
	var pos int64
	err := l.db.QueryRow(ctx, getCursorQuery, consumer).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	} else if err != nil {
		return 0, fmt.Errorf("failed to read cursor of consumer %s: %w", consumer, err)
	}
	return pos, nil
}

// SaveCursor records that a consumer has handled everything up to position.
// On PostgreSQL the commit does not wait for the WAL flush
// (synchronous_commit off): only a crash of the database server itself can
// lose it, and then the consumer handles those events again, which its
// at-least-once contract allows; in exchange a consumer never stalls on an
// fsync between batches. Commits are flushed in order, so a later durable
// write (an outbox row) carries the cursor with it.
func (l *Log) SaveCursor(ctx context.Context, consumer string, position int64) error {
	done, err := l.sqliteWrite(ctx)
	if err != nil {
		return fmt.Errorf("failed to save cursor of consumer %s: %w", consumer, err)
	}
	defer done()
	err = l.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		// Fenced: a leader that froze and came back must not move a cursor
		// its successor owns now.
		if err := leader.Check(ctx, l.db); err != nil {
			return err
		}
		if l.db.Dialect == dbutil.Postgres {
			if _, err := l.db.Exec(ctx, "SET LOCAL synchronous_commit = off"); err != nil {
				return err
			}
		}
		_, err := l.db.Exec(ctx, saveCursorQuery, consumer, position, time.Now().UnixMilli())
		return err
	})
	if err != nil {
		return fmt.Errorf("failed to save cursor of consumer %s: %w", consumer, err)
	}
	return nil
}

// knownChunk bounds the ids of one Known or ByEventIDs query (SQLite allows
// 32766 parameters; a reconcile asks about one page of a room at a time).
const knownChunk = 500

// inList returns the placeholders and arguments of an IN list of ids.
func inList(ids []string) (string, []any) {
	args := make([]any, len(ids))
	marks := make([]string, len(ids))
	for i, eventID := range ids {
		args[i] = eventID
		marks[i] = fmt.Sprintf("$%d", i+1)
	}
	return strings.Join(marks, ", "), args
}

// Known returns which of eventIDs the log holds.
func (l *Log) Known(ctx context.Context, eventIDs []string) (map[string]bool, error) {
	known := make(map[string]bool, len(eventIDs))
	for start := 0; start < len(eventIDs); start += knownChunk {
		chunk := eventIDs[start:min(start+knownChunk, len(eventIDs))]
		marks, args := inList(chunk)
		rows, err := l.db.Query(ctx, `SELECT event_id FROM event_log WHERE event_id IN (`+marks+`)`, args...)
		ids, err := dbutil.NewRowIterWithError(rows, dbutil.ScanSingleColumn[string], err).AsList()
		if err != nil {
			return nil, fmt.Errorf("failed to look up %d event ids in the event log: %w", len(chunk), err)
		}
		for _, eventID := range ids {
			known[eventID] = true
		}
	}
	return known, nil
}

const eventsByIDQuery = `
	SELECT position, event_id, kind, room_id, event_type, sender, txn_id, received_at, event_json
	FROM event_log WHERE event_id IN (%s)
`

// ByEventIDs returns the events of eventIDs the log holds, by event id; ids
// it does not hold (never received, or pruned) are absent.
func (l *Log) ByEventIDs(ctx context.Context, eventIDs []string) (map[string]*Event, error) {
	found := make(map[string]*Event, len(eventIDs))
	for start := 0; start < len(eventIDs); start += knownChunk {
		chunk := eventIDs[start:min(start+knownChunk, len(eventIDs))]
		marks, args := inList(chunk)
		rows, err := l.db.Query(ctx, fmt.Sprintf(eventsByIDQuery, marks), args...)
		events, err := dbutil.NewRowIterWithError(rows, scanEvent, err).AsList()
		if err != nil {
			return nil, fmt.Errorf("failed to read %d events by id from the event log: %w", len(chunk), err)
		}
		for _, evt := range events {
			found[evt.EventID] = evt
		}
	}
	return found, nil
}
