package rooms

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/config"
	"github.com/daarion/matrix-bridge/pkg/identity"
	"github.com/daarion/matrix-bridge/pkg/internalapi"
)

// RegisterRoutes adds the room endpoints to the internal API. Static paths
// are registered before /rooms/{roomId}, which would otherwise match them.
func (s *Service) RegisterRoutes(api *internalapi.API) {
	api.Handle(http.MethodPost, "/internal/matrix/rooms/create", internalapi.ScopeRooms, s.handleCreateCityRoom)
	api.Handle(http.MethodPost, "/internal/matrix/rooms/ensure", internalapi.ScopeRooms, s.handleEnsure)
	api.Handle(http.MethodGet, "/internal/matrix/rooms/find-by-alias", internalapi.ScopeRooms, s.handleFindByAlias)
	api.Handle(http.MethodGet, "/internal/matrix/rooms", internalapi.ScopeRooms, s.handleList)
	api.Handle(http.MethodPost, "/internal/matrix/create-room", internalapi.ScopeRooms, s.handleCreateRoom)
	api.Handle(http.MethodGet, "/internal/matrix/rooms/{roomId}", internalapi.ScopeRooms, s.handleGetRoom)
	api.Handle(http.MethodPut, "/internal/matrix/rooms/{roomId}/name", internalapi.ScopeRooms, s.handleSetState(event.StateRoomName, "name"))
	api.Handle(http.MethodPut, "/internal/matrix/rooms/{roomId}/topic", internalapi.ScopeRooms, s.handleSetState(event.StateTopic, "topic"))
	api.Handle(http.MethodPut, "/internal/matrix/rooms/{roomId}/avatar", internalapi.ScopeRooms, s.handleSetState(event.StateRoomAvatar, "avatar_url"))
	api.Handle(http.MethodPost, "/internal/matrix/rooms/{roomId}/archive", internalapi.ScopeRooms, s.handleArchive)
	api.Handle(http.MethodPost, "/internal/matrix/rooms/{roomId}/unarchive", internalapi.ScopeRooms, s.handleUnarchive)
	api.Handle(http.MethodGet, "/internal/matrix/rooms/{roomId}/confidential", internalapi.ScopeRooms, s.handleGetConfidential)
	api.Handle(http.MethodPut, "/internal/matrix/rooms/{roomId}/confidential", internalapi.ScopeRooms, s.handleSetConfidential)
	api.Handle(http.MethodGet, "/internal/matrix/space", internalapi.ScopeRooms, s.handleSpace(false))
	api.Handle(http.MethodPost, "/internal/matrix/space/repair", internalapi.ScopeRooms, s.handleSpace(true))
}

// handleSpace reports (and with repair, fixes) the city space's children.
func (s *Service) handleSpace(repair bool) internalapi.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		report, err := s.CheckSpace(r.Context(), repair)
		if err != nil {
			return err
		}
		internalapi.WriteJSON(w, http.StatusOK, report)
		return nil
	}
}

// roomIDVar reads and checks the {roomId} path variable.
func roomIDVar(r *http.Request) (id.RoomID, error) {
	raw, _ := internalapi.PathVar(r, "roomId")
	roomID := id.RoomID(raw)
	if err := ValidateRoomID("roomId", roomID); err != nil {
		return "", err
	}
	return roomID, nil
}

// reachableRoomVar is roomIDVar for a room the caller may reach
// (CheckReach): the read-only room routes.
func (s *Service) reachableRoomVar(r *http.Request) (id.RoomID, error) {
	roomID, err := roomIDVar(r)
	if err != nil {
		return "", err
	}
	if err := s.CheckReach(r.Context(), "roomId", roomID); err != nil {
		return "", err
	}
	return roomID, nil
}

type mappingResponse struct {
	MatrixRoomID    id.RoomID    `json:"matrix_room_id"`
	MatrixRoomAlias id.RoomAlias `json:"matrix_room_alias"`
}

func (s *Service) handleCreateCityRoom(w http.ResponseWriter, r *http.Request) error {
	var body struct {
		Slug       string `json:"slug"`
		Name       string `json:"name"`
		Visibility string `json:"visibility"`
		Topic      string `json:"topic"`
		Encrypted  *bool  `json:"encrypted"`
	}
	if err := internalapi.DecodeJSON(r, &body); err != nil {
		return err
	}
	cr, err := s.Create(r.Context(), CreateRequest{Slug: body.Slug, Name: body.Name, Visibility: body.Visibility, Topic: body.Topic,
		Encrypted: body.Encrypted != nil && *body.Encrypted})
	if err != nil {
		return err
	}
	internalapi.WriteJSON(w, http.StatusOK, mappingResponse{cr.RoomID, cr.Alias})
	return nil
}

