package messaging

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/crypto/attachment"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/clock"
	"github.com/daarion/matrix-bridge/pkg/homeserver"
	"github.com/daarion/matrix-bridge/pkg/identity"
	"github.com/daarion/matrix-bridge/pkg/internalapi"
)

// RegisterRoutes adds the sending and membership endpoints.
func (s *Service) RegisterRoutes(api *internalapi.API) {
	api.Handle(http.MethodPost, "/internal/matrix/send", internalapi.ScopeMessaging, s.handleSend)
	api.Handle(http.MethodPost, "/internal/matrix/send-reaction", internalapi.ScopeMessaging, s.handleReaction)
	api.Handle(http.MethodPost, "/internal/matrix/redact", internalapi.ScopeMessaging, s.handleRedact)
	for _, action := range []membershipAction{actionInvite, actionJoin, actionLeave, actionKick, actionBan, actionUnban} {
		api.Handle(http.MethodPost, "/internal/matrix/"+string(action), internalapi.ScopeMessaging, s.handleMembership(action))
	}
}

// sendRequest is POST /internal/matrix/send.
type sendRequest struct {
	RoomID         id.RoomID       `json:"room_id"`
	CitySlug       string          `json:"city_slug"`
	Sender         string          `json:"sender"`
	SenderMatrixID id.UserID       `json:"sender_matrix_id"`
	MsgType        string          `json:"msgtype"`
	Body           string          `json:"body"`
	Format         string          `json:"format"`
	FormattedBody  string          `json:"formatted_body"`
	RelatesTo      json.RawMessage `json:"relates_to"`
	Mentions       *struct {
		UserIDs []id.UserID `json:"user_ids"`
		Room    bool        `json:"room"`
	} `json:"mentions"`
	URL string `json:"url"`
	// File is an encrypted attachment (what an upload with the room's
	// room_id answers as file): the media of an encrypted room, instead of url.
	File     json.RawMessage `json:"file"`
	Info     json.RawMessage `json:"info"`
	FileName string          `json:"filename"`
	// Timestamp (milliseconds since the epoch) sends the event as of then:
	// imported history, the appservice `ts` parameter. Only a service with
	// the timestamps scope may set it.
	Timestamp *int64 `json:"timestamp"`
}

// maxTimestampAhead bounds how far in the future a send's timestamp may be
// (clocks differ a little; imported history is in the past).
const maxTimestampAhead = 5 * time.Minute

// timestamp checks req.Timestamp: the caller's scope and its range. 0 is
// "now" (no ts parameter).
func (req *sendRequest) timestamp(ctx context.Context, now time.Time) (int64, error) {
	if req.Timestamp == nil {
		return 0, nil
	}
	if !internalapi.ServiceFrom(ctx).Has(internalapi.ScopeTimestamps) {
		return 0, internalapi.ForbiddenField("timestamp", "needs the timestamps scope (imported history is allowed per service)")
	}
	ts := *req.Timestamp
	if ts <= 0 || ts > now.Add(maxTimestampAhead).UnixMilli() {
		return 0, internalapi.InvalidField("timestamp", "must be milliseconds since the epoch, at most 5 minutes ahead")
	}
	return ts, nil
}

var mediaTypes = map[event.MessageType]bool{event.MsgImage: true, event.MsgFile: true, event.MsgAudio: true, event.MsgVideo: true}
var textTypes = map[event.MessageType]bool{event.MsgText: true, event.MsgNotice: true, event.MsgEmote: true}

const maxBodyRunes = 65536

