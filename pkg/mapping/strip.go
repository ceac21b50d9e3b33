package mapping

import (
	"bytes"
	"encoding/json"
)

// Confidential rooms: what the bridge keeps of a message. StripContent is
// the one allow-list, shared by the DTOs (Mapper.Confidential), the sync
// answers, the event log's indexer and the end-to-bridge encryption (for
// the clear form of an encrypted event): ids, types, msgtype, relations,
// mentions (user ids), poll answer ids and counts, actors and times. Text,
// HTML, media URLs and keys, file names and info, poll questions and answer
// texts, places and edits' new content are dropped.

// ConfidentialKey marks, in unsigned, an event StripContent stripped.
const ConfidentialKey = "net.daarion.confidential"

// keptTopLevel are the keys of a stripped event besides content and
// unsigned: what the homeserver puts there, none of it written by the
// sender.
var keptTopLevel = map[string]bool{
	"event_id": true, "type": true, "sender": true, "room_id": true, "origin_server_ts": true,
	"redacts": true, "user_id": true, "age": true,
}

// keptUnsigned are the unsigned keys a stripped event keeps (not
// m.relations, whose bundled edits carry content, nor redacted_because,
// whose reason is text).
var keptUnsigned = map[string]bool{"age": true, "transaction_id": true, "membership": true}

// StripContent returns a room event's JSON with its message content
// stripped to the allow-list, marked with unsigned[ConfidentialKey]. It is
// pure and safe on any input:
//
//   - state events (with a state_key) and m.room.encrypted (ciphertext) are
//     returned unchanged: state is not message content, and an encrypted
//     event is what decryption needs;
//   - any other room event — m.room.message, m.sticker, polls, reactions,
//     redactions and every other type — keeps the allow-list only;
//   - input that is not a JSON object is stripped as {} is: nothing of it
//     is kept.
//
// Stripping a stripped event gives it back unchanged.
func StripContent(eventJSON []byte) []byte {
	var top map[string]json.RawMessage
	if json.Unmarshal(eventJSON, &top) != nil {
		top = nil // nothing of it is kept
	}
	var typ string
	_ = json.Unmarshal(top["type"], &typ)
	if stateKey, ok := top["state_key"]; ok && !isJSONNull(stateKey) || typ == "m.room.encrypted" {
		return eventJSON
	}
	out := make(map[string]any, len(top))
	for key, value := range top {
		if keptTopLevel[key] {
			out[key] = value
		}
	}
	var content map[string]json.RawMessage
	_ = json.Unmarshal(top["content"], &content)
	out["content"] = strippedContent(typ, content)
	unsigned := map[string]any{ConfidentialKey: true}
	var oldUnsigned map[string]json.RawMessage
	_ = json.Unmarshal(top["unsigned"], &oldUnsigned)
	for key, value := range oldUnsigned {
		if keptUnsigned[key] {
			unsigned[key] = value
		}
	}
	out["unsigned"] = unsigned
	return marshalPlain(out)
}

// IsStripped tells an event StripContent stripped.
func IsStripped(eventJSON []byte) bool {
	var evt struct {
		Unsigned map[string]json.RawMessage `json:"unsigned"`
	}
	return json.Unmarshal(eventJSON, &evt) == nil && string(evt.Unsigned[ConfidentialKey]) == "true"
}

// strippedContent is the allow-listed part of a message-like content.
func strippedContent(typ string, c map[string]json.RawMessage) map[string]any {
	out := map[string]any{}
	if s, ok := jsonString(c["msgtype"]); ok {
		out["msgtype"] = s
	}
	if rel := strippedRelation(c["m.relates_to"]); rel != nil {
		out["m.relates_to"] = rel
	}
	if mentions := strippedMentions(c["m.mentions"]); mentions != nil {
		out["m.mentions"] = mentions
	}
	switch typ {
	case "m.room.redaction":
		if s, ok := jsonString(c["redacts"]); ok {
			out["redacts"] = s
		}
	case "m.poll.start", "org.matrix.msc3381.poll.start":
		for _, key := range []string{"m.poll", "org.matrix.msc3381.poll.start"} {
			if poll := strippedPoll(c[key]); poll != nil {
				out[key] = poll
			}
		}
	case "m.poll.response", "org.matrix.msc3381.poll.response":
		if ids, ok := stringList(c["m.selections"]); ok {
			out["m.selections"] = ids
		}
		var unstable struct {
			Answers json.RawMessage `json:"answers"`
		}
		if json.Unmarshal(c["org.matrix.msc3381.poll.response"], &unstable) == nil {
			if ids, ok := stringList(unstable.Answers); ok {
				out["org.matrix.msc3381.poll.response"] = map[string]any{"answers": ids}
			}
		}
	case "m.poll.end", "org.matrix.msc3381.poll.end":
		var results map[string]float64
		if json.Unmarshal(c["m.poll.results"], &results) == nil && results != nil {
			out["m.poll.results"] = results
		}
	}
	return out
}