// MaxEnsureRooms bounds the city rooms one ensure call names.
const MaxEnsureRooms = 100

// ensureConcurrency is how many rooms of one ensure call are made at once.
const ensureConcurrency = 4

type ensuredRoom struct {
	Slug            string       `json:"slug"`
	MatrixRoomID    id.RoomID    `json:"matrix_room_id"`
	MatrixRoomAlias id.RoomAlias `json:"matrix_room_alias"`
	// Created: this call made the room (false: it existed).
	Created bool `json:"created"`
}

// handleEnsure makes sure each listed city room exists, as create does for
// one, and answers every mapping: what city-service's backfill needs in one
// call. The whole list is checked before anything is made; a homeserver
// failure part-way answers that failure, and a retry completes the work
// (each room is idempotent).
func (s *Service) handleEnsure(w http.ResponseWriter, r *http.Request) error {
	var body struct {
		Rooms []struct {
			Slug       string `json:"slug"`
			Name       string `json:"name"`
			Visibility string `json:"visibility"`
			Topic      string `json:"topic"`
			Encrypted  *bool  `json:"encrypted"`
		} `json:"rooms"`
	}
	if err := internalapi.DecodeJSON(r, &body); err != nil {
		return err
	}
	switch {
	case body.Rooms == nil:
		return internalapi.InvalidField("rooms", "is required")
	case len(body.Rooms) == 0:
		return internalapi.InvalidField("rooms", "must list at least one city room")
	case len(body.Rooms) > MaxEnsureRooms:
		return internalapi.InvalidField("rooms", fmt.Sprintf("must list at most %d city rooms, got %d", MaxEnsureRooms, len(body.Rooms)))
	}
	reqs := make([]CreateRequest, len(body.Rooms))
	seen := make(map[string]bool, len(body.Rooms))
	for i, room := range body.Rooms {
		if room.Visibility == "" {
			room.Visibility = "public"
		}
		reqs[i] = CreateRequest{Slug: room.Slug, Name: room.Name, Visibility: room.Visibility, Topic: room.Topic,
			Encrypted: room.Encrypted != nil && *room.Encrypted}
		if err := reqs[i].Validate(); err != nil {
			return prefixFieldErrors(fmt.Sprintf("rooms[%d].", i), err)
		}
		if seen[room.Slug] {
			return internalapi.InvalidField(fmt.Sprintf("rooms[%d].slug", i), "is listed twice")
		}
		seen[room.Slug] = true
	}
	out := make([]ensuredRoom, len(reqs))
	errs := make([]error, len(reqs))
	slots := make(chan struct{}, ensureConcurrency)
	var wg sync.WaitGroup
	for i, req := range reqs {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			cr, created, err := s.ensure(r.Context(), req)
			if err != nil {
				errs[i] = err
				return
			}
			out[i] = ensuredRoom{Slug: cr.Slug, MatrixRoomID: cr.RoomID, MatrixRoomAlias: cr.Alias, Created: created}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err // the first failure; a retry completes the rest
		}
	}
	internalapi.WriteJSON(w, http.StatusOK, map[string]any{"rooms": out})
	return nil
}

// prefixFieldErrors names a list item's fields (rooms[2].slug) in the
// first field error of err.
func prefixFieldErrors(prefix string, err error) error {
	var fe *identity.FieldError
	if errors.As(err, &fe) {
		return &identity.FieldError{Field: prefix + fe.Field, Problem: fe.Problem}
	}
	return err
}

func (s *Service) handleFindByAlias(w http.ResponseWriter, r *http.Request) error {
	alias := r.URL.Query().Get("alias")
	if alias == "" {
		return internalapi.InvalidField("alias", "is required")
	}
	cr, err := s.FindByAlias(r.Context(), id.RoomAlias(alias))
	if errors.Is(err, ErrNotFound) {
		internalapi.WriteJSON(w, http.StatusNotFound, map[string]string{"error": "not_found"})
		return nil
	} else if err != nil {
		return err
	}
	internalapi.WriteJSON(w, http.StatusOK, mappingResponse{cr.RoomID, cr.Alias})
	return nil
}

