package main

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/daarion/matrix-bridge/internal/benchkit"
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
	g.bodies = benchkit.MessageContents(g.rng, 512, true)
	return g
}

func (g *payloadGen) letters(n int) string { return benchkit.Letters(g.rng, n) }

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
