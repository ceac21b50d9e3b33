//go:build goolm

package e2ee

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lib/pq"
	"github.com/rs/zerolog"
	"github.com/tidwall/sjson"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/crypto/olm"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/clock"
	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/homeserver"
	"github.com/daarion/matrix-bridge/pkg/keylock"
)

func init() {
	// The crypto store's tracked-user queries use ANY($1) on PostgreSQL
	// (per-user queries without it), as mautrix's bridges set it.
	crypto.PostgresArrayWrapper = pq.Array
}

// Built says whether this binary has the crypto code (built with goolm).
const Built = true

// Service is the bridge's end-to-bridge encryption.
type Service struct {
	opts    Options
	log     zerolog.Logger
	pending *pendingStore

	mu       sync.Mutex
	leading  bool
	machines map[id.UserID]*ghostDevice
	// ensuring serialises making a ghost's device (one at a time is enough:
	// it happens once a ghost).
	ensuring sync.Mutex
	// rooms serialises encrypt and share per room, as bridgev2 does.
	rooms keylock.Mutex

	keysArrived chan struct{}
	// unavailable is why encryption cannot work here (the homeserver
	// refused the bot's device), once known.
	unavailable atomic.Pointer[string]
}

type ghostDevice struct {
	mach   *crypto.OlmMachine
	client *mautrix.Client
}

// New builds the service. It does nothing until Run, on the leader.
func New(opts Options) *Service {
	if opts.RetryInterval <= 0 {
		opts.RetryInterval = 5 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Service{opts: opts, log: opts.Logger, pending: newPendingStore(opts.DB),
		machines: map[id.UserID]*ghostDevice{}, keysArrived: make(chan struct{}, 1)}
}

// Enabled tells whether encryption is on.
func (s *Service) Enabled() bool { return s != nil && s.opts.Config.Enabled }

// Upgrade brings the crypto store's schema (crypto_version, mautrix's own
// upgrades) up to date; the bridge calls it at start when enabled.
func (s *Service) Upgrade(ctx context.Context) error {
	store := crypto.NewSQLCryptoStore(s.opts.DB, dbutil.ZeroLogger(s.log.With().Str("db_section", "crypto").Logger()), "", "", []byte(s.opts.Config.PickleKey))
	if err := store.DB.Upgrade(ctx); err != nil {
		return fmt.Errorf("failed to upgrade the crypto store: %w", err)
	}
	s.log.Info().Str("olm", olm.Driver).Msg("End-to-bridge encryption enabled")
	return nil
}

// Run is the leader's part: it makes the bot's device, then tries waiting
// events again whenever keys arrive and every RetryInterval, until ctx ends;
// then it forgets every machine (the next leader, maybe another process,
// loads them from the database).
func (s *Service) Run(ctx context.Context) {
	if !s.Enabled() {
		return
	}
	s.mu.Lock()
	s.leading = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.leading = false
		s.machines = map[id.UserID]*ghostDevice{}
		s.mu.Unlock()
	}()
	bot := s.opts.AppService.BotMXID()
	for ctx.Err() == nil {
		_, err := s.device(ctx, bot)
		if err == nil {
			s.unavailable.Store(nil)
			break
		}
		if homeserver.Permanent(err) {
			// Dendrite, for one, has no appservice devices (MSC4190): say so
			// once, clearly, and leave every other part running.
			reason := fmt.Sprintf("the homeserver refused the bot's encryption device (%v); it needs MSC4190 devices and MSC2409/MSC3202 transactions (Synapse has them, Dendrite does not)", err)
			s.unavailable.Store(&reason)
			s.log.Error().Err(err).Msg("End-to-bridge encryption is unavailable on this homeserver: encrypted rooms are neither read nor written; everything else works")
			return
		}
		s.log.Warn().Err(err).Msg("Failed to set up the bot's encryption device; trying again")
		if !clock.Sleep(ctx, s.opts.RetryInterval) {
			return
		}
	}
	timer := time.NewTimer(s.opts.RetryInterval)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.keysArrived:
		case <-timer.C:
		}
		if err := s.retryPending(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn().Err(err).Msg("Failed to retry the events waiting for keys")
		}
		timer.Reset(s.opts.RetryInterval)
	}
}

