package mapping

import (
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"

	json "github.com/segmentio/encoding/json"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/identity"
)

// RoomInfo tells the city room behind a Matrix room, if any.
type RoomInfo func(roomID string) (alias, slug string)

// OriginInfo tells whether the bridge sent an event, for whom.
type OriginInfo func(eventID string) *Origin

// Mapper maps log events to DTOs.
type Mapper struct {
	IDs    identity.Mapper
	Rooms  RoomInfo
	Origin OriginInfo
	// Redacted, when set, tells what a redaction redacted: the
	// messaging.message.deleted of a redaction then says the redacted
	// event's type and, for a reaction, what it was. Without it (or when the
	// log does not hold the event) the DTO names the redacted event only.
	Redacted RedactedEvents
	// Confidential, when set, tells the confidential rooms: their DTOs
	// carry no message content (StripContent's allow-list, then
	// stripConfidential) and say confidential: true.
	Confidential func(roomID string) bool
}

// rawEvent is the part of a Matrix event the mapping reads.
type rawEvent struct {
	EventID        string          `json:"event_id"`
	Type           string          `json:"type"`
	Sender         string          `json:"sender"`
	StateKey       *string         `json:"state_key"`
	OriginServerTS int64           `json:"origin_server_ts"`
	Content        json.RawMessage `json:"content"`
	Redacts        string          `json:"redacts"`
	Unsigned       struct {
		PrevContent json.RawMessage `json:"prev_content"`
	} `json:"unsigned"`
	PrevContent json.RawMessage `json:"prev_content"`
	// Undecryptable is set on an encrypted event given up on.
	Undecryptable *struct {
		Reason string `json:"reason"`
	} `json:"net.daarion.undecryptable"`
}

// maxTimestampMS is 10000-01-01T00:00:00Z in unix milliseconds.
const maxTimestampMS = 253402300800000

// PreviewRunes bounds a message preview.
const PreviewRunes = 200

// Preview is the start of a body with whitespace collapsed, as
// messaging-service indexes it.
func Preview(body string) string {
	if preview, ok := plainPreview(body); ok {
		return preview
	}
	// One pass, stopping after PreviewRunes+1 runes: a message body may be
	// tens of kilobytes, and splitting and joining all of it showed in the
	// sinks' profiles. The same text as joining strings.Fields with one
	// space and cutting it to PreviewRunes-1 runes and "…" when longer.
	var b strings.Builder
	runes, cut, pendingSpace := 0, 0, false
	for _, r := range body {
		if unicode.IsSpace(r) {
			pendingSpace = runes > 0
			continue
		}
		if pendingSpace {
			if runes == PreviewRunes-1 {
				cut = b.Len()
			}
			if runes++; runes > PreviewRunes {
				break
			}
			b.WriteByte(' ')
			pendingSpace = false
		}
		if runes == PreviewRunes-1 {
			cut = b.Len()
		}
		if runes++; runes > PreviewRunes {
			break
		}
		b.WriteRune(r)
	}
	if runes > PreviewRunes {
		return b.String()[:cut] + "…"
	}
	return b.String()
}

// plainPreview is Preview of the common body — ASCII, single spaces between
// words, none at the start — without building it again: the body itself
// when it is short enough and does not end in a space, else its first
// PreviewRunes-1 bytes and "…" when the next two bytes are not spaces
// either (so that what is cut has more than PreviewRunes runes). ok is false
// for any other body.
func plainPreview(body string) (string, bool) {
	end := min(len(body), PreviewRunes+1)
	for i := 0; i < end; i++ {
		switch c := body[i]; {
		case c >= 0x80, c == '\t', c == '\n', c == '\v', c == '\f', c == '\r':
			return "", false
		case c == ' ' && (i == 0 || body[i-1] == ' '):
			return "", false
		}
	}
	switch {
	case len(body) <= PreviewRunes:
		return body, len(body) == 0 || body[len(body)-1] != ' '
	case body[PreviewRunes] != ' ':
		return body[:PreviewRunes-1] + "…", true
	}
	return "", false
}

// MaxDTOsPerEvent bounds how many DTOs MapAll makes of one event: a
// redaction of a reaction is messaging.message.deleted and then
// messaging.reaction.removed. Sinks that key deliveries by log position
// leave room for this many per event.
const MaxDTOsPerEvent = 2

