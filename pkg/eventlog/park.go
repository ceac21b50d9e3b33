package eventlog

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/lib/pq"
	"github.com/lib/pq/pqerror"
	"github.com/mattn/go-sqlite3"
	"go.mau.fi/util/dbutil"
)

// ParkedTransaction is a journalled transaction the indexer could not move
// into the log: the database refused it for its data, or it no longer
// parses. It is kept whole, with the error, so nothing is lost; its events
// are not in the log. An operator replays it by inserting it into
// txn_journal again once the cause is fixed.
type ParkedTransaction struct {
	// Seq is the row's position in the journal.
	Seq        int64
	TxnID      string
	ReceivedAt time.Time
	Body       string
	Error      string
	ParkedAt   time.Time
}

func (p *ParkedTransaction) Scan(row dbutil.Scannable) (*ParkedTransaction, error) {
	var receivedAt, parkedAt int64
	err := row.Scan(&p.Seq, &p.TxnID, &receivedAt, &p.Body, &p.Error, &parkedAt)
	if err != nil {
		return nil, err
	}
	p.ReceivedAt = time.UnixMilli(receivedAt)
	p.ParkedAt = time.UnixMilli(parkedAt)
	return p, nil
}

const (
	parkTransactionQuery = `
		INSERT INTO parked_transaction (seq, txn_id, received_at, body, error, parked_at)
		VALUES ($1, $2, $3, $4, $5, $6)
	`
	listParkedTransactionsQuery = `
		SELECT seq, txn_id, received_at, body, error, parked_at FROM parked_transaction ORDER BY seq
	`
)

// ParkedTransactions lists the parked journal rows, oldest first.
func (l *Log) ParkedTransactions(ctx context.Context) ([]*ParkedTransaction, error) {
	rows, err := l.db.Query(ctx, listParkedTransactionsQuery)
	parked, err := dbutil.NewRowIterWithError(rows, func(row dbutil.Scannable) (*ParkedTransaction, error) {
		return (&ParkedTransaction{}).Scan(row)
	}, err).AsList()
	if err != nil {
		return nil, fmt.Errorf("failed to list parked transactions: %w", err)
	}
	return parked, nil
}

// insertParked copies a journal row into parked_transaction, inside the
// database transaction in ctx, if any; the caller deletes it from the journal.
func (l *Log) insertParked(ctx context.Context, row journalRow, cause error) error {
	_, err := l.db.Exec(ctx, parkTransactionQuery,
		row.seq, row.txnID, row.receivedAt, row.text(), cause.Error(), time.Now().UnixMilli())
	if err != nil {
		return fmt.Errorf("failed to park journalled transaction %d: %w", row.seq, err)
	}
	return nil
}

// park moves a journal row the database refused into parked_transaction, in
// one database transaction.
func (l *Log) park(ctx context.Context, row journalRow, cause error) error {
	return l.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		if err := l.insertParked(ctx, row, cause); err != nil {
			return err
		}
		if _, err := l.db.Exec(ctx, `DELETE FROM txn_journal WHERE seq = $1`, row.seq); err != nil {
			return fmt.Errorf("failed to clear parked journal row %d: %w", row.seq, err)
		}
		return nil
	})
}

// refusedForData reports whether the database refused a write for the data
// it was given, so that writing the same data again must fail again: a data
// exception (a value too long or badly encoded), a constraint violation or a
// size limit (an index entry too large). Anything else (a lost connection, a
// timeout, a lock, a full disk, a bug in the SQL) may pass on a retry and is
// not a reason to park.
func refusedForData(err error) bool {
	if pqErr, ok := errors.AsType[*pq.Error](err); ok {
		switch pqErr.Code.Class() {
		case pqerror.ClassDataException, pqerror.ClassIntegrityConstraintViolation, pqerror.ClassProgramLimitExceeded:
			return true
		}
		return false
	}
	if sqlErr, ok := errors.AsType[sqlite3.Error](err); ok {
		switch sqlErr.Code {
		case sqlite3.ErrConstraint, sqlite3.ErrTooBig, sqlite3.ErrMismatch:
			return true
		}
	}
	return false
}

// ParkedTransactionCount counts the journal rows the indexer parked.
func (l *Log) ParkedTransactionCount(ctx context.Context) (int64, error) {
	return l.count(ctx, `SELECT COUNT(*) FROM parked_transaction`, "parked transactions")
}
