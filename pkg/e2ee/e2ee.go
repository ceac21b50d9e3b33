// Package e2ee is the bridge's end-to-bridge encryption: the bot and the
// agents' ghosts have Matrix devices of their own (created the MSC4190 way,
// PUT /devices as the appservice, and used through device-id masquerading),
// with their Olm and Megolm state in the bridge's database (mautrix's
// crypto_* tables). It reads what the homeserver pushes for them — to-device
// messages, device list changes and one-time-key counts (MSC2409/MSC4203,
// MSC3202), journalled before the transaction's 200 like everything else —
// as a consumer of the event log, after the commit. An encrypted room event
// is decrypted there, and the clear event is journalled as a transaction of
// its own (DecryptedTxnPrefix), so every sink maps it like an event of a
// clear room; one whose keys have not arrived waits in e2ee_pending and is
// tried again when keys come, and given up on (delivered as undecryptable)
// after encryption.give_up_after. Agents' sends into encrypted rooms are
// encrypted with their own device.
//
// The crypto state has one owner: the leader. Only it builds OlmMachines
// (two processes on one account would fork the Olm ratchets); another
// process's encrypted send answers 503 (ErrNotLeader).
//
// The crypto code is mautrix-go's crypto package on goolm, its pure-Go Olm:
// the bridge is built with -tags goolm (the Makefile and Dockerfile do). A
// build without it has no encryption (service_off.go) and says so at start.
package e2ee

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/sqlstatestore"

	"github.com/daarion/matrix-bridge/pkg/config"
	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/homeserver"
	"github.com/daarion/matrix-bridge/pkg/internalapi"
)

// DecryptedTxnPrefix starts the id of the transaction that journals a
// decrypted (or given up) event: the prefix and the encrypted event's id, so
// journalling it twice stores it once.
const DecryptedTxnPrefix = "daarion-decrypted:"

// DecryptedField is the top-level key of such a transaction that holds the
// clear events (the parser reads it only in a DecryptedTxnPrefix transaction).
const DecryptedField = "net.daarion.decrypted"

// UndecryptableKey marks, in a journalled event's JSON, an encrypted event
// given up on: its value says why.
const UndecryptableKey = "net.daarion.undecryptable"

// DecryptedIDPrefix starts the log id of a decrypted event: the clear event
// keeps its Matrix event id (the DTO's id), while the log row needs one of
// its own beside the encrypted original's.
const DecryptedIDPrefix = "~dec_"

// DecryptedLogID is the log id of the clear form of the event eventID.
func DecryptedLogID(eventID string) string {
	sum := sha256.Sum256([]byte("daarion-decrypted\x00" + eventID))
	return DecryptedIDPrefix + hex.EncodeToString(sum[:16])
}

// IsDecryptedTxn tells a transaction journalled by this package.
func IsDecryptedTxn(txnID string) bool { return strings.HasPrefix(txnID, DecryptedTxnPrefix) }

// ErrNotLeader: only the leader holds the crypto state, so an encrypted send
// on another process is refused; the caller retries (a front door sends it
// to the leader soon enough).
var ErrNotLeader = errors.New("end-to-bridge encryption runs on the leader process only")

// ErrUnavailable: the room is encrypted but this bridge has no encryption
// (disabled in config, a homeserver without MSC3202, or a build without goolm).
var ErrUnavailable = errors.New("the room is encrypted and end-to-bridge encryption is not available")

// apiError is how the internal API answers the errors above.
type apiError struct{ err error }

func (e apiError) Error() string { return e.err.Error() }
func (e apiError) Unwrap() error { return e.err }

// APIError answers 503 for a send that only the leader can encrypt, 409 for
// an encrypted room this bridge cannot encrypt for.
func (e apiError) APIError() *internalapi.Error {
	if errors.Is(e.err, ErrNotLeader) {
		// The documented 503 of every send: the Matrix side cannot be
		// reached from here right now; retry.
		return &internalapi.Error{Status: http.StatusServiceUnavailable, Code: internalapi.ErrMatrixUnavailable,
			Detail: e.err.Error() + "; retry (on the leader)"}
	}
	return &internalapi.Error{Status: http.StatusConflict, Code: "M_UNSUPPORTED_ENCRYPTION", Field: "room_id", Message: e.err.Error()}
}