// MapAll returns the DTOs of a log event in the order they are delivered,
// nil for types that map to nothing (they are counted by the caller, not
// delivered). Every event has at most one DTO of its own (Map's); a
// redaction of a reaction the log holds has a second one,
// messaging.reaction.removed, with an id derived from the redaction's, so
// that both are made again, the same, whenever the event is mapped again.
func (m *Mapper) MapAll(evt *eventlog.Event) []*DTO {
	dto := m.Map(evt)
	if dto == nil {
		return nil
	}
	if removed := reactionRemoved(dto); removed != nil {
		if removed.Confidential {
			stripConfidential(removed)
		}
		return []*DTO{dto, removed}
	}
	return []*DTO{dto}
}

// Map returns the DTO of a log event, nil for types that map to nothing
// (they are counted by the caller, not delivered). It is the first of
// MapAll's DTOs; sinks deliver MapAll's.
func (m *Mapper) Map(evt *eventlog.Event) *DTO {
	if evt.Kind != eventlog.KindTimeline && evt.Kind != eventlog.KindEphemeral {
		return nil // to-device messages and device summaries are for the crypto machine only
	}
	confidential := evt.RoomID != "" && m.Confidential != nil && m.Confidential(evt.RoomID)
	eventJSON := []byte(evt.JSON)
	if confidential && evt.Kind == eventlog.KindTimeline {
		// The same DTO whether the log holds the event stripped (indexed
		// while the room was confidential) or whole (from before).
		eventJSON = StripContent(eventJSON)
	}
	var raw rawEvent
	if json.Unmarshal(eventJSON, &raw) != nil {
		return nil
	}
	dto := &DTO{ID: evt.EventID, Version: Version, OccurredAt: evt.ReceivedAt.UTC(), Confidential: confidential}
	// A timestamp outside what RFC 3339 can write (year 10000 on) would make
	// the DTO unencodable: such events keep the time they were received.
	if raw.OriginServerTS > 0 && raw.OriginServerTS < maxTimestampMS {
		dto.OccurredAt = time.UnixMilli(raw.OriginServerTS).UTC()
	}
	if evt.RoomID != "" {
		dto.Room = &Room{MatrixRoomID: evt.RoomID}
		if m.Rooms != nil {
			dto.Room.MatrixRoomAlias, dto.Room.CitySlug = m.Rooms(evt.RoomID)
		}
	}
	if raw.Sender != "" {
		dto.Sender = m.entity(raw.Sender)
	}
	var ok bool
	if evt.Kind == eventlog.KindEphemeral {
		ok = m.mapEphemeral(dto, &raw)
	} else {
		dto.MatrixEventID = evt.EventID
		ok = m.mapTimeline(dto, &raw, evt.Position)
		if ok && m.Origin != nil {
			dto.Origin = m.Origin(evt.EventID)
		}
	}
	if !ok {
		return nil
	}
	if confidential {
		stripConfidential(dto)
	}
	return dto
}

func (m *Mapper) entity(userID string) *Entity {
	e := m.IDs.FromMatrix(id.UserID(userID))
	return &Entity{ID: e.ID, Type: string(e.Kind), MatrixID: userID}
}

// relation is content["m.relates_to"].
type relation struct {
	RelType       string `json:"rel_type"`
	EventID       string `json:"event_id"`
	Key           string `json:"key"`
	IsFallingBack bool   `json:"is_falling_back"`
	InReplyTo     *struct {
		EventID string `json:"event_id"`
	} `json:"m.in_reply_to"`
}

type messageContent struct {
	MsgType       string          `json:"msgtype"`
	Body          string          `json:"body"`
	Format        string          `json:"format"`
	FormattedBody string          `json:"formatted_body"`
	URL           string          `json:"url"`
	File          json.RawMessage `json:"file"` // an encrypted attachment
	Info          json.RawMessage `json:"info"`
	FileName      string          `json:"filename"`
	RelatesTo     *relation       `json:"m.relates_to"`
	NewContent    *messageContent `json:"m.new_content"`
	Mentions      *struct {
		UserIDs []string `json:"user_ids"`
		Room    bool     `json:"room"`
	} `json:"m.mentions"`
}

// channelFields are the room state events that update a channel: the DTO's
// field name and the content key holding the value.
var channelFields = map[string]struct{ field, contentKey string }{
	"m.room.name":            {"name", "name"},
	"m.room.topic":           {"topic", "topic"},
	"m.room.avatar":          {"avatar_url", "url"},
	"m.room.canonical_alias": {"canonical_alias", "alias"},
}

