// Package eventlog is the durable log of everything the homeserver pushed to
// the bridge. A transaction is acknowledged only once its events are
// committed here; every consumer reads the log by position with a durable
// cursor, so nothing downstream can lose an event.
package eventlog

import (
	"encoding/json"
	"time"

	"go.mau.fi/util/dbutil"
)

// Kind says where in a transaction an event came from.
type Kind string

const (
	// KindTimeline is a room event from the transaction's `events` array.
	KindTimeline Kind = "timeline"
	// KindEphemeral is an EDU (typing, receipt, presence) from `ephemeral` or
	// `de.sorunome.msc2409.ephemeral`.
	KindEphemeral Kind = "ephemeral"
	// KindToDevice is a to-device message sent to one of the appservice's
	// users (MSC4203, from `to_device` or `de.sorunome.msc2409.to_device`).
	// It has no room; the end-to-bridge encryption reads it.
	KindToDevice Kind = "to_device"
	// KindDeviceSummary is one of a transaction's MSC3202 end-to-end
	// encryption summaries, kept whole: its Type names which one
	// (device_lists, device_one_time_keys_count,
	// device_unused_fallback_key_types) and its JSON is the field's value.
	KindDeviceSummary Kind = "device_summary"
	// KindDecrypted is the clear form of an encrypted room event (or the
	// event marked undecryptable), journalled by pkg/e2ee after the
	// encrypted one: its JSON is a room event with the original event id,
	// while its log EventID is one of its own (e2ee.DecryptedLogID).
	KindDecrypted Kind = "decrypted"
)

// IncomingEvent is an event as extracted from a transaction, before commit.
// Only the fields the log indexes are decoded; JSON is kept byte for byte
// (a string, because lib/pq would send []byte as bytea).
type IncomingEvent struct {
	EventID string
	Kind    Kind
	RoomID  string
	Type    string
	Sender  string
	JSON    string
}

// Event is an event as stored in the log.
type Event struct {
	Position   int64
	EventID    string
	Kind       Kind
	RoomID     string
	Type       string
	Sender     string
	TxnID      string
	ReceivedAt time.Time
	JSON       json.RawMessage
}

func (evt *Event) Scan(row dbutil.Scannable) (*Event, error) {
	var receivedAt int64
	var raw string
	err := row.Scan(&evt.Position, &evt.EventID, &evt.Kind, &evt.RoomID, &evt.Type, &evt.Sender,
		&evt.TxnID, &receivedAt, &raw)
	if err != nil {
		return nil, err
	}
	evt.ReceivedAt = time.UnixMilli(receivedAt)
	evt.JSON = json.RawMessage(raw)
	return evt, nil
}

// Transaction is the audit record of one transaction id.
type Transaction struct {
	TxnID       string
	FirstSeenAt time.Time
	LastSeenAt  time.Time
	Attempts    int
	EventCount  int
	StoredCount int
}

func (txn *Transaction) Scan(row dbutil.Scannable) (*Transaction, error) {
	var first, last int64
	err := row.Scan(&txn.TxnID, &first, &last, &txn.Attempts, &txn.EventCount, &txn.StoredCount)
	if err != nil {
		return nil, err
	}
	txn.FirstSeenAt = time.UnixMilli(first)
	txn.LastSeenAt = time.UnixMilli(last)
	return txn, nil
}