// content builds the message content; kind decides the default msgtype (an
// agent's message without one is a notice).
func (req *sendRequest) content(kind identity.Kind) (*event.MessageEventContent, error) {
	msgType := event.MessageType(req.MsgType)
	if msgType == "" {
		msgType = event.MsgText
		if kind == identity.KindAgent {
			msgType = event.MsgNotice
		}
	}
	if !textTypes[msgType] && !mediaTypes[msgType] {
		return nil, &identity.FieldError{Field: "msgtype", Problem: "must be m.text, m.notice, m.emote, m.image, m.file, m.audio or m.video"}
	}
	if strings.TrimSpace(req.Body) == "" {
		return nil, &identity.FieldError{Field: "body", Problem: "is required"}
	}
	if len([]rune(req.Body)) > maxBodyRunes || len([]rune(req.FormattedBody)) > maxBodyRunes {
		return nil, &identity.FieldError{Field: "body", Problem: fmt.Sprintf("must be at most %d characters", maxBodyRunes)}
	}
	content := &event.MessageEventContent{MsgType: msgType, Body: req.Body}
	switch {
	case req.Format == "" && req.FormattedBody != "":
		return nil, &identity.FieldError{Field: "format", Problem: "is required with formatted_body (org.matrix.custom.html)"}
	case req.Format != "" && req.Format != string(event.FormatHTML):
		return nil, &identity.FieldError{Field: "format", Problem: "must be org.matrix.custom.html"}
	case req.Format != "" && req.FormattedBody == "":
		return nil, &identity.FieldError{Field: "formatted_body", Problem: "is required with format"}
	case req.Format != "":
		content.Format, content.FormattedBody = event.FormatHTML, req.FormattedBody
	}
	hasFile := len(req.File) > 0 && string(req.File) != "null"
	if mediaTypes[msgType] {
		switch {
		case hasFile && req.URL != "":
			return nil, &identity.FieldError{Field: "file", Problem: "give url (a clear file) or file (an encrypted attachment), not both"}
		case hasFile:
			file, err := parseEncryptedFile(req.File)
			if err != nil {
				return nil, err
			}
			content.File = file
		case req.URL == "":
			return nil, &identity.FieldError{Field: "url", Problem: "is required for " + string(msgType) + " (or file, an encrypted attachment)"}
		default:
			uri, err := id.ParseContentURI(req.URL)
			if err != nil || uri.IsEmpty() {
				return nil, &identity.FieldError{Field: "url", Problem: "must be an mxc:// URI for " + string(msgType)}
			}
			content.URL = uri.CUString()
		}
		content.FileName = req.FileName
		if len(req.Info) > 0 {
			var info event.FileInfo
			if err := json.Unmarshal(req.Info, &info); err != nil {
				return nil, &identity.FieldError{Field: "info", Problem: "must be a file info object: " + err.Error()}
			}
			content.Info = &info
		}
	} else if req.URL != "" {
		return nil, &identity.FieldError{Field: "url", Problem: "is only for m.image, m.file, m.audio and m.video"}
	} else if hasFile {
		return nil, &identity.FieldError{Field: "file", Problem: "is only for m.image, m.file, m.audio and m.video"}
	} else if len(req.Info) > 0 {
		return nil, &identity.FieldError{Field: "info", Problem: "is only for m.image, m.file, m.audio and m.video"}
	}
	if req.Mentions != nil {
		content.Mentions = &event.Mentions{Room: req.Mentions.Room}
		for i, u := range req.Mentions.UserIDs {
			if _, _, err := u.Parse(); err != nil {
				return nil, &identity.FieldError{Field: fmt.Sprintf("mentions.user_ids[%d]", i), Problem: "must be a Matrix user id"}
			}
			content.Mentions.UserIDs = append(content.Mentions.UserIDs, u)
		}
	}
	if len(req.RelatesTo) > 0 && string(req.RelatesTo) != "null" {
		if err := applyRelation(content, req.RelatesTo); err != nil {
			return nil, err
		}
	}
	return content, nil
}

// maxFileObjectBytes bounds a send's file object; an upload's is about
// 400 bytes.
const maxFileObjectBytes = 2048

// Lengths of an encrypted attachment's unpadded base64 fields: a 32-byte
// key (URL-safe), a 16-byte iv and a 32-byte SHA-256.
const (
	attachmentKeyChars  = 43
	attachmentIVChars   = 22
	attachmentHashChars = 43
)

// encryptedFileRequest is a send's file: exactly an EncryptedFile's fields
// (version v2, A256CTR), nothing else.
type encryptedFileRequest struct {
	URL *string `json:"url"`
	Key *struct {
		K      *string  `json:"k"`
		Alg    *string  `json:"alg"`
		Ext    *bool    `json:"ext"`
		Kty    *string  `json:"kty"`
		KeyOps []string `json:"key_ops"`
	} `json:"key"`
	IV     *string `json:"iv"`
	Hashes *struct {
		SHA256 *string `json:"sha256"`
	} `json:"hashes"`
	V *string `json:"v"`
}

