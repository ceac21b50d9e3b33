package appservice

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"

	"github.com/daarion/matrix-bridge/pkg/e2ee"
	"github.com/daarion/matrix-bridge/pkg/eventlog"
)

// maxIdentifierBytes is the Matrix spec's limit for event ids, room ids, user
// ids and event types.
const maxIdentifierBytes = 255

// maxNestingDepth bounds how deeply a transaction body nests arrays and
// objects. The validator (gjson) recurses once per level, with about 100
// bytes of stack each: a body of ten million brackets (20 MB, under the body
// limit) takes the goroutine past Go's 1 GB stack limit, a fatal error that
// kills the process, and one of a million costs 100 MB of stack per request.
// The bound is not tight on purpose: a transaction answered 400 is resent by
// the homeserver for ever, holding back everything after it, so the bridge
// must not refuse what a homeserver can deliver. An event sits at depth 3 of
// its transaction (body, events array, event), and encoding/json, which Go
// homeservers and the bridge's consumers decode events with, refuses more
// than 10000 levels (Synapse's Python recursion limit stops it far sooner).
const maxNestingDepth = 2 + 10000

// EphemeralIDPrefix starts the ids the bridge gives ephemeral events, which
// have none of their own. Homeserver event ids start with '$', so the two
// can never collide.
const EphemeralIDPrefix = "~edu_"

// ParseTransaction is parseTransaction for the event log's indexer.
func ParseTransaction(txnID string, body []byte) ([]eventlog.IncomingEvent, error) {
	events, err := parseTransaction(txnID, body)
	if err != nil {
		return nil, *err
	}
	return events, nil
}

// parseTransaction extracts the events of a transaction body without decoding
// their contents: only the fields the log indexes are read, the rest of each
// event is kept byte for byte. The error names the offending field.
func parseTransaction(txnID string, body []byte) ([]eventlog.IncomingEvent, *mautrix.RespError) {
	// Before the validator, which recurses once per level.
	if nestingExceeds(body, maxNestingDepth) {
		err := mautrix.MBadJSON.WithMessage("Transaction body nests arrays and objects deeper than %d levels", maxNestingDepth)
		return nil, &err
	}
	if !utf8.Valid(body) || !gjson.ValidBytes(body) {
		err := mautrix.MNotJSON.WithMessage("Request body is not valid UTF-8 JSON")
		return nil, &err
	}
	root := gjson.ParseBytes(body)
	if !root.IsObject() {
		err := mautrix.MBadJSON.WithMessage("Transaction body must be a JSON object")
		return nil, &err
	}
	// One walk over the top-level keys instead of a search per key (a search
	// for an absent key scans the whole body).
	var timeline, stable, unstable gjson.Result
	var decrypted gjson.Result                              // only in e2ee's own transactions
	var toDevice [2]gjson.Result                            // stable, unstable
	var summaries [len(deviceSummaryFields)][3]gjson.Result // by deviceSummaryFields index
	// For a key given twice (invalid canonical JSON), the first one counts,
	// as with gjson.Get.
	root.ForEach(func(key, value gjson.Result) bool {
		switch {
		case key.Str == "events" && !timeline.Exists():
			timeline = value
		case key.Str == "ephemeral" && !stable.Exists():
			stable = value
		case key.Str == "de.sorunome.msc2409.ephemeral" && !unstable.Exists():
			unstable = value
		case key.Str == "to_device" && !toDevice[0].Exists():
			toDevice[0] = value
		case key.Str == "de.sorunome.msc2409.to_device" && !toDevice[1].Exists():
			toDevice[1] = value
		case key.Str == e2ee.DecryptedField && e2ee.IsDecryptedTxn(txnID) && !decrypted.Exists():
			decrypted = value
		default:
			for i, names := range deviceSummaryFields {
				for j, name := range names {
					if key.Str == name && !summaries[i][j].Exists() {
						summaries[i][j] = value
					}
				}
			}
		}
		return true
	})
	ephemeral, ephemeralField := stable, "ephemeral"
	if !ephemeral.Exists() {
		ephemeral, ephemeralField = unstable, "de.sorunome.msc2409.ephemeral"
	}

	var events []eventlog.IncomingEvent
	if timeline.Exists() {
		if !timeline.IsArray() {
			return nil, badField("events", "must be an array")
		}
		events = make([]eventlog.IncomingEvent, 0, len(timeline.Raw)/512+1)
	}
	var parseErr *mautrix.RespError
	i := 0
	timeline.ForEach(func(_, value gjson.Result) bool {
		evt, err := parseEvent("events", i, value, eventlog.KindTimeline)
		i++
		if err != nil {
			parseErr = err
			return false
		}
		events = append(events, evt)
		return true
	})
	if parseErr != nil {
		return nil, parseErr
	}
	if events, parseErr = appendDerived(events, txnID, ephemeralField, ephemeral, eventlog.KindEphemeral); parseErr != nil {
		return nil, parseErr
	}
	if events, parseErr = appendDecrypted(events, decrypted); parseErr != nil {
		return nil, parseErr
	}
	// To-device messages: the stable field, else the unstable one; null is none.
	list, field := toDevice[0], "to_device"
	if !list.Exists() {
		list, field = toDevice[1], "de.sorunome.msc2409.to_device"
	}
	if list.Type != gjson.Null {
		if events, parseErr = appendDerived(events, txnID, field, list, eventlog.KindToDevice); parseErr != nil {
			return nil, parseErr
		}
	}
	for i, names := range deviceSummaryFields {
		value, field := summaries[i][0], names[0]
		for j := 1; !value.Exists() && j < len(names); j++ {
			value, field = summaries[i][j], names[j]
		}
		if !value.Exists() || value.Type == gjson.Null {
			continue
		}
		if !value.IsObject() {
			return nil, badField(field, "must be an object")
		}
		events = append(events, eventlog.IncomingEvent{
			EventID: ephemeralEventID(txnID, field+"\x00"+value.Raw),
			Kind:    eventlog.KindDeviceSummary,
			Type:    names[0],
			JSON:    value.Raw,
		})
	}
	return events, nil
}

