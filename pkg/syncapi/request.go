package syncapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/internalapi"
)

// Token is the sync token of a log position: "s" and the position in
// decimal. "s0" is the start of the log.
func Token(position int64) string {
	return "s" + strconv.FormatInt(position, 10)
}

var errBadToken = errors.New("malformed token")

// ParseToken returns the log position of a token made by Token. Only the
// canonical form is accepted (no sign, no leading zeros).
func ParseToken(token string) (int64, error) {
	digits, ok := strings.CutPrefix(token, "s")
	if !ok || digits == "" || len(digits) > 19 || (digits[0] == '0' && len(digits) > 1) {
		return 0, errBadToken
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return 0, errBadToken
		}
	}
	pos, err := strconv.ParseInt(digits, 10, 64)
	if err != nil {
		return 0, errBadToken
	}
	return pos, nil
}

// request is a parsed sync request.
type request struct {
	hasSince bool
	since    int64
	timeout  time.Duration
	filter   filter
}

// parseRequest reads since, timeout and filter; bad input is a 400 naming
// the field.
func (h *Handler) parseRequest(r *http.Request) (*request, error) {
	q := r.URL.Query()
	req := &request{timeout: h.maxTimeout, filter: filter{limit: DefaultLimit}}
	if q.Has("since") {
		pos, err := ParseToken(q.Get("since"))
		if err != nil {
			return nil, internalapi.InvalidField("since", `must be a next_batch token ("s" and a position, such as "s0")`)
		}
		req.hasSince, req.since = true, pos
	}
	if q.Has("timeout") {
		ms, err := strconv.ParseInt(q.Get("timeout"), 10, 64)
		var numErr *strconv.NumError
		switch {
		case err == nil:
		case errors.As(err, &numErr) && errors.Is(numErr.Err, strconv.ErrRange):
			// A whole number too large either way: clamped like any other.
		default:
			return nil, internalapi.InvalidField("timeout", "must be a whole number of milliseconds")
		}
		switch {
		case ms <= 0:
			req.timeout = 0
		case ms >= h.maxTimeout.Milliseconds():
			req.timeout = h.maxTimeout
		default:
			req.timeout = time.Duration(ms) * time.Millisecond
		}
	}
	if q.Has("filter") {
		if field, problem := req.filter.parse(q.Get("filter")); field != "" {
			return nil, internalapi.InvalidField(field, problem)
		}
	}
	return req, nil
}

// filter selects the events of an answer.
type filter struct {
	// rooms, when not nil, are the rooms whose events are kept. Events
	// without a room (presence) are not subject to it.
	rooms map[string]struct{}
	// types, when not nil, are the event types kept; prefixes are the
	// types given with a trailing '*'.
	types    map[string]struct{}
	prefixes []string
	limit    int
}

// maxIdentifierBytes is the Matrix spec's limit for room ids and event types.
const maxIdentifierBytes = 255

// parse reads a filter from its JSON text. On bad input it returns the field
// at fault ("filter", "filter.rooms", "filter.rooms[2]", …) and the problem.
func (f *filter) parse(text string) (field, problem string) {
	const notObject = `must be a JSON object such as {"rooms": ["!id:server"], "types": ["m.room.message"], "limit": 100}`
	dec := json.NewDecoder(strings.NewReader(text))
	var fields map[string]json.RawMessage
	if err := dec.Decode(&fields); err != nil || fields == nil ||
		strings.Trim(text[dec.InputOffset():], " \t\r\n") != "" { // data after the object
		return "filter", notObject
	}
	for key, raw := range fields {
		name := "filter." + key
		var field, problem string
		switch key {
		case "rooms":
			field, problem = f.parseRooms(name, raw)
		case "types":
			field, problem = f.parseTypes(name, raw)
		case "limit":
			field, problem = f.parseLimit(name, raw)
		default:
			field, problem = name, "unknown field (the filter has rooms, types and limit)"
		}
		if field != "" {
			return field, problem
		}
	}
	return "", ""
}

// parseRooms reads filter.rooms, room ids; null keeps every room.
func (f *filter) parseRooms(name string, raw json.RawMessage) (field, problem string) {
	list, field, problem := stringList(name, raw, func(s string) string {
		if !strings.HasPrefix(s, "!") {
			return "must be a room id (starting with '!')"
		}
		return ""
	})
	if list != nil {
		f.rooms = make(map[string]struct{}, len(list))
		for _, room := range list {
			f.rooms[room] = struct{}{}
		}
	}
	return field, problem
}

// parseTypes reads filter.types, event types, each maybe ending in '*' (a
// prefix); null keeps every type.
func (f *filter) parseTypes(name string, raw json.RawMessage) (field, problem string) {
	list, field, problem := stringList(name, raw, func(s string) string {
		if strings.Contains(strings.TrimSuffix(s, "*"), "*") {
			return "may hold '*' only at its end"
		}
		return ""
	})
	if list != nil {
		f.types = make(map[string]struct{}, len(list))
		for _, t := range list {
			if prefix, ok := strings.CutSuffix(t, "*"); ok {
				f.prefixes = append(f.prefixes, prefix)
			} else {
				f.types[t] = struct{}{}
			}
		}
	}
	return field, problem
}

// parseLimit reads filter.limit; null keeps the default.
func (f *filter) parseLimit(name string, raw json.RawMessage) (field, problem string) {
	if isNull(raw) {
		return "", ""
	}
	n, err := strconv.Atoi(string(raw))
	if err != nil || n < 1 || n > MaxLimit {
		return name, fmt.Sprintf("must be a whole number from 1 to %d", MaxLimit)
	}
	f.limit = n
	return "", ""
}

func isNull(raw json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(raw), []byte("null")) }

// stringList decodes an array of non-empty strings; null gives nil.
func stringList(name string, raw json.RawMessage, check func(string) string) ([]string, string, string) {
	if isNull(raw) {
		return nil, "", ""
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, name, "must be an array of strings"
	}
	list := make([]string, 0, len(items))
	for i, item := range items {
		itemName := fmt.Sprintf("%s[%d]", name, i)
		var s string
		if err := json.Unmarshal(item, &s); err != nil {
			return nil, itemName, "must be a string"
		}
		switch {
		case s == "":
			return nil, itemName, "must not be empty"
		case len(s) > maxIdentifierBytes || !utf8.ValidString(s):
			return nil, itemName, fmt.Sprintf("must be at most %d bytes of UTF-8", maxIdentifierBytes)
		}
		if problem := check(s); problem != "" {
			return nil, itemName, problem
		}
		list = append(list, s)
	}
	return list, "", ""
}

// selective says whether the filter may drop events.
func (f *filter) selective() bool { return f.rooms != nil || f.types != nil }

// match says whether evt belongs in an answer.
func (f *filter) match(evt *eventlog.Event) bool {
	if evt.RoomID == "" && evt.Kind != eventlog.KindEphemeral {
		return false // a timeline event without a room has no place in an answer
	}
	if f.rooms != nil && evt.RoomID != "" {
		if _, ok := f.rooms[evt.RoomID]; !ok {
			return false
		}
	}
	if f.types != nil {
		if _, ok := f.types[evt.Type]; !ok && !f.matchPrefix(evt.Type) {
			return false
		}
	}
	// Stored events were checked on the way in; one that is not JSON would
	// make every answer holding it fail, so it is passed over.
	return json.Valid(evt.JSON)
}

func (f *filter) matchPrefix(t string) bool {
	for _, prefix := range f.prefixes {
		if strings.HasPrefix(t, prefix) {
			return true
		}
	}
	return false
}
