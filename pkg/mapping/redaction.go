package mapping

import (
	"crypto/sha256"
	"encoding/hex"
	"maps"

	json "github.com/segmentio/encoding/json"

	"github.com/daarion/matrix-bridge/pkg/eventlog"
)

// RedactedEvents returns the log event with an event id, nil when the log
// does not hold it (it never reached the bridge, or was pruned). The mapper
// asks it for the event a redaction names; Redacts lists those ids for a
// batch, so that the caller can look them up in one query. Only an event
// logged before the redaction, in the same room, counts, so that an event
// stored later (by a reconcile) cannot change the DTO of a redaction already
// delivered.
type RedactedEvents func(eventID string) *eventlog.Event

// Redacts returns the event id a redaction names, "" for any other event.
func Redacts(evt *eventlog.Event) string {
	// The log's type column first: decoding every event of a batch only to
	// find it is not a redaction cost a tenth of a sink's time.
	if evt.Kind != eventlog.KindTimeline || evt.Type != "m.room.redaction" {
		return ""
	}
	var raw rawEvent
	if json.Unmarshal(evt.JSON, &raw) != nil || raw.Type != "m.room.redaction" {
		return ""
	}
	target, _ := redactionOf(&raw)
	return target
}

// redactionOf returns the event a redaction names and its reason.
func redactionOf(raw *rawEvent) (target, reason string) {
	var c struct {
		Redacts string `json:"redacts"`
		Reason  string `json:"reason"`
	}
	_ = json.Unmarshal(raw.Content, &c)
	target = c.Redacts // room v11 puts it in content
	if target == "" {
		target = raw.Redacts
	}
	return target, c.Reason
}

// mapRedaction maps a redaction (at position in the log) to
// messaging.message.deleted, whatever it redacted: mapping it to another
// type would be a breaking change of DTO version 1. What the log tells about
// the redacted event are optional keys; for a reaction, MapAll adds
// messaging.reaction.removed after it (reactionRemoved).
func (m *Mapper) mapRedaction(dto *DTO, raw *rawEvent, position int64) bool {
	target, reason := redactionOf(raw)
	if target == "" {
		return false
	}
	dto.Type = MessageDeleted
	dto.Data = map[string]any{"redacted_event_id": target, "reason": reason}
	m.addRedacted(dto, target, position)
	return true
}

// addRedacted adds what the log holds of the redacted event, when it holds
// it from before the redaction in the same room: its type and, for a
// reaction, what the reaction was.
func (m *Mapper) addRedacted(dto *DTO, target string, position int64) {
	if m.Redacted == nil || dto.Room == nil {
		return
	}
	evt := m.Redacted(target)
	if evt == nil || evt.Kind != eventlog.KindTimeline || evt.RoomID != dto.Room.MatrixRoomID || evt.EventID != target ||
		evt.Position >= position {
		return
	}
	// The log's type column is what the transaction parser read from the
	// event, so a stored event whose other fields do not decode has one too.
	if evt.Type == "" {
		return
	}
	dto.Data["redacted_type"] = evt.Type
	if evt.Type != "m.reaction" {
		return
	}
	// A reaction the bridge stored already redacted (fetched later) has no
	// relation left: then the DTO cannot say what it was on.
	reaction := map[string]any{}
	var stored struct {
		Content struct {
			RelatesTo *relation `json:"m.relates_to"`
		} `json:"content"`
	}
	if json.Unmarshal(evt.JSON, &stored) == nil {
		if rel := stored.Content.RelatesTo; rel != nil && rel.RelType == "m.annotation" && rel.EventID != "" {
			reaction["target_event_id"], reaction["key"] = rel.EventID, rel.Key
		}
	}
	dto.Data["reaction"] = reaction
}

// ReactionRemovedIDPrefix starts the id of a messaging.reaction.removed:
// the DTO comes second from a redaction whose own event id is its
// messaging.message.deleted's, so it needs an id of its own. Homeserver
// event ids start with '$' and ephemeral ids with "~edu_", so none of the
// three forms can collide.
const ReactionRemovedIDPrefix = "~rr_"

// reactionRemovedDomain separates the hash of a reaction.removed id from
// any other hash of an event id.
const reactionRemovedDomain = "daarion.matrix-bridge.dto.v1.reaction.removed\x00"

// ReactionRemovedID is the id of the messaging.reaction.removed of a
// redaction: ~rr_ and the first 16 bytes of SHA-256 over a domain and the
// redaction's event id, in lowercase hex. The same redaction always gives
// the same id, on every sink and every attempt.
func ReactionRemovedID(redactionEventID string) string {
	sum := sha256.Sum256([]byte(reactionRemovedDomain + redactionEventID))
	return ReactionRemovedIDPrefix + hex.EncodeToString(sum[:16])
}

// reactionRemoved returns the messaging.reaction.removed that follows a
// messaging.message.deleted of a reaction (redacted_type m.reaction: the
// log held the reaction from before the redaction), nil for any other DTO.
// It has the envelope of the deletion (time, room, sender: who redacted,
// origin, matrix_event_id: the redaction's) under an id of its own.
func reactionRemoved(deleted *DTO) *DTO {
	if deleted.Type != MessageDeleted || deleted.Data["redacted_type"] != "m.reaction" {
		return nil
	}
	removed := *deleted
	removed.ID = ReactionRemovedID(deleted.MatrixEventID)
	removed.Type = ReactionRemoved
	removed.Data = map[string]any{"reaction_event_id": deleted.Data["redacted_event_id"], "reason": deleted.Data["reason"]}
	// target_event_id and key, as the reaction's messaging.reaction.added
	// said; absent when the stored reaction had lost its relation.
	if reaction, ok := deleted.Data["reaction"].(map[string]any); ok {
		maps.Copy(removed.Data, reaction)
	}
	return &removed
}