// parseEncryptedFile checks a send's file: an encrypted attachment whose url
// is an mxc URI, with a well-formed key, iv and hash, at most
// maxFileObjectBytes. Errors name file or the field in it.
func parseEncryptedFile(raw json.RawMessage) (*event.EncryptedFileInfo, error) {
	bad := func(field, problem string) error {
		return &identity.FieldError{Field: field, Problem: problem}
	}
	if len(raw) > maxFileObjectBytes {
		return nil, bad("file", fmt.Sprintf("must be at most %d bytes of JSON", maxFileObjectBytes))
	}
	var req encryptedFileRequest
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return nil, bad("file", "must be an encrypted attachment object (url, key, iv, hashes, v), as the upload answers it: "+err.Error())
	}
	if dec.More() {
		return nil, bad("file", "must be one JSON object")
	}
	if req.URL == nil {
		return nil, bad("file.url", "is required")
	}
	uri, err := id.ParseContentURI(*req.URL)
	if err != nil || uri.IsEmpty() {
		return nil, bad("file.url", "must be an mxc:// URI")
	}
	if req.V == nil || *req.V != attachment.VersionAES256CTR {
		return nil, bad("file.v", "must be "+attachment.VersionAES256CTR)
	}
	k := req.Key
	switch {
	case k == nil:
		return nil, bad("file.key", "is required")
	case k.Kty == nil || *k.Kty != "oct":
		return nil, bad("file.key.kty", "must be oct")
	case k.Alg == nil || *k.Alg != "A256CTR":
		return nil, bad("file.key.alg", "must be A256CTR")
	case k.Ext == nil || !*k.Ext:
		return nil, bad("file.key.ext", "must be true")
	case !validKeyOps(k.KeyOps):
		return nil, bad("file.key.key_ops", "must hold encrypt and decrypt (and only JWK operations)")
	case k.K == nil || !isBase64(*k.K, attachmentKeyChars, base64.RawURLEncoding):
		return nil, bad("file.key.k", "must be a 256-bit key in unpadded URL-safe base64")
	}
	if req.IV == nil || !isBase64(*req.IV, attachmentIVChars, base64.RawStdEncoding) {
		return nil, bad("file.iv", "must be 16 bytes in unpadded base64")
	}
	if req.Hashes == nil || req.Hashes.SHA256 == nil || !isBase64(*req.Hashes.SHA256, attachmentHashChars, base64.RawStdEncoding) {
		return nil, bad("file.hashes.sha256", "must be the ciphertext's SHA-256 in unpadded base64")
	}
	return &event.EncryptedFileInfo{
		EncryptedFile: attachment.EncryptedFile{
			Key:        attachment.JSONWebKey{Key: *k.K, Algorithm: *k.Alg, Extractable: *k.Ext, KeyType: *k.Kty, KeyOps: k.KeyOps},
			InitVector: *req.IV,
			Hashes:     attachment.EncryptedFileHashes{SHA256: *req.Hashes.SHA256},
			Version:    *req.V,
		},
		URL: uri.CUString(),
	}, nil
}

// jwkKeyOps are the JWK key operations (RFC 7517 section 4.3).
var jwkKeyOps = []string{"sign", "verify", "encrypt", "decrypt", "wrapKey", "unwrapKey", "deriveKey", "deriveBits"}

// validKeyOps: encrypt and decrypt, as the spec asks, and only JWK
// operations, each once.
func validKeyOps(ops []string) bool {
	if !slices.Contains(ops, "encrypt") || !slices.Contains(ops, "decrypt") || len(ops) > len(jwkKeyOps) {
		return false
	}
	for i, op := range ops {
		if !slices.Contains(jwkKeyOps, op) || slices.Contains(ops[:i], op) {
			return false
		}
	}
	return true
}

// isBase64 reports whether s is n characters of enc that decode.
func isBase64(s string, n int, enc *base64.Encoding) bool {
	if len(s) != n {
		return false
	}
	_, err := enc.DecodeString(s)
	return err == nil
}

