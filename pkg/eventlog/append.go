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

// eventParams is how many query parameters each event takes; each
// transaction in a statement adds transactionParams more.
const (
	eventParams       = 6
	transactionParams = 2
)

// eventsPerInsert bounds the rows of one event insert. Measured on
// PostgreSQL (pg_stat_statements, 100-event transactions at full speed): in
// inserts of 1,000 rows a row took 9.6 µs to execute, in inserts of 100 6.6
// µs (a single row 17 µs); the 2,000-event commit's half a megabyte of WAL
// no longer fits PostgreSQL's WAL buffers in one statement.
const eventsPerInsert = 100

// recordParams is how many query parameters a transaction's record takes;
// transactionsPerRecord bounds the rows of one as_transaction upsert
// (SQLite allows 32766 parameters).
const (
	recordParams          = 6
	transactionsPerRecord = 1000
)

// pendingTransaction is a journalled transaction's events on their way into
// the log.
type pendingTransaction struct {
	txnID      string
	receivedAt int64
	events     []IncomingEvent
	stored     int // how many of events were new to the log
}

// chunkEvent is one event of an insert, with the transaction it came in.
type chunkEvent struct {
	evt *IncomingEvent
	txn *pendingTransaction
}

// buildInsertQuery is the insert of chunk's events, each row naming its
// transaction's id and receipt time once per transaction in args; it returns
// the query and its arguments. The same SQL serves both dialects (dbutil
// rewrites $n for SQLite).
func buildInsertQuery(chunk []chunkEvent) (string, []any) {
	var b strings.Builder
	b.Grow(128 + len(chunk)*48)
	b.WriteString(`INSERT INTO event_log (event_id, kind, room_id, event_type, sender, txn_id, received_at, event_json) VALUES `)
	args := make([]any, 0, len(chunk)*eventParams+transactionParams)
	var txn *pendingTransaction
	txnParam := 0
	for i, ce := range chunk {
		if ce.txn != txn {
			txn = ce.txn
			args = append(args, txn.txnID, txn.receivedAt)
			txnParam = len(args) - 1
		}
		if i > 0 {
			b.WriteString(", ")
		}
		evt := ce.evt
		args = append(args, evt.EventID, string(evt.Kind), evt.RoomID, evt.Type, evt.Sender, evt.JSON)
		p := len(args) - eventParams + 1
		fmt.Fprintf(&b, "($%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d)", p, p+1, p+2, p+3, p+4, txnParam, txnParam+1, p+5)
	}
	b.WriteString(" ON CONFLICT (event_id) DO NOTHING RETURNING position, event_id")
	return b.String(), args
}

// recordTransactionsQuery records transaction ids, counting attempts: a
// batch can hold one id twice (the homeserver retried it before the first
// was indexed), so recordTransactions folds each id to one row first (an
// upsert may not touch a row twice).
func recordTransactionsQuery(n int) string {
	var b strings.Builder
	b.WriteString(`INSERT INTO as_transaction (txn_id, first_seen_at, last_seen_at, attempts, event_count, stored_count) VALUES `)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		p := 1 + i*recordParams
		fmt.Fprintf(&b, "($%d, $%d, $%d, $%d, $%d, $%d)", p, p+1, p+2, p+3, p+4, p+5)
	}
	b.WriteString(`
	ON CONFLICT (txn_id) DO UPDATE SET
		last_seen_at = excluded.last_seen_at,
		attempts     = as_transaction.attempts + excluded.attempts,
		event_count  = excluded.event_count,
		stored_count = as_transaction.stored_count + excluded.stored_count`)
	return b.String()
}

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

// insertTransactions stores the events of several transactions, in their
// order, and records their ids, inside the database transaction in ctx: one
// insert per eventsPerInsert events and one record per transactionsPerRecord transactions,
// whatever the transactions' sizes (a backlog of 1-event transactions costs
// two statements a batch, not two a transaction). It returns the events that
// were new, as stored (with their positions), for the in-memory tail, and
// sets each transaction's stored count.
func (l *Log) insertTransactions(ctx context.Context, txns []*pendingTransaction) ([]*Event, error) {
	var added []*Event
	chunk := make([]chunkEvent, 0, eventsPerInsert)
	flush := func() error {
		if len(chunk) == 0 {
			return nil
		}
		query, args := buildInsertQuery(chunk)
		rows, err := l.db.Query(ctx, query, args...)
		inserted, err := dbutil.NewRowIterWithError(rows, scanInserted, err).AsList()
		if err != nil {
			return fmt.Errorf("failed to insert events: %w", err)
		}
		added = appendInserted(added, chunk, inserted)
		chunk = chunk[:0]
		return nil
	}
	for _, txn := range txns {
		for i := range txn.events {
			if chunk = append(chunk, chunkEvent{&txn.events[i], txn}); len(chunk) == eventsPerInsert {
				if err := flush(); err != nil {
					return nil, err
				}
			}
		}
	}
	if err := flush(); err != nil {
		return nil, err
	}
	if err := l.recordTransactions(ctx, txns); err != nil {
		return nil, err
	}
	return added, nil
}

// recordTransactions upserts the as_transaction rows of txns: per id, the
// first receipt, the last, the number of attempts in txns, the last
// attempt's event count and the events stored.
func (l *Log) recordTransactions(ctx context.Context, txns []*pendingTransaction) error {
	type record struct {
		first, last              int64
		attempts, events, stored int
	}
	order := make([]string, 0, len(txns))
	records := make(map[string]*record, len(txns))
	for _, txn := range txns {
		r := records[txn.txnID]
		if r == nil {
			r = &record{first: txn.receivedAt}
			records[txn.txnID] = r
			order = append(order, txn.txnID)
		}
		r.last = txn.receivedAt
		r.attempts++
		r.events = len(txn.events)
		r.stored += txn.stored
	}
	for start := 0; start < len(order); start += transactionsPerRecord {
		ids := order[start:min(start+transactionsPerRecord, len(order))]
		args := make([]any, 0, len(ids)*recordParams)
		for _, txnID := range ids {
			r := records[txnID]
			args = append(args, txnID, r.first, r.last, r.attempts, r.events, r.stored)
		}
		if _, err := l.db.Exec(ctx, recordTransactionsQuery(len(ids)), args...); err != nil {
			return fmt.Errorf("failed to record %d transactions: %w", len(ids), err)
		}
	}
	return nil
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
// insert returned, to added, and counts them in their transactions. The
// insert skips ids the log already holds (and the second of an id twice in
// chunk), so the rows are matched to the chunk by event id, first
// occurrence.
func appendInserted(added []*Event, chunk []chunkEvent, inserted []insertedRow) []*Event {
	if len(inserted) == 0 {
		return added
	}
	positions := make(map[string]int64, len(inserted))
	for _, r := range inserted {
		positions[r.eventID] = r.position
	}
	for _, ce := range chunk {
		in := ce.evt
		pos, ok := positions[in.EventID]
		if !ok {
			continue
		}
		delete(positions, in.EventID)
		ce.txn.stored++
		added = append(added, &Event{
			Position: pos, EventID: in.EventID, Kind: in.Kind, RoomID: in.RoomID, Type: in.Type,
			Sender: in.Sender, TxnID: ce.txn.txnID, ReceivedAt: time.UnixMilli(ce.txn.receivedAt), JSON: json.RawMessage(in.JSON),
		})
	}
	return added
}
