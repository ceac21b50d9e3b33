package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"maunium.net/go/mautrix/id"
)

// sinkReport is what one sink received.
type sinkReport struct {
	Name string
	// Received counts every DTO the sink got (webhook: 2xx-answered
	// deliveries; NATS: messages in the stream).
	Received int
	// DistinctDTOs counts distinct DTO ids among them.
	DistinctDTOs int
	// ProducedReceived counts produced messages whose DTO arrived.
	ProducedReceived int
	// Lost counts produced messages whose DTO never arrived.
	Lost    int
	LostIDs []string
	// Redelivered counts extra copies of a DTO id already received
	// (allowed by at-least-once delivery).
	Redelivered int
	// OutOfOrder counts, per room, DTOs of produced messages that arrived
	// after a DTO with a later log position (first arrivals only).
	OutOfOrder        int
	OutOfOrderSamples []string
}

// report is the soak's verdict.
type report struct {
	Seed     uint64
	Duration time.Duration
	Machine  string
	Rate     float64

	Produced, ProducedHumans, ProducedAgents int
	Abandoned                                []string

	LogEvents          int
	ProducedInLog      int
	MissingFromLog     []string
	SenderOrderLog     int // a producer's messages out of its send order in the log, per room
	SenderOrderSamples []string
	UnknownInLog       int // soak messages in the log that no send answered (abandoned sends that went through)
	DuplicatedEvent    []string
	// DuplicatedByCause counts the duplicated events by their likely cause.
	DuplicatedByCause map[string]int
	// Of the sender order inversions: late events the homeserver delivered
	// across its restart, and the rest.
	SenderOrderByHomeserver, SenderOrderUnexplained int

	Sinks []sinkReport

	APIStatus    map[int]int
	API5xx       int
	APINoAnswer  int
	HumanRetries map[string]int

	Chaos       []chaosRecord
	ChaosCounts map[string]int

	Drained       bool
	DrainTook     time.Duration
	BridgeStarts  int
	StartsBySlot  map[string]int
	BridgePanics  int
	BridgeErrors  int
	Cursors       map[string]int64
	Head          int64
	WebhookTries  int
	Webhook500s   int
	WebhookBadSig int
	WebhookDead   int64
	Problems      []string

	// Leader freezes (from Chaos).
	Freezes []*freezeRecord
	// Poison events: tombstones naming a replacement the soak made up, as
	// the homeserver made them (in the log); the parked list of every
	// consumer.
	Poisons           []poison
	PoisonEvents      []string // event ids of poison tombstones in the log
	Parked            []parkedEvent
	ParkedPoison      int // parked events that are poison tombstones
	PoisonRoomAfter   int // messages sent into a poisoned room after its poison
	PoisonRoomAfterRx int // of them, received at the normal webhook
	// Invite floods.
	Floods            []*flood
	FloodInviteEvents int // invites of flood agents in the log
	FloodAgentRows    int // the bridge's agent rows for flood agents
	FloodAccounts     int // the homeserver's accounts for flood agents
	AgentRows         int // every agent row (the load's agents)
	AgentAccounts     int // every @agent_ account on the homeserver
	FloodCountError   string
	FloodMessages     int // messages sent during a flood
	FloodMessagesRx   int // of them, received at the normal webhook
	// The normal subscriber's latency beside the slow one.
	Latency latencyReport
}

// ok is the exit status: nothing lost (in the log or at a sink), nothing
// out of per-room order at a sink, the parked events exactly the poison
// events, nothing registered for a flood's agents, every frozen leader
// replaced within the bound and written nothing after its thaw. Duplicated
// events and latency are reported apart (see docs/reliability.md).
func (r *report) ok() bool {
	return r != nil && len(r.failures()) == 0
}

