package rooms

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/rs/zerolog"
	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/consumer"
	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/homeserver"
)

// HandleEvents is the rooms consumer of the event log: a state event drops
// its room from the metadata cache, and a tombstone in a city room moves the
// city room to its replacement.
func (s *Service) HandleEvents(ctx context.Context, events []*eventlog.Event) error {
	for _, evt := range events {
		if evt.Kind != eventlog.KindTimeline || evt.RoomID == "" {
			continue
		}
		// One scan for the state key: most events are not state, and
		// every event of the log passes here.
		stateKey := gjson.Get(string(evt.JSON), "state_key")
		if !stateKey.Exists() {
			continue
		}
		roomID := id.RoomID(evt.RoomID)
		s.cache.Invalidate(roomID)
		if evt.Type != "m.room.tombstone" || stateKey.Str != "" {
			continue
		}
		if replacement := gjson.Get(string(evt.JSON), "content.replacement_room").Str; replacement != "" {
			if err := s.followTombstone(ctx, roomID, id.RoomID(replacement)); err != nil {
				return err
			}
		}
	}
	return nil
}

// joinRetryDelay is how long joinReplacement waits before it asks again
// after the homeserver failed the join.
var joinRetryDelay = time.Second

// joinReplacement joins the bot to a tombstone's replacement room. A 4xx is
// a refusal for good (parked). A 5xx is the homeserver failing — unless it
// fails this join twice while it answers otherwise: Dendrite answers a join
// of a room that does not exist with 500 ("unsupported room version ”") for
// ever, which would hold the rooms consumer at the tombstone for good, so
// that is taken as a refusal too (parked, and retried on request).
func (s *Service) joinReplacement(ctx context.Context, roomID id.RoomID) error {
	_, err := s.bot.JoinRoomByID(ctx, roomID)
	if err == nil || !homeserver.Answered5xx(err) {
		return err
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(joinRetryDelay):
	}
	if _, err = s.bot.JoinRoomByID(ctx, roomID); err == nil || !homeserver.Answered5xx(err) {
		return err
	}
	if _, versionsErr := s.bot.Versions(ctx); versionsErr != nil {
		return err // the homeserver is failing as a whole: transient
	}
	return consumer.Permanent(fmt.Errorf("the homeserver fails this join while it answers other requests: %w", err))
}

// followTombstone moves a city room to the room that replaced it: the bot
// joins the new room, the #city_ alias is pointed at it, and the mapping
// moves while the old room id stays resolvable.
func (s *Service) followTombstone(ctx context.Context, oldRoomID, newRoomID id.RoomID) error {
	log := zerolog.Ctx(ctx).With().Stringer("old_room_id", oldRoomID).Stringer("new_room_id", newRoomID).Logger()
	if ValidateRoomID("replacement_room", newRoomID) != nil {
		log.Warn().Msg("Ignoring tombstone with an invalid replacement room")
		return nil
	}
	cr, err := s.store.ByRoomID(ctx, oldRoomID)
	if err != nil {
		return err
	}
	if cr == nil || cr.RoomID != oldRoomID {
		return nil // not a city room, or already moved
	}
	unlock := s.locks.Lock(cr.Slug)
	defer unlock()

	if err = s.joinReplacement(ctx, newRoomID); err != nil {
		// A refusal for good (the bot may not join the replacement) parks
		// the tombstone for this consumer, with the mapping where it was;
		// it can be retried once the bot is invited. Anything else is retried.
		return fmt.Errorf("failed to join the replacement room %s of city room %s: %w", newRoomID, cr.Slug, err)
	}
	// Synapse moves local aliases on upgrade itself; elsewhere move it here.
	resolved, err := s.bot.ResolveAlias(ctx, cr.Alias)
	if err != nil && !isMatrixCode(err, "M_NOT_FOUND") {
		return fmt.Errorf("failed to resolve %s: %w", cr.Alias, err)
	}
	if resolved == nil || resolved.RoomID != newRoomID {
		if resolved != nil {
			if _, err = s.bot.DeleteAlias(ctx, cr.Alias); err != nil && !isMatrixCode(err, "M_NOT_FOUND") {
				return fmt.Errorf("failed to remove %s from the old room: %w", cr.Alias, err)
			}
		}
		if _, err = s.bot.CreateAlias(ctx, cr.Alias, newRoomID); err != nil {
			// Dendrite moves the alias on upgrade too, a moment after the
			// tombstone: the alias may exist again because it points at
			// the new room already.
			again, resolveErr := s.bot.ResolveAlias(ctx, cr.Alias)
			switch {
			case resolveErr == nil && again.RoomID == newRoomID:
			case homeserver.HasStatus(err, http.StatusConflict):
				// The alias was there again between the delete and the
				// create: a race with the homeserver, retried (%v: not a
				// refusal for good, which would park the tombstone).
				return fmt.Errorf("failed to point %s at the new room, retrying: %v", cr.Alias, err)
			default:
				return fmt.Errorf("failed to point %s at the new room: %w", cr.Alias, err)
			}
		}
	}
	if err = s.store.MoveToRoom(ctx, cr.Slug, oldRoomID, newRoomID); err != nil {
		return err
	}
	// A confidential city room stays confidential in its new room.
	if s.confidential.Is(string(oldRoomID)) {
		if err = s.store.SetConfidential(ctx, newRoomID, true, "room upgrade"); err != nil {
			return err
		}
		s.confidential.apply(newRoomID, true)
	}
	// The old id now answers for the new room: drop what it cached (the
	// tombstone dropped it once, but a move retried later comes after
	// reads of the old room).
	s.cache.Invalidate(oldRoomID)
	log.Info().Str("slug", cr.Slug).Msg("City room followed its room upgrade")
	if moved, err := s.store.BySlug(ctx, cr.Slug); err == nil && moved != nil {
		s.keepSpaceInStep(ctx, moved, oldRoomID)
	}
	return nil
}
