package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
)

// payloadGen builds transaction bodies the way Synapse sends them: a JSON
// object {"events":[...]} of m.room.message events, each 300-500 bytes,
// each with an event id unique across the whole run.
type payloadGen struct {
	rng     *rand.Rand
	nonce   [16]byte
	counter uint64
	rooms   []string
	senders []string
	bodies  [][]byte // JSON-encoded content objects, without the braces' neighbours
	buf     []byte
}

// serverName is the homeserver the generated ids belong to.
const serverName = "daarion.test"

var words = strings.Fields(`agent city node proposal vote quorum dao energy grid sensor
	report update status meeting tomorrow please review the draft budget and confirm
	whether we can ship on friday I think so but the migration needs one more pass
	thanks for the summary see attached résumé café naïve 🚀 ✅ — ok ship it
	the water pump in district seven reported a pressure drop at 14:02 UTC
	can someone from operations check the logs before the evening shift starts`)

func newPayloadGen(seed uint64) *payloadGen {
	g := &payloadGen{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	for i := range g.nonce {
		g.nonce[i] = byte(g.rng.Uint32())
	}
	for i := 0; i < 50; i++ {
		g.rooms = append(g.rooms, "!"+g.letters(18)+":"+serverName)
	}
	for i := 0; i < 200; i++ {
		g.senders = append(g.senders, "@agent_"+strconv.Itoa(i)+"_"+g.letters(4)+":"+serverName)
	}
	// Contents: plain text of 40 to 210 bytes, the shorter ones often also
	// with an HTML formatted_body, so that the events come out at 300-500
	// bytes.
	for i := 0; len(g.bodies) < 512; i++ {
		var sb strings.Builder
		target := 40 + g.rng.IntN(160)
		for sb.Len() < target {
			if sb.Len() > 0 {
				sb.WriteByte(' ')
			}
			sb.WriteString(words[g.rng.IntN(len(words))])
		}
		if g.rng.IntN(10) == 0 {
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
		// The rest of an event takes 231-235 bytes.
		if len(b) < 300-231 || len(b) > 500-235 {
			continue
		}
		g.bodies = append(g.bodies, b)
	}
	return g
}

func (g *payloadGen) letters(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[g.rng.IntN(len(alphabet))]
	}
	return string(b)
}

// eventID returns a fresh id shaped like a room v4+ event id: '$' and the
// unpadded URL-safe base64 of a SHA-256 (here of a run nonce and a counter).
func (g *payloadGen) eventID(dst []byte) []byte {
	g.counter++
	var in [24]byte
	copy(in[:], g.nonce[:])
	binary.BigEndian.PutUint64(in[16:], g.counter)
	sum := sha256.Sum256(in[:])
	dst = append(dst, '$')
	return base64.RawURLEncoding.AppendEncode(dst, sum[:])
}

func (g *payloadGen) appendEvent(dst []byte, now int64) []byte {
	dst = append(dst, `{"type":"m.room.message","room_id":"`...)
	dst = append(dst, g.rooms[g.rng.IntN(len(g.rooms))]...)
	dst = append(dst, `","sender":"`...)
	dst = append(dst, g.senders[g.rng.IntN(len(g.senders))]...)
	dst = append(dst, `","event_id":"`...)
	dst = g.eventID(dst)
	dst = append(dst, `","origin_server_ts":`...)
	dst = strconv.AppendInt(dst, now-int64(g.rng.IntN(500)), 10)
	dst = append(dst, `,"content":`...)
	dst = append(dst, g.bodies[g.rng.IntN(len(g.bodies))]...)
	dst = append(dst, `,"unsigned":{"age":`...)
	dst = strconv.AppendInt(dst, int64(g.rng.IntN(500)), 10)
	dst = append(dst, `}}`...)
	return dst
}

// transaction returns the body of a transaction of n events. The slice is
// reused by the next call.
func (g *payloadGen) transaction(n int) []byte {
	now := time.Now().UnixMilli()
	b := append(g.buf[:0], `{"events":[`...)
	for i := 0; i < n; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		b = g.appendEvent(b, now)
	}
	b = append(b, `]}`...)
	g.buf = b
	return b
}
