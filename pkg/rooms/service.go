package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/config"
	"github.com/daarion/matrix-bridge/pkg/homeserver"
	"github.com/daarion/matrix-bridge/pkg/identity"
	"github.com/daarion/matrix-bridge/pkg/keylock"
)

// NamePrefix starts every city room's Matrix name.
const NamePrefix = "DAARION City — "

// Service manages city rooms and other rooms for DAARION services.
type Service struct {
	store      *Store
	bot        *appservice.IntentAPI
	serverName string
	cfg        config.Rooms
	cache      *MetadataCache
	locks      keylock.Mutex
	direct     *DirectChats
	space      citySpace
	// confidential is the set of confidential rooms (confidential.go).
	confidential *ConfidentialRooms
}

// NewService builds the rooms service. The bot acts for the bridge.
func NewService(store *Store, bot *appservice.IntentAPI, serverName string, cfg config.Rooms) (*Service, error) {
	if !cfg.MetadataCacheTTL.Valid() {
		return nil, fmt.Errorf("rooms.metadata_cache_ttl: %q is not a duration", cfg.MetadataCacheTTL)
	}
	ttl := cfg.MetadataCacheTTL.Duration
	s := &Service{store: store, bot: bot, serverName: serverName, cfg: cfg, confidential: NewConfidentialRooms(store)}
	if bot != nil {
		s.direct = NewDirectChats(bot.Client)
	}
	s.cache = NewMetadataCache(ttl, s.fetchMetadata)
	return s, nil
}

// Store returns the mapping store.
func (s *Service) Store() *Store { return s.store }

// DirectChats returns the bot's direct chats.
func (s *Service) DirectChats() *DirectChats { return s.direct }

// Cache returns the room metadata cache.
func (s *Service) Cache() *MetadataCache { return s.cache }

// CityAlias is the alias of the city room with slug.
func (s *Service) CityAlias(slug string) id.RoomAlias {
	return id.NewRoomAlias(config.CityAliasPrefix+slug, s.serverName)
}

// slugFromAlias returns the slug of a #city_<slug>:<server> alias.
func (s *Service) slugFromAlias(field string, alias id.RoomAlias) (string, error) {
	local, server, err := parseAlias(field, alias)
	if err != nil {
		return "", err
	}
	slug, isCity := strings.CutPrefix(local, config.CityAliasPrefix)
	if !isCity || server != s.serverName {
		return "", &identity.FieldError{Field: field, Problem: fmt.Sprintf("must be a city room alias #%s<slug>:%s", config.CityAliasPrefix, s.serverName)}
	}
	if err = ValidateSlug(field, slug); err != nil {
		return "", &identity.FieldError{Field: field, Problem: "has an invalid slug: " + err.(*identity.FieldError).Problem}
	}
	return slug, nil
}

// CreateRequest is a city room to create.
type CreateRequest struct {
	Slug       string
	Name       string
	Visibility string
	Topic      string
	// Encrypted creates the room with m.room.encryption (Megolm). A slug
	// already mapped is returned as it is, encrypted or not.
	Encrypted bool
}

// Validate checks every field.
func (r *CreateRequest) Validate() error {
	return errors.Join(
		ValidateSlug("slug", r.Slug),
		validateText("name", r.Name, true, maxNameRunes),
		ValidateVisibility("visibility", r.Visibility),
		validateText("topic", r.Topic, false, maxTopicRunes),
	)
}

// Create makes the city room for a slug, or returns the one that exists:
// the same slug always gives the same room, under concurrency too. When
// the homeserver fails, nothing is recorded; a retry completes the work.
func (s *Service) Create(ctx context.Context, req CreateRequest) (*CityRoom, error) {
	cr, _, err := s.ensure(ctx, req)
	return cr, err
}