// CityRoomJSON is a city room in list answers.
type CityRoomJSON struct {
	Slug            string       `json:"slug"`
	MatrixRoomID    id.RoomID    `json:"matrix_room_id"`
	MatrixRoomAlias id.RoomAlias `json:"matrix_room_alias"`
	Name            string       `json:"name"`
	Topic           string       `json:"topic"`
	Visibility      string       `json:"visibility"`
	Archived        bool         `json:"archived"`
	CreatedAt       time.Time    `json:"created_at"`
	UpdatedAt       time.Time    `json:"updated_at"`
}

// ToJSON returns the list-answer form of a city room.
func (cr *CityRoom) ToJSON() CityRoomJSON {
	return CityRoomJSON{cr.Slug, cr.RoomID, cr.Alias, cr.Name, cr.Topic, cr.Visibility, cr.Archived,
		cr.CreatedAt.UTC(), cr.UpdatedAt.UTC()}
}

const (
	defaultListLimit = 50
	maxListLimit     = 500
)

func (s *Service) handleList(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	opts := ListOptions{Prefix: q.Get("prefix"), After: q.Get("after"), Limit: defaultListLimit}
	if opts.Prefix != "" && !slugRegex.MatchString(opts.Prefix) {
		return internalapi.InvalidField("prefix", "must be the start of a slug (lower-case letters, digits, '-', '_')")
	}
	// after goes to the database as text, which PostgreSQL cannot hold otherwise.
	if !utf8.ValidString(opts.After) || strings.ContainsRune(opts.After, 0) {
		return internalapi.InvalidField("after", "must be the next_after of an earlier page")
	}
	if raw := q.Get("archived"); raw != "" {
		archived, err := strconv.ParseBool(raw)
		if err != nil {
			return internalapi.InvalidField("archived", "must be true or false")
		}
		opts.Archived = &archived
	}
	if raw := q.Get("limit"); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 || n > maxListLimit {
			return internalapi.InvalidField("limit", "must be a whole number from 1 to 500")
		}
		opts.Limit = n
	}
	list, err := s.List(r.Context(), opts)
	if err != nil {
		return err
	}
	resp := struct {
		Rooms     []CityRoomJSON `json:"rooms"`
		NextAfter string         `json:"next_after,omitempty"`
	}{Rooms: make([]CityRoomJSON, 0, len(list))}
	for _, cr := range list {
		resp.Rooms = append(resp.Rooms, cr.ToJSON())
	}
	if len(list) == opts.Limit {
		resp.NextAfter = list[len(list)-1].Slug
	}
	internalapi.WriteJSON(w, http.StatusOK, resp)
	return nil
}

func (s *Service) handleGetRoom(w http.ResponseWriter, r *http.Request) error {
	roomID, err := s.reachableRoomVar(r)
	if err != nil {
		return err
	}
	// A cached room answers from memory. (Moving a city room to its
	// replacement drops the old room's entry, so an old id is never served
	// stale.)
	if meta, ok := s.cache.Peek(roomID); ok {
		internalapi.WriteJSON(w, http.StatusOK, meta)
		return nil
	}
	// A city room's old id (before an upgrade) resolves to where it lives now.
	if cr, err := s.store.ByRoomID(r.Context(), roomID); err == nil && cr != nil {
		roomID = cr.RoomID
	}
	meta, err := s.cache.Get(r.Context(), roomID)
	if err != nil {
		return err
	}
	internalapi.WriteJSON(w, http.StatusOK, meta)
	return nil
}

// handleSetState sets the room's name, topic or avatar from {field: value}.
func (s *Service) handleSetState(evtType event.Type, field string) internalapi.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		roomID, err := roomIDVar(r)
		if err != nil {
			return err
		}
		v, err := internalapi.DecodeField(r, field)
		if err != nil {
			return err
		}
		value := &v
		var content any
		switch field {
		case "name":
			if err := validateText(field, *value, false, maxNameRunes); err != nil {
				return err
			}
			content = &event.RoomNameEventContent{Name: *value}
		case "topic":
			if err := validateText(field, *value, false, maxTopicRunes); err != nil {
				return err
			}
			content = &event.TopicEventContent{Topic: *value}
		default:
			uri, err := id.ParseContentURI(*value)
			if *value != "" && (err != nil || uri.IsEmpty()) {
				return internalapi.InvalidField(field, "must be an mxc:// URI")
			}
			content = &event.RoomAvatarEventContent{URL: id.ContentURIString(*value)}
		}
		if err := s.CheckReach(r.Context(), "roomId", roomID); err != nil {
			return err
		}
		resp, err := s.bot.Client.SendStateEvent(r.Context(), roomID, evtType, "", content)
		if isMatrixCode(err, "M_FORBIDDEN") || isMatrixCode(err, "M_NOT_FOUND") {
			return ErrNotFound
		} else if err != nil {
			return matrixFailure("setting the room's "+field, err)
		}
		s.cache.Invalidate(roomID)
		internalapi.WriteJSON(w, http.StatusOK, map[string]id.EventID{"event_id": resp.EventID})
		return nil
	}
}

