package rooms

import (
	"bytes"
	"encoding/json"
	"errors"
	"github.com/daarion/matrix-bridge/pkg/identity"
	"io"
	"strings"
)

// maxSafeInteger is the largest integer canonical JSON allows (2^53 - 1).
const maxSafeInteger = 1<<53 - 1

// checkCanonical reports, as a FieldError naming field, what in raw (a JSON
// value) a homeserver cannot put in an event: canonical JSON (the Matrix
// spec's form for signing) allows only integers within ±(2^53-1) as numbers,
// and Dendrite answers 500 for an object key holding a character JSON
// escapes. Checking here turns that into a 400 before the room exists.
func checkCanonical(field string, raw json.RawMessage) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return &identity.FieldError{Field: field, Problem: "is not JSON: " + err.Error()}
		}
		switch v := tok.(type) {
		case json.Number:
			if problem := canonicalNumber(string(v)); problem != "" {
				return &identity.FieldError{Field: field, Problem: "holds the number " + string(v) + ", but " + problem}
			}
		case string:
			// An object key is a string the next ':' follows; values may
			// hold any character.
			if isKeyPosition(raw, dec.InputOffset()) && strings.ContainsFunc(v, escapedInJSON) {
				return &identity.FieldError{Field: field, Problem: `has an object key with a control character, '"' or '\', which homeservers cannot sign`}
			}
		}
	}
}

// isKeyPosition reports whether the string token that ends at offset in raw
// is an object key: the next non-space byte is ':'.
func isKeyPosition(raw []byte, offset int64) bool {
	for i := int(offset); i < len(raw); i++ {
		switch raw[i] {
		case ' ', '\t', '\n', '\r':
			continue
		case ':':
			return true
		default:
			return false
		}
	}
	return false
}

func escapedInJSON(r rune) bool { return r < 0x20 || r == '"' || r == '\\' }

// canonicalNumber says why a JSON number is not canonical ("" when it is).
func canonicalNumber(n string) string {
	if strings.ContainsAny(n, ".eE") {
		return "event content allows only integers"
	}
	if n == "-0" {
		return "event content does not allow -0"
	}
	var i json.Number = json.Number(n)
	v, err := i.Int64()
	if err != nil || v > maxSafeInteger || v < -maxSafeInteger {
		return "event content allows only integers within ±(2^53-1)"
	}
	return ""
}