// ensure is Create that also says whether this call recorded the room.
func (s *Service) ensure(ctx context.Context, req CreateRequest) (*CityRoom, bool, error) {
	if err := req.Validate(); err != nil {
		return nil, false, err
	}
	unlock := s.locks.Lock(req.Slug)
	defer unlock()
	if existing, err := s.store.BySlug(ctx, req.Slug); err != nil || existing != nil {
		return existing, false, err
	}

	alias := s.CityAlias(req.Slug)
	cr := &CityRoom{Slug: req.Slug, Alias: alias, Name: req.Name, Topic: req.Topic, Visibility: req.Visibility}

	// The space first, so that the room is born with its parent; a room
	// the space could not be made for is created anyway, and linked when
	// the space is repaired.
	spaceID, err := s.Space(ctx)
	if err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Str("slug", req.Slug).Msg("Failed to find or create the city space; creating the room without it")
	}
	create := s.cityRoomRequest(cr, spaceID)
	if req.Encrypted {
		create.InitialState = append(create.InitialState, encryptionState())
	}
	resp, err := s.bot.CreateRoom(ctx, create)
	switch {
	case err == nil:
		cr.RoomID = resp.RoomID
	case isMatrixCode(err, "M_ROOM_IN_USE"):
		// The alias exists: an earlier attempt made the room but did not
		// record it (or another bridge process did). Adopt it if it is ours.
		if cr.RoomID, err = s.resolveOwnedAlias(ctx, alias); err != nil {
			return nil, false, err
		}
	default:
		return nil, false, matrixFailure("creating the Matrix room", err)
	}
	inserted, err := s.store.Insert(ctx, cr)
	if err != nil {
		return nil, false, err
	}
	// Re-read: a concurrent process may have recorded the same room first.
	stored, err := s.store.BySlug(ctx, req.Slug)
	if err == nil && stored == nil {
		err = fmt.Errorf("city room %q vanished after insert", req.Slug)
	}
	if err == nil {
		zerolog.Ctx(ctx).Info().Str("slug", stored.Slug).Stringer("room_id", stored.RoomID).Msg("City room ready")
		if spaceID != "" {
			s.keepSpaceInStep(ctx, stored, "")
		}
	}
	return stored, inserted && err == nil, err
}

func (s *Service) cityRoomRequest(req *CityRoom, spaceID id.RoomID) *mautrix.ReqCreateRoom {
	preset, directory := "private_chat", "private"
	if req.Visibility == "public" {
		preset, directory = "public_chat", "public"
	}
	return &mautrix.ReqCreateRoom{
		Visibility:    directory,
		Preset:        preset,
		RoomAliasName: config.CityAliasPrefix + req.Slug,
		Name:          NamePrefix + req.Name,
		Topic:         req.Topic,
		InitialState: append([]*event.Event{
			{Type: event.StateHistoryVisibility, StateKey: ptr(""), Content: event.Content{
				Parsed: &event.HistoryVisibilityEventContent{HistoryVisibility: event.HistoryVisibility(s.cfg.HistoryVisibility)}}},
			{Type: event.StateGuestAccess, StateKey: ptr(""), Content: event.Content{
				Parsed: &event.GuestAccessEventContent{GuestAccess: event.GuestAccess(s.cfg.GuestAccess)}}},
		}, s.cityRoomState(req, spaceID)...),
	}
}

func ptr[T any](v T) *T { return &v }

// resolveOwnedAlias finds the room an alias points to and checks the bridge
// controls it: the bot is in it with power level 100. Anything else is a
// squatted alias, a conflict to report, never a silent adoption.
func (s *Service) resolveOwnedAlias(ctx context.Context, alias id.RoomAlias) (id.RoomID, error) {
	resp, err := s.bot.ResolveAlias(ctx, alias)
	if isMatrixCode(err, "M_NOT_FOUND") {
		return "", ErrNotFound
	} else if err != nil {
		return "", matrixFailure("resolving "+alias.String(), err)
	}
	pl, err := homeserver.PowerLevels(ctx, s.bot.Client, resp.RoomID)
	if isMatrixCode(err, "M_FORBIDDEN") || isMatrixCode(err, "M_NOT_FOUND") {
		return "", &ConflictError{Detail: fmt.Sprintf("%s points to %s, which the bridge bot is not in", alias, resp.RoomID)}
	} else if err != nil {
		return "", matrixFailure("reading power levels of "+resp.RoomID.String(), err)
	}
	if level := pl.GetUserLevel(s.bot.UserID); level < 100 {
		return "", &ConflictError{Detail: fmt.Sprintf("%s points to %s, where the bridge bot has power level %d, not 100", alias, resp.RoomID, level)}
	}
	return resp.RoomID, nil
}