type archiveResponse struct {
	MatrixRoomID    id.RoomID    `json:"matrix_room_id"`
	MatrixRoomAlias id.RoomAlias `json:"matrix_room_alias"`
	Slug            string       `json:"slug"`
	Archived        bool         `json:"archived"`
}

func (s *Service) handleArchive(w http.ResponseWriter, r *http.Request) error {
	roomID, err := roomIDVar(r)
	if err != nil {
		return err
	}
	var body struct {
		Reason string `json:"reason"`
	}
	if r.ContentLength != 0 {
		if err := internalapi.DecodeJSON(r, &body); err != nil {
			return err
		}
	}
	cr, err := s.Archive(r.Context(), roomID, body.Reason)
	if err != nil {
		return err
	}
	internalapi.WriteJSON(w, http.StatusOK, archiveResponse{cr.RoomID, cr.Alias, cr.Slug, cr.Archived})
	return nil
}

func (s *Service) handleUnarchive(w http.ResponseWriter, r *http.Request) error {
	roomID, err := roomIDVar(r)
	if err != nil {
		return err
	}
	cr, err := s.Unarchive(r.Context(), roomID)
	if err != nil {
		return err
	}
	internalapi.WriteJSON(w, http.StatusOK, archiveResponse{cr.RoomID, cr.Alias, cr.Slug, cr.Archived})
	return nil
}

// createRoomBody is the gateway spec's POST /internal/matrix/create-room.
type createRoomBody struct {
	Name                      string          `json:"name"`
	Topic                     string          `json:"topic"`
	Visibility                string          `json:"visibility"`
	RoomAliasName             string          `json:"room_alias_name"`
	Preset                    string          `json:"preset"`
	InitialState              []stateEvent    `json:"initial_state"`
	PowerLevelContentOverride json.RawMessage `json:"power_level_content_override"`
	CreationContent           json.RawMessage `json:"creation_content"`
	// Encrypted adds m.room.encryption (Megolm) to the initial state, unless
	// initial_state has one already.
	Encrypted *bool `json:"encrypted"`
}

type stateEvent struct {
	Type     string          `json:"type"`
	StateKey *string         `json:"state_key"`
	Content  json.RawMessage `json:"content"`
}