var mediaTypes = map[string]bool{"m.image": true, "m.file": true, "m.audio": true, "m.video": true}

// mapTimeline maps a room event; position is its place in the log.
func (m *Mapper) mapTimeline(dto *DTO, raw *rawEvent, position int64) bool {
	switch raw.Type {
	case "m.room.message":
		return m.mapMessage(dto, raw)
	case "m.sticker":
		return m.mapSticker(dto, raw)
	case "m.poll.start", "org.matrix.msc3381.poll.start":
		return m.mapPollStart(dto, raw)
	case "m.poll.response", "org.matrix.msc3381.poll.response":
		return m.mapPollResponse(dto, raw)
	case "m.poll.end", "org.matrix.msc3381.poll.end":
		return m.mapPollEnd(dto, raw)
	case "m.reaction":
		var c messageContent
		if json.Unmarshal(raw.Content, &c) != nil || c.RelatesTo == nil || c.RelatesTo.RelType != "m.annotation" {
			return false
		}
		dto.Type = ReactionAdded
		dto.Data = map[string]any{"target_event_id": c.RelatesTo.EventID, "key": c.RelatesTo.Key}
		return true
	case "m.room.redaction":
		return m.mapRedaction(dto, raw, position)
	case "m.room.encrypted":
		return m.mapUndecryptable(dto, raw)
	case "m.room.member":
		return m.mapMember(dto, raw)
	case "m.room.name", "m.room.topic", "m.room.avatar", "m.room.canonical_alias":
		if raw.StateKey == nil || *raw.StateKey != "" {
			return false
		}
		var c map[string]any
		if json.Unmarshal(raw.Content, &c) != nil {
			return false
		}
		f := channelFields[raw.Type]
		value, _ := c[f.contentKey].(string)
		dto.Type = ChannelUpdated
		dto.Data = map[string]any{"field": f.field, "value": value}
		return true
	case "m.room.pinned_events":
		if raw.StateKey == nil || *raw.StateKey != "" {
			return false
		}
		var c map[string]any
		if json.Unmarshal(raw.Content, &c) != nil {
			return false
		}
		// The list is not a string: value stays empty, the ids have a key
		// of their own. Entries that are not event ids are left out.
		pinned := []string{}
		list, _ := c["pinned"].([]any)
		for _, v := range list {
			if eventID, ok := v.(string); ok && eventID != "" {
				pinned = append(pinned, eventID)
			}
		}
		dto.Type = ChannelUpdated
		dto.Data = map[string]any{"field": "pinned_events", "value": "", "pinned_event_ids": pinned}
		return true
	case "m.room.tombstone":
		var c struct {
			Body            string `json:"body"`
			ReplacementRoom string `json:"replacement_room"`
		}
		if json.Unmarshal(raw.Content, &c) != nil || c.ReplacementRoom == "" {
			return false
		}
		dto.Type = ChannelUpgraded
		dto.Data = map[string]any{"replacement_room_id": c.ReplacementRoom, "body": c.Body}
		return true
	}
	return false
}

func (m *Mapper) mapMessage(dto *DTO, raw *rawEvent) bool {
	var c messageContent
	if json.Unmarshal(raw.Content, &c) != nil || c.MsgType == "" {
		return false
	}
	if c.RelatesTo != nil && c.RelatesTo.RelType == "m.replace" {
		newBody := c.Body
		newFormatted := c.FormattedBody
		if c.NewContent != nil {
			newBody, newFormatted = c.NewContent.Body, c.NewContent.FormattedBody
		}
		dto.Type = MessageEdited
		dto.Data = map[string]any{"edited_event_id": c.RelatesTo.EventID, "body": newBody, "preview": Preview(newBody)}
		if newFormatted != "" {
			dto.Data["formatted_body"] = newFormatted
		}
		return true
	}
	return m.mapMessageContent(dto, &c, raw.Content, false)
}

// mapSticker maps an m.sticker: an image sent as an event type of its own,
// without msgtype. It is messaging.media.uploaded of an m.image, marked.
func (m *Mapper) mapSticker(dto *DTO, raw *rawEvent) bool {
	var c messageContent
	if json.Unmarshal(raw.Content, &c) != nil {
		return false
	}
	c.MsgType = "m.image"
	return m.mapMessageContent(dto, &c, raw.Content, true)
}