// applyRelation adds a reply, a thread message or an edit.
func applyRelation(content *event.MessageEventContent, raw json.RawMessage) error {
	var rel struct {
		RelType       string `json:"rel_type"`
		EventID       string `json:"event_id"`
		IsFallingBack *bool  `json:"is_falling_back"`
		InReplyTo     *struct {
			EventID string `json:"event_id"`
		} `json:"m.in_reply_to"`
	}
	if err := json.Unmarshal(raw, &rel); err != nil {
		return &identity.FieldError{Field: "relates_to", Problem: "must be an object: " + err.Error()}
	}
	eventID := func(field, v string) (id.EventID, error) { return id.EventID(v), checkEventID(field, v) }
	switch rel.RelType {
	case "":
		if rel.InReplyTo == nil {
			return &identity.FieldError{Field: "relates_to", Problem: "needs m.in_reply_to, or rel_type m.thread or m.replace"}
		}
		target, err := eventID("relates_to.m.in_reply_to.event_id", rel.InReplyTo.EventID)
		if err != nil {
			return err
		}
		content.RelatesTo = &event.RelatesTo{InReplyTo: &event.InReplyTo{EventID: target}}
	case string(event.RelThread):
		root, err := eventID("relates_to.event_id", rel.EventID)
		if err != nil {
			return err
		}
		// Without an explicit reply, the thread's fallback replies to its root.
		replyTo, fallingBack := root, true
		if rel.InReplyTo != nil {
			if replyTo, err = eventID("relates_to.m.in_reply_to.event_id", rel.InReplyTo.EventID); err != nil {
				return err
			}
			fallingBack = rel.IsFallingBack != nil && *rel.IsFallingBack
		}
		content.RelatesTo = &event.RelatesTo{Type: event.RelThread, EventID: root, InReplyTo: &event.InReplyTo{EventID: replyTo}, IsFallingBack: fallingBack}
	case string(event.RelReplace):
		target, err := eventID("relates_to.event_id", rel.EventID)
		if err != nil {
			return err
		}
		newContent := *content
		content.NewContent = &newContent
		content.Body = "* " + content.Body
		if content.FormattedBody != "" {
			content.FormattedBody = "* " + content.FormattedBody
		}
		content.RelatesTo = &event.RelatesTo{Type: event.RelReplace, EventID: target}
	default:
		return &identity.FieldError{Field: "relates_to.rel_type", Problem: "must be m.thread or m.replace (or absent for a reply)"}
	}
	return nil
}

func (s *Service) handleSend(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	var req sendRequest
	if err := internalapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	key, err := idempotencyKey(r)
	if err != nil {
		return err
	}
	roomID, err := s.resolveRoom(ctx, req.RoomID, req.CitySlug)
	if err != nil {
		return err
	}
	actor, err := s.actAs(ctx, "sender", req.Sender, "sender_matrix_id", req.SenderMatrixID)
	if err != nil {
		return err
	}
	content, err := req.content(actor.Entity.Kind)
	if err != nil {
		return err
	}
	if content.File != nil {
		// An encrypted attachment's key travels in the event: in a clear
		// room it would be public beside the ciphertext, which is pointless
		// at best and, for a service that thought the room encrypted, a leak.
		encrypted, err := s.encryptedRoom(ctx, actor, roomID)
		if err != nil {
			return err
		} else if !encrypted {
			return internalapi.InvalidField("file", "is an encrypted attachment, for an encrypted room only; "+
				"this room is not encrypted: upload without room_id and send url")
		}
	}
	ts, err := req.timestamp(ctx, time.Now())
	if err != nil {
		return err
	}
	raw, _ := json.Marshal(content)
	hash := requestHash(string(roomID), string(actor.Entity.UserID), string(raw))
	if ts != 0 {
		hash = requestHash(hash, strconv.FormatInt(ts, 10))
	}
	eventID, sentAt, err := s.sendOnce(ctx, key, hash, func(txnID string) (id.EventID, error) {
		return s.sendAt(ctx, actor, roomID, event.EventMessage, marked(content, txnID), txnID, ts)
	}, func(txnID string) id.EventID { return s.findMarked(ctx, actor, roomID, txnID) })
	if err != nil {
		return err
	}
	internalapi.WriteJSON(w, http.StatusOK, map[string]string{"event_id": eventID.String(), "sent_at": sentAt.UTC().Format(time.RFC3339Nano)})
	return nil
}

