package e2ee

import (
	"context"
	"fmt"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"
)

// pendingEvent is an encrypted event waiting for its keys.
type pendingEvent struct {
	EventID   string
	RoomID    string
	SessionID string
	Position  int64
	Since     time.Time
	// KeyRequested is when the key was asked for (zero: not yet).
	KeyRequested time.Time
}

func (p *pendingEvent) Scan(row dbutil.Scannable) (*pendingEvent, error) {
	var since, requested int64
	if err := row.Scan(&p.EventID, &p.RoomID, &p.SessionID, &p.Position, &since, &requested); err != nil {
		return nil, err
	}
	p.Since = time.UnixMilli(since)
	if requested > 0 {
		p.KeyRequested = time.UnixMilli(requested)
	}
	return p, nil
}

// pendingStore keeps the e2ee_pending table.
type pendingStore struct {
	qh *dbutil.QueryHelper[*pendingEvent]
}

func newPendingStore(db *dbutil.Database) *pendingStore {
	return &pendingStore{qh: dbutil.MakeQueryHelperSimple(db, func() *pendingEvent { return &pendingEvent{} })}
}

const (
	addPendingQuery = `
		INSERT INTO e2ee_pending (event_id, room_id, session_id, position, since) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (event_id) DO NOTHING`
	listPendingQuery   = `SELECT event_id, room_id, session_id, position, since, key_requested_at FROM e2ee_pending ORDER BY position LIMIT $1`
	markRequestedQuery = `UPDATE e2ee_pending SET key_requested_at = $2 WHERE event_id = $1`
	removePendingQuery = `DELETE FROM e2ee_pending WHERE event_id = $1`
	hasPendingQuery    = `SELECT COUNT(*) FROM e2ee_pending WHERE event_id = $1`
	countPendingQuery  = `SELECT COUNT(*) FROM e2ee_pending`
	// The crypto store's account table (mautrix's): does the user have a device?
	hasAccountQuery = `SELECT COUNT(*) FROM crypto_account WHERE account_id = $1`
)

func (s *pendingStore) add(ctx context.Context, p pendingEvent) error {
	if err := s.qh.Exec(ctx, addPendingQuery, p.EventID, p.RoomID, p.SessionID, p.Position, p.Since.UnixMilli()); err != nil {
		return fmt.Errorf("failed to record %s as waiting for keys: %w", p.EventID, err)
	}
	return nil
}

func (s *pendingStore) list(ctx context.Context, limit int) ([]*pendingEvent, error) {
	rows, err := s.qh.QueryMany(ctx, listPendingQuery, limit)
	if err != nil {
		return nil, fmt.Errorf("failed to list the events waiting for keys: %w", err)
	}
	return rows, nil
}

func (s *pendingStore) markRequested(ctx context.Context, eventID string, at time.Time) error {
	if err := s.qh.Exec(ctx, markRequestedQuery, eventID, at.UnixMilli()); err != nil {
		return fmt.Errorf("failed to note the key request for %s: %w", eventID, err)
	}
	return nil
}

func (s *pendingStore) remove(ctx context.Context, eventID string) error {
	if err := s.qh.Exec(ctx, removePendingQuery, eventID); err != nil {
		return fmt.Errorf("failed to remove %s from the events waiting for keys: %w", eventID, err)
	}
	return nil
}

func (s *pendingStore) has(ctx context.Context, eventID string) (bool, error) {
	n, err := s.countOf(ctx, hasPendingQuery, eventID)
	return n > 0, err
}

func (s *pendingStore) count(ctx context.Context) (int64, error) {
	return s.countOf(ctx, countPendingQuery)
}

func (s *pendingStore) hasAccount(ctx context.Context, userID id.UserID) (bool, error) {
	n, err := s.countOf(ctx, hasAccountQuery, userID.String())
	return n > 0, err
}

func (s *pendingStore) countOf(ctx context.Context, query string, args ...any) (int64, error) {
	var n int64
	if err := s.qh.GetDB().QueryRow(ctx, query, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("failed to count: %w", err)
	}
	return n, nil
}