// toRequest checks the body and makes the homeserver's request; botID is
// the bridge bot, who creates the room and must keep its power in it.
func (b *createRoomBody) toRequest(botID id.UserID) (*mautrix.ReqCreateRoom, error) {
	if err := errors.Join(
		validateText("name", b.Name, false, maxNameRunes),
		validateText("topic", b.Topic, false, maxTopicRunes),
	); err != nil {
		return nil, err
	}
	switch b.Visibility {
	case "", "public", "private":
	default:
		return nil, &identity.FieldError{Field: "visibility", Problem: `must be "public" or "private"`}
	}
	switch b.Preset {
	case "", "private_chat", "public_chat", "trusted_private_chat":
	default:
		return nil, &identity.FieldError{Field: "preset", Problem: "must be private_chat, public_chat or trusted_private_chat"}
	}
	if b.RoomAliasName != "" {
		if len(b.RoomAliasName) > 200 || strings.ContainsAny(b.RoomAliasName, ": #\x00") {
			return nil, &identity.FieldError{Field: "room_alias_name", Problem: "must be an alias localpart without ':', '#' or spaces, at most 200 characters"}
		}
		if strings.HasPrefix(b.RoomAliasName, config.CityAliasPrefix) {
			return nil, &identity.FieldError{Field: "room_alias_name", Problem: "city_ aliases are made by POST /internal/matrix/rooms/create"}
		}
	}
	req := &mautrix.ReqCreateRoom{Name: b.Name, Topic: b.Topic, Visibility: b.Visibility, RoomAliasName: b.RoomAliasName, Preset: b.Preset}
	for i, st := range b.InitialState {
		field := "initial_state[" + strconv.Itoa(i) + "]"
		if st.Type == "" {
			return nil, &identity.FieldError{Field: field + ".type", Problem: "is required"}
		}
		if err := validateIdentifierText(field+".type", st.Type); err != nil {
			return nil, err
		}
		if !isJSONObject(st.Content) {
			return nil, &identity.FieldError{Field: field + ".content", Problem: "must be an object"}
		}
		if err := checkCanonical(field+".content", st.Content); err != nil {
			return nil, err
		}
		stateKey := ""
		if st.StateKey != nil {
			stateKey = *st.StateKey
			if err := validateIdentifierText(field+".state_key", stateKey); err != nil {
				return nil, err
			}
		}
		evt := &event.Event{Type: event.Type{Type: st.Type, Class: event.StateEventType}, StateKey: &stateKey}
		evt.Content.VeryRaw = st.Content
		req.InitialState = append(req.InitialState, evt)
	}
	if b.Encrypted != nil && *b.Encrypted && !slices.ContainsFunc(req.InitialState, func(evt *event.Event) bool {
		return evt.Type.Type == event.StateEncryption.Type && evt.GetStateKey() == ""
	}) {
		req.InitialState = append(req.InitialState, encryptionState())
	}
	if len(b.PowerLevelContentOverride) > 0 {
		if !isJSONObject(b.PowerLevelContentOverride) {
			return nil, &identity.FieldError{Field: "power_level_content_override", Problem: "must be an object"}
		}
		if err := checkCanonical("power_level_content_override", b.PowerLevelContentOverride); err != nil {
			return nil, err
		}
		var pl event.PowerLevelsEventContent
		if err := json.Unmarshal(b.PowerLevelContentOverride, &pl); err != nil {
			return nil, &identity.FieldError{Field: "power_level_content_override", Problem: "is not valid power levels content: " + err.Error()}
		}
		if err := keepsTheBotInCharge(&pl, botID); err != nil {
			return nil, err
		}
		req.PowerLevelOverride = &pl
	}
	if len(b.CreationContent) > 0 {
		if !isJSONObject(b.CreationContent) {
			return nil, &identity.FieldError{Field: "creation_content", Problem: "must be an object"}
		}
		if err := checkCanonical("creation_content", b.CreationContent); err != nil {
			return nil, err
		}
		dec := json.NewDecoder(bytes.NewReader(b.CreationContent))
		dec.UseNumber() // integers stay exact
		_ = dec.Decode(&req.CreationContent)
	}
	return req, nil
}

func isJSONObject(raw json.RawMessage) bool {
	var obj map[string]json.RawMessage
	return json.Unmarshal(raw, &obj) == nil && obj != nil
}

func (s *Service) handleCreateRoom(w http.ResponseWriter, r *http.Request) error {
	var body createRoomBody
	if err := internalapi.DecodeJSON(r, &body); err != nil {
		return err
	}
	req, err := body.toRequest(s.bot.UserID)
	if err != nil {
		return err
	}
	resp, err := s.bot.CreateRoom(r.Context(), req)
	if isMatrixCode(err, "M_ROOM_IN_USE") {
		return &ConflictError{Detail: "room_alias_name is already taken"}
	} else if isMatrixCode(err, "M_EXCLUSIVE") {
		// Synapse lets an appservice create only aliases in its own
		// namespaces (#city_*), and those belong to city rooms.
		return &identity.FieldError{Field: "room_alias_name", Problem: "is refused by the homeserver: the bridge may create only aliases in its namespace, which city rooms own (" + httpErrMessage(err) + ")"}
	} else if isMatrixCode(err, "M_BAD_JSON") || isMatrixCode(err, "M_INVALID_PARAM") || isMatrixCode(err, "M_UNSUPPORTED_ROOM_VERSION") || isMatrixCode(err, "M_FORBIDDEN") {
		// M_FORBIDDEN: the request's own initial state breaks its power
		// levels (what keepsTheBotInCharge does not foresee).
		var httpErr mautrix.HTTPError
		errors.As(err, &httpErr)
		return internalapi.NewError(http.StatusBadRequest, httpErr.RespError.ErrCode, "the homeserver refused the room: "+httpErr.RespError.Err)
	} else if err != nil {
		return matrixFailure("creating the room", err)
	}
	// The room is the services' now: the API may reach it without any_room.
	if err := s.store.MarkManaged(r.Context(), resp.RoomID, OriginCreated, ""); err != nil {
		return err
	}
	var alias *id.RoomAlias
	if body.RoomAliasName != "" {
		a := id.NewRoomAlias(body.RoomAliasName, s.serverName)
		alias = &a
	}
	internalapi.WriteJSON(w, http.StatusOK, struct {
		RoomID    id.RoomID     `json:"room_id"`
		RoomAlias *id.RoomAlias `json:"room_alias"`
	}{resp.RoomID, alias})
	return nil
}