// Log is what the service needs of the event log; *eventlog.Log is one.
type Log interface {
	Journal(ctx context.Context, txnID string, body []byte) error
	ByEventIDs(ctx context.Context, eventIDs []string) (map[string]*eventlog.Event, error)
}

// Observer records decryption outcomes (the bridge's metrics).
type Observer interface {
	ObserveDecrypt(outcome string, d time.Duration)
}

// Outcomes of a decryption, as Observer sees them.
const (
	OutcomeDecrypted = "decrypted"
	OutcomeWaiting   = "waiting"
	OutcomeRetried   = "retried"
	OutcomeFailed    = "failed"
	OutcomeGaveUp    = "gave_up"
	// OutcomeKeyRequested: the sender's devices were asked for a missing key.
	OutcomeKeyRequested = "key_requested"
)

// Options build a Service.
type Options struct {
	Config     config.Encryption
	AppService *appservice.AppService
	DB         *dbutil.Database
	State      *sqlstatestore.SQLStateStore
	Log        Log
	// OwnUser tells the users the bridge puppets (the bot, agents' ghosts):
	// only they get devices.
	OwnUser  func(id.UserID) bool
	Observer Observer
	// Confidential tells the confidential rooms, whose decrypted events are
	// journalled with their content stripped by Strip (mapping.StripContent):
	// their clear content is never written anywhere. Both must answer from
	// memory; nil: no room is.
	Confidential func(roomID string) bool
	Strip        func(eventJSON []byte) []byte
	Logger       zerolog.Logger
	// RetryInterval is how often waiting events are tried again besides
	// when keys arrive (5s).
	RetryInterval time.Duration
	// Now is the clock (time.Now).
	Now func() time.Time
}

// roomEncrypted tells whether roomID is encrypted. The state store knows it
// from the room's m.room.encryption event, but only for a room whose state it
// has seen (its create event is there): one of the bridge's users that
// joined a room a moment ago has nothing of it in the store until the
// consumers load the room's state, and a send or upload in that window would
// go out in the clear. Such a room's state is loaded from the homeserver
// here, as asUser (the bot when asUser may not read it), into the store.
// false, nil when neither can read it: nothing of the bridge's is in the
// room, and the send that follows joins first and asks again.
func (o Options) roomEncrypted(ctx context.Context, asUser id.UserID, roomID id.RoomID) (bool, error) {
	if o.State == nil {
		return false, nil
	}
	if encrypted, err := o.State.IsEncrypted(ctx, roomID); err != nil || encrypted {
		return encrypted, err
	}
	create, err := o.State.GetCreate(ctx, roomID)
	if err != nil || create != nil || o.AppService == nil {
		return false, err
	}
	readers := []*appservice.IntentAPI{o.AppService.Intent(asUser)}
	if bot := o.AppService.BotIntent(); asUser != bot.UserID {
		readers = append(readers, bot)
	}
	for _, reader := range readers {
		// Client.State, not IntentAPI.State, which would join the room
		// first. It writes what it read into the state store (the intents'
		// StateStore), members included: an encrypted send shares its room
		// key with them.
		_, err = reader.Client.State(ctx, roomID)
		if err == nil {
			return o.State.IsEncrypted(ctx, roomID)
		} else if !homeserver.Permanent(err) {
			return false, fmt.Errorf("failed to load the state of %s to tell whether it is encrypted: %w", roomID, err)
		}
	}
	zerolog.Ctx(ctx).Debug().Err(err).Stringer("room_id", roomID).
		Msg("Neither the sender nor the bot can read the room's state: taking it as not encrypted")
	return false, nil
}
