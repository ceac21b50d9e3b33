// Package messaging lets DAARION services act in Matrix: agents as their
// ghosts, humans through double puppeting, the bridge as its bot. It sends
// messages, reactions and redactions, manages membership, uploads media and
// reads history.
package messaging

import (
	"context"
	"fmt"
	"regexp"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/agents"
	"github.com/daarion/matrix-bridge/pkg/config"
	"github.com/daarion/matrix-bridge/pkg/identity"
	"github.com/daarion/matrix-bridge/pkg/internalapi"
	"github.com/daarion/matrix-bridge/pkg/keylock"
	"github.com/daarion/matrix-bridge/pkg/rooms"
)

// Service is the messaging service.
type Service struct {
	as           *appservice.AppService
	agents       *agents.Service
	rooms        *rooms.Service
	mapper       identity.Mapper
	doublePuppet *regexp.Regexp // nil: acting as humans is off
	idem         *IdempotencyStore
	media        config.Media
	regSecret    string
	order        keylock.Mutex
	encryption   Encryption
	// reservedWait is how long a request whose Idempotency-Key another
	// request reserved waits for that send's result before it takes the
	// send to have been interrupted and finishes it.
	reservedWait time.Duration
}

// Options configure the service.
type Options struct {
	AppService  *appservice.AppService
	Agents      *agents.Service
	Rooms       *rooms.Service
	Mapper      identity.Mapper
	Idempotency *IdempotencyStore
	Config      *config.Config
	// Encryption sends into encrypted rooms (e2ee.Service); nil sends
	// every event in the clear.
	Encryption Encryption
}

// Encryption posts an event encrypted when the room is encrypted; handled
// is false for a clear room. IsEncrypted tells an encrypted room (uploads
// for it are encrypted attachments; a send's file needs one).
// *e2ee.Service is one.
type Encryption interface {
	Send(ctx context.Context, sender id.UserID, roomID id.RoomID, evtType event.Type, content any, extra ...mautrix.ReqSendEvent) (*mautrix.RespSendEvent, bool, error)
	IsEncrypted(ctx context.Context, asUser id.UserID, roomID id.RoomID) (bool, error)
}

// NewService returns the messaging service.
func NewService(opts Options) *Service {
	s := &Service{
		as: opts.AppService, agents: opts.Agents, rooms: opts.Rooms, mapper: opts.Mapper,
		idem: opts.Idempotency, encryption: opts.Encryption, media: opts.Config.Media, regSecret: opts.Config.Homeserver.RegistrationSharedSecret,
		// Longer than a send takes, homeserver rate limiting included.
		reservedWait: 15 * time.Second,
	}
	if re := opts.Config.DoublePuppetRegex(); re != "" {
		s.doublePuppet = regexp.MustCompile("^" + re + "$")
	}
	return s
}

// Actor is who a request acts as.
type Actor struct {
	Entity identity.Entity
	Intent *appservice.IntentAPI
}

// actAs resolves the identity a request acts as. field holds a DAARION id
// (or a Matrix id); matrixField/matrixID, when given, must name the same
// user. The calling service's scopes decide who it may act as: agents need
// the agents scope, humans need the double-puppeting namespace, the bridge
// bot needs the admin scope.
func (s *Service) actAs(ctx context.Context, field, value, matrixField string, matrixID id.UserID) (*Actor, error) {
	if value == "" && matrixID != "" {
		field, value = matrixField, string(matrixID)
	}
	if value == "" {
		return nil, &identity.FieldError{Field: field, Problem: "is required"}
	}
	entity, err := s.mapper.ParseUser(field, value)
	if err != nil {
		return nil, err
	}
	if matrixID != "" && matrixID != entity.UserID {
		return nil, &identity.FieldError{Field: matrixField, Problem: fmt.Sprintf("is %s, but %s is %s", matrixID, field, entity.UserID)}
	}
	svc := internalapi.ServiceFrom(ctx)
	switch entity.Kind {
	case identity.KindAgent:
		if !svc.Has(internalapi.ScopeAgents) {
			return nil, internalapi.Forbidden(fmt.Sprintf("service %q lacks the agents scope needed to act as %s", svc.Name, entity.ID))
		}
		intent, err := s.agents.Intent(ctx, field, entity.ID[len("agent:"):])
		if err != nil {
			return nil, err
		}
		return &Actor{Entity: entity, Intent: intent}, nil
	case identity.KindHuman:
		if s.doublePuppet == nil || !s.doublePuppet.MatchString(string(entity.UserID)) {
			return nil, internalapi.Forbidden(fmt.Sprintf("cannot act as %s: the double-puppeting users namespace is not enabled for it (appservice.double_puppet)", entity.UserID))
		}
		return &Actor{Entity: entity, Intent: s.as.Intent(entity.UserID)}, nil
	case identity.KindBridge:
		if !svc.Has(internalapi.ScopeAdmin) {
			return nil, internalapi.Forbidden(fmt.Sprintf("service %q lacks the admin scope needed to act as the bridge bot", svc.Name))
		}
		return &Actor{Entity: entity, Intent: s.as.BotIntent()}, nil
	default:
		return nil, internalapi.Forbidden(fmt.Sprintf("cannot act as %s: not a user of this homeserver the bridge may act for", entity.UserID))
	}
}

// resolveRoom takes a room id, or a city slug when the room id is empty.
func (s *Service) resolveRoom(ctx context.Context, roomID id.RoomID, slug string) (id.RoomID, error) {
	switch {
	case roomID != "" && slug != "":
		return "", &identity.FieldError{Field: "city_slug", Problem: "give room_id or city_slug, not both"}
	case roomID != "":
		if err := rooms.ValidateRoomID("room_id", roomID); err != nil {
			return "", err
		}
		if err := s.rooms.CheckReach(ctx, "room_id", roomID); err != nil {
			return "", err
		}
		// A city room's old id (before an upgrade) goes to its current room.
		if cr, err := s.rooms.Store().ByRoomID(ctx, roomID); err == nil && cr != nil {
			return cr.RoomID, nil
		}
		return roomID, nil
	case slug != "":
		if err := rooms.ValidateSlug("city_slug", slug); err != nil {
			return "", err
		}
		cr, err := s.rooms.Store().BySlug(ctx, slug)
		if err != nil {
			return "", err
		} else if cr == nil {
			return "", internalapi.NotFound("no city room with slug " + slug)
		}
		return cr.RoomID, nil
	default:
		return "", &identity.FieldError{Field: "room_id", Problem: "is required (or city_slug)"}
	}
}