// mapMessageContent maps a message that is not an edit; content is the
// event's, for what only some msgtypes read.
func (m *Mapper) mapMessageContent(dto *DTO, c *messageContent, content json.RawMessage, sticker bool) bool {
	data := map[string]any{"msgtype": c.MsgType, "body": c.Body, "preview": Preview(c.Body)}
	switch {
	case mediaTypes[c.MsgType]:
		dto.Type = MediaUploaded
		if sticker {
			data["sticker"] = true
		}
		data["url"] = c.URL
		var file map[string]any
		if c.URL == "" && len(c.File) > 0 && json.Unmarshal(c.File, &file) == nil {
			if url, ok := file["url"].(string); ok {
				data["url"], data["file"] = url, file
			}
		}
		if c.FileName != "" {
			data["filename"] = c.FileName
		}
		if len(c.Info) > 0 {
			var info map[string]any
			if json.Unmarshal(c.Info, &info) == nil && info != nil {
				data["info"] = info
			}
		}
	case c.MsgType == "m.text" || c.MsgType == "m.notice" || c.MsgType == "m.emote":
		dto.Type = MessageCreated
	case c.MsgType == "m.location":
		// A confidential room's location has no place left to name.
		if !addLocation(data, content) && !dto.Confidential {
			return false
		}
		dto.Type = LocationShared
	default:
		return false
	}
	if c.Format != "" && c.FormattedBody != "" {
		data["format"], data["formatted_body"] = c.Format, c.FormattedBody
	}
	if rel := c.RelatesTo; rel != nil {
		if rel.RelType == "m.thread" && rel.EventID != "" {
			data["thread_root_event_id"] = rel.EventID
		}
		// In a thread, m.in_reply_to is a real reply only when it is not the
		// fallback for clients without threads (is_falling_back).
		isThreadFallback := rel.RelType == "m.thread" && (rel.IsFallingBack || rel.InReplyTo != nil && rel.InReplyTo.EventID == rel.EventID)
		if rel.InReplyTo != nil && rel.InReplyTo.EventID != "" && !isThreadFallback {
			data["reply_to_event_id"] = rel.InReplyTo.EventID
		}
	}
	if c.Mentions != nil {
		ids := []string{}
		for _, u := range c.Mentions.UserIDs {
			ids = append(ids, m.IDs.FromMatrix(id.UserID(u)).ID)
		}
		data["mentions"] = map[string]any{"ids": ids, "room": c.Mentions.Room}
	}
	dto.Data = data
	return true
}

func (m *Mapper) mapMember(dto *DTO, raw *rawEvent) bool {
	if raw.StateKey == nil || *raw.StateKey == "" {
		return false
	}
	var c, prev memberContent
	if json.Unmarshal(raw.Content, &c) != nil {
		return false
	}
	prevRaw := raw.Unsigned.PrevContent
	if len(prevRaw) == 0 {
		prevRaw = raw.PrevContent
	}
	if len(prevRaw) > 0 {
		_ = json.Unmarshal(prevRaw, &prev)
	}
	target := m.entity(*raw.StateKey)
	self := raw.Sender == *raw.StateKey
	switch {
	case c.Membership == "join" && prev.Membership == "join":
		return m.mapProfileChange(dto, target, &c, &prev)
	case c.Membership == "join":
		dto.Type = MemberJoined
	case c.Membership == "invite":
		dto.Type = MemberInvited
	case c.Membership == "ban":
		dto.Type = MemberBanned
	case c.Membership == "leave" && prev.Membership == "ban":
		dto.Type = MemberUnbanned
	case c.Membership == "leave" && !self:
		dto.Type = MemberKicked
	case c.Membership == "leave":
		dto.Type = MemberLeft
	default:
		return false
	}
	dto.Data = map[string]any{"target": target, "actor": dto.Sender, "membership": c.Membership}
	if c.Reason != "" {
		dto.Data["reason"] = c.Reason
	}
	if c.Displayname != "" {
		dto.Data["displayname"] = c.Displayname
	}
	return true
}

type memberContent struct {
	Membership  string `json:"membership"`
	Reason      string `json:"reason"`
	Displayname string `json:"displayname"`
	// AvatarURL is read leniently: a member event whose avatar_url is not a
	// string mapped before it was read, and still does.
	AvatarURL lenientString `json:"avatar_url"`
}

// lenientString is a JSON string; any other JSON value reads as "".
type lenientString string