// sendOnce runs send at most once per (service, Idempotency-Key): a retry
// with the same request answers the remembered event; the same key with a
// different request is a conflict. Without a key it just sends.
//
// The key is reserved before the send and completed after it. A retry that
// finds it reserved but not completed follows a first attempt that died in
// the middle of its send (the homeserver may have stored the event without
// remembering the transaction id): find asks the homeserver for an event
// carrying the key's marker before anything is sent again.
func (s *Service) sendOnce(ctx context.Context, key, hash string, send func(txnID string) (id.EventID, error), find func(txnID string) id.EventID) (id.EventID, time.Time, error) {
	service := internalapi.ServiceFrom(ctx).Name
	if key == "" {
		// Marked all the same: the marker travels in the event, so the
		// bridge knows its own echo even when the caller hung up before
		// anything was recorded (the bot must never run it as a command).
		eventID, err := send(oneOffTxnID())
		if err == nil {
			s.noteSent(ctx, eventID, service, "")
		}
		return eventID, time.Now(), err
	}
	unlock := s.order.Lock("idem\x00" + service + "\x00" + key)
	defer unlock()
	prev, err := s.idem.get(ctx, service, key)
	if err != nil {
		return "", time.Time{}, err
	}
	if prev != nil && prev.RequestHash != hash {
		return "", time.Time{}, errKeyReused()
	}
	txnID := matrixTxnID(service, key)
	if prev == nil {
		won, err := s.idem.reserve(ctx, service, key, hash)
		if err != nil {
			return "", time.Time{}, err
		}
		if !won {
			// Another request (in this process or another sharing the
			// database) reserved the key a moment ago: its send is the one.
			if prev, err = s.idem.get(ctx, service, key); err != nil {
				return "", time.Time{}, err
			}
		}
	}
	if prev != nil && prev.EventID == "" {
		// Reserved by a send that is in flight, or was interrupted: wait for
		// its result while it may still come, then look for its marked
		// event before sending again.
		if res, done, err := s.awaitReserved(ctx, service, key, hash, prev.SentAt); done {
			if res != nil {
				return res.EventID, res.SentAt, nil
			}
			return "", time.Time{}, err
		}
		if eventID := find(txnID); eventID != "" {
			zerolog.Ctx(ctx).Info().Str("event_id", eventID.String()).Msg("An interrupted send had made its event; not sending again")
			res := idempotentResult{RequestHash: hash, EventID: eventID, SentAt: time.Now()}
			s.noteSent(ctx, eventID, service, key)
			return eventID, res.SentAt, s.idem.complete(ctx, service, key, res)
		}
	}
	switch {
	case prev != nil && prev.RequestHash != hash:
		return "", time.Time{}, errKeyReused()
	case prev != nil && prev.EventID != "":
		zerolog.Ctx(ctx).Debug().Str("event_id", prev.EventID.String()).Msg("Idempotent retry answered from the record")
		return prev.EventID, prev.SentAt, nil
	}
	eventID, err := send(txnID)
	if err != nil {
		return "", time.Time{}, err
	}
	s.noteSent(ctx, eventID, service, key)
	res := idempotentResult{RequestHash: hash, EventID: eventID, SentAt: time.Now()}
	if err = s.idem.complete(ctx, service, key, res); err != nil {
		// Sent but not recorded: the retry finds the event by its marker.
		zerolog.Ctx(ctx).Err(err).Msg("Sent, but failed to record the Idempotency-Key")
	}
	return eventID, res.SentAt, nil
}

// errKeyReused is the 409 of an Idempotency-Key used for another request.
func errKeyReused() error {
	return internalapi.Conflict("M_IDEMPOTENCY_CONFLICT", "Idempotency-Key was already used for a different request")
}

// awaitReserved waits, until the reservation made at reservedAt is
// s.reservedWait old, for the result of the send that holds it. done with a
// result: that send's event; done with an error: a 409 (the key was used for
// another request) or the context's end; not done: the send was
// interrupted, and the caller finishes it.
func (s *Service) awaitReserved(ctx context.Context, service, key, hash string, reservedAt time.Time) (*idempotentResult, bool, error) {
	deadline := reservedAt.Add(s.reservedWait)
	for {
		prev, err := s.idem.get(ctx, service, key)
		switch {
		case err != nil:
			return nil, true, err
		case prev == nil:
			return nil, false, nil
		case prev.RequestHash != hash:
			return nil, true, errKeyReused()
		case prev.EventID != "":
			return prev, true, nil
		}
		if !time.Now().Before(deadline) {
			return nil, false, nil
		}
		if !clock.Sleep(ctx, 50*time.Millisecond) {
			return nil, true, ctx.Err()
		}
	}
}

// findMarked looks in a room's recent timeline, as actor, for the event an
// idempotent send with txnID made.
func (s *Service) findMarked(ctx context.Context, actor *Actor, roomID id.RoomID, txnID string) id.EventID {
	resp, err := actor.Intent.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, nil, 100)
	if err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Msg("Could not look for the event of an interrupted send")
		return ""
	}
	for _, evt := range resp.Chunk {
		if evt.Sender == actor.Entity.UserID && evt.Content.Raw[TxnMarker] == txnID {
			return evt.ID
		}
	}
	return ""
}