// failures says which of the verdict's rules failed.
func (r *report) failures() []string {
	var out []string
	if n := len(r.MissingFromLog); n > 0 {
		out = append(out, fmt.Sprintf("%d produced ids missing from the log", n))
	}
	for _, s := range r.Sinks {
		if s.Lost > 0 {
			out = append(out, fmt.Sprintf("%s lost %d", s.Name, s.Lost))
		}
		if s.OutOfOrder > 0 {
			out = append(out, fmt.Sprintf("%s out of order %d", s.Name, s.OutOfOrder))
		}
	}
	if len(r.Parked) != len(r.PoisonEvents) || r.ParkedPoison != len(r.PoisonEvents) {
		out = append(out, fmt.Sprintf("parked %d events (%d of them poison), %d poison events injected", len(r.Parked), r.ParkedPoison, len(r.PoisonEvents)))
	}
	if len(r.Floods) > 0 && (r.FloodCountError != "" || r.FloodAgentRows != 0 || r.FloodAccounts != 0) {
		out = append(out, fmt.Sprintf("invite floods registered %d agent rows, %d homeserver accounts %s", r.FloodAgentRows, r.FloodAccounts, r.FloodCountError))
	}
	for i, f := range r.Freezes {
		if !f.ok() {
			out = append(out, fmt.Sprintf("leader freeze %d: %s", i+1, f.summary()))
		}
	}
	return out
}

func (s *soak) judge(ctx context.Context, obs *observer, drained bool, drainTook time.Duration) (*report, error) {
	produced, abandoned := s.load.snapshot()
	logEntries, err := obs.readLog(ctx, 0)
	if err != nil {
		return nil, fmt.Errorf("reading the log: %w", err)
	}
	stream, _, err := obs.readStream(ctx, 1)
	if err != nil {
		return nil, fmt.Errorf("reading the NATS stream: %w", err)
	}
	cursors, err := obs.cursors(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the cursors: %w", err)
	}
	_, dead, err := obs.pendingWebhooks(ctx)
	if err != nil {
		return nil, err
	}
	sinks := map[string][]arrival{"nats": stream}
	for _, rc := range s.hooks() {
		var got []arrival
		for _, d := range rc.snapshot() {
			got = append(got, arrival{DTOID: d.dtoID, RoomID: d.roomID, Type: d.dtoType, Key: d.key, At: d.at})
		}
		sinks[rc.name] = got
	}
	r := analyse(s.start, produced, logEntries, sinks, s.chaos.list())
	r.Seed, r.Duration, r.Rate = s.opts.Seed, s.opts.Duration, s.opts.Rate
	r.Machine = machine()
	for _, m := range abandoned {
		r.Abandoned = append(r.Abandoned, m.Key)
	}
	s.load.mu.Lock()
	r.APIStatus = cloneMap(s.load.apiStatus)
	r.API5xx = s.load.api5xxLocked()
	r.APINoAnswer = s.load.apiNoAnswer
	r.HumanRetries = cloneMap(s.load.humanRetries)
	for _, e := range s.load.hardErrors {
		r.Problems = append(r.Problems, "abandoned send: "+e)
	}
	s.load.mu.Unlock()
	r.Chaos = s.chaos.list()
	r.ChaosCounts = map[string]int{}
	for _, c := range r.Chaos {
		r.ChaosCounts[c.Kind]++
	}
	r.Drained, r.DrainTook = drained, drainTook
	r.Cursors = cursors
	if n := len(logEntries); n > 0 {
		r.Head = logEntries[n-1].Position
	}
	for name, pos := range cursors {
		if pos < r.Head {
			r.Problems = append(r.Problems, fmt.Sprintf("consumer %s is at %d, the log head is %d (stuck?)", name, pos, r.Head))
		}
	}
	s.bridgeMu.Lock()
	r.BridgeStarts = s.bridgeStarts
	r.StartsBySlot = map[string]int{}
	for _, sl := range s.slots {
		r.StartsBySlot[sl.name] = sl.starts
	}
	s.bridgeMu.Unlock()
	r.BridgePanics, r.BridgeErrors = scanBridgeLogs(s.dir)
	if r.BridgePanics > 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("the bridge logged %d panic lines", r.BridgePanics))
	}
	for _, rc := range s.hooks() {
		rc.mu.Lock()
		r.WebhookTries += rc.attempts
		r.Webhook500s += rc.refused
		r.WebhookBadSig += rc.badSig
		rc.mu.Unlock()
	}
	if r.WebhookBadSig > 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("%d webhook deliveries had a bad signature", r.WebhookBadSig))
	}
	r.WebhookDead = dead
	if dead > 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("%d webhook deliveries are dead letters", dead))
	}
	if !drained {
		r.Problems = append(r.Problems, fmt.Sprintf("the drain did not finish within %s", s.opts.Drain))
	}
	if err := s.judgeInjections(ctx, obs, r, produced, logEntries); err != nil {
		return nil, err
	}
	r.Latency = measureLatency(s.loadStart, produced, logEntries, s.hook.snapshot(), stream, r.Chaos, s.opts.WebhookTimeout)
	hooks := map[string][]hookDelivery{}
	for _, rc := range s.hooks() {
		hooks[rc.name] = rc.snapshot()
	}
	if err := writeLatencyCSV(filepath.Join(s.dir, "latency.csv"), s.start, s.loadStart, produced, logEntries, hooks, stream, r.Chaos); err != nil {
		r.Problems = append(r.Problems, "latency.csv: "+err.Error())
	}
	if s.slow != nil {
		s.slow.mu.Lock()
		r.Latency.SlowRequests, r.Latency.SlowHeld, r.Latency.Slow = s.slow.attempts, s.slow.held, len(s.slow.accepted)
		s.slow.mu.Unlock()
	}
	if data, err := json.MarshalIndent(r, "", "  "); err == nil {
		_ = os.WriteFile(filepath.Join(s.dir, "report.json"), data, 0o644)
	}
	return r, nil
}

