package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/config"
)

// The city as a Matrix space: #city:<server> holds every live city room
// (m.space.child in the space, m.space.parent in the room). An archived
// room is taken out of the space (its m.space.child emptied, the spec's
// removal) and put back when unarchived; an upgraded room's successor
// replaces it. The alias is the space's only record: any process finds the
// space by resolving it, and two creating it at once meet M_ROOM_IN_USE.

// Bridge state (MSC2346, and the older uk.half-shot.bridge that
// matrix-appservice-bridge clients read) in every city room says where it
// is bridged: protocol daarion, channel the city room's DAARION id.
const (
	bridgeProtocol = "daarion"
	// bridgeStateKeyPrefix starts the bridge state's key; the slug ends it.
	bridgeStateKeyPrefix = "net.daarion.bridge://daarion/"
)

// DAARIONRoomID is the DAARION id of the city room with slug (the rooms
// spec's room_city_general for general).
func DAARIONRoomID(slug string) string { return "room_city_" + slug }

// bridgeInfo is the bridge state's content: MSC2346's, plus the slug.
type bridgeInfo struct {
	event.BridgeEventContent
	Slug string `json:"net.daarion.slug"`
}

func (s *Service) bridgeInfo(cr *CityRoom) *bridgeInfo {
	bot := s.bot.UserID
	return &bridgeInfo{
		BridgeEventContent: event.BridgeEventContent{
			BridgeBot: bot,
			Creator:   bot,
			Protocol:  event.BridgeInfoSection{ID: bridgeProtocol, DisplayName: "DAARION"},
			Network:   &event.BridgeInfoSection{ID: "city", DisplayName: s.cfg.SpaceName()},
			Channel:   event.BridgeInfoSection{ID: DAARIONRoomID(cr.Slug), DisplayName: cr.Name},
		},
		Slug: cr.Slug,
	}
}

// cityRoomState is the state a city room carries for the bridge: the two
// bridge events and, when the city has a space, its parent.
func (s *Service) cityRoomState(cr *CityRoom, spaceID id.RoomID) []*event.Event {
	key := bridgeStateKeyPrefix + cr.Slug
	info := s.bridgeInfo(cr)
	out := []*event.Event{
		{Type: event.StateBridge, StateKey: ptr(key), Content: event.Content{Parsed: info}},
		{Type: event.StateHalfShotBridge, StateKey: ptr(key), Content: event.Content{Parsed: info}},
	}
	if spaceID != "" {
		out = append(out, &event.Event{Type: event.StateSpaceParent, StateKey: ptr(spaceID.String()),
			Content: event.Content{Parsed: &event.SpaceParentEventContent{Via: []string{s.serverName}, Canonical: true}}})
	}
	return out
}

// citySpace caches the space's room id once found or made.
type citySpace struct {
	mu     sync.Mutex
	roomID id.RoomID
}

// SpaceAlias is the city space's alias, #city:<server>.
func (s *Service) SpaceAlias() id.RoomAlias {
	return id.NewRoomAlias(config.CitySpaceLocalpart, s.serverName)
}

// Space returns the city space's room, creating it on first need; "" when
// the config turns the space off.
func (s *Service) Space(ctx context.Context) (id.RoomID, error) {
	if !s.cfg.SpaceEnabled() {
		return "", nil
	}
	s.space.mu.Lock()
	defer s.space.mu.Unlock()
	if s.space.roomID != "" {
		return s.space.roomID, nil
	}
	alias := s.SpaceAlias()
	roomID, err := s.resolveOwnedAlias(ctx, alias)
	if errors.Is(err, ErrNotFound) {
		var resp *mautrix.RespCreateRoom
		resp, err = s.bot.CreateRoom(ctx, s.spaceRequest())
		switch {
		case err == nil:
			roomID = resp.RoomID
			zerolog.Ctx(ctx).Info().Stringer("room_id", roomID).Stringer("alias", alias).Msg("City space created")
		case isMatrixCode(err, "M_ROOM_IN_USE"):
			// Another process made it a moment ago.
			roomID, err = s.resolveOwnedAlias(ctx, alias)
		default:
			err = matrixFailure("creating the city space", err)
		}
	}
	if err != nil {
		return "", err
	}
	s.space.roomID = roomID
	return roomID, nil
}