// EnsureDevice gives a ghost its device (on the leader; elsewhere nothing):
// called before an agent joins a room, so a client that encrypts right
// after the join already finds the agent's keys.
func (s *Service) EnsureDevice(ctx context.Context, userID id.UserID) error {
	if !s.Enabled() {
		return nil
	}
	_, err := s.device(ctx, userID)
	if errors.Is(err, ErrNotLeader) {
		return nil
	}
	return err
}

// device returns userID's machine, loading it from the database or making
// the device the first time (registering the ghost, PUT /devices, uploading
// its keys).
func (s *Service) device(ctx context.Context, userID id.UserID) (*ghostDevice, error) {
	s.mu.Lock()
	leading, d := s.leading, s.machines[userID]
	s.mu.Unlock()
	if !leading {
		return nil, ErrNotLeader
	}
	if d != nil {
		return d, nil
	}
	s.ensuring.Lock()
	defer s.ensuring.Unlock()
	s.mu.Lock()
	d = s.machines[userID]
	s.mu.Unlock()
	if d != nil {
		return d, nil
	}
	d, err := s.load(ctx, userID)
	if err != nil {
		return nil, fmt.Errorf("failed to set up the encryption device of %s: %w", userID, err)
	}
	s.mu.Lock()
	if s.leading {
		s.machines[userID] = d
	}
	s.mu.Unlock()
	return d, nil
}

func (s *Service) load(ctx context.Context, userID id.UserID) (*ghostDevice, error) {
	log := s.log.With().Stringer("user_id", userID).Logger()
	client := s.opts.AppService.NewMautrixClient(userID)
	client.StateStore = s.opts.State
	client.Log = log
	if userID != s.opts.AppService.BotMXID() {
		// Agents are registered by pkg/agents; this covers a ghost whose
		// device comes first. The bot is registered at start.
		_, _, err := client.Register(ctx, &mautrix.ReqRegister[any]{Username: userID.Localpart(), Type: mautrix.AuthTypeAppservice, InhibitLogin: true})
		if err != nil && !errors.Is(err, mautrix.MUserInUse) {
			return nil, fmt.Errorf("registering: %w", err)
		}
	}
	store := crypto.NewSQLCryptoStore(s.opts.DB, dbutil.ZeroLogger(log.With().Str("db_section", "crypto").Logger()),
		userID.String(), "", []byte(s.opts.Config.PickleKey))
	deviceID, err := store.FindDeviceID(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the device id: %w", err)
	}
	// PUT /devices/{id} as the appservice creates the device (or finds
	// it again); the client then masquerades as it (?device_id=).
	if err = client.CreateDeviceMSC4190(ctx, deviceID, s.opts.Config.DeviceName); err != nil {
		return nil, fmt.Errorf("creating the device: %w", err)
	}
	store.DeviceID = client.DeviceID
	mach := crypto.NewOlmMachine(client, &log, store, s.opts.State)
	mach.DisableSharedGroupSessionTracking = true
	mach.IgnorePostDecryptionParseErrors = true
	mach.PlaintextMentions = true
	if err = mach.Load(ctx); err != nil {
		return nil, fmt.Errorf("loading the Olm account: %w", err)
	}
	if !mach.GetAccount().Shared {
		if err = mach.ShareKeys(ctx, -1); err != nil {
			return nil, fmt.Errorf("uploading the device keys: %w", err)
		}
		log.Info().Stringer("device_id", client.DeviceID).Msg("Made an encryption device")
	} else {
		log.Debug().Stringer("device_id", client.DeviceID).Msg("Loaded an encryption device")
	}
	return &ghostDevice{mach: mach, client: client}, nil
}

// loaded returns userID's machine if it is loaded, or if the user is one of
// the bridge's and has a device in the database; nil otherwise (a to-device
// message for a user without a device is not the bridge's to read).
func (s *Service) loaded(ctx context.Context, userID id.UserID) *ghostDevice {
	s.mu.Lock()
	d := s.machines[userID]
	s.mu.Unlock()
	if d != nil || !s.opts.OwnUser(userID) {
		return d
	}
	if has, err := s.pending.hasAccount(ctx, userID); err != nil || !has {
		return nil
	}
	d, err := s.device(ctx, userID)
	if err != nil {
		s.log.Warn().Err(err).Stringer("user_id", userID).Msg("Failed to load an encryption device")
		return nil
	}
	return d
}