// judgeInjections fills in the freezes, the poison events and the floods.
func (s *soak) judgeInjections(ctx context.Context, obs *observer, r *report, produced []message, logEntries []logEntry) error {
	for _, c := range r.Chaos {
		if c.Freeze != nil {
			r.Freezes = append(r.Freezes, c.Freeze)
		}
	}
	poisons, floods := s.inj.snapshot()
	r.Poisons, r.Floods = poisons, floods
	replacement := map[string]bool{}
	for _, p := range poisons {
		replacement[p.Replacement.String()] = true
	}
	floodAgent := map[string]bool{}
	for _, f := range floods {
		for _, a := range f.Agents {
			floodAgent[id.NewUserID("agent_"+a, serverName).String()] = true
		}
	}
	poisonID := map[string]bool{}
	for _, e := range logEntries {
		switch {
		case e.Type == "m.room.tombstone" && replacement[e.Replacement]:
			r.PoisonEvents = append(r.PoisonEvents, e.EventID)
			poisonID[e.EventID] = true
		case e.Type == "m.room.member" && e.Membership == "invite" && floodAgent[e.StateKey]:
			r.FloodInviteEvents++
		}
	}
	var err error
	if r.Parked, err = obs.parked(ctx); err != nil {
		return fmt.Errorf("reading the parked events: %w", err)
	}
	for _, p := range r.Parked {
		if poisonID[p.EventID] {
			r.ParkedPoison++
		}
	}
	received := map[string]bool{}
	for _, d := range s.hook.snapshot() {
		received[d.dtoID] = true
	}
	for _, m := range produced {
		for _, p := range poisons {
			if m.Room == p.Room && m.First.After(p.At) {
				r.PoisonRoomAfter++
				if received[m.EventID.String()] {
					r.PoisonRoomAfterRx++
				}
				break
			}
		}
		for _, f := range floods {
			if !m.First.Before(f.Begin) && !m.First.After(f.End) {
				r.FloodMessages++
				if received[m.EventID.String()] {
					r.FloodMessagesRx++
				}
				break
			}
		}
	}
	var errs []string
	if r.FloodAgentRows, err = obs.agentRows(ctx, "flood"); err != nil {
		errs = append(errs, "agent rows: "+err.Error())
	}
	if r.AgentRows, err = obs.agentRows(ctx, ""); err != nil {
		errs = append(errs, "agent rows: "+err.Error())
	}
	if r.FloodAccounts, err = homeserverAccounts(ctx, s.hs.Dir, "agent_flood"); err != nil {
		errs = append(errs, "homeserver accounts: "+err.Error())
	}
	if r.AgentAccounts, err = homeserverAccounts(ctx, s.hs.Dir, "agent_"); err != nil {
		errs = append(errs, "homeserver accounts: "+err.Error())
	}
	if len(errs) > 0 {
		r.FloodCountError = "(could not count: " + strings.Join(errs, "; ") + ")"
		r.Problems = append(r.Problems, r.FloodCountError)
	}
	return nil
}

