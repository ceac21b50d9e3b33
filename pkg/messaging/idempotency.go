package messaging

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/tidwall/gjson"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"
)

// IdempotencyStore remembers what each (service, Idempotency-Key) made, so a
// retried request answers the same event and sends nothing new, across
// restarts too: the idempotent_request and sent_event tables.
type IdempotencyStore struct {
	requests *dbutil.QueryHelper[*idempotentResult]
	sent     *dbutil.QueryHelper[*sentEvent]
}

// NewIdempotencyStore returns the store in db.
func NewIdempotencyStore(db *dbutil.Database) *IdempotencyStore {
	return &IdempotencyStore{
		requests: dbutil.MakeQueryHelperSimple(db, func() *idempotentResult { return &idempotentResult{} }),
		sent:     dbutil.MakeQueryHelperSimple(db, func() *sentEvent { return &sentEvent{} }),
	}
}

// idempotentResult is a remembered answer.
type idempotentResult struct {
	RequestHash string
	EventID     id.EventID
	SentAt      time.Time
}

// Scan reads an idempotent_request row (getIdempotentQuery).
func (res *idempotentResult) Scan(row dbutil.Scannable) (*idempotentResult, error) {
	var sentAt int64
	if err := row.Scan(&res.RequestHash, &res.EventID, &sentAt); err != nil {
		return nil, err
	}
	res.SentAt = time.UnixMilli(sentAt)
	return res, nil
}

const (
	getIdempotentQuery     = `SELECT request_hash, event_id, sent_at FROM idempotent_request WHERE service = $1 AND idem_key = $2`
	reserveIdempotentQuery = `
		INSERT INTO idempotent_request (service, idem_key, request_hash, event_id, sent_at) VALUES ($1, $2, $3, '', $4)
		ON CONFLICT (service, idem_key) DO NOTHING`
	completeIdempotentQuery = `UPDATE idempotent_request SET event_id = $3, sent_at = $4 WHERE service = $1 AND idem_key = $2`
	// Reservations without an event are kept: their send may still finish.
	pruneIdempotentQuery = `DELETE FROM idempotent_request WHERE event_id <> '' AND sent_at < $1`
)

func (s *IdempotencyStore) get(ctx context.Context, service, key string) (*idempotentResult, error) {
	res, err := s.requests.QueryOne(ctx, getIdempotentQuery, service, key)
	if err != nil {
		return nil, fmt.Errorf("failed to look up idempotency key: %w", err)
	}
	return res, nil
}