// loadedMachines is every loaded machine, the bot's first.
func (s *Service) loadedMachines() []*ghostDevice {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*ghostDevice, 0, len(s.machines))
	if d := s.machines[s.opts.AppService.BotMXID()]; d != nil {
		out = append(out, d)
	}
	for userID, d := range s.machines {
		if userID != s.opts.AppService.BotMXID() {
			out = append(out, d)
		}
	}
	return out
}

// HandleEvents is the e2ee consumer: in log order it feeds the machines the
// to-device messages, device list changes, key counts and membership, and
// decrypts encrypted room events.
func (s *Service) HandleEvents(ctx context.Context, events []*eventlog.Event) error {
	if !s.Enabled() {
		return nil
	}
	s.mu.Lock()
	leading := s.leading
	s.mu.Unlock()
	if !leading {
		return ErrNotLeader
	}
	keys := false
	touched := map[*ghostDevice]bool{}
	for _, logged := range events {
		switch logged.Kind {
		case eventlog.KindToDevice:
			if d := s.handleToDevice(ctx, logged); d != nil {
				touched[d], keys = true, true
			}
		case eventlog.KindDeviceSummary:
			s.handleSummary(ctx, logged)
		case eventlog.KindTimeline:
			if err := s.handleTimeline(ctx, logged); err != nil {
				return err
			}
		}
	}
	for d := range touched {
		d.mach.MarkOlmHashSavePoint(ctx)
	}
	if keys {
		select {
		case s.keysArrived <- struct{}{}:
		default:
		}
	}
	return nil
}

func parseLogged(logged *eventlog.Event, class event.TypeClass) (*event.Event, error) {
	evt := &event.Event{}
	if err := json.Unmarshal(logged.JSON, evt); err != nil {
		return nil, err
	}
	evt.Type.Class = class
	if err := evt.Content.ParseRaw(evt.Type); err != nil && !errors.Is(err, event.ErrUnsupportedContentType) {
		return nil, err
	}
	return evt, nil
}

func (s *Service) handleToDevice(ctx context.Context, logged *eventlog.Event) *ghostDevice {
	evt, err := parseLogged(logged, event.ToDeviceEventType)
	if err != nil {
		s.log.Debug().Err(err).Str("type", logged.Type).Msg("Unparseable to-device event")
		return nil
	}
	d := s.loaded(ctx, evt.ToUserID)
	if d == nil || (evt.ToDeviceID != "" && evt.ToDeviceID != d.client.DeviceID) {
		return nil
	}
	d.mach.HandleToDeviceEvent(ctx, evt)
	return d
}

func (s *Service) handleSummary(ctx context.Context, logged *eventlog.Event) {
	switch logged.Type {
	case "device_lists":
		var lists mautrix.DeviceLists
		if json.Unmarshal(logged.JSON, &lists) != nil {
			return
		}
		// The device table is shared by every account: one machine is enough.
		if all := s.loadedMachines(); len(all) > 0 {
			all[0].mach.HandleDeviceLists(ctx, &lists, "")
		}
	case "device_one_time_keys_count":
		var counts map[id.UserID]map[id.DeviceID]mautrix.OTKCount
		if json.Unmarshal(logged.JSON, &counts) != nil {
			return
		}
		for userID, devices := range counts {
			d := s.loaded(ctx, userID)
			if d == nil {
				continue
			}
			if count, ok := devices[d.client.DeviceID]; ok {
				count.UserID, count.DeviceID = userID, d.client.DeviceID
				d.mach.HandleOTKCounts(ctx, &count)
			}
		}
	}
}

func (s *Service) handleTimeline(ctx context.Context, logged *eventlog.Event) error {
	switch logged.Type {
	case event.StateMember.Type, event.StateHistoryVisibility.Type:
		evt, err := parseLogged(logged, event.StateEventType)
		if err != nil || evt.StateKey == nil {
			return nil
		}
		if evt.Type == event.StateMember {
			s.handleMember(ctx, evt)
		} else {
			for _, d := range s.loadedMachines() {
				d.mach.HandleHistoryVisibility(ctx, evt)
			}
		}
	case event.EventEncrypted.Type:
		evt, err := parseLogged(logged, event.MessageEventType)
		if err != nil {
			return s.journalUndecryptable(ctx, logged, "unparseable: "+err.Error())
		}
		return s.decrypt(ctx, logged, evt, false)
	}
	return nil
}

