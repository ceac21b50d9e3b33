package consumer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mau.fi/util/dbutil"

	"github.com/daarion/matrix-bridge/pkg/homeserver"
	"github.com/daarion/matrix-bridge/pkg/leader"
)

// Permanent marks err as a failure that handling the event again cannot fix
// (undecodable input, a refusal for good): the runner parks the event and
// moves on instead of retrying it.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// IsPermanent reports whether a handler's error is permanent: marked with
// Permanent, or a homeserver refusal for good (homeserver.Permanent: a 4xx
// other than 429). Everything else (network, 5xx, 429, the database) is
// transient and retried with capped backoff.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p) || homeserver.Permanent(err)
}

// ParkedEvent is an event a consumer could not handle for good. It stays in
// the list, with the error, until a retry handles it.
type ParkedEvent struct {
	qh *dbutil.QueryHelper[*ParkedEvent]

	Consumer string    `json:"consumer"`
	Position int64     `json:"position"`
	EventID  string    `json:"event_id"`
	Error    string    `json:"error"`
	ParkedAt time.Time `json:"parked_at"`
	// Attempts counts the handlings that failed, the first included.
	Attempts int `json:"attempts"`
	// RetryRequested is set by a retry request until the leader's runner
	// has handled the event again.
	RetryRequested bool `json:"retry_requested"`
}

func (p *ParkedEvent) Scan(row dbutil.Scannable) (*ParkedEvent, error) {
	var parkedAt int64
	err := row.Scan(&p.Consumer, &p.Position, &p.EventID, &p.Error, &parkedAt, &p.Attempts, &p.RetryRequested)
	if err != nil {
		return nil, err
	}
	p.ParkedAt = time.UnixMilli(parkedAt)
	return p, nil
}

// maxErrorBytes bounds the error text kept with a parked event.
const maxErrorBytes = 2000

// ParkedStore is the parked_event table: the events each consumer parked.
type ParkedStore struct {
	qh *dbutil.QueryHelper[*ParkedEvent]
}

// NewParkedStore returns the parked list in db.
func NewParkedStore(db *dbutil.Database) *ParkedStore {
	return &ParkedStore{qh: dbutil.MakeQueryHelper(db, func(qh *dbutil.QueryHelper[*ParkedEvent]) *ParkedEvent {
		return &ParkedEvent{qh: qh}
	})}
}

const (
	parkedColumns = `consumer, position, event_id, error, parked_at, attempts, retry_requested`
	parkQuery     = `
		INSERT INTO parked_event (` + parkedColumns + `) VALUES ($1, $2, $3, $4, $5, 1, false)
		ON CONFLICT (consumer, position) DO UPDATE
		SET error = excluded.error, attempts = parked_event.attempts + 1, retry_requested = false`
	listParkedQuery = `
		SELECT ` + parkedColumns + ` FROM parked_event
		WHERE ($1 = '' OR consumer = $1) AND (consumer > $2 OR consumer = $2 AND position > $3)
		ORDER BY consumer, position LIMIT $4`
	retryingQuery     = `SELECT ` + parkedColumns + ` FROM parked_event WHERE consumer = $1 AND retry_requested ORDER BY position LIMIT $2`
	requestRetryQuery = `UPDATE parked_event SET retry_requested = true WHERE consumer = $1 AND ($2 = 0 OR position = $2)`
	unparkQuery       = `DELETE FROM parked_event WHERE consumer = $1 AND position = $2`
	countParkedQuery  = `SELECT consumer, COUNT(*) FROM parked_event GROUP BY consumer`
	getParkedQuery    = `SELECT ` + parkedColumns + ` FROM parked_event WHERE consumer = $1 AND position = $2`
)

// Park records that consumer could not handle the event at position, or,
// for an event parked before, that a retry failed again.
func (s *ParkedStore) Park(ctx context.Context, consumer string, position int64, eventID string, cause error) error {
	text := cause.Error()
	if len(text) > maxErrorBytes {
		text = text[:maxErrorBytes]
	}
	// Fenced: a leader back from a freeze must not park what its successor
	// may have handled.
	err := leader.Fenced(ctx, s.qh.GetDB(), func(ctx context.Context) error {
		return s.qh.Exec(ctx, parkQuery, consumer, position, eventID, text, time.Now().UnixMilli())
	})
	if err != nil {
		return fmt.Errorf("failed to park event %d of consumer %s: %w", position, consumer, err)
	}
	return nil
}

// ListOptions page the parked list: by consumer, then position.
type ListOptions struct {
	Consumer      string // "" for every consumer
	AfterConsumer string
	AfterPosition int64
	Limit         int
}

// List returns parked events in (consumer, position) order.
func (s *ParkedStore) List(ctx context.Context, opts ListOptions) ([]*ParkedEvent, error) {
	if opts.Limit <= 0 {
		opts.Limit = 100
	}
	list, err := s.qh.QueryMany(ctx, listParkedQuery, opts.Consumer, opts.AfterConsumer, opts.AfterPosition, opts.Limit)
	if err != nil {
		return nil, fmt.Errorf("failed to list parked events: %w", err)
	}
	return list, nil
}

// Get returns one parked event, nil when there is none.
func (s *ParkedStore) Get(ctx context.Context, consumer string, position int64) (*ParkedEvent, error) {
	p, err := s.qh.QueryOne(ctx, getParkedQuery, consumer, position)
	if err != nil {
		return nil, fmt.Errorf("failed to look up parked event %d of %s: %w", position, consumer, err)
	}
	return p, nil
}

// RequestRetry flags a consumer's parked event (position 0: all of them) to
// be handled again by the leader; it returns how many were flagged.
func (s *ParkedStore) RequestRetry(ctx context.Context, consumer string, position int64) (int64, error) {
	res, err := s.qh.GetDB().Exec(ctx, requestRetryQuery, consumer, position)
	if err != nil {
		return 0, fmt.Errorf("failed to request a retry of parked events of %s: %w", consumer, err)
	}
	return res.RowsAffected()
}

// retrying returns a consumer's parked events flagged for a retry.
func (s *ParkedStore) retrying(ctx context.Context, consumer string, limit int) ([]*ParkedEvent, error) {
	return s.qh.QueryMany(ctx, retryingQuery, consumer, limit)
}

// unpark removes an event a retry has handled.
func (s *ParkedStore) unpark(ctx context.Context, consumer string, position int64) error {
	return s.qh.Exec(ctx, unparkQuery, consumer, position)
}

// Counts returns how many events each consumer has parked.
func (s *ParkedStore) Counts(ctx context.Context) (map[string]int64, error) {
	rows, err := s.qh.GetDB().Query(ctx, countParkedQuery)
	if err != nil {
		return nil, fmt.Errorf("failed to count parked events: %w", err)
	}
	counts := map[string]int64{}
	for rows.Next() {
		var name string
		var n int64
		if err = rows.Scan(&name, &n); err != nil {
			_ = rows.Close()
			return nil, err
		}
		counts[name] = n
	}
	return counts, rows.Close()
}
