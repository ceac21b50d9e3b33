package main

import (
	"fmt"
	"sync"
	"time"

	"github.com/daarion/matrix-bridge/internal/benchkit"
)

// tracker records, for one paced phase, when each event was sent and when
// each delivery channel (webhook, NATS, sync) first received it, and checks
// each channel's per-room order as receipts come in.
type tracker struct {
	prefix   string // the phase's event id prefix
	ignore   string // the warm-up's, whose receipts are not counted
	rooms    []uint8
	otsMS    []int64 // origin_server_ts
	sentNS   []int64 // unix ns; written by the sender, read after it finished
	channels map[string]*channel
}

type channel struct {
	mu         sync.Mutex
	at         []int64 // unix ns of the first receipt; 0: not received
	lastSeq    []int   // per room: the highest sequence number received
	outOfOrder int     // receipts of an event older than one already received in its room
	dups       int
	others     int // ids that are not the phase's
}

func newTracker(prefix, ignore string, rooms []uint8, roomCount int, names ...string) *tracker {
	t := &tracker{prefix: prefix, ignore: ignore, rooms: rooms, otsMS: make([]int64, len(rooms)),
		sentNS: make([]int64, len(rooms)), channels: map[string]*channel{}}
	for _, name := range names {
		c := &channel{at: make([]int64, len(rooms)), lastSeq: make([]int, roomCount)}
		for i := range c.lastSeq {
			c.lastSeq[i] = -1
		}
		t.channels[name] = c
	}
	return t
}

// observe notes that channel name received the event with this id at at.
func (t *tracker) observe(name, id string, at time.Time) {
	c := t.channels[name]
	seq := parseSeq(t.prefix, id)
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case seq < 0 || seq >= len(c.at):
		if parseSeq(t.ignore, id) < 0 {
			c.others++
		}
	case c.at[seq] != 0:
		c.dups++
	default:
		c.at[seq] = at.UnixNano()
		room := t.rooms[seq]
		if seq < c.lastSeq[room] {
			c.outOfOrder++
		} else {
			c.lastSeq[room] = seq
		}
	}
}

// received counts the events of the first n that channel name has received.
func (t *tracker) received(name string, n int) int {
	c := t.channels[name]
	c.mu.Lock()
	defer c.mu.Unlock()
	got := 0
	for _, at := range c.at[:n] {
		if at != 0 {
			got++
		}
	}
	return got
}

// channelResult is one channel's account of the phase.
type channelResult struct {
	Expected   int     `json:"expected"`
	Received   int     `json:"received"`
	OutOfOrder int     `json:"out_of_order"`
	Duplicates int     `json:"duplicates"`
	Others     int     `json:"others"`
	FromOTS    latency `json:"from_origin_server_ts"`
	FromSend   latency `json:"from_send"`
}

type latency struct {
	P50     float64 `json:"p50_ms"`
	P90     float64 `json:"p90_ms"`
	P99     float64 `json:"p99_ms"`
	Max     float64 `json:"max_ms"`
	Mean    float64 `json:"mean_ms"`
	N       int     `json:"n"`
	summary benchkit.Summary
}

func toLatency(s benchkit.Summary) latency {
	return latency{P50: benchkit.MS(s.P50), P90: benchkit.MS(s.P90), P99: benchkit.MS(s.P99), Max: benchkit.MS(s.Max),
		Mean: benchkit.MS(s.Mean), N: s.N, summary: s}
}

// result summarizes channel name over the first n events (those sent).
func (t *tracker) result(name string, n int) channelResult {
	c := t.channels[name]
	c.mu.Lock()
	defer c.mu.Unlock()
	r := channelResult{Expected: n, OutOfOrder: c.outOfOrder, Duplicates: c.dups, Others: c.others}
	var fromOTS, fromSend []time.Duration
	for i, at := range c.at[:n] {
		if at == 0 {
			continue
		}
		r.Received++
		fromOTS = append(fromOTS, time.Duration(at-t.otsMS[i]*int64(time.Millisecond)))
		fromSend = append(fromSend, time.Duration(at-t.sentNS[i]))
	}
	r.FromOTS, r.FromSend = toLatency(benchkit.Summarize(fromOTS)), toLatency(benchkit.Summarize(fromSend))
	return r
}

// complete says every event arrived, once, in per-room order.
func (r channelResult) complete() bool {
	return r.Received == r.Expected && r.OutOfOrder == 0 && r.Expected > 0
}

func (r channelResult) describe() string {
	return fmt.Sprintf("%d of %d received, %d out of per-room order, %d twice", r.Received, r.Expected, r.OutOfOrder, r.Duplicates)
}