// handleMember drops outbound sessions on membership changes (the machines
// do that) and, when one of the bridge's users joins, loads the room's
// state: the homeserver pushes nothing from before the invite, and the
// machine must know the room is encrypted and who is in it.
func (s *Service) handleMember(ctx context.Context, evt *event.Event) {
	for _, d := range s.loadedMachines() {
		d.mach.HandleMemberEvent(ctx, evt)
	}
	userID := id.UserID(*evt.StateKey)
	if !s.opts.OwnUser(userID) || evt.Content.AsMember().Membership != event.MembershipJoin {
		return
	}
	d, err := s.device(ctx, userID)
	if err != nil {
		s.log.Warn().Err(err).Stringer("user_id", userID).Msg("Failed to set up an encryption device on join")
		return
	}
	if _, err = d.client.State(ctx, evt.RoomID); err != nil {
		s.log.Warn().Err(err).Stringer("room_id", evt.RoomID).Msg("Failed to load a joined room's state")
	}
}

// decrypt tries every loaded machine whose user is in the room (the keys
// went to the devices in the room), the sender's first when it is the
// bridge's own (its outbound session has the inbound copy).
func (s *Service) decrypt(ctx context.Context, logged *eventlog.Event, evt *event.Event, retry bool) error {
	start := s.opts.Now()
	var lastErr error = crypto.ErrNoSessionFound
	for _, d := range s.candidates(ctx, evt) {
		clear, err := d.mach.DecryptMegolmEvent(ctx, evt)
		if err == nil {
			if err = s.journalDecrypted(ctx, logged, clear); err != nil {
				return err
			}
			outcome := OutcomeDecrypted
			if retry {
				outcome = OutcomeRetried
			}
			s.observe(outcome, s.opts.Now().Sub(start))
			return s.pending.remove(ctx, evt.ID.String())
		}
		lastErr = err
		if !errors.Is(err, crypto.ErrNoSessionFound) {
			break
		}
	}
	if errors.Is(lastErr, crypto.ErrNoSessionFound) {
		if !retry {
			s.observe(OutcomeWaiting, s.opts.Now().Sub(start))
			content := evt.Content.AsEncrypted()
			return s.pending.add(ctx, pendingEvent{EventID: evt.ID.String(), RoomID: evt.RoomID.String(),
				SessionID: content.SessionID.String(), Position: logged.Position, Since: s.opts.Now()})
		}
		return nil
	}
	s.observe(OutcomeFailed, s.opts.Now().Sub(start))
	return s.journalUndecryptable(ctx, logged, lastErr.Error())
}

func (s *Service) candidates(ctx context.Context, evt *event.Event) []*ghostDevice {
	var out []*ghostDevice
	seen := map[id.UserID]bool{}
	add := func(userID id.UserID) {
		if seen[userID] || !s.opts.OwnUser(userID) {
			return
		}
		seen[userID] = true
		// loaded reads a device from the database when this process has not
		// loaded it yet (after a restart, or on a new leader).
		if d := s.loaded(ctx, userID); d != nil {
			out = append(out, d)
		}
	}
	add(evt.Sender)
	if members, err := s.opts.State.GetRoomJoinedOrInvitedMembers(ctx, evt.RoomID); err == nil {
		for _, userID := range members {
			add(userID)
		}
	}
	if len(out) == 0 {
		// The state store may not know the room yet: try them all.
		out = s.loadedMachines()
	}
	return out
}

func (s *Service) observe(outcome string, d time.Duration) {
	if s.opts.Observer != nil {
		s.opts.Observer.ObserveDecrypt(outcome, d)
	}
}

// journalDecrypted journals the clear event: the encrypted event's JSON
// with its type and content replaced, marked with what it was encrypted as.
func (s *Service) journalDecrypted(ctx context.Context, logged *eventlog.Event, clear *event.Event) error {
	raw, err := sjson.SetBytes(logged.JSON, "type", clear.Type.Type)
	if err == nil {
		raw, err = sjson.SetRawBytes(raw, "content", clear.Content.VeryRaw)
	}
	if err == nil {
		raw, err = sjson.SetBytes(raw, sjsonKey(DecryptedField), map[string]any{"algorithm": id.AlgorithmMegolmV1})
	}
	if err != nil {
		return fmt.Errorf("failed to build the decrypted event: %w", err)
	}
	if s.opts.Confidential != nil && s.opts.Strip != nil && s.opts.Confidential(logged.RoomID) {
		raw = s.opts.Strip(raw)
	}
	return s.journal(ctx, logged.EventID, raw)
}