func (s *lenientString) UnmarshalJSON(data []byte) error {
	var v string
	if json.Unmarshal(data, &v) == nil {
		*s = lenientString(v)
	}
	return nil
}

// mapProfileChange maps a join after a join: not a membership change but a
// new display name or avatar. One that changes neither maps to nothing.
func (m *Mapper) mapProfileChange(dto *DTO, target *Entity, c, prev *memberContent) bool {
	changed := []string{}
	if c.AvatarURL != prev.AvatarURL {
		changed = append(changed, "avatar_url")
	}
	if c.Displayname != prev.Displayname {
		changed = append(changed, "displayname")
	}
	if len(changed) == 0 {
		return false
	}
	dto.Type = MemberUpdated
	dto.Data = map[string]any{"target": target, "actor": dto.Sender, "membership": c.Membership, "changed": changed}
	for key, value := range map[string]string{"displayname": c.Displayname, "avatar_url": string(c.AvatarURL),
		"prev_displayname": prev.Displayname, "prev_avatar_url": string(prev.AvatarURL), "reason": c.Reason} {
		if value != "" {
			dto.Data[key] = value
		}
	}
	return true
}

func (m *Mapper) mapEphemeral(dto *DTO, raw *rawEvent) bool {
	switch raw.Type {
	case "m.typing":
		var c struct {
			UserIDs []string `json:"user_ids"`
		}
		if json.Unmarshal(raw.Content, &c) != nil {
			return false
		}
		ids := []*Entity{}
		for _, u := range c.UserIDs {
			ids = append(ids, m.entity(u))
		}
		dto.Type = TypingUpdated
		dto.Data = map[string]any{"typing": ids}
		return true
	case "m.receipt":
		var c map[string]map[string]map[string]struct {
			TS       int64  `json:"ts"`
			ThreadID string `json:"thread_id"`
		}
		if json.Unmarshal(raw.Content, &c) != nil {
			return false
		}
		receipts := []map[string]any{}
		for eventID, byType := range c {
			for receiptType, byUser := range byType {
				for user, r := range byUser {
					entry := map[string]any{"event_id": eventID, "receipt_type": receiptType, "user": m.entity(user), "ts": r.TS}
					if r.ThreadID != "" {
						entry["thread_id"] = r.ThreadID
					}
					receipts = append(receipts, entry)
				}
			}
		}
		// Maps have no order: sort so that the same receipt event is the same DTO.
		slices.SortFunc(receipts, func(a, b map[string]any) int {
			return strings.Compare(fmt.Sprint(a["event_id"], a["receipt_type"], a["user"].(*Entity).ID),
				fmt.Sprint(b["event_id"], b["receipt_type"], b["user"].(*Entity).ID))
		})
		dto.Type = ReadUpdated
		dto.Data = map[string]any{"receipts": receipts}
		return true
	case "m.presence":
		var c struct {
			Presence        string `json:"presence"`
			LastActiveAgo   int64  `json:"last_active_ago"`
			CurrentlyActive bool   `json:"currently_active"`
			StatusMsg       string `json:"status_msg"`
		}
		if json.Unmarshal(raw.Content, &c) != nil || c.Presence == "" {
			return false
		}
		dto.Type = PresenceUpdated
		dto.Data = map[string]any{"presence": c.Presence, "last_active_ago": c.LastActiveAgo, "currently_active": c.CurrentlyActive}
		if c.StatusMsg != "" {
			dto.Data["status_msg"] = c.StatusMsg
		}
		return true
	}
	return false
}

// mapUndecryptable maps an encrypted event pkg/e2ee gave up on (marked
// net.daarion.undecryptable, e2ee.UndecryptableKey); the encrypted event as
// the homeserver sent it has no DTO (its clear form, journalled after it,
// has).
func (m *Mapper) mapUndecryptable(dto *DTO, raw *rawEvent) bool {
	if raw.Undecryptable == nil {
		return false
	}
	var c struct {
		Algorithm string `json:"algorithm"`
		SessionID string `json:"session_id"`
	}
	_ = json.Unmarshal(raw.Content, &c)
	data := map[string]any{"reason": raw.Undecryptable.Reason}
	if c.Algorithm != "" {
		data["algorithm"] = c.Algorithm
	}
	if c.SessionID != "" {
		data["session_id"] = c.SessionID
	}
	dto.Type, dto.Data = MessageUndecryptable, data
	return true
}
