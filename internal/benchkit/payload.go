package benchkit

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"strings"
)

// words are what generated message bodies are made of.
var words = strings.Fields(`agent city node proposal vote quorum dao energy grid sensor
	report update status meeting tomorrow please review the draft budget and confirm
	whether we can ship on friday I think so but the migration needs one more pass
	thanks for the summary see attached résumé café naïve 🚀 ✅ — ok ship it
	the water pump in district seven reported a pressure drop at 14:02 UTC
	can someone from operations check the logs before the evening shift starts`)

// MessageContents returns n JSON-encoded m.text content objects drawn from
// rng, sized so that an m.room.message event around one comes out at
// 300-500 bytes (the rest of an event takes 231-235): plain text of 40 to
// 210 bytes, the shorter ones often also with an HTML formatted_body.
// quoted adds a quoted word to about one in ten, so that some bodies carry
// escaped quotes. The bench tools share these so their figures compare.
func MessageContents(rng *rand.Rand, n int, quoted bool) [][]byte {
	var out [][]byte
	for i := 0; len(out) < n; i++ {
		var sb strings.Builder
		target := 40 + rng.IntN(160)
		for sb.Len() < target {
			if sb.Len() > 0 {
				sb.WriteByte(' ')
			}
			sb.WriteString(words[rng.IntN(len(words))])
		}
		if quoted && rng.IntN(10) == 0 {
			sb.WriteString(` "quoted"`)
		}
		content := map[string]any{"msgtype": "m.text", "body": sb.String(), "m.mentions": map[string]any{}}
		if i%2 == 0 && target < 85 {
			content["format"] = "org.matrix.custom.html"
			content["formatted_body"] = "<p>" + sb.String() + "</p>"
		}
		// As a homeserver sends it: no HTML escaping of <, > and &.
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(content); err != nil {
			panic(err)
		}
		b := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
		if len(b) < 300-231 || len(b) > 500-235 {
			continue
		}
		out = append(out, b)
	}
	return out
}

// Letters returns n ASCII letters drawn from rng (room and user ids).
func Letters(rng *rand.Rand, n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[rng.IntN(len(alphabet))]
	}
	return string(b)
}
