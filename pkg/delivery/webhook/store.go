package webhook

import (
	"context"
	"database/sql"
	"fmt"
	"maps"
	"slices"
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

// Scan reads a webhook_subscription row (subscriptionColumns); event_types
// is a JSON array.
func (s *Subscription) Scan(row dbutil.Scannable) (*Subscription, error) {
	var created, updated int64
	err := row.Scan(&s.ID, &s.Service, &s.RoomFilter, &s.URL, dbutil.JSON{Data: &s.EventTypes}, &s.Secret, &s.State, &s.StateReason, &created, &updated)
	if err != nil {
		return nil, err
	}
	s.CreatedAt, s.UpdatedAt = time.UnixMilli(created), time.UnixMilli(updated)
	return s, nil
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

// Scan reads a webhook_delivery row (deliveryColumns).
func (d *Delivery) Scan(row dbutil.Scannable) (*Delivery, error) {
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
	return d, nil
}

// GetMassInsertValues is what one delivery adds to an enqueue's INSERT
// (enqueueBuilder's dynamic parameters).
func (d *Delivery) GetMassInsertValues() [6]any {
	return [6]any{d.SubscriptionID, d.Position, d.RoomID, d.EventID, string(d.Body), d.NextAttemptAt.UnixMilli()}
}

// Store keeps subscriptions and the outbox: the webhook_subscription and
// webhook_delivery tables.
type Store struct {
	db            *dbutil.Database
	subscriptions *dbutil.QueryHelper[*Subscription]
	deliveries    *dbutil.QueryHelper[*Delivery]
}

// NewStore returns the store in db.
func NewStore(db *dbutil.Database) *Store {
	return &Store{
		db:            db,
		subscriptions: dbutil.MakeQueryHelperSimple(db, func() *Subscription { return &Subscription{} }),
		deliveries:    dbutil.MakeQueryHelperSimple(db, func() *Delivery { return &Delivery{} }),
	}
}

const (
	subscriptionColumns       = `id, service, room_filter, webhook_url, event_types, secret, state, state_reason, created_at, updated_at`
	insertSubscriptionQuery   = `INSERT INTO webhook_subscription (` + subscriptionColumns + `) VALUES ($1, $2, $3, $4, $5, $6, $7, '', $8, $8)`
	getSubscriptionQuery      = `SELECT ` + subscriptionColumns + ` FROM webhook_subscription WHERE id = $1`
	listSubscriptionsQuery    = `SELECT ` + subscriptionColumns + ` FROM webhook_subscription WHERE $1 = '' OR service = $1 ORDER BY created_at, id`
	countSubscriptionsQuery   = `SELECT COUNT(*) FROM webhook_subscription WHERE service = $1`
	deleteSubscriptionQuery   = `DELETE FROM webhook_subscription WHERE id = $1`
	setSubscriptionStateQuery = `UPDATE webhook_subscription SET state = $2, state_reason = $3, updated_at = $4 WHERE id = $1`
)

// CreateSubscription stores a new subscription.
func (s *Store) CreateSubscription(ctx context.Context, sub *Subscription) error {
	now := time.Now()
	sub.CreatedAt, sub.UpdatedAt = now, now
	err := s.subscriptions.Exec(ctx, insertSubscriptionQuery,
		sub.ID, sub.Service, sub.RoomFilter, sub.URL, dbutil.JSON{Data: sub.EventTypes}, sub.Secret, sub.State, now.UnixMilli())
	if err != nil {
		return fmt.Errorf("failed to store subscription: %w", err)
	}
	return nil
}

// Subscription returns one subscription, nil when unknown.
func (s *Store) Subscription(ctx context.Context, id string) (*Subscription, error) {
	sub, err := s.subscriptions.QueryOne(ctx, getSubscriptionQuery, id)
	if err != nil {
		return nil, fmt.Errorf("failed to read subscription %s: %w", id, err)
	}
	return sub, nil
}

// Subscriptions lists subscriptions, all of them when service is "".
func (s *Store) Subscriptions(ctx context.Context, service string) ([]*Subscription, error) {
	list, err := s.subscriptions.QueryMany(ctx, listSubscriptionsQuery, service)
	if err != nil {
		return nil, fmt.Errorf("failed to list subscriptions: %w", err)
	}
	return list, nil
}

// CountSubscriptions counts a service's subscriptions.
func (s *Store) CountSubscriptions(ctx context.Context, service string) (int, error) {
	var n int
	if err := s.db.QueryRow(ctx, countSubscriptionsQuery, service).Scan(&n); err != nil {
		return 0, fmt.Errorf("failed to count subscriptions: %w", err)
	}
	return n, nil
}

const (
	deliveryColumns = `subscription_id, position, room_id, event_id, body, state, attempts, next_attempt_at, first_failed_at, last_error`
	// enqueueQuery is one delivery's INSERT; enqueueBuilder makes it many.
	// The state and attempts of a new delivery are its static parameters.
	enqueueQuery = `
		INSERT INTO webhook_delivery (state, attempts, subscription_id, position, room_id, event_id, body, next_attempt_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (subscription_id, position) DO NOTHING`
	pruneDeadLettersQuery = `DELETE FROM webhook_delivery WHERE state = 'dead' AND first_failed_at < $1`
	// dueQueuesQuery finds the queues by skipping from one (subscription,
	// room) to the next on the queue index — a few index probes per queue,
	// however many rows each holds — and keeps those of active
	// subscriptions whose head (the lowest pending position) is due, the
	// queue whose head waited longest first. Grouping the due rows instead
	// read every row behind a failing head each time (they are due from
	// their enqueue time): the whole backlog, every second, in an outage.
	dueQueuesQuery = `
		WITH RECURSIVE queues (subscription_id, room_id) AS (
			SELECT subscription_id, room_id FROM (
				SELECT subscription_id, room_id FROM webhook_delivery ORDER BY subscription_id, room_id LIMIT 1
			) AS first_queue
			UNION ALL
			-- The next room of this subscription, else the first of the next
			-- subscription: seeks SQLite's index takes too (it scans for a
			-- row-value comparison).
			SELECT
				COALESCE(
					(SELECT n.subscription_id FROM webhook_delivery n WHERE n.subscription_id = q.subscription_id AND n.room_id > q.room_id
						ORDER BY n.room_id LIMIT 1),
					(SELECT n.subscription_id FROM webhook_delivery n WHERE n.subscription_id > q.subscription_id
						ORDER BY n.subscription_id, n.room_id LIMIT 1)),
				COALESCE(
					(SELECT n.room_id FROM webhook_delivery n WHERE n.subscription_id = q.subscription_id AND n.room_id > q.room_id
						ORDER BY n.room_id LIMIT 1),
					(SELECT n.room_id FROM webhook_delivery n WHERE n.subscription_id > q.subscription_id
						ORDER BY n.subscription_id, n.room_id LIMIT 1))
			FROM queues q WHERE q.subscription_id IS NOT NULL
		), heads AS (
			SELECT q.subscription_id, q.room_id,
				(SELECT h.position FROM webhook_delivery h
					WHERE h.subscription_id = q.subscription_id AND h.room_id = q.room_id AND h.state = 'pending'
					ORDER BY h.position LIMIT 1) AS position
			FROM queues q JOIN webhook_subscription s ON s.id = q.subscription_id AND s.state = 'active'
		)
		SELECT heads.subscription_id, heads.room_id FROM heads
		JOIN webhook_delivery d ON d.subscription_id = heads.subscription_id AND d.position = heads.position
		WHERE d.next_attempt_at <= $1
		ORDER BY heads.position
		LIMIT $2`
	// queueHeadQuery reads a queue's first pending rows with what a delivery
	// needs of its subscription, in one statement (the outbox's rows go with
	// their subscription: ON DELETE CASCADE).
	queueHeadQuery = `SELECT s.webhook_url, s.secret, s.state,
		d.subscription_id, d.position, d.room_id, d.event_id, d.body, d.state, d.attempts, d.next_attempt_at, d.first_failed_at, d.last_error
		FROM webhook_delivery d JOIN webhook_subscription s ON s.id = d.subscription_id
		WHERE d.subscription_id = $1 AND d.room_id = $2 AND d.state = 'pending' ORDER BY d.position LIMIT $3`
	// deliveredQuery is completed with the leader's guard and the rows, by
	// subscription.
	deliveredQuery = `DELETE FROM webhook_delivery WHERE %s AND (%s)`
	failedQuery    = `UPDATE webhook_delivery SET state = $3, attempts = attempts + 1, next_attempt_at = $4,
		first_failed_at = $5, last_error = $6 WHERE subscription_id = $1 AND position = $2`
	deadLettersQuery = `SELECT ` + deliveryColumns + ` FROM webhook_delivery
		WHERE subscription_id = $1 AND state = 'dead' ORDER BY position LIMIT $2`
	redeliverQuery = `UPDATE webhook_delivery SET state = 'pending', attempts = 0, next_attempt_at = $3, first_failed_at = NULL, last_error = ''
		WHERE subscription_id = $1 AND state = 'dead' AND ($2 = '' OR event_id = $2)`
	countDeliveriesQuery = `SELECT
		COALESCE(SUM(CASE WHEN state = 'pending' THEN 1 ELSE 0 END), 0),
		COALESCE(SUM(CASE WHEN state = 'dead' THEN 1 ELSE 0 END), 0)
		FROM webhook_delivery WHERE subscription_id = $1`
	// totalDeliveriesQuery counts each state up to $1 rows (by the due
	// index, which leads with the state).
	totalDeliveriesQuery = `SELECT
		(SELECT COUNT(*) FROM (SELECT 1 FROM webhook_delivery WHERE state = 'pending' LIMIT $1) AS p),
		(SELECT COUNT(*) FROM (SELECT 1 FROM webhook_delivery WHERE state = 'dead' LIMIT $1) AS d)`
)

// enqueueBuilder builds one INSERT of many deliveries; the static parameters
// are the state and attempts of a new delivery.
var enqueueBuilder = dbutil.NewMassInsertBuilder[*Delivery, [2]any](enqueueQuery, "($1, $2, $%d, $%d, $%d, $%d, $%d, $%d)")

// enqueueChunk bounds the deliveries of one INSERT (8 parameters each at most).
const enqueueChunk = 500

// PruneDeadLetters deletes dead letters that first failed before `before`
// and were not redelivered since.
func (s *Store) PruneDeadLetters(ctx context.Context, before time.Time) (int64, error) {
	deleted, err := leader.Exec(ctx, s.db, pruneDeadLettersQuery, before.UnixMilli())
	if err != nil {
		return 0, fmt.Errorf("failed to prune dead letters: %w", err)
	}
	return deleted, nil
}

// DeleteSubscription removes a subscription and its outbox.
func (s *Store) DeleteSubscription(ctx context.Context, id string) error {
	if err := s.subscriptions.Exec(ctx, deleteSubscriptionQuery, id); err != nil {
		return fmt.Errorf("failed to delete subscription %s: %w", id, err)
	}
	return nil
}

// SetState pauses, resumes or disables a subscription.
func (s *Store) SetState(ctx context.Context, id, state, reason string) error {
	if err := s.subscriptions.Exec(ctx, setSubscriptionStateQuery, id, state, reason, time.Now().UnixMilli()); err != nil {
		return fmt.Errorf("failed to set state of subscription %s: %w", id, err)
	}
	return nil
}

// Enqueue adds deliveries to the outbox; ones already there (a fan-out batch
// handled again after a restart) are skipped.
func (s *Store) Enqueue(ctx context.Context, deliveries []*Delivery) error {
	return leader.Fenced(ctx, s.db, func(ctx context.Context) error { return s.enqueue(ctx, deliveries) })
}

func (s *Store) enqueue(ctx context.Context, deliveries []*Delivery) error {
	for start := 0; start < len(deliveries); start += enqueueChunk {
		query, args := enqueueBuilder.Build([2]any{"pending", 0}, deliveries[start:min(start+enqueueChunk, len(deliveries))])
		if err := s.deliveries.Exec(ctx, query, args...); err != nil {
			return fmt.Errorf("failed to enqueue webhook deliveries: %w", err)
		}
	}
	return nil
}

// queueKey names a (subscription, room) queue.
type queueKey struct{ subscriptionID, roomID string }

// DueQueues returns up to limit queues of active subscriptions whose head
// is due at now, the longest waiting first.
func (s *Store) DueQueues(ctx context.Context, now time.Time, limit int) ([]queueKey, error) {
	rows, err := s.db.Query(ctx, dueQueuesQuery, now.UnixMilli(), limit)
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
	_, list, err := s.queueHeadForDelivery(ctx, k, limit)
	return list, err
}

// queueHeadForDelivery is QueueHead with the subscription's URL, secret
// and state as they are now (nil without rows): one round trip per head.
func (s *Store) queueHeadForDelivery(ctx context.Context, k queueKey, limit int) (*Subscription, []*Delivery, error) {
	var sub *Subscription
	rows, err := s.db.Query(ctx, queueHeadQuery, k.subscriptionID, k.roomID, limit)
	list, err := dbutil.NewRowIterWithError(rows, func(row dbutil.Scannable) (*Delivery, error) {
		var url, secret, state string
		del, err := (&Delivery{}).Scan(prefixScanner{row, []any{&url, &secret, &state}})
		if err == nil && sub == nil {
			sub = &Subscription{ID: k.subscriptionID, URL: url, Secret: secret, State: state}
		}
		return del, err
	}, err).AsList()
	if err != nil {
		return nil, nil, fmt.Errorf("failed to read webhook queue: %w", err)
	}
	return sub, list, nil
}

// prefixScanner scans a row whose first columns go to prefix and the rest
// to what Scan is given.
type prefixScanner struct {
	row    dbutil.Scannable
	prefix []any
}

func (p prefixScanner) Scan(dest ...any) error {
	return p.row.Scan(append(p.prefix[:len(p.prefix):len(p.prefix)], dest...)...)
}

// Delivered removes delivered rows of one subscription (see DeliveredRows).
func (s *Store) Delivered(ctx context.Context, subscriptionID string, positions []int64) error {
	return s.DeliveredRows(ctx, map[string][]int64{subscriptionID: positions})
}

// DeliveredRows removes delivered rows, by subscription: one statement,
// fenced by leader.Guard (a leader that lost its lease deletes nothing, and
// its successor delivers those rows again, which at-least-once allows).
func (s *Store) DeliveredRows(ctx context.Context, positions map[string][]int64) error {
	guard, args := leader.Guard(ctx, 1)
	var bySub []string
	total := 0
	for _, sub := range slices.Sorted(maps.Keys(positions)) {
		if len(positions[sub]) == 0 {
			continue
		}
		args = append(args, sub)
		cond := fmt.Sprintf("subscription_id = $%d AND position IN (", len(args))
		for i, p := range positions[sub] {
			args = append(args, p)
			if i > 0 {
				cond += ", "
			}
			cond += fmt.Sprintf("$%d", len(args))
		}
		bySub = append(bySub, cond+")")
		total += len(positions[sub])
	}
	if total == 0 {
		return nil
	}
	res, err := s.db.Exec(ctx, fmt.Sprintf(deliveredQuery, guard, strings.Join(bySub, " OR ")), args...)
	if err != nil {
		return fmt.Errorf("failed to mark deliveries done: %w", err)
	}
	if n, err := res.RowsAffected(); err == nil && n < int64(total) {
		// Rows left: gone meanwhile (the subscription deleted), or the
		// guard refused. Only then is the fence asked, to say which.
		if err = leader.Fenced(ctx, s.db, func(context.Context) error { return nil }); err != nil {
			return fmt.Errorf("failed to mark deliveries done: %w", err)
		}
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
	err := leader.Fenced(ctx, s.db, func(ctx context.Context) error {
		return s.deliveries.Exec(ctx, failedQuery, d.SubscriptionID, d.Position, state, next.UnixMilli(), firstFailed.UnixMilli(), reason)
	})
	if err != nil {
		return fmt.Errorf("failed to record a failed delivery: %w", err)
	}
	return nil
}

// DeadLetters lists a subscription's dead deliveries.
func (s *Store) DeadLetters(ctx context.Context, subscriptionID string, limit int) ([]*Delivery, error) {
	list, err := s.deliveries.QueryMany(ctx, deadLettersQuery, subscriptionID, limit)
	if err != nil {
		return nil, fmt.Errorf("failed to list dead letters: %w", err)
	}
	return list, nil
}

// Redeliver puts dead deliveries (all, or one event's) back in the queue.
func (s *Store) Redeliver(ctx context.Context, subscriptionID, eventID string) (int64, error) {
	res, err := s.db.Exec(ctx, redeliverQuery, subscriptionID, eventID, time.Now().UnixMilli())
	if err != nil {
		return 0, fmt.Errorf("failed to redeliver dead letters: %w", err)
	}
	return res.RowsAffected()
}

// Counts returns pending and dead deliveries of a subscription.
func (s *Store) Counts(ctx context.Context, subscriptionID string) (pending, dead int64, err error) {
	err = s.db.QueryRow(ctx, countDeliveriesQuery, subscriptionID).Scan(&pending, &dead)
	return pending, dead, err
}

// TotalsCap bounds what Totals counts of each state: every process samples
// the totals every second (health, metrics), and a receiver down for a day
// leaves millions of rows in the outbox; a count that read them all each
// second would be the database's biggest load. Past the cap the figure
// reads "at least".
const TotalsCap = 100_000

// Totals counts pending and dead deliveries of every subscription, each
// up to TotalsCap.
func (s *Store) Totals(ctx context.Context) (pending, dead int64, err error) {
	return s.TotalsUpTo(ctx, TotalsCap)
}

// TotalsUpTo is Totals counting each state up to limit.
func (s *Store) TotalsUpTo(ctx context.Context, limit int64) (pending, dead int64, err error) {
	err = s.db.QueryRow(ctx, totalDeliveriesQuery, limit).Scan(&pending, &dead)
	return pending, dead, err
}
