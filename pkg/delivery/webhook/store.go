package webhook

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.mau.fi/util/dbutil"

	"github.com/daarion/matrix-bridge/pkg/leader"
)

// Subscription states.
const (
	StateActive   = "active"
	StatePaused   = "paused"
	StateDisabled = "disabled"
)

// Subscription is one webhook receiver and what it wants.
type Subscription struct {
	ID          string
	Service     string
	RoomFilter  string // "*", a room id, or "city:<slug>"
	URL         string
	EventTypes  []string // Matrix or DTO types; empty: all
	Secret      string
	State       string
	StateReason string
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

const subscriptionColumns = `id, service, room_filter, webhook_url, event_types, secret, state, state_reason, created_at, updated_at`

func scanSubscription(row dbutil.Scannable) (*Subscription, error) {
	var s Subscription
	var types string
	var created, updated int64
	if err := row.Scan(&s.ID, &s.Service, &s.RoomFilter, &s.URL, &types, &s.Secret, &s.State, &s.StateReason, &created, &updated); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(types), &s.EventTypes); err != nil {
		return nil, fmt.Errorf("subscription %s has invalid event types: %w", s.ID, err)
	}
	s.CreatedAt, s.UpdatedAt = time.UnixMilli(created), time.UnixMilli(updated)
	return &s, nil
}

// Delivery is one (subscription, event) in the outbox.
type Delivery struct {
	SubscriptionID string
	Position       int64
	RoomID         string
	EventID        string
	Body           []byte
	State          string // pending or dead
	Attempts       int
	NextAttemptAt  time.Time
	FirstFailedAt  time.Time
	LastError      string
}

const deliveryColumns = `subscription_id, position, room_id, event_id, body, state, attempts, next_attempt_at, first_failed_at, last_error`

func scanDelivery(row dbutil.Scannable) (*Delivery, error) {
	var d Delivery
	var body string
	var next int64
	var firstFailed sql.NullInt64
	if err := row.Scan(&d.SubscriptionID, &d.Position, &d.RoomID, &d.EventID, &body, &d.State, &d.Attempts, &next, &firstFailed, &d.LastError); err != nil {
		return nil, err
	}
	d.Body = []byte(body)
	d.NextAttemptAt = time.UnixMilli(next)
	if firstFailed.Valid {
		d.FirstFailedAt = time.UnixMilli(firstFailed.Int64)
	}
	return &d, nil
}

// Store keeps subscriptions and the outbox.
type Store struct{ db *dbutil.Database }

// NewStore returns the store in db.
func NewStore(db *dbutil.Database) *Store { return &Store{db: db} }

// CreateSubscription stores a new subscription.
func (s *Store) CreateSubscription(ctx context.Context, sub *Subscription) error {
	types, _ := json.Marshal(sub.EventTypes)
	now := time.Now()
	sub.CreatedAt, sub.UpdatedAt = now, now
	_, err := s.db.Exec(ctx, `INSERT INTO webhook_subscription (`+subscriptionColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, '', $8, $8)`,
		sub.ID, sub.Service, sub.RoomFilter, sub.URL, string(types), sub.Secret, sub.State, now.UnixMilli())
	if err != nil {
		return fmt.Errorf("failed to store subscription: %w", err)
	}
	return nil
}

// Subscription returns one subscription, nil when unknown.
func (s *Store) Subscription(ctx context.Context, id string) (*Subscription, error) {
	sub, err := scanSubscription(s.db.QueryRow(ctx, `SELECT `+subscriptionColumns+` FROM webhook_subscription WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("failed to read subscription %s: %w", id, err)
	}
	return sub, nil
}

// Subscriptions lists subscriptions, all of them when service is "".
func (s *Store) Subscriptions(ctx context.Context, service string) ([]*Subscription, error) {
	rows, err := s.db.Query(ctx, `SELECT `+subscriptionColumns+` FROM webhook_subscription WHERE $1 = '' OR service = $1 ORDER BY created_at, id`, service)
	list, err := dbutil.NewRowIterWithError(rows, scanSubscription, err).AsList()
	if err != nil {
		return nil, fmt.Errorf("failed to list subscriptions: %w", err)
	}
	return list, nil
}

// CountSubscriptions counts a service's subscriptions.
func (s *Store) CountSubscriptions(ctx context.Context, service string) (int, error) {
	var n int
	if err := s.db.QueryRow(ctx, `SELECT COUNT(*) FROM webhook_subscription WHERE service = $1`, service).Scan(&n); err != nil {
		return 0, fmt.Errorf("failed to count subscriptions: %w", err)
	}
	return n, nil
}