// FindByAlias returns the city room with alias. A room that exists on Matrix
// but not in the bridge's tables is adopted and recorded, if the bridge
// controls it.
func (s *Service) FindByAlias(ctx context.Context, alias id.RoomAlias) (*CityRoom, error) {
	slug, err := s.slugFromAlias("alias", alias)
	if err != nil {
		return nil, err
	}
	if cr, err := s.store.BySlug(ctx, slug); err != nil || cr != nil {
		return cr, err
	}
	// No lock is held while resolving: the homeserver may ask the bridge
	// about this very alias (the appservice alias query) meanwhile.
	roomID, err := s.resolveOwnedAlias(ctx, alias)
	if err != nil {
		return nil, err
	}
	cr := &CityRoom{Slug: slug, RoomID: roomID, Alias: alias, Visibility: "private"}
	s.describeAdoptedRoom(ctx, cr)
	unlock := s.locks.Lock(slug)
	defer unlock()
	if _, err = s.store.Insert(ctx, cr); err != nil {
		return nil, err
	}
	return s.store.BySlug(ctx, slug)
}

// describeAdoptedRoom fills name, topic and visibility from the room's state.
func (s *Service) describeAdoptedRoom(ctx context.Context, cr *CityRoom) {
	cr.Name = cr.Slug
	if meta, err := s.cache.Get(ctx, cr.RoomID); err == nil {
		if meta.Name != "" {
			cr.Name = strings.TrimPrefix(meta.Name, NamePrefix)
		}
		cr.Topic = meta.Topic
	}
	var rules event.JoinRulesEventContent
	if err := s.bot.Client.StateEvent(ctx, cr.RoomID, event.StateJoinRules, "", &rules); err == nil && rules.JoinRule == event.JoinRulePublic {
		cr.Visibility = "public"
	}
}

// QueryAlias answers the homeserver's question about #city_<slug>: a known
// slug gets its alias (re)created and true; an unknown one is created only
// when rooms.create_on_alias_query allows it. It never resolves the alias
// through the client API, which would ask the bridge again.
func (s *Service) QueryAlias(ctx context.Context, alias id.RoomAlias) (bool, error) {
	if alias == s.SpaceAlias() {
		// Never made here: the bridge's own look-up of the alias, while it
		// finds or makes the space, asks this too (Dendrite does).
		return false, nil
	}
	slug, err := s.slugFromAlias("alias", alias)
	if err != nil {
		return false, nil
	}
	cr, err := s.store.BySlug(ctx, slug)
	if err != nil {
		return false, err
	}
	if cr == nil {
		if !s.cfg.CreateOnAliasQuery {
			return false, nil
		}
		_, err = s.Create(ctx, CreateRequest{Slug: slug, Name: slug, Visibility: "public"})
		return err == nil, err
	}
	// The homeserver asks only when it has no such alias: put it back.
	// A 409 means it exists already (restored concurrently): fine.
	if _, err = s.bot.CreateAlias(ctx, alias, cr.RoomID); err != nil && !isHTTPStatus(err, http.StatusConflict) {
		return false, matrixFailure("restoring alias "+alias.String(), err)
	}
	return true, nil
}

// List returns city rooms.
func (s *Service) List(ctx context.Context, opts ListOptions) ([]*CityRoom, error) {
	return s.store.List(ctx, opts)
}