// journalUndecryptable journals an encrypted event given up on, so the
// sinks get a DTO that says so instead of nothing.
func (s *Service) journalUndecryptable(ctx context.Context, logged *eventlog.Event, reason string) error {
	raw, err := sjson.SetBytes(logged.JSON, sjsonKey(UndecryptableKey), map[string]any{"reason": reason})
	if err != nil {
		return fmt.Errorf("failed to mark an undecryptable event: %w", err)
	}
	if err = s.journal(ctx, logged.EventID, raw); err != nil {
		return err
	}
	return s.pending.remove(ctx, logged.EventID)
}

func (s *Service) journal(ctx context.Context, eventID string, clearEvent []byte) error {
	body := append(append([]byte(`{"`+DecryptedField+`":[`), clearEvent...), ']', '}')
	if err := s.opts.Log.Journal(ctx, DecryptedTxnPrefix+eventID, body); err != nil {
		return fmt.Errorf("failed to journal the decrypted event %s: %w", eventID, err)
	}
	return nil
}

// retryPending tries the waiting events again, oldest first, and gives up
// on those waiting longer than encryption.give_up_after.
func (s *Service) retryPending(ctx context.Context) error {
	waiting, err := s.pending.list(ctx, maxRetryBatch)
	if err != nil || len(waiting) == 0 {
		return err
	}
	ids := make([]string, len(waiting))
	for i, p := range waiting {
		ids[i] = p.EventID
	}
	logged, err := s.opts.Log.ByEventIDs(ctx, ids)
	if err != nil {
		return err
	}
	s.log.Debug().Int("waiting", len(waiting)).Int("in_log", len(logged)).Msg("Trying again the events waiting for keys")
	giveUp := s.opts.Config.GiveUp()
	for _, p := range waiting {
		row := logged[p.EventID]
		if row == nil {
			// Pruned from the log: nothing is left to decrypt.
			if err = s.pending.remove(ctx, p.EventID); err != nil {
				return err
			}
			continue
		}
		evt, err := parseLogged(row, event.MessageEventType)
		if err != nil {
			continue
		}
		if err = s.decrypt(ctx, row, evt, true); err != nil {
			return err
		}
		still, err := s.pending.has(ctx, p.EventID)
		if err != nil {
			return err
		}
		age := s.opts.Now().Sub(p.Since)
		if still && p.KeyRequested.IsZero() && age >= keyRequestAfter && age < giveUp {
			s.requestKey(ctx, evt)
			if err = s.pending.markRequested(ctx, p.EventID, s.opts.Now()); err != nil {
				return err
			}
		}
		if still && age >= giveUp {
			s.observe(OutcomeGaveUp, 0)
			reason := fmt.Sprintf("no keys for session %s within %s", p.SessionID, giveUp)
			s.log.Info().Str("event_id", p.EventID).Str("session_id", p.SessionID).Msg("Gave up on an event whose keys never came")
			if err = s.journalUndecryptable(ctx, row, reason); err != nil {
				return err
			}
		}
	}
	return nil
}

// maxRetryBatch bounds one retry round.
const maxRetryBatch = 500

// keyRequestAfter is how long an event waits for its key before the bridge
// asks the sender's devices for it. The key normally comes in the same or
// the next transaction; Synapse, though, drops to-device messages sent
// while the appservice is down (it keeps only room events for the retry),
// and a client that shared the key with the bridge's device forwards it
// again on request (m.room_key_request → m.forwarded_room_key).
const keyRequestAfter = 2 * time.Second