// reserve records a key as pending (no event yet) before its send, so a
// retry after a crash in the middle of the send knows to look for the
// event the first attempt may have made.
//
// The reservation is the arbiter between processes: of requests with the
// same key arriving at once (in one process or several sharing a
// database), exactly one wins it and sends; won says whether this one did.
func (s *IdempotencyStore) reserve(ctx context.Context, service, key, hash string) (won bool, err error) {
	res, err := s.requests.GetDB().Exec(ctx, reserveIdempotentQuery, service, key, hash, time.Now().UnixMilli())
	if err != nil {
		return false, fmt.Errorf("failed to reserve idempotency key: %w", err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// complete records the event a key's send made.
func (s *IdempotencyStore) complete(ctx context.Context, service, key string, res idempotentResult) error {
	if err := s.requests.Exec(ctx, completeIdempotentQuery, service, key, res.EventID, res.SentAt.UnixMilli()); err != nil {
		return fmt.Errorf("failed to record idempotency key: %w", err)
	}
	return nil
}

// TxnMarker is the content key carrying the Matrix transaction id of every
// message and reaction the bridge sends: a retry of an idempotent send finds
// out by it whether an interrupted first attempt made its event, and the bot
// knows by it a message the bridge sent as a double-puppeted human (which is
// the service's, never a command), even when nothing was recorded because
// the caller hung up mid-send.
const TxnMarker = "org.daarion.txn_id"

// Marked reports whether an event's JSON carries the bridge's marker.
func Marked(eventJSON []byte) bool {
	return gjson.GetBytes(eventJSON, "content."+strings.ReplaceAll(TxnMarker, ".", `\.`)).Type == gjson.String
}

// oneOffTxnID is the transaction id of a send without an Idempotency-Key.
func oneOffTxnID() string { return "daarion_once_" + rand.Text() }

// maxIdempotencyKey bounds the header's length.
const maxIdempotencyKey = 255

// validIdempotencyKey accepts printable ASCII without spaces.
func validIdempotencyKey(key string) bool {
	if len(key) == 0 || len(key) > maxIdempotencyKey {
		return false
	}
	for i := 0; i < len(key); i++ {
		if key[i] <= ' ' || key[i] > '~' {
			return false
		}
	}
	return true
}

// matrixTxnID turns a service's Idempotency-Key into the Matrix transaction
// id of the send, so the homeserver deduplicates too: were the bridge to die
// between sending and recording, the retry's send returns the same event.
func matrixTxnID(service, key string) string {
	sum := sha256.Sum256([]byte(service + "\x00" + key))
	return "daarion_" + hex.EncodeToString(sum[:16])
}

func requestHash(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// sentEvent is a sent_event row: an event the bridge sent, and for whom.
type sentEvent struct {
	EventID id.EventID
	SendRecord
}

// Scan reads a sent_event row (sentByQuery).
func (se *sentEvent) Scan(row dbutil.Scannable) (*sentEvent, error) {
	return dbutil.ValueOrErr(se, row.Scan(&se.EventID, &se.Service, &se.IdempotencyKey))
}

const (
	recordSentQuery = `
		INSERT INTO sent_event (event_id, service, idem_key, sent_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (event_id) DO NOTHING`
	// sentByQuery is completed with the list of event ids.
	sentByQuery    = `SELECT event_id, service, COALESCE(idem_key, '') FROM sent_event WHERE event_id IN (%s)`
	pruneSentQuery = `DELETE FROM sent_event WHERE sent_at < $1`
)

// recordSent remembers that the bridge sent eventID for service, so the
// DTO of its echo carries the origin.
func (s *IdempotencyStore) recordSent(ctx context.Context, eventID id.EventID, service, key string) error {
	var idemKey any
	if key != "" {
		idemKey = key
	}
	if err := s.sent.Exec(ctx, recordSentQuery, eventID, service, idemKey, time.Now().UnixMilli()); err != nil {
		return fmt.Errorf("failed to record sent event: %w", err)
	}
	return nil
}

// SendRecord says which service had the bridge send an event, and with
// which Idempotency-Key ("" when none).
type SendRecord struct {
	Service        string
	IdempotencyKey string
}

// SentBy returns, in one query, the records of those of eventIDs the bridge
// sent through the internal API; the others have no entry. This is the one
// answer to "did the bridge send this event?" (the DTO source asks it for
// the origin of echoes).
func (s *IdempotencyStore) SentBy(ctx context.Context, eventIDs []string) (map[string]SendRecord, error) {
	if len(eventIDs) == 0 {
		return map[string]SendRecord{}, nil
	}
	args := make([]any, len(eventIDs))
	marks := make([]string, len(eventIDs))
	for i, eventID := range eventIDs {
		args[i], marks[i] = eventID, fmt.Sprintf("$%d", i+1)
	}
	rows := s.sent.QueryManyIter(ctx, fmt.Sprintf(sentByQuery, strings.Join(marks, ", ")), args...)
	records, err := dbutil.RowIterAsMap(rows, func(se *sentEvent) (string, SendRecord) { return string(se.EventID), se.SendRecord })
	if err != nil {
		return nil, fmt.Errorf("failed to look up sent events: %w", err)
	}
	return records, nil
}

// Prune forgets completed Idempotency-Keys and the records of events the
// bridge sent from before `before` (a retry after that long sends again).
// Reservations without an event are kept: their send may still finish.
func (s *IdempotencyStore) Prune(ctx context.Context, before time.Time) (int64, error) {
	var deleted int64
	db := s.requests.GetDB()
	err := db.DoTxn(ctx, nil, func(ctx context.Context) error {
		for _, query := range []string{pruneIdempotentQuery, pruneSentQuery} {
			res, err := db.Exec(ctx, query, before.UnixMilli())
			if err != nil {
				return err
			}
			n, _ := res.RowsAffected()
			deleted += n
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("failed to prune sent events and idempotency keys: %w", err)
	}
	return deleted, nil
}
