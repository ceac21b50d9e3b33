package logging

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
)

// reqBodyKey is the field mautrix-go's HTTP client logs every request's
// JSON body in, at debug ("Request completed"): an agent's message, a
// room's topic, a profile. The bridge logs no message content at any
// level, so the writer replaces the field's value by its size.
var reqBodyKey = []byte(`"req_body":`)

// bodyRedactor writes zerolog's JSON lines (one event per Write) to w with
// req_body's value replaced. A key can appear unescaped only as a key: inside
// a string value its quotes are escaped.
type bodyRedactor struct{ w io.Writer }

func (r bodyRedactor) Write(p []byte) (int, error) {
	if !bytes.Contains(p, reqBodyKey) {
		return r.w.Write(p)
	}
	if _, err := r.w.Write(redactBodies(p)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// redactBodies returns line with every req_body value replaced by
// "<omitted: N bytes>" (or the whole rest of the line, when a value does
// not parse).
func redactBodies(line []byte) []byte {
	var out []byte
	for {
		i := bytes.Index(line, reqBodyKey)
		if i < 0 {
			return append(out, line...)
		}
		out = append(out, line[:i+len(reqBodyKey)]...)
		rest := line[i+len(reqBodyKey):]
		dec := json.NewDecoder(bytes.NewReader(rest))
		var value json.RawMessage
		if dec.Decode(&value) != nil {
			return append(out, `"<omitted>"}`+"\n"...)
		}
		n := int(dec.InputOffset())
		out = fmt.Appendf(out, `"<omitted: %d bytes>"`, len(bytes.TrimSpace(rest[:n])))
		line = rest[n:]
	}
}