// requestKey asks the sender's devices for the key of evt's session, as
// one of the bridge's devices in the room (the one the key was for).
func (s *Service) requestKey(ctx context.Context, evt *event.Event) {
	content := evt.Content.AsEncrypted()
	for _, d := range s.candidates(ctx, evt) {
		if d.client.UserID == evt.Sender {
			continue
		}
		err := d.mach.SendRoomKeyRequest(ctx, evt.RoomID, content.SenderKey, content.SessionID, "",
			map[id.UserID][]id.DeviceID{evt.Sender: {"*"}})
		if err != nil {
			s.log.Warn().Err(err).Stringer("event_id", evt.ID).Msg("Failed to ask for a missing room key")
			continue
		}
		s.log.Info().Stringer("event_id", evt.ID).Stringer("session_id", content.SessionID).Stringer("as", d.client.UserID).
			Msg("Asked the sender's devices for a missing room key")
		s.observe(OutcomeKeyRequested, 0)
		return
	}
}

// Waiting counts the events waiting for keys.
func (s *Service) Waiting(ctx context.Context) (int64, error) {
	if !s.Enabled() {
		return 0, nil
	}
	return s.pending.count(ctx)
}

// Unavailable is why encryption cannot work on this homeserver ("" when it
// can, or is not known yet).
func (s *Service) Unavailable() string {
	if r := s.unavailable.Load(); r != nil {
		return *r
	}
	return ""
}

// Devices counts the machines this process has loaded (0 on a follower).
func (s *Service) Devices() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.machines)
}

// IsEncrypted tells whether roomID is encrypted (see roomEncrypted), asUser
// reading its state when the store has not seen it.
func (s *Service) IsEncrypted(ctx context.Context, asUser id.UserID, roomID id.RoomID) (bool, error) {
	if s == nil {
		return false, nil
	}
	return s.opts.roomEncrypted(ctx, asUser, roomID)
}

// Send posts content as sender into an encrypted room, encrypted with the
// sender's device; handled is false when the room is not encrypted (the
// caller sends it in the clear).
func (s *Service) Send(ctx context.Context, sender id.UserID, roomID id.RoomID, evtType event.Type, content any, extra ...mautrix.ReqSendEvent) (resp *mautrix.RespSendEvent, handled bool, err error) {
	encrypted, err := s.IsEncrypted(ctx, sender, roomID)
	if err != nil || !encrypted {
		return nil, false, err
	}
	if !s.Enabled() || s.Unavailable() != "" {
		return nil, true, apiError{ErrUnavailable}
	}
	d, err := s.device(ctx, sender)
	if err != nil {
		if errors.Is(err, ErrNotLeader) {
			return nil, true, apiError{ErrNotLeader}
		}
		return nil, true, err
	}
	unlock := s.rooms.Lock(roomID.String())
	defer unlock()
	enc, err := d.mach.EncryptMegolmEvent(ctx, roomID, evtType, content)
	if errors.Is(err, crypto.ErrNoGroupSession) || errors.Is(err, crypto.ErrSessionExpired) || errors.Is(err, crypto.ErrSessionNotShared) {
		var members []id.UserID
		if members, err = s.opts.State.GetRoomJoinedOrInvitedMembers(ctx, roomID); err != nil {
			return nil, true, fmt.Errorf("failed to list the room's members: %w", err)
		}
		if err = d.mach.ShareGroupSession(ctx, roomID, members); err != nil {
			return nil, true, fmt.Errorf("failed to share the room key: %w", err)
		}
		enc, err = d.mach.EncryptMegolmEvent(ctx, roomID, evtType, content)
	}
	if err != nil {
		return nil, true, fmt.Errorf("failed to encrypt: %w", err)
	}
	resp, err = d.client.SendMessageEvent(ctx, roomID, event.EventEncrypted, outerContent(content, enc), extra...)
	return resp, true, err
}

// outerContent is what is sent for enc: the encrypted content, plus the
// extra keys of a wrapped content (the messaging package's idempotency
// marker, org.daarion.txn_id) in the clear, so that an interrupted send can
// still be found in the room's history. They are the bridge's bookkeeping,
// never message content.
func outerContent(content any, enc *event.EncryptedEventContent) any {
	wrapped, ok := content.(*event.Content)
	if !ok || len(wrapped.Raw) == 0 {
		return enc
	}
	raw := make(map[string]any, len(wrapped.Raw))
	for k, v := range wrapped.Raw {
		raw[k] = v
	}
	return &event.Content{Parsed: enc, Raw: raw}
}

// sjsonKey is a top-level key as an sjson path: its dots escaped, or sjson
// would nest it ("net.daarion.x" → {"net":{"daarion":{"x":…}}}).
func sjsonKey(key string) string { return strings.ReplaceAll(key, ".", `\.`) }