// nestingExceeds reports whether body nests arrays and objects deeper than
// limit, in one pass and without allocating; brackets inside strings do not
// count. It trusts nothing about the body (the validator runs after it): up
// to the first byte that is not JSON it sees the structure any parser sees,
// and the validator stops there, so what it lets through never recurses
// deeper than limit.
func nestingExceeds(body []byte, limit int) bool {
	depth := 0
	for i := 0; i < len(body); i++ {
		switch body[i] {
		case '"':
			// Jump to the closing quote: the next one not escaped by an odd
			// run of backslashes (the opening quote ends any run).
			for {
				j := bytes.IndexByte(body[i+1:], '"')
				if j < 0 {
					return false
				}
				i += 1 + j
				k := i - 1
				for body[k] == '\\' {
					k--
				}
				if (i-1-k)%2 == 0 {
					break
				}
			}
		case '[', '{':
			if depth++; depth > limit {
				return true
			}
		case ']', '}':
			if depth--; depth < 0 {
				return false // not JSON: the validator refuses it here
			}
		}
	}
	return false
}

// deviceSummaryFields are MSC3202's transaction extensions, each as its
// stable name (the Type it is stored under) and the unstable names Synapse
// sends (it sends both spellings of the one-time key counts).
var deviceSummaryFields = [...][]string{
	{"device_lists", "org.matrix.msc3202.device_lists"},
	{"device_one_time_keys_count", "org.matrix.msc3202.device_one_time_keys_count", "org.matrix.msc3202.device_one_time_key_counts"},
	{"device_unused_fallback_key_types", "org.matrix.msc3202.device_unused_fallback_key_types"},
}

// appendDerived adds the events of an array of a transaction that carry no
// event id of their own (ephemeral events, to-device messages): each gets an
// id derived from the transaction id and its bytes.
func appendDerived(events []eventlog.IncomingEvent, txnID, field string, list gjson.Result, kind eventlog.Kind) ([]eventlog.IncomingEvent, *mautrix.RespError) {
	if !list.Exists() {
		return events, nil
	}
	if !list.IsArray() {
		return nil, badField(field, "must be an array")
	}
	var parseErr *mautrix.RespError
	i := 0
	list.ForEach(func(_, value gjson.Result) bool {
		evt, err := parseEvent(field, i, value, kind)
		i++
		if err != nil {
			parseErr = err
			return false
		}
		evt.EventID = ephemeralEventID(txnID, value.Raw)
		events = append(events, evt)
		return true
	})
	if parseErr != nil {
		return nil, parseErr
	}
	return events, nil
}