// archivedEventTypes are raised to power level 100 in an archived room.
var archivedEventTypes = []event.Type{event.EventMessage, event.EventReaction, event.EventSticker, event.EventEncrypted, event.EventRedaction}

// Archive locks a city room: only power level 100 (the bot) may post. The
// room is kept; Unarchive restores the power levels it had.
func (s *Service) Archive(ctx context.Context, roomID id.RoomID, reason string) (*CityRoom, error) {
	if err := validateText("reason", reason, false, maxTopicRunes); err != nil {
		return nil, err
	}
	cr, unlock, err := s.lockedByRoomID(ctx, roomID)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if cr.Archived {
		return cr, nil
	}
	var raw json.RawMessage
	if err = s.bot.Client.StateEvent(ctx, cr.RoomID, event.StatePowerLevels, "", &raw); err != nil {
		return nil, matrixFailure("reading power levels", err)
	}
	var pl event.PowerLevelsEventContent
	if err = json.Unmarshal(raw, &pl); err != nil {
		return nil, fmt.Errorf("failed to parse power levels of %s: %w", cr.RoomID, err)
	}
	pl.EventsDefault = 100
	if pl.Events == nil {
		pl.Events = map[string]int{}
	}
	for _, t := range archivedEventTypes {
		pl.Events[t.Type] = 100
	}
	if _, err = s.bot.Client.SendStateEvent(ctx, cr.RoomID, event.StatePowerLevels, "", &pl); err != nil {
		return nil, matrixFailure("locking the room", err)
	}
	if reason != "" {
		_, _ = s.bot.Client.SendMessageEvent(ctx, cr.RoomID, event.EventMessage, &event.MessageEventContent{
			MsgType: event.MsgNotice, Body: "This room is archived: " + reason,
		})
	}
	if err = s.store.SetArchived(ctx, cr.Slug, true, string(raw)); err != nil {
		return nil, err
	}
	return s.afterArchiveChange(ctx, cr.Slug)
}

// afterArchiveChange re-reads a city room whose archived flag changed and
// takes it out of the space or puts it back.
func (s *Service) afterArchiveChange(ctx context.Context, slug string) (*CityRoom, error) {
	cr, err := s.store.BySlug(ctx, slug)
	if err == nil && cr != nil {
		s.keepSpaceInStep(ctx, cr, "")
	}
	return cr, err
}

// Unarchive restores the power levels the room had before Archive.
func (s *Service) Unarchive(ctx context.Context, roomID id.RoomID) (*CityRoom, error) {
	cr, unlock, err := s.lockedByRoomID(ctx, roomID)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if !cr.Archived {
		return cr, nil
	}
	if cr.PreArchivePowerLevels != "" {
		if _, err = s.bot.Client.SendStateEvent(ctx, cr.RoomID, event.StatePowerLevels, "", json.RawMessage(cr.PreArchivePowerLevels)); err != nil {
			return nil, matrixFailure("unlocking the room", err)
		}
	}
	if err = s.store.SetArchived(ctx, cr.Slug, false, ""); err != nil {
		return nil, err
	}
	return s.afterArchiveChange(ctx, cr.Slug)
}

func (s *Service) lockedByRoomID(ctx context.Context, roomID id.RoomID) (*CityRoom, func(), error) {
	if err := ValidateRoomID("roomId", roomID); err != nil {
		return nil, nil, err
	}
	cr, err := s.store.ByRoomID(ctx, roomID)
	if err != nil {
		return nil, nil, err
	} else if cr == nil {
		return nil, nil, ErrNotFound
	}
	unlock := s.locks.Lock(cr.Slug)
	// Re-read under the lock.
	if cr, err = s.store.BySlug(ctx, cr.Slug); err != nil || cr == nil {
		unlock()
		if err == nil {
			err = ErrNotFound
		}
		return nil, nil, err
	}
	return cr, unlock, nil
}