// validateIdentifierText checks a type or state key: at most 255 bytes (the
// spec's bound) and no control characters, which the homeserver may accept
// but the bridge's own log could only index with a stand-in.
func validateIdentifierText(field, v string) error {
	if len(v) > 255 || strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return &identity.FieldError{Field: field, Problem: "must be at most 255 bytes without control characters"}
	}
	return nil
}

// keepsTheBotInCharge refuses a power level override that would lock the
// bridge bot out of the room it creates: the homeserver refuses the room's
// own initial state then (403), after part of it exists.
func keepsTheBotInCharge(pl *event.PowerLevelsEventContent, botID id.UserID) error {
	const field = "power_level_content_override"
	for userID := range pl.Users {
		if _, _, err := userID.Parse(); err != nil {
			return &identity.FieldError{Field: field + ".users", Problem: "has a key that is not a Matrix user id: " + string(userID)}
		}
	}
	// The homeserver puts the override over its defaults key by key: a
	// `users` without the bot leaves it at users_default.
	bot := 100
	if level, ok := pl.Users[botID]; ok {
		bot = level
	} else if pl.Users != nil {
		bot = pl.UsersDefault
	}
	if bot < 100 {
		return &identity.FieldError{Field: field + ".users", Problem: "must leave the bridge bot " + botID.String() + " at 100"}
	}
	required := map[string]int{"state_default": pl.StateDefault(), "ban": pl.Ban(), "kick": pl.Kick(), "redact": pl.Redact(), "invite": pl.Invite()}
	for evtType, level := range pl.Events {
		required["events."+evtType] = level
	}
	for what, level := range required {
		if level > bot {
			return &identity.FieldError{Field: field + "." + what, Problem: "asks more than the bridge bot's 100, so it could not set the room up"}
		}
	}
	return nil
}

func httpErrMessage(err error) string {
	var httpErr mautrix.HTTPError
	if errors.As(err, &httpErr) && httpErr.RespError != nil {
		return httpErr.RespError.ErrCode + ": " + httpErr.RespError.Err
	}
	return err.Error()
}

// encryptionState is the initial m.room.encryption of a room created
// encrypted: Megolm, with the spec's default rotation.
func encryptionState() *event.Event {
	return &event.Event{Type: event.StateEncryption, StateKey: ptr(""), Content: event.Content{
		Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}}}
}

// confidentialResponse is a room's confidentiality.
type confidentialResponse struct {
	RoomID       id.RoomID `json:"room_id"`
	Confidential bool      `json:"confidential"`
}

func (s *Service) handleGetConfidential(w http.ResponseWriter, r *http.Request) error {
	roomID, err := s.reachableRoomVar(r)
	if err != nil {
		return err
	}
	internalapi.WriteJSON(w, http.StatusOK, confidentialResponse{roomID, s.confidential.Is(string(roomID))})
	return nil
}

// handleSetConfidential marks a room confidential or unmarks it, from
// {"confidential": true|false}.
func (s *Service) handleSetConfidential(w http.ResponseWriter, r *http.Request) error {
	roomID, err := roomIDVar(r)
	if err != nil {
		return err
	}
	var body struct {
		Confidential *bool `json:"confidential"`
	}
	if err := internalapi.DecodeJSON(r, &body); err != nil {
		return err
	}
	if body.Confidential == nil {
		return internalapi.InvalidField("confidential", "is required (true or false)")
	}
	by := ""
	if svc := internalapi.ServiceFrom(r.Context()); svc != nil {
		by = svc.Name
	}
	if err := s.SetConfidential(r.Context(), "roomId", roomID, *body.Confidential, by); err != nil {
		return err
	}
	internalapi.WriteJSON(w, http.StatusOK, confidentialResponse{roomID, *body.Confidential})
	return nil
}