// PruneDeadLetters deletes dead letters that first failed before `before`
// and were not redelivered since.
func (s *Store) PruneDeadLetters(ctx context.Context, before time.Time) (int64, error) {
	var deleted int64
	err := s.fenced(ctx, func(ctx context.Context) error {
		res, err := s.db.Exec(ctx, `DELETE FROM webhook_delivery WHERE state = 'dead' AND first_failed_at < $1`, before.UnixMilli())
		if err != nil {
			return err
		}
		deleted, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("failed to prune dead letters: %w", err)
	}
	return deleted, nil
}

// DeleteSubscription removes a subscription and its outbox.
func (s *Store) DeleteSubscription(ctx context.Context, id string) error {
	_, err := s.db.Exec(ctx, `DELETE FROM webhook_subscription WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("failed to delete subscription %s: %w", id, err)
	}
	return nil
}

// SetState pauses, resumes or disables a subscription.
func (s *Store) SetState(ctx context.Context, id, state, reason string) error {
	_, err := s.db.Exec(ctx, `UPDATE webhook_subscription SET state = $2, state_reason = $3, updated_at = $4 WHERE id = $1`,
		id, state, reason, time.Now().UnixMilli())
	if err != nil {
		return fmt.Errorf("failed to set state of subscription %s: %w", id, err)
	}
	return nil
}

// Enqueue adds deliveries to the outbox; ones already there (a fan-out batch
// handled again after a restart) are skipped.
func (s *Store) Enqueue(ctx context.Context, deliveries []*Delivery) error {
	return s.fenced(ctx, func(ctx context.Context) error { return s.enqueue(ctx, deliveries) })
}

// fenced runs a leader-only change of the outbox in one database
// transaction that first checks this process still holds the lease (a
// leader back from a freeze must not write its stale view over its
// successor's).
func (s *Store) fenced(ctx context.Context, fn func(ctx context.Context) error) error {
	if _, ok := leader.EpochFrom(ctx); !ok {
		return fn(ctx)
	}
	return s.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		if err := leader.Check(ctx, s.db); err != nil {
			return err
		}
		return fn(ctx)
	})
}

func (s *Store) enqueue(ctx context.Context, deliveries []*Delivery) error {
	const perRow = 6
	for start := 0; start < len(deliveries); start += 500 {
		chunk := deliveries[start:min(start+500, len(deliveries))]
		var b strings.Builder
		args := make([]any, 0, len(chunk)*perRow)
		b.WriteString(`INSERT INTO webhook_delivery (subscription_id, position, room_id, event_id, body, state, attempts, next_attempt_at) VALUES `)
		for i, d := range chunk {
			if i > 0 {
				b.WriteString(", ")
			}
			p := i * perRow
			fmt.Fprintf(&b, "($%d, $%d, $%d, $%d, $%d, 'pending', 0, $%d)", p+1, p+2, p+3, p+4, p+5, p+6)
			args = append(args, d.SubscriptionID, d.Position, d.RoomID, d.EventID, string(d.Body), d.NextAttemptAt.UnixMilli())
		}
		b.WriteString(` ON CONFLICT (subscription_id, position) DO NOTHING`)
		if _, err := s.db.Exec(ctx, b.String(), args...); err != nil {
			return fmt.Errorf("failed to enqueue webhook deliveries: %w", err)
		}
	}
	return nil
}

// queueKey names a (subscription, room) queue.
type queueKey struct{ subscriptionID, roomID string }

// DueQueues returns queues of active subscriptions with pending deliveries
// that may be due.
func (s *Store) DueQueues(ctx context.Context, now time.Time, limit int) ([]queueKey, error) {
	rows, err := s.db.Query(ctx, `
		SELECT d.subscription_id, d.room_id FROM webhook_delivery d
		JOIN webhook_subscription s ON s.id = d.subscription_id AND s.state = 'active'
		WHERE d.state = 'pending' AND d.next_attempt_at <= $1
		GROUP BY d.subscription_id, d.room_id
		ORDER BY MIN(d.position) -- the queue waiting longest gets a free worker first
		LIMIT $2`, now.UnixMilli(), limit)
	keys, err := dbutil.NewRowIterWithError(rows, func(row dbutil.Scannable) (k queueKey, err error) {
		err = row.Scan(&k.subscriptionID, &k.roomID)
		return k, err
	}, err).AsList()
	if err != nil {
		return nil, fmt.Errorf("failed to find due webhook queues: %w", err)
	}
	return keys, nil
}

// QueueHead returns the first pending deliveries of a queue, in order.
func (s *Store) QueueHead(ctx context.Context, k queueKey, limit int) ([]*Delivery, error) {
	rows, err := s.db.Query(ctx, `SELECT `+deliveryColumns+` FROM webhook_delivery
		WHERE subscription_id = $1 AND room_id = $2 AND state = 'pending' ORDER BY position LIMIT $3`, k.subscriptionID, k.roomID, limit)
	list, err := dbutil.NewRowIterWithError(rows, scanDelivery, err).AsList()
	if err != nil {
		return nil, fmt.Errorf("failed to read webhook queue: %w", err)
	}
	return list, nil
}

// Delivered removes delivered rows of one subscription, in one statement.
func (s *Store) Delivered(ctx context.Context, subscriptionID string, positions []int64) error {
	if len(positions) == 0 {
		return nil
	}
	args := []any{subscriptionID}
	marks := make([]string, 0, len(positions))
	for _, p := range positions {
		args = append(args, p)
		marks = append(marks, fmt.Sprintf("$%d", len(args)))
	}
	err := s.fenced(ctx, func(ctx context.Context) error {
		_, err := s.db.Exec(ctx, `DELETE FROM webhook_delivery WHERE subscription_id = $1 AND position IN (`+strings.Join(marks, ", ")+`)`, args...)
		return err
	})
	if err != nil {
		return fmt.Errorf("failed to mark deliveries done: %w", err)
	}
	return nil
}

// Failed records a failed attempt: the next try, or the dead-letter list.
func (s *Store) Failed(ctx context.Context, d *Delivery, dead bool, next time.Time, firstFailed time.Time, reason string) error {
	state := "pending"
	if dead {
		state = "dead"
	}
	if len(reason) > 1000 {
		reason = reason[:1000]
	}
	err := s.fenced(ctx, func(ctx context.Context) error {
		_, err := s.db.Exec(ctx, `UPDATE webhook_delivery SET state = $3, attempts = attempts + 1, next_attempt_at = $4,
		first_failed_at = $5, last_error = $6 WHERE subscription_id = $1 AND position = $2`,
			d.SubscriptionID, d.Position, state, next.UnixMilli(), firstFailed.UnixMilli(), reason)
		return err
	})
	if err != nil {
		return fmt.Errorf("failed to record a failed delivery: %w", err)
	}
	return nil
}

// DeadLetters lists a subscription's dead deliveries.
func (s *Store) DeadLetters(ctx context.Context, subscriptionID string, limit int) ([]*Delivery, error) {
	rows, err := s.db.Query(ctx, `SELECT `+deliveryColumns+` FROM webhook_delivery
		WHERE subscription_id = $1 AND state = 'dead' ORDER BY position LIMIT $2`, subscriptionID, limit)
	list, err := dbutil.NewRowIterWithError(rows, scanDelivery, err).AsList()
	if err != nil {
		return nil, fmt.Errorf("failed to list dead letters: %w", err)
	}
	return list, nil
}

// Redeliver puts dead deliveries (all, or one event's) back in the queue.
func (s *Store) Redeliver(ctx context.Context, subscriptionID, eventID string) (int64, error) {
	res, err := s.db.Exec(ctx, `UPDATE webhook_delivery SET state = 'pending', attempts = 0, next_attempt_at = $3, first_failed_at = NULL, last_error = ''
		WHERE subscription_id = $1 AND state = 'dead' AND ($2 = '' OR event_id = $2)`, subscriptionID, eventID, time.Now().UnixMilli())
	if err != nil {
		return 0, fmt.Errorf("failed to redeliver dead letters: %w", err)
	}
	return res.RowsAffected()
}

// Counts returns pending and dead deliveries of a subscription.
func (s *Store) Counts(ctx context.Context, subscriptionID string) (pending, dead int64, err error) {
	err = s.db.QueryRow(ctx, `SELECT
		COALESCE(SUM(CASE WHEN state = 'pending' THEN 1 ELSE 0 END), 0),
		COALESCE(SUM(CASE WHEN state = 'dead' THEN 1 ELSE 0 END), 0)
		FROM webhook_delivery WHERE subscription_id = $1`, subscriptionID).Scan(&pending, &dead)
	return pending, dead, err
}

// Totals counts pending and dead deliveries of every subscription.
func (s *Store) Totals(ctx context.Context) (pending, dead int64, err error) {
	err = s.db.QueryRow(ctx, `SELECT
		COALESCE(SUM(CASE WHEN state = 'pending' THEN 1 ELSE 0 END), 0),
		COALESCE(SUM(CASE WHEN state = 'dead' THEN 1 ELSE 0 END), 0)
		FROM webhook_delivery`).Scan(&pending, &dead)
	return pending, dead, err
}