// marked adds the idempotency marker to content when there is a txnID.
func marked(content any, txnID string) any {
	if txnID == "" {
		return content
	}
	return &event.Content{Parsed: content, Raw: map[string]any{TxnMarker: txnID}}
}

// noteSent records an event the bridge sent; a failure only loses the
// origin mark on the echo's DTO, so it is logged, not returned.
func (s *Service) noteSent(ctx context.Context, eventID id.EventID, service, key string) {
	if err := s.idem.recordSent(ctx, eventID, service, key); err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Str("event_id", eventID.String()).Msg("Failed to record a sent event")
	}
}

// maxRateLimitRetries bounds how often a send waits out the homeserver's 429.
const maxRateLimitRetries = 5

// maxRateLimitWait bounds one wait for the homeserver's 429.
const maxRateLimitWait = 30 * time.Second

// send posts one event as actor, in order per (sender, room): the ghost
// joins first when it is not in the room, and the homeserver's rate limit
// is waited out.
func (s *Service) send(ctx context.Context, actor *Actor, roomID id.RoomID, evtType event.Type, content any, txnID string) (id.EventID, error) {
	return s.sendAt(ctx, actor, roomID, evtType, content, txnID, 0)
}

// sendAt is send with the appservice's ts parameter (milliseconds; 0: now).
func (s *Service) sendAt(ctx context.Context, actor *Actor, roomID id.RoomID, evtType event.Type, content any, txnID string, ts int64) (id.EventID, error) {
	unlock := s.order.Lock(string(actor.Entity.UserID) + "\x00" + string(roomID))
	defer unlock()
	if err := s.ensureJoined(ctx, actor, roomID, false); err != nil {
		return "", err
	}
	var extra []mautrix.ReqSendEvent
	if txnID != "" || ts != 0 {
		extra = append(extra, mautrix.ReqSendEvent{TransactionID: txnID, Timestamp: ts})
	}
	rejoined := false
	for attempt := 0; ; attempt++ {
		resp, err := s.sendEvent(ctx, actor, roomID, evtType, content, extra)
		if err == nil {
			return resp.EventID, nil
		}
		if wait, limited := homeserver.RateLimited(err, maxRateLimitWait); limited && attempt < maxRateLimitRetries {
			if !clock.Sleep(ctx, wait) {
				return "", ctx.Err()
			}
			continue
		}
		// The state store follows the log a consumer's lag behind: a kick it
		// has not applied yet still says joined. Join again once.
		if errors.Is(err, mautrix.MForbidden) && actor.Entity.Kind == identity.KindAgent && !rejoined {
			rejoined = true
			if joinErr := s.ensureJoined(ctx, actor, roomID, true); joinErr == nil {
				continue
			}
		}
		return "", err
	}
}

// sendEvent sends one event, encrypted with the sender's device in an
// encrypted room.
func (s *Service) sendEvent(ctx context.Context, actor *Actor, roomID id.RoomID, evtType event.Type, content any, extra []mautrix.ReqSendEvent) (*mautrix.RespSendEvent, error) {
	if s.encryption != nil {
		if resp, handled, err := s.encryption.Send(ctx, actor.Intent.UserID, roomID, evtType, content, extra...); handled || err != nil {
			return resp, err
		}
	}
	return actor.Intent.SendMessageEvent(ctx, roomID, evtType, content, extra...)
}

// ensureJoined makes an agent's ghost a member (the bot invites it where the
// room needs an invite). Humans and the bot are not joined implicitly.
func (s *Service) ensureJoined(ctx context.Context, actor *Actor, roomID id.RoomID, ignoreCache bool) error {
	if actor.Entity.Kind != identity.KindAgent {
		return nil
	}
	return actor.Intent.EnsureJoined(ctx, roomID, appservice.EnsureJoinedParams{IgnoreCache: ignoreCache, BotOverride: s.as.BotClient()})
}

// checkEventID checks a Matrix event id the request names in field.
func checkEventID(field, v string) error {
	if !strings.HasPrefix(v, "$") || len(v) > 255 || strings.ContainsAny(v, " \x00") {
		return &identity.FieldError{Field: field, Problem: "must be a Matrix event id such as $abc"}
	}
	return nil
}

