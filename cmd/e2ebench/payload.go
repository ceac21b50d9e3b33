package main

import (
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/daarion/matrix-bridge/internal/benchkit"
)

// payloadGen builds transaction bodies as cmd/loadgen does (the figures
// stay comparable with `make bench`): m.room.message events of 300-500
// bytes over a fixed set of rooms, from human senders. Unlike loadgen's,
// an event id carries the run's tag, the phase and a sequence number, so
// that a receiver's report names the event it got without a lookup, and the
// bench records each event's room for the per-room order check.
type payloadGen struct {
	rng     *rand.Rand
	tag     string
	rooms   []string
	senders []string
	bodies  [][]byte // JSON-encoded content objects
	buf     []byte
}

// serverName is the homeserver the generated ids belong to (Dendrite's).
const serverName = "daarion.test"

func newPayloadGen(seed uint64, tag string, rooms int) *payloadGen {
	g := &payloadGen{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), tag: tag}
	for range rooms {
		g.rooms = append(g.rooms, "!"+g.letters(18)+":"+serverName)
	}
	// Humans, not agents: @agent_* is the bridge's own namespace, whose
	// events a consumer may treat as echoes of its own sends.
	for i := range 200 {
		g.senders = append(g.senders, "@user"+strconv.Itoa(i)+"_"+g.letters(4)+":"+serverName)
	}
	g.bodies = benchkit.MessageContents(g.rng, 512, false)
	return g
}

// roomPlan draws the rooms of n events ahead of sending, so the per-room
// order check reads them without sharing state with the sender.
func (g *payloadGen) roomPlan(n int) []uint8 {
	plan := make([]uint8, n)
	for i := range plan {
		plan[i] = uint8(g.rng.IntN(len(g.rooms)))
	}
	return plan
}

func (g *payloadGen) letters(n int) string { return benchkit.Letters(g.rng, n) }

// eventIDLen is a room v4+ event id's length ('$' and 43 characters of
// base64), so the log's index holds ids of the real size.
const eventIDLen = 44

// idPrefix is what every event id of a phase starts with; the sequence
// number and padding follow.
func (g *payloadGen) idPrefix(phase byte) string { return "$e2b" + g.tag + string(phase) + "-" }

func (g *payloadGen) appendEventID(dst []byte, phase byte, seq int) []byte {
	start := len(dst)
	dst = append(dst, g.idPrefix(phase)...)
	dst = strconv.AppendInt(dst, int64(seq), 10)
	dst = append(dst, '-')
	for len(dst)-start < eventIDLen {
		dst = append(dst, 'x')
	}
	return dst
}

// eventID is the id of event seq of a phase.
func (g *payloadGen) eventID(phase byte, seq int) string {
	return string(g.appendEventID(nil, phase, seq))
}

// parseSeq returns the sequence number of an id of phase, or -1.
func parseSeq(prefix, id string) int {
	rest, ok := strings.CutPrefix(id, prefix)
	if !ok {
		return -1
	}
	num, _, ok := strings.Cut(rest, "-")
	n, err := strconv.Atoi(num)
	if !ok || err != nil {
		return -1
	}
	return n
}

// transaction returns the body of a transaction of n events of phase,
// numbered from first, stamped with now as origin_server_ts (the latency
// scenario measures from it), in the rooms given by index in rooms (nil:
// random ones). The slice is reused by the next call.
func (g *payloadGen) transaction(phase byte, first, n int, now time.Time, rooms []uint8) []byte {
	ts := now.UnixMilli()
	b := append(g.buf[:0], `{"events":[`...)
	for i := range n {
		if i > 0 {
			b = append(b, ',')
		}
		room := 0
		if rooms != nil {
			room = int(rooms[i])
		} else {
			room = g.rng.IntN(len(g.rooms))
		}
		b = append(b, `{"type":"m.room.message","room_id":"`...)
		b = append(b, g.rooms[room]...)
		b = append(b, `","sender":"`...)
		b = append(b, g.senders[g.rng.IntN(len(g.senders))]...)
		b = append(b, `","event_id":"`...)
		b = g.appendEventID(b, phase, first+i)
		b = append(b, `","origin_server_ts":`...)
		b = strconv.AppendInt(b, ts, 10)
		b = append(b, `,"content":`...)
		b = append(b, g.bodies[g.rng.IntN(len(g.bodies))]...)
		b = append(b, `,"unsigned":{"age":0}}`...)
	}
	b = append(b, `]}`...)
	g.buf = b
	return b
}