// strippedRelation keeps m.relates_to's ids and kinds: rel_type, event_id,
// key (a reaction's, usually an emoji), is_falling_back and m.in_reply_to's
// event_id.
func strippedRelation(raw json.RawMessage) map[string]any {
	var rel map[string]json.RawMessage
	if json.Unmarshal(raw, &rel) != nil || rel == nil {
		return nil
	}
	out := map[string]any{}
	for _, key := range []string{"rel_type", "event_id", "key"} {
		if s, ok := jsonString(rel[key]); ok {
			out[key] = s
		}
	}
	var falling bool
	if json.Unmarshal(rel["is_falling_back"], &falling) == nil && rel["is_falling_back"] != nil {
		out["is_falling_back"] = falling
	}
	var reply struct {
		EventID json.RawMessage `json:"event_id"`
	}
	if json.Unmarshal(rel["m.in_reply_to"], &reply) == nil {
		if s, ok := jsonString(reply.EventID); ok {
			out["m.in_reply_to"] = map[string]any{"event_id": s}
		}
	}
	return out
}

// strippedMentions keeps m.mentions: user ids and the room flag.
func strippedMentions(raw json.RawMessage) map[string]any {
	var m struct {
		UserIDs json.RawMessage `json:"user_ids"`
		Room    *bool           `json:"room"`
	}
	if json.Unmarshal(raw, &m) != nil || isJSONNull(raw) || len(raw) == 0 {
		return nil
	}
	out := map[string]any{}
	if ids, ok := stringList(m.UserIDs); ok {
		out["user_ids"] = ids
	}
	if m.Room != nil {
		out["room"] = *m.Room
	}
	return out
}

// strippedPoll keeps a poll block's kind, max_selections and answer ids.
func strippedPoll(raw json.RawMessage) map[string]any {
	var poll struct {
		Kind          json.RawMessage   `json:"kind"`
		MaxSelections *float64          `json:"max_selections"`
		Answers       []json.RawMessage `json:"answers"`
	}
	if json.Unmarshal(raw, &poll) != nil || isJSONNull(raw) || len(raw) == 0 {
		return nil
	}
	out := map[string]any{}
	if s, ok := jsonString(poll.Kind); ok {
		out["kind"] = s
	}
	if poll.MaxSelections != nil {
		out["max_selections"] = *poll.MaxSelections
	}
	answers := []map[string]any{}
	for _, a := range poll.Answers {
		var ids map[string]json.RawMessage
		if json.Unmarshal(a, &ids) != nil {
			continue
		}
		answer := map[string]any{}
		for _, key := range []string{"m.id", "id"} {
			if s, ok := jsonString(ids[key]); ok {
				answer[key] = s
			}
		}
		answers = append(answers, answer)
	}
	out["answers"] = answers
	return out
}

func jsonString(raw json.RawMessage) (string, bool) {
	var s string
	if len(raw) == 0 || json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// stringList reads a list of strings, leaving out entries that are not.
func stringList(raw json.RawMessage) ([]string, bool) {
	var list []json.RawMessage
	if len(raw) == 0 || json.Unmarshal(raw, &list) != nil || list == nil {
		return nil, false
	}
	out := []string{}
	for _, v := range list {
		if s, ok := jsonString(v); ok {
			out = append(out, s)
		}
	}
	return out, true
}

func isJSONNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

// marshalPlain encodes v without HTML escaping (the homeserver's own form)
// and without the encoder's trailing newline.
func marshalPlain(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if enc.Encode(v) != nil {
		return []byte("{}")
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// contentKeys are the data keys of message-like DTOs that hold content: a
// confidential room's DTOs leave them out (StripContent has emptied them
// already; the keys go too, so that no consumer reads an empty body as the
// message).
var contentKeys = map[string][]string{
	MessageCreated:  {"body", "preview", "format", "formatted_body"},
	MessageEdited:   {"body", "preview", "formatted_body"},
	MediaUploaded:   {"body", "preview", "format", "formatted_body", "url", "file", "filename", "info"},
	LocationShared:  {"body", "preview", "format", "formatted_body", "geo_uri", "description"},
	PollStarted:     {"question", "preview", "body"},
	PollEnded:       {"body"},
	MessageDeleted:  {"reason"},
	ReactionRemoved: {"reason"},
}

// stripConfidential takes the content keys out of a confidential room's
// DTO; a poll's answers keep their ids only.
func stripConfidential(dto *DTO) {
	for _, key := range contentKeys[dto.Type] {
		delete(dto.Data, key)
	}
	if answers, ok := dto.Data["answers"].([]map[string]any); ok && dto.Type == PollStarted {
		for _, a := range answers {
			delete(a, "text")
		}
	}
}