// appendDecrypted adds the clear events pkg/e2ee journals (DecryptedField):
// room events with their Matrix event ids, stored under ids of their own
// beside the encrypted originals.
func appendDecrypted(events []eventlog.IncomingEvent, list gjson.Result) ([]eventlog.IncomingEvent, *mautrix.RespError) {
	if !list.Exists() {
		return events, nil
	}
	if !list.IsArray() {
		return nil, badField(e2ee.DecryptedField, "must be an array")
	}
	var parseErr *mautrix.RespError
	i := 0
	list.ForEach(func(_, value gjson.Result) bool {
		evt, err := parseEvent(e2ee.DecryptedField, i, value, eventlog.KindDecrypted)
		i++
		if err != nil {
			parseErr = err
			return false
		}
		evt.EventID = e2ee.DecryptedLogID(evt.EventID)
		events = append(events, evt)
		return true
	})
	if parseErr != nil {
		return nil, parseErr
	}
	return events, nil
}

// ephemeralEventID derives a stable id for an ephemeral event: the same
// transaction resent gives the same ids (stored once), while the same typing
// state in a later transaction is a new event.
func ephemeralEventID(txnID, raw string) string {
	h := sha256.New()
	h.Write([]byte(txnID))
	h.Write([]byte{0})
	h.Write([]byte(raw))
	return EphemeralIDPrefix + hex.EncodeToString(h.Sum(nil)[:16])
}

func parseEvent(array string, index int, value gjson.Result, kind eventlog.Kind) (eventlog.IncomingEvent, *mautrix.RespError) {
	// The field path is built only for an error message.
	path := func(field string) string {
		p := array + "[" + strconv.Itoa(index) + "]"
		if field != "" {
			p += "." + field
		}
		return p
	}
	if !value.IsObject() {
		return eventlog.IncomingEvent{}, badField(path(""), "must be an object")
	}
	// One walk over the event's keys picks the four the log indexes.
	var f [4]gjson.Result
	value.ForEach(func(key, v gjson.Result) bool {
		i := -1
		switch key.Str {
		case "event_id":
			i = 0
		case "room_id":
			i = 1
		case "type":
			i = 2
		case "sender":
			i = 3
		}
		if i >= 0 && !f[i].Exists() { // the first of a repeated key counts
			f[i] = v
		}
		return true
	})
	evt := eventlog.IncomingEvent{Kind: kind, JSON: value.Raw}
	var err *mautrix.RespError
	// Room events need an id and a room; ephemeral events have no id, and
	// presence has no room.
	required := kind == eventlog.KindTimeline || kind == eventlog.KindDecrypted
	if required {
		if evt.EventID, err = identifier(path, "event_id", f[0], required); err != nil {
			return evt, err
		}
	}
	if evt.RoomID, err = identifier(path, "room_id", f[1], required); err != nil {
		return evt, err
	}
	if evt.Type, err = identifier(path, "type", f[2], true); err != nil {
		return evt, err
	}
	if evt.Sender, err = identifier(path, "sender", f[3], false); err != nil {
		return evt, err
	}
	return evt, nil
}

func identifier(path func(string) string, field string, value gjson.Result, required bool) (string, *mautrix.RespError) {
	if !value.Exists() || value.Type == gjson.Null {
		if required {
			return "", badField(path(field), "is required")
		}
		return "", nil
	}
	if value.Type != gjson.String {
		return "", badField(path(field), "must be a string")
	}
	s := value.Str
	if s == "" && required {
		return "", badField(path(field), "must not be empty")
	}
	return StorableIdentifier(s), nil
}

// StorableIdentifier is what the log indexes an event's id, room, type or
// sender as. A homeserver can deliver what the log's columns cannot hold —
// Dendrite lets a client create a state event whose type holds NUL — and
// refusing the transaction would stall every event after it (the homeserver
// resends it for ever). So the event is stored, its JSON byte for byte, and
// only the indexed copy of the value is made storable: NUL becomes U+FFFD,
// and past the spec's 255 bytes the value is cut at a character boundary and
// ends in a hash of the whole, so that distinct values stay distinct. A
// value that is fine, which is every value a homeserver following the spec
// sends, is returned as it is.
func StorableIdentifier(s string) string {
	if len(s) <= maxIdentifierBytes && !strings.ContainsRune(s, 0) {
		return s
	}
	clean := strings.ReplaceAll(s, "\x00", "\uFFFD")
	if len(clean) <= maxIdentifierBytes {
		return clean
	}
	sum := sha256.Sum256([]byte(s))
	suffix := "~" + hex.EncodeToString(sum[:8])
	cut := maxIdentifierBytes - len(suffix)
	for cut > 0 && !utf8.RuneStart(clean[cut]) {
		cut--
	}
	return clean[:cut] + suffix
}

func badField(path, problem string) *mautrix.RespError {
	err := mautrix.MBadJSON.WithMessage("%s %s", path, problem).WithExtraField("field", path)
	return &err
}