// overlaps reports whether a fault of kind was under way between from and to.
func overlaps(faults []chaosRecord, kind string, from, to time.Time) bool {
	for _, f := range faults {
		if f.Kind == kind && !from.After(f.End) && !to.Before(f.Begin) {
			return true
		}
	}
	return false
}

// Causes of a duplicated event (one message, two Matrix events), from the
// faults under way while it was sent; see docs/reliability.md.
const (
	dupHumanRestart  = "homeserver restart during a human's send (homeserver and client only; no bridge on the path)"
	dupHuman         = "a human's send, no homeserver restart (homeserver and client only; no bridge on the path)"
	dupHomeserver    = "homeserver restart during an agent's send (Dendrite keeps transaction ids in memory)"
	dupBridgeKilled  = "bridge killed mid-send (Dendrite does not remember the transaction id of a cancelled request)"
	dupUnexplained   = "unexplained"
	dupAbandonedSend = "a send that was abandoned"
)

// analyse compares what was produced with the log and each sink. faults
// tell what was under way when something went wrong.
func analyse(start time.Time, produced []message, logEntries []logEntry, sinks map[string][]arrival, faults []chaosRecord) *report {
	rel := func(t time.Time) string {
		if t.IsZero() {
			return "?"
		}
		return fmt.Sprintf("+%.1fs", t.Sub(start).Seconds())
	}
	entryOf := map[string]logEntry{}
	for _, e := range logEntries {
		entryOf[e.EventID] = e
	}
	describe := func(eventID string) string {
		e, ok := entryOf[eventID]
		if !ok {
			return eventID + " (not in the log)"
		}
		return fmt.Sprintf("%s (log position %d, txn %s, received %s, origin_server_ts %s)", eventID, e.Position, e.TxnID,
			rel(e.Received), rel(time.UnixMilli(e.OriginTS)))
	}
	sendDesc := func(m message) string {
		return fmt.Sprintf("sent %s–%s, %d attempts %v", rel(m.First), rel(m.Done), m.Attempts, m.Tries)
	}
	r := &report{Produced: len(produced), LogEvents: len(logEntries)}
	producedID := map[string]message{}
	producedKey := map[string]message{}
	for _, m := range produced {
		producedID[m.EventID.String()] = m
		producedKey[m.Key] = m
		if m.Human {
			r.ProducedHumans++
		} else {
			r.ProducedAgents++
		}
	}

	// The log: every produced id once; positions for the order checks.
	pos := map[string]int64{}
	inLog := map[string]int{}
	// Event ids per message key, from the log and the sinks: two for one
	// key is one message turned into two events.
	idsOfKey := map[string]map[string]bool{}
	addKeyID := func(key, id string) {
		if key == "" {
			return
		}
		if idsOfKey[key] == nil {
			idsOfKey[key] = map[string]bool{}
		}
		idsOfKey[key][id] = true
	}
	for _, e := range logEntries {
		pos[e.EventID] = e.Position
		inLog[e.EventID]++
		addKeyID(e.Key, e.EventID)
		if e.Key != "" {
			if _, ok := producedKey[e.Key]; !ok {
				r.UnknownInLog++
			}
		}
	}
	for _, m := range produced {
		switch n := inLog[m.EventID.String()]; {
		case n == 0:
			r.MissingFromLog = append(r.MissingFromLog, m.EventID.String())
		default:
			r.ProducedInLog++
		}
	}

	// A producer's order in each room, in the log.
	type prodRoom struct{ producer, room string }
	lastMsg := map[prodRoom]message{}
	for _, e := range logEntries {
		m, ok := producedID[e.EventID]
		if !ok {
			continue
		}
		k := prodRoom{m.Producer, m.Room.String()}
		prev, seen := lastMsg[k]
		if seen && m.Seq < prev.Seq {
			r.SenderOrderLog++
			class := "unexplained"
			// The late event was made before, and delivered after, a homeserver outage.
			if overlaps(faults, faultHomeserverStop, time.UnixMilli(e.OriginTS), e.Received) {
				class = "homeserver restart"
				r.SenderOrderByHomeserver++
			} else {
				r.SenderOrderUnexplained++
			}
			if len(r.SenderOrderSamples) < 10 {
				r.SenderOrderSamples = append(r.SenderOrderSamples, fmt.Sprintf("[%s] %s in %s: %s %s, %s is in the log after %s %s, %s",
					class, m.Producer, m.Room, m.Key, describe(m.EventID.String()), sendDesc(m), prev.Key, describe(prev.EventID.String()), sendDesc(prev)))
			}
		}
		if !seen || m.Seq > prev.Seq {
			lastMsg[k] = m
		}
	}

	names := make([]string, 0, len(sinks))
	for name := range sinks {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		arrivals := sinks[name]
		sr := sinkReport{Name: name, Received: len(arrivals)}
		seen := map[string]int{}
		maxPos := map[string]int64{} // per room
		for _, a := range arrivals {
			seen[a.DTOID]++
			addKeyID(a.Key, a.DTOID)
			if seen[a.DTOID] > 1 {
				sr.Redelivered++
				continue // a redelivery of an earlier id is no inversion
			}
			m, isProduced := producedID[a.DTOID]
			p, inLog := pos[a.DTOID]
			if !isProduced || !inLog {
				continue
			}
			room := m.Room.String()
			if p < maxPos[room] {
				sr.OutOfOrder++
				if len(sr.OutOfOrderSamples) < 10 {
					sr.OutOfOrderSamples = append(sr.OutOfOrderSamples,
						fmt.Sprintf("%s (%s, log position %d) after position %d in %s", a.DTOID, m.Key, p, maxPos[room], room))
				}
			}
			maxPos[room] = max(maxPos[room], p)
		}
		sr.DistinctDTOs = len(seen)
		for _, m := range produced {
			if seen[m.EventID.String()] > 0 {
				sr.ProducedReceived++
			} else {
				sr.Lost++
				if len(sr.LostIDs) < 20 {
					sr.LostIDs = append(sr.LostIDs, fmt.Sprintf("%s (%s)", m.EventID, m.Key))
				}
			}
		}
		r.Sinks = append(r.Sinks, sr)
	}

	var dupKeys []string
	for key, ids := range idsOfKey {
		if len(ids) > 1 {
			var list []string
			for id := range ids {
				list = append(list, describe(id))
			}
			sort.Strings(list)
			desc, class := "no send answered it", dupAbandonedSend
			if m, ok := producedKey[key]; ok {
				desc = fmt.Sprintf("the send answered %s; %s", m.EventID, sendDesc(m))
				switch {
				case m.Human && overlaps(faults, faultHomeserverStop, m.First, m.Done):
					class = dupHumanRestart
				case m.Human:
					class = dupHuman
				case overlaps(faults, faultHomeserverStop, m.First, m.Done):
					class = dupHomeserver
				case overlaps(faults, faultBridgeKill, m.First, m.Done):
					class = dupBridgeKilled
				default:
					class = dupUnexplained
				}
			}
			if r.DuplicatedByCause == nil {
				r.DuplicatedByCause = map[string]int{}
			}
			r.DuplicatedByCause[class]++
			dupKeys = append(dupKeys, fmt.Sprintf("[%s] %s: %s; events %s", class, key, desc, strings.Join(list, ", ")))
		}
	}
	sort.Strings(dupKeys)
	r.DuplicatedEvent = dupKeys
	return r
}