func (s *Service) spaceRequest() *mautrix.ReqCreateRoom {
	return &mautrix.ReqCreateRoom{
		Visibility:      "public",
		Preset:          "public_chat",
		RoomAliasName:   config.CitySpaceLocalpart,
		Name:            s.cfg.SpaceName(),
		Topic:           s.cfg.Space.Topic,
		CreationContent: map[string]any{"type": event.RoomTypeSpace},
		// Only the bridge changes the city's rooms.
		PowerLevelOverride: &event.PowerLevelsEventContent{EventsDefault: 100},
		InitialState: []*event.Event{
			{Type: event.StateHistoryVisibility, StateKey: ptr(""), Content: event.Content{
				Parsed: &event.HistoryVisibilityEventContent{HistoryVisibility: event.HistoryVisibilityWorldReadable}}},
		},
	}
}

// setChild puts (or, with in false, takes) roomID in the space.
func (s *Service) setChild(ctx context.Context, spaceID, roomID id.RoomID, slug string, in bool) error {
	content := &event.SpaceChildEventContent{}
	if in {
		content = &event.SpaceChildEventContent{Via: []string{s.serverName}, Order: slug}
	}
	if _, err := s.bot.SendStateEvent(ctx, spaceID, event.StateSpaceChild, roomID.String(), content); err != nil {
		return matrixFailure("updating the city space", err)
	}
	return nil
}

// keepSpaceInStep puts a city room in the space or takes it out, and
// replaces a predecessor, after a change that was already recorded: a
// failure is logged, and the space's repair (the API's, the bot's) fixes it.
func (s *Service) keepSpaceInStep(ctx context.Context, cr *CityRoom, predecessor id.RoomID) {
	spaceID, err := s.Space(ctx)
	if err == nil && spaceID != "" {
		if predecessor != "" {
			err = s.setChild(ctx, spaceID, predecessor, cr.Slug, false)
		}
		if err == nil {
			err = s.setChild(ctx, spaceID, cr.RoomID, cr.Slug, !cr.Archived)
		}
		if err == nil && predecessor != "" {
			err = s.putRoomState(ctx, cr, spaceID)
		}
	}
	if err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Str("slug", cr.Slug).Msg("Failed to keep the city space in step; repair it with the space command")
	}
}

// putRoomState sends a city room's bridge state and space parent.
func (s *Service) putRoomState(ctx context.Context, cr *CityRoom, spaceID id.RoomID) error {
	for _, evt := range s.cityRoomState(cr, spaceID) {
		if _, err := s.bot.SendStateEvent(ctx, cr.RoomID, evt.Type, *evt.StateKey, evt.Content.Parsed); err != nil {
			return matrixFailure(fmt.Sprintf("setting %s in %s", evt.Type.Type, cr.Slug), err)
		}
	}
	return nil
}

// SpaceChild is one city room as the space check found it.
type SpaceChild struct {
	Slug     string    `json:"slug"`
	RoomID   id.RoomID `json:"room_id"`
	Archived bool      `json:"archived"`
	// InSpace: the space lists the room (an archived room should not be).
	InSpace bool `json:"in_space"`
	// HasParent: the room names the space as its parent.
	HasParent bool `json:"has_parent"`
	// HasBridgeState: the room carries m.bridge and uk.half-shot.bridge.
	HasBridgeState bool `json:"has_bridge_state"`
	// Error is why the room could not be read (the bot is not in it…).
	Error string `json:"error,omitempty"`
}

// inStep reports whether nothing about the room needs repair.
func (c *SpaceChild) inStep() bool {
	return c.Error == "" && c.InSpace == !c.Archived && (c.Archived || c.HasParent) && c.HasBridgeState
}

