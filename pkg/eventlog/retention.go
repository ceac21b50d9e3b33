package eventlog

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/daarion/matrix-bridge/pkg/leader"
)

// pruneBatch bounds how many events one prune deletes, so that it never
// holds the log for long.
const pruneBatch = 5000

// Prune deletes events at or below upTo (a position every consumer has
// passed) that were received before `before`, oldest first, at most
// pruneBatch of them; the newest event is always kept, so that positions
// and the head survive. It records how far the log is pruned (PrunedThrough)
// in the same transaction, fenced like every leader-only write, and returns
// how many events it deleted.
func (l *Log) Prune(ctx context.Context, upTo int64, before time.Time) (int64, error) {
	var deleted int64
	err := l.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		if err := leader.Check(ctx, l.db); err != nil {
			return err
		}
		var through sql.NullInt64
		err := l.db.QueryRow(ctx, `
			SELECT MAX(position) FROM (
				SELECT position FROM event_log
				WHERE position <= $1 AND received_at < $2 AND position < (SELECT MAX(position) FROM event_log)
				ORDER BY position LIMIT $3
			) AS batch`, upTo, before.UnixMilli(), pruneBatch).Scan(&through)
		if err != nil || !through.Valid {
			return err
		}
		res, err := l.db.Exec(ctx, `DELETE FROM event_log WHERE position <= $1`, through.Int64)
		if err != nil {
			return err
		}
		if deleted, err = res.RowsAffected(); err != nil {
			return err
		}
		_, err = l.db.Exec(ctx, `
			INSERT INTO log_retention (name, pruned_through) VALUES ('event_log', $1)
			ON CONFLICT (name) DO UPDATE SET pruned_through = excluded.pruned_through`, through.Int64)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("failed to prune the event log: %w", err)
	}
	return deleted, nil
}

// PrunedThrough is the highest position Prune has deleted (0: none): a
// reader that has seen only up to it has missed events that are gone.
func (l *Log) PrunedThrough(ctx context.Context) (int64, error) {
	var through int64
	err := l.db.QueryRow(ctx, `SELECT pruned_through FROM log_retention WHERE name = 'event_log'`).Scan(&through)
	if err == sql.ErrNoRows {
		return 0, nil
	} else if err != nil {
		return 0, fmt.Errorf("failed to read how far the event log is pruned: %w", err)
	}
	return through, nil
}

// PruneTransactions deletes the records of transaction ids last seen before
// `before`.
func (l *Log) PruneTransactions(ctx context.Context, before time.Time) (int64, error) {
	deleted, err := leader.Exec(ctx, l.db, `DELETE FROM as_transaction WHERE last_seen_at < $1`, before.UnixMilli())
	if err != nil {
		return 0, fmt.Errorf("failed to prune transaction records: %w", err)
	}
	return deleted, nil
}

// MinCursor is the lowest position of the named consumers' cursors: every
// one of them has passed it.
func (l *Log) MinCursor(ctx context.Context, consumers []string) (int64, error) {
	low := int64(-1)
	for _, name := range consumers {
		pos, err := l.Cursor(ctx, name)
		if err != nil {
			return 0, err
		}
		if low < 0 || pos < low {
			low = pos
		}
	}
	return max(low, 0), nil
}