// print writes the report for people.
func (r *report) print(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("")
	p("==== chaos soak report ====")
	p("seed                 %d", r.Seed)
	p("load                 %s at %.1f msg/s target", r.Duration, r.Rate)
	p("machine              %s", r.Machine)
	p("produced             %d messages (humans %d: event ids their sends returned; agents %d: event ids the API answered)",
		r.Produced, r.ProducedHumans, r.ProducedAgents)
	p("abandoned sends      %d", len(r.Abandoned))
	p("event log            %d events; %d of %d produced ids in it (each once: event ids are unique in the log); missing %d",
		r.LogEvents, r.ProducedInLog, r.Produced, len(r.MissingFromLog))
	p("sender order (log)   %d inversions of a producer's own order in a room (%d across a homeserver restart, %d unexplained)",
		r.SenderOrderLog, r.SenderOrderByHomeserver, r.SenderOrderUnexplained)
	for _, x := range r.SenderOrderSamples {
		p("    %s", x)
	}
	p("unknown soak events  %d (soak messages in the log no send answered)", r.UnknownInLog)
	p("duplicated events    %d (one produced message as two different DTO ids; expected 0)", len(r.DuplicatedEvent))
	for _, cause := range []string{dupBridgeKilled, dupHomeserver, dupHumanRestart, dupHuman, dupAbandonedSend, dupUnexplained} {
		if n := r.DuplicatedByCause[cause]; n > 0 {
			p("    %d: %s", n, cause)
		}
	}
	for _, s := range r.Sinks {
		p("sink %-15s received %d DTOs (%d distinct ids), produced received %d, lost %d, redelivered duplicates %d, out of per-room order %d",
			s.Name+":", s.Received, s.DistinctDTOs, s.ProducedReceived, s.Lost, s.Redelivered, s.OutOfOrder)
		for _, id := range s.LostIDs {
			p("    lost %s", id)
		}
		for _, x := range s.OutOfOrderSamples {
			p("    out of order: %s", x)
		}
	}
	p("internal API         %d 5xx answers; %d attempts without an answer; all answers: %s", r.API5xx, r.APINoAnswer, statusCounts(r.APIStatus))
	p("human send retries   %v", r.HumanRetries)
	p("webhook receivers    %d requests, %d answered 500 on purpose, %d bad signatures, %d dead letters", r.WebhookTries, r.Webhook500s, r.WebhookBadSig, r.WebhookDead)
	l := r.Latency
	if l.SlowRequests > 0 {
		p("slow \"*\" receiver    %d requests, %d held past the %s attempt timeout on purpose, %d DTOs accepted", l.SlowRequests, l.SlowHeld, l.Timeout, l.Slow)
	}
	p("normal latency       origin_server_ts → receipt at the normal webhook: all %d: p50 %s, p99 %s, max %s; quiet %d: p50 %s, p99 %s, max %s",
		l.All, ms(l.OriginP50), ms(l.OriginP99), ms(l.OriginMax), l.Quiet, ms(l.QuietP50), ms(l.QuietP99), ms(l.QuietMax))
	verdict := "within one attempt timeout"
	if !l.withinTimeout() {
		verdict = "MORE THAN ONE ATTEMPT TIMEOUT (or no sample)"
	}
	p("held back            normal webhook receipt − NATS stored, quiet %d: p50 %s, p99 %s, max %s; over the %s timeout %d: p99 %s",
		l.Held, ms(l.HeldP50), ms(l.HeldP99), ms(l.HeldMax), l.Timeout, l.HeldOverTimeout, verdict)
	for i, f := range r.Freezes {
		p("leader freeze %d      %s", i+1, f.summary())
	}
	if len(r.Freezes) > 0 {
		var worst time.Duration
		for _, f := range r.Freezes {
			worst = max(worst, f.TakeoverLease)
		}
		p("time to take over    max %.1fs over %d freezes (bound %s)", worst.Seconds(), len(r.Freezes), takeoverBound)
	}
	p("poison events        %d injected (tombstones in the log naming a replacement room the bot cannot join); parked %d, of them poison %d",
		len(r.PoisonEvents), len(r.Parked), r.ParkedPoison)
	for _, x := range r.Parked {
		p("    parked by %s at %d: %s (%d attempts): %.120s", x.Consumer, x.Position, x.EventID, x.Attempts, x.Error)
	}
	if len(r.Poisons) > 0 {
		p("    messages sent into a poisoned room after its poison: %d, received at the normal webhook %d", r.PoisonRoomAfter, r.PoisonRoomAfterRx)
	}
	if len(r.Floods) > 0 {
		invited, refused, failed := 0, 0, 0
		for _, f := range r.Floods {
			invited, refused, failed = invited+f.Invited, refused+f.Refused, failed+f.Failed
		}
		p("invite floods        %d: %d unknown agents invited (answered 200), %d refused, %d failed; %d invites in the log; registered: %d agent rows, %d homeserver accounts %s",
			len(r.Floods), invited, refused, failed, r.FloodInviteEvents, r.FloodAgentRows, r.FloodAccounts, r.FloodCountError)
		p("    (all agents: %d agent rows, %d @agent_ accounts: the load's); messages sent during the floods %d, received at the normal webhook %d",
			r.AgentRows, r.AgentAccounts, r.FloodMessages, r.FloodMessagesRx)
		for _, f := range r.Floods {
			for _, x := range f.RefusedSamples {
				p("    refused: %s", x)
			}
		}
	}
	var kinds []string
	for _, k := range faultKinds {
		kinds = append(kinds, fmt.Sprintf("%s %d", k, r.ChaosCounts[k]))
	}
	p("chaos actions        %d: %s", len(r.Chaos), strings.Join(kinds, ", "))
	for _, c := range r.Chaos {
		extra := ""
		if c.Details != "" {
			extra = " — " + c.Details
		}
		p("    t+%6.1fs %-16s down %.1fs, back after %.1fs%s", c.At.Seconds(), c.Kind, c.Down.Seconds(), c.Outage.Seconds(), extra)
	}
	p("bridge processes     %d started (%v); %d panic lines, %d error lines in their logs", r.BridgeStarts, r.StartsBySlot, r.BridgePanics, r.BridgeErrors)
	p("drain                %v after %.1fs; log head %d; cursors %v", r.Drained, r.DrainTook.Seconds(), r.Head, r.Cursors)
	for _, x := range r.Abandoned {
		p("    abandoned %s", x)
	}
	for _, x := range r.MissingFromLog {
		p("    missing from the log %s", x)
	}
	for _, x := range r.DuplicatedEvent {
		p("    duplicated %s", x)
	}
	for _, x := range r.Problems {
		p("problem: %s", x)
	}
	if r.ok() {
		p("RESULT: PASS (0 lost, 0 out of order, parked = poison, 0 registrations from floods, takeovers within %s)", takeoverBound)
	} else {
		p("RESULT: FAIL (%s)", strings.Join(r.failures(), "; "))
	}
	if n := len(r.DuplicatedEvent); n > 0 {
		p("DUPLICATED EVENTS: %d, expected 0 (not part of the exit status; see docs/reliability.md)", n)
	}
}

// scanBridgeLogs counts panic and error lines in every bridge log.
func scanBridgeLogs(dir string) (panics, errs int) {
	files, _ := filepath.Glob(filepath.Join(dir, "bridge-*.log"))
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			line := sc.Text()
			if strings.Contains(line, "panic") {
				panics++
			}
			if strings.Contains(line, `"level":"error"`) {
				errs++
			}
		}
		fh.Close()
	}
	return
}

func machine() string {
	host, _ := os.Hostname()
	cpu := ""
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(data), "\n") {
			if name, ok := strings.CutPrefix(line, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(name), ":"))
				break
			}
		}
	}
	mem := ""
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Sscanf(string(data), "MemTotal: %d kB", &kb); err == nil {
			mem = fmt.Sprintf(", %.0f GiB RAM", float64(kb)/(1<<20))
		}
	}
	return fmt.Sprintf("%s, %s/%s, %d CPUs (%s)%s, %s", host, runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), cpu, mem, runtime.Version())
}

func cloneMap[K comparable, V any](m map[K]V) map[K]V {
	out := make(map[K]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