// idempotencyKey is the request's Idempotency-Key header, "" when none.
func idempotencyKey(r *http.Request) (string, error) {
	key := r.Header.Get("Idempotency-Key")
	if key != "" && !validIdempotencyKey(key) {
		return "", internalapi.InvalidField("Idempotency-Key", "must be 1-255 printable ASCII characters without spaces")
	}
	return key, nil
}

func (s *Service) handleReaction(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	var req struct {
		RoomID          id.RoomID `json:"room_id"`
		CitySlug        string    `json:"city_slug"`
		EventID         string    `json:"event_id"`
		Reactor         string    `json:"reactor"`
		ReactorMatrixID id.UserID `json:"reactor_matrix_id"`
		Emoji           string    `json:"emoji"`
	}
	if err := internalapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	roomID, err := s.eventRoom(ctx, req.RoomID, req.CitySlug, req.EventID)
	if err != nil {
		return err
	}
	if req.Emoji == "" || len(req.Emoji) > 256 {
		return internalapi.InvalidField("emoji", "must be 1-256 bytes")
	}
	actor, err := s.actAs(ctx, "reactor", req.Reactor, "reactor_matrix_id", req.ReactorMatrixID)
	if err != nil {
		return err
	}
	key, err := idempotencyKey(r)
	if err != nil {
		return err
	}
	content := &event.ReactionEventContent{RelatesTo: event.RelatesTo{Type: event.RelAnnotation, EventID: id.EventID(req.EventID), Key: req.Emoji}}
	raw, _ := json.Marshal(content)
	eventID, _, err := s.sendOnce(ctx, key, requestHash("reaction", string(roomID), string(actor.Entity.UserID), string(raw)), func(txnID string) (id.EventID, error) {
		return s.send(ctx, actor, roomID, event.EventReaction, marked(content, txnID), txnID)
	}, func(txnID string) id.EventID { return s.findMarked(ctx, actor, roomID, txnID) })
	if err != nil {
		return err
	}
	internalapi.WriteJSON(w, http.StatusOK, map[string]string{"event_id": eventID.String()})
	return nil
}

func (s *Service) handleRedact(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	var req struct {
		RoomID           id.RoomID `json:"room_id"`
		CitySlug         string    `json:"city_slug"`
		EventID          string    `json:"event_id"`
		Reason           string    `json:"reason"`
		Redactor         string    `json:"redactor"`
		RedactorMatrixID id.UserID `json:"redactor_matrix_id"`
	}
	if err := internalapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	roomID, err := s.eventRoom(ctx, req.RoomID, req.CitySlug, req.EventID)
	if err != nil {
		return err
	}
	if len(req.Reason) > 1000 {
		return internalapi.InvalidField("reason", "must be at most 1000 bytes")
	}
	actor, err := s.actAsOrBot(ctx, "redactor", req.Redactor, "redactor_matrix_id", req.RedactorMatrixID)
	if err != nil {
		return err
	}
	if err = s.ensureJoined(ctx, actor, roomID, false); err != nil {
		return err
	}
	resp, err := actor.Intent.RedactEvent(ctx, roomID, id.EventID(req.EventID), mautrix.ReqRedact{Reason: req.Reason})
	if err != nil {
		return err
	}
	s.noteSent(ctx, resp.EventID, internalapi.ServiceFrom(ctx).Name, "")
	internalapi.WriteJSON(w, http.StatusOK, map[string]string{"event_id": resp.EventID.String()})
	return nil
}

// eventRoom resolves the room of a request about one of its events (a
// reaction's or a redaction's), then checks the event id.
func (s *Service) eventRoom(ctx context.Context, roomID id.RoomID, citySlug, eventID string) (id.RoomID, error) {
	roomID, err := s.resolveRoom(ctx, roomID, citySlug)
	if err != nil {
		return "", err
	}
	return roomID, checkEventID("event_id", eventID)
}

// actAsOrBot is actAs, defaulting to the bridge bot when no one is named:
// the bot moderates city rooms (redacts, invites, kicks) for the services.
func (s *Service) actAsOrBot(ctx context.Context, field, value, matrixField string, matrixID id.UserID) (*Actor, error) {
	if value == "" && matrixID == "" {
		return &Actor{Entity: s.mapper.FromMatrix(s.as.BotMXID()), Intent: s.as.BotIntent()}, nil
	}
	return s.actAs(ctx, field, value, matrixField, matrixID)
}