// SpaceReport is the city space's children against the city rooms.
type SpaceReport struct {
	SpaceID id.RoomID    `json:"space_id"`
	Alias   id.RoomAlias `json:"alias"`
	Rooms   []SpaceChild `json:"rooms"`
	// Stale are rooms the space lists that are no live city room (a
	// predecessor, a room no longer mapped).
	Stale []id.RoomID `json:"stale"`
	// OutOfStep counts the rooms (and stale children) that needed repair.
	OutOfStep int `json:"out_of_step"`
	// Repaired counts what a repair fixed; Failed what it could not.
	Repaired int `json:"repaired"`
	Failed   int `json:"failed"`
}

// CheckSpace compares the space's children and every city room's state
// with the city rooms; with repair, it fixes what is out of step.
func (s *Service) CheckSpace(ctx context.Context, repair bool) (*SpaceReport, error) {
	spaceID, err := s.Space(ctx)
	if err != nil {
		return nil, err
	} else if spaceID == "" {
		return nil, ErrNoSpace
	}
	report := &SpaceReport{SpaceID: spaceID, Alias: s.SpaceAlias(), Rooms: []SpaceChild{}, Stale: []id.RoomID{}}
	state, err := s.bot.State(ctx, spaceID)
	if err != nil {
		return nil, matrixFailure("reading the city space", err)
	}
	listed := map[id.RoomID]bool{}
	for key, evt := range state[event.StateSpaceChild] {
		var child event.SpaceChildEventContent
		if evt.Content.VeryRaw != nil && json.Unmarshal(evt.Content.VeryRaw, &child) == nil && len(child.Via) > 0 {
			listed[id.RoomID(key)] = true
		}
	}
	live := map[id.RoomID]bool{}
	opts := ListOptions{Limit: 500}
	for {
		page, err := s.store.List(ctx, opts)
		if err != nil {
			return nil, err
		}
		for _, cr := range page {
			live[cr.RoomID] = true
			report.Rooms = append(report.Rooms, s.checkChild(ctx, cr, spaceID, listed[cr.RoomID], repair, report))
		}
		if len(page) < opts.Limit {
			break
		}
		opts.After = page[len(page)-1].Slug
	}
	for roomID := range listed {
		if live[roomID] {
			continue
		}
		report.Stale = append(report.Stale, roomID)
		report.OutOfStep++
		if repair {
			s.countRepair(report, s.setChild(ctx, spaceID, roomID, "", false))
		}
	}
	return report, nil
}

func (s *Service) countRepair(report *SpaceReport, err error) {
	if err != nil {
		report.Failed++
	} else {
		report.Repaired++
	}
}

func (s *Service) checkChild(ctx context.Context, cr *CityRoom, spaceID id.RoomID, listed, repair bool, report *SpaceReport) SpaceChild {
	child := SpaceChild{Slug: cr.Slug, RoomID: cr.RoomID, Archived: cr.Archived, InSpace: listed}
	state, err := s.bot.State(ctx, cr.RoomID)
	if err != nil {
		child.Error = matrixFailure("reading the room's state", err).Error()
	} else {
		key := bridgeStateKeyPrefix + cr.Slug
		child.HasBridgeState = state[event.StateBridge][key] != nil && state[event.StateHalfShotBridge][key] != nil
		if parent := state[event.StateSpaceParent][spaceID.String()]; parent != nil {
			var content event.SpaceParentEventContent
			child.HasParent = json.Unmarshal(parent.Content.VeryRaw, &content) == nil && len(content.Via) > 0
		}
	}
	if child.inStep() {
		return child
	}
	report.OutOfStep++
	if !repair || child.Error != "" {
		if child.Error != "" && repair {
			report.Failed++
		}
		return child
	}
	err = nil
	if child.InSpace != !cr.Archived {
		err = s.setChild(ctx, spaceID, cr.RoomID, cr.Slug, !cr.Archived)
	}
	if err == nil && (!child.HasBridgeState || (!cr.Archived && !child.HasParent)) {
		err = s.putRoomState(ctx, cr, spaceID)
	}
	s.countRepair(report, err)
	if err != nil {
		child.Error = err.Error()
	}
	return child
}
