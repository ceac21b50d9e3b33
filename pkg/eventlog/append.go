package eventlog

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"sync"
)

// appendLockKey is the PostgreSQL advisory lock that serialises appends across
// bridge processes sharing one database, so that positions become visible in
// order: a consumer that has read up to position P never later finds a
// smaller position committed behind it.
const appendLockKey = 0x44414152494f4e // "DAARION"

// upsertTransactionTail records a transaction id, counting attempts.
const upsertTransactionTail = `
	ON CONFLICT (txn_id) DO UPDATE SET
		last_seen_at = excluded.last_seen_at,
		attempts     = as_transaction.attempts + 1,
		event_count  = excluded.event_count,
		stored_count = as_transaction.stored_count + excluded.stored_count
`

const recordEmptyTransactionQuery = `
	INSERT INTO as_transaction (txn_id, first_seen_at, last_seen_at, attempts, event_count, stored_count)
	VALUES ($1, $2, $2, 1, 0, 0)
` + upsertTransactionTail

// eventParams is how many query parameters each event takes.
const eventParams = 6

func eventArgs(args []any, evt *IncomingEvent) []any {
	return append(args, evt.EventID, string(evt.Kind), evt.RoomID, evt.Type, evt.Sender, evt.JSON)
}

// pgAppender stores a whole transaction in one statement, one round trip:
// the advisory lock, the event insert and the transaction record are CTEs of
// a single autocommit statement. Statements are prepared per event count so
// that the server does not re-plan a 600-parameter statement on every call.
type pgAppender struct {
	db    *sql.DB
	mu    sync.Mutex
	stmts map[int]*sql.Stmt
}

// maxPreparedEventCount bounds the statement cache; homeservers send at most
// 100 timeline and 100 ephemeral events per transaction.
const maxPreparedEventCount = 256

func newPGAppender(db *sql.DB) *pgAppender {
	return &pgAppender{db: db, stmts: make(map[int]*sql.Stmt)}
}

func buildPGAppendQuery(n int) string {
	var b strings.Builder
	b.WriteString(`WITH lock AS (SELECT pg_advisory_xact_lock(` + strconv.Itoa(appendLockKey) + `)),
ins AS (
	INSERT INTO event_log (event_id, kind, room_id, event_type, sender, txn_id, received_at, event_json)
	SELECT v.event_id, v.kind, v.room_id, v.event_type, v.sender, $1::text, $2::bigint, v.event_json
	FROM lock, (VALUES `)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		// The ordinal is a literal so that rows get positions in transaction order.
		b.WriteString("(" + strconv.Itoa(i))
		for j := 0; j < eventParams; j++ {
			b.WriteString(", $" + strconv.Itoa(4+i*eventParams+j))
		}
		b.WriteString(")")
	}
	b.WriteString(`) AS v(ord, event_id, kind, room_id, event_type, sender, event_json)
	ORDER BY v.ord
	ON CONFLICT (event_id) DO NOTHING
	RETURNING 1
),
stored AS (SELECT COUNT(*) AS n FROM ins),
txn AS (
	INSERT INTO as_transaction (txn_id, first_seen_at, last_seen_at, attempts, event_count, stored_count)
	SELECT $1::text, $2::bigint, $2::bigint, 1, $3::integer, stored.n FROM stored
` + upsertTransactionTail + `
)
SELECT n FROM stored`)
	return b.String()
}

func (pa *pgAppender) stmt(ctx context.Context, n int) (*sql.Stmt, error) {
	pa.mu.Lock()
	defer pa.mu.Unlock()
	if stmt, ok := pa.stmts[n]; ok {
		return stmt, nil
	}
	stmt, err := pa.db.PrepareContext(ctx, buildPGAppendQuery(n))
	if err != nil {
		return nil, fmt.Errorf("failed to prepare append statement for %d events: %w", n, err)
	}
	pa.stmts[n] = stmt
	return stmt, nil
}

func (pa *pgAppender) append(ctx context.Context, txnID string, now int64, events []IncomingEvent) (int, error) {
	if len(events) == 0 {
		_, err := pa.db.ExecContext(ctx, recordEmptyTransactionQuery, txnID, now)
		return 0, err
	}
	args := make([]any, 0, 3+len(events)*eventParams)
	args = append(args, txnID, now, len(events))
	for i := range events {
		args = eventArgs(args, &events[i])
	}
	var stored int
	var err error
	if len(events) <= maxPreparedEventCount {
		var stmt *sql.Stmt
		if stmt, err = pa.stmt(ctx, len(events)); err != nil {
			return 0, err
		}
		err = stmt.QueryRowContext(ctx, args...).Scan(&stored)
	} else {
		err = pa.db.QueryRowContext(ctx, buildPGAppendQuery(len(events)), args...).Scan(&stored)
	}
	return stored, err
}

func (pa *pgAppender) close() error {
	pa.mu.Lock()
	defer pa.mu.Unlock()
	for n, stmt := range pa.stmts {
		_ = stmt.Close()
		delete(pa.stmts, n)
	}
	return nil
}

// sqliteChunk bounds the rows of one INSERT: SQLite allows 32766 parameters.
const sqliteChunk = 1000

func buildSQLiteInsertQuery(n int) string {
	var b strings.Builder
	b.WriteString(`INSERT INTO event_log (event_id, kind, room_id, event_type, sender, txn_id, received_at, event_json) VALUES `)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		p := 3 + i*eventParams
		fmt.Fprintf(&b, "($%d, $%d, $%d, $%d, $%d, $1, $2, $%d)", p, p+1, p+2, p+3, p+4, p+5)
	}
	b.WriteString(" ON CONFLICT (event_id) DO NOTHING")
	return b.String()
}

const recordSQLiteTransactionQuery = `
	INSERT INTO as_transaction (txn_id, first_seen_at, last_seen_at, attempts, event_count, stored_count)
	VALUES ($1, $2, $2, 1, $3, $4)
` + upsertTransactionTail

// appendSQLite stores a transaction in one SQLite write transaction. SQLite
// has one writer at a time, so positions are handed out in commit order.
func (l *Log) appendSQLite(ctx context.Context, txnID string, now int64, events []IncomingEvent) (int, error) {
	stored := 0
	err := l.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		var err error
		stored, err = l.insertTransaction(ctx, txnID, now, events)
		return err
	})
	return stored, err
}

// insertTransaction stores a transaction's events and records its id,
// inside the database transaction in ctx. The same SQL serves both dialects
// (dbutil rewrites $n for SQLite). It returns how many events were new.
func (l *Log) insertTransaction(ctx context.Context, txnID string, receivedAt int64, events []IncomingEvent) (int, error) {
	stored := 0
	for start := 0; start < len(events); start += sqliteChunk {
		chunk := events[start:min(start+sqliteChunk, len(events))]
		args := make([]any, 0, 2+len(chunk)*eventParams)
		args = append(args, txnID, receivedAt)
		for i := range chunk {
			args = eventArgs(args, &chunk[i])
		}
		res, err := l.db.Exec(ctx, buildSQLiteInsertQuery(len(chunk)), args...)
		if err != nil {
			return 0, fmt.Errorf("failed to insert events: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return 0, fmt.Errorf("failed to count inserted events: %w", err)
		}
		stored += int(n)
	}
	if _, err := l.db.Exec(ctx, recordSQLiteTransactionQuery, txnID, receivedAt, len(events), stored); err != nil {
		return 0, fmt.Errorf("failed to record transaction: %w", err)
	}
	return stored, nil
}
