package eventlog

import (
	"context"
	"fmt"
	"strings"

	"go.mau.fi/util/dbutil"
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

// eventParams is how many query parameters each event takes.
const eventParams = 6

func eventArgs(args []any, evt *IncomingEvent) []any {
	return append(args, evt.EventID, string(evt.Kind), evt.RoomID, evt.Type, evt.Sender, evt.JSON)
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

// lockAppends takes, on PostgreSQL, the transaction-level lock that
// serialises appends across processes sharing the database.
func (l *Log) lockAppends(ctx context.Context) error {
	if l.db.Dialect != dbutil.Postgres {
		return nil
	}
	if _, err := l.db.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(appendLockKey)); err != nil {
		return fmt.Errorf("failed to take the append lock: %w", err)
	}
	return nil
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
