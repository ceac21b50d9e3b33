package eventlog

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

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
	b.WriteString(" ON CONFLICT (event_id) DO NOTHING RETURNING position, event_id")
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
// (dbutil rewrites $n for SQLite). It returns the events that were new, as
// stored (with their positions), for the in-memory tail.
func (l *Log) insertTransaction(ctx context.Context, txnID string, receivedAt int64, events []IncomingEvent) ([]*Event, error) {
	var added []*Event
	for start := 0; start < len(events); start += sqliteChunk {
		chunk := events[start:min(start+sqliteChunk, len(events))]
		args := make([]any, 0, 2+len(chunk)*eventParams)
		args = append(args, txnID, receivedAt)
		for i := range chunk {
			args = eventArgs(args, &chunk[i])
		}
		rows, err := l.db.Query(ctx, buildSQLiteInsertQuery(len(chunk)), args...)
		inserted, err := dbutil.NewRowIterWithError(rows, scanInserted, err).AsList()
		if err != nil {
			return nil, fmt.Errorf("failed to insert events: %w", err)
		}
		added = appendInserted(added, chunk, inserted, txnID, receivedAt)
	}
	if _, err := l.db.Exec(ctx, recordSQLiteTransactionQuery, txnID, receivedAt, len(events), len(added)); err != nil {
		return nil, fmt.Errorf("failed to record transaction: %w", err)
	}
	return added, nil
}

// insertedRow is what the insert returns of each row it stored.
type insertedRow struct {
	position int64
	eventID  string
}

func scanInserted(row dbutil.Scannable) (r insertedRow, err error) {
	err = row.Scan(&r.position, &r.eventID)
	return r, err
}

// appendInserted appends the stored events of chunk, with the positions the
// insert returned, to added. The insert skips ids the log already holds
// (and the second of an id twice in chunk), so the rows are matched to the
// chunk by event id, first occurrence.
func appendInserted(added []*Event, chunk []IncomingEvent, inserted []insertedRow, txnID string, receivedAt int64) []*Event {
	if len(inserted) == 0 {
		return added
	}
	positions := make(map[string]int64, len(inserted))
	for _, r := range inserted {
		positions[r.eventID] = r.position
	}
	at := time.UnixMilli(receivedAt)
	for i := range chunk {
		in := &chunk[i]
		pos, ok := positions[in.EventID]
		if !ok {
			continue
		}
		delete(positions, in.EventID)
		added = append(added, &Event{
			Position: pos, EventID: in.EventID, Kind: in.Kind, RoomID: in.RoomID, Type: in.Type,
			Sender: in.Sender, TxnID: txnID, ReceivedAt: at, JSON: json.RawMessage(in.JSON),
		})
	}
	return added
}
