//go:build goolm

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/internal/benchkit"
	"github.com/daarion/matrix-bridge/pkg/clock"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

type runOptions struct {
	dir       string
	db        string
	bridgeBin string
	pg        *testrig.PostgresCluster
	logLevel  string
}

// runOne is one database's run: its own Synapse, bridge, receiver and
// human, all stopped when it returns.
func runOne(ctx context.Context, o runOptions, s *settings, rep *report) error {
	db := o.db
	st, err := startStack(ctx, stackOptions{dir: o.dir, db: db, bridgeBin: o.bridgeBin, pg: o.pg, logLevel: o.logLevel})
	if err != nil {
		return err
	}
	defer st.close()
	rc, err := startReceiver()
	if err != nil {
		return err
	}
	defer rc.close()
	if err = st.subscribe(ctx, rc.url); err != nil {
		return err
	}
	h, err := startHuman(ctx, st.hs, o.dir, "e2eebench-human")
	if err != nil {
		return err
	}
	defer h.close()

	// Both rooms are made, and joined by the agent, before anything is
	// timed: the agents consumer accepts the invite after making the
	// agent's encryption device, so the human's first encrypted send finds
	// the agent's keys.
	clearRoom, err := h.createRoom(ctx, "e2eebench clear", false)
	if err != nil {
		return err
	}
	encRoom, err := h.createRoom(ctx, "e2eebench encrypted", true)
	if err != nil {
		return err
	}
	agent := id.NewUserID(agentLocalpart, serverName)
	for _, room := range []id.RoomID{clearRoom, encRoom} {
		if err = h.waitJoined(ctx, room, agent, 90*time.Second); err != nil {
			return fmt.Errorf("%w\nbridge log:\n%s", err, st.logTail(20))
		}
	}
	benchkit.Progress("[%s] the agent joined both rooms; phase 1: the human sends %d messages into each", db, s.humanMessages)

	// Phase 1: the human's messages to the webhook, clear room first.
	coldClear, err := warmUp(ctx, h, rc, clearRoom, s.warmup, "clear")
	if err != nil {
		return err
	}
	// On PostgreSQL, the database work per event (read before and after
	// each room's phase; its one connection is not the bridge's).
	var pgs *pgStats
	if db == testrig.Postgres {
		if pgs, err = openPGStats(st.dbURL); err != nil {
			return err
		}
		defer pgs.close()
	}
	pgRead := func() (pgCounts, error) {
		if pgs == nil {
			return pgCounts{}, nil
		}
		return pgs.read(ctx)
	}
	pg0, errPG := pgRead()
	mark := s.measure(ctx)
	clear, err := humanPhase(ctx, h, rc, clearRoom, s, "clear")
	if err != nil {
		return err
	}
	mark.note(rep, db, "phase 1, clear room", len(clear.sends))
	pg1, errPG1 := pgRead()
	coldEnc, err := warmUp(ctx, h, rc, encRoom, s.warmup, "encrypted")
	if err != nil {
		return fmt.Errorf("%w\nbridge log:\n%s", err, st.logTail(20))
	}
	mark = s.measure(ctx)
	m0, errM0 := scrapeDecrypt(ctx, st.metricsURL)
	enc, err := humanPhase(ctx, h, rc, encRoom, s, "encrypted")
	if err != nil {
		return err
	}
	mark.note(rep, db, "phase 1, encrypted room", len(enc.sends))
	m1, errM1 := scrapeDecrypt(ctx, st.metricsURL)
	if pgs != nil {
		pg2, errPG2 := pgRead()
		if err := errors.Join(errPG, errPG1, errPG2); err != nil {
			rep.note(db, "pg_stat_database: %v", err)
		} else {
			rep.note(db, "the bridge's PostgreSQL database per human message (pg_stat_database, both rooms' phases with their warm-ups and everything else the bridge did meanwhile): clear room %s; encrypted room %s",
				pg0.perEvent(pg1, len(clear.sends)), pg1.perEvent(pg2, len(enc.sends)+s.warmup))
		}
	}
	reportHuman(rep, db, clear, enc, coldClear, coldEnc)
	if errM0 != nil || errM1 != nil {
		rep.note(db, "the bridge's metrics could not be read: %v %v", errM0, errM1)
	} else {
		d := m1.minus(m0)
		rep.note(db, "the bridge's own decrypt time over the encrypted phase (%s: decrypt and journal the clear form, per event, on its e2ee consumer): %.0f events, mean %.2f ms, ~p50 %.2f ms, ~p99 %.2f ms (interpolated in 2.5× buckets); outcomes: %s",
			decryptHistogram, d.count, benchkit.MS(d.mean()), benchkit.MS(d.quantile(0.5)), benchkit.MS(d.quantile(0.99)), d.outcomeList())
		if d.count > 0 {
			rep.note(db, "at that mean the e2ee consumer alone could decrypt and journal ~%.0f events/s (one event at a time); the phase offered %.1f events/s",
				1/d.mean().Seconds(), float64(len(enc.sends))/enc.sendSpan.Seconds())
		}
	}

	// Phase 2: the agent's sends through the bridge, clear room first.
	benchkit.Progress("[%s] phase 2: the agent sends %d messages into each room", db, s.agentMessages)
	mark = s.measure(ctx)
	aClear, coldAClear, err := agentPhase(ctx, st, clearRoom, s, "clear")
	if err != nil {
		return err
	}
	mark.note(rep, db, "phase 2, clear room", s.warmup+aClear.calls.N)
	mark = s.measure(ctx)
	aEnc, coldAEnc, err := agentPhase(ctx, st, encRoom, s, "encrypted")
	if err != nil {
		return err
	}
	mark.note(rep, db, "phase 2, encrypted room", s.warmup+aEnc.calls.N)
	reportAgent(rep, db, aClear, aEnc, coldAClear, coldAEnc)

	// What the human's client made of the agent's messages: every one in
	// the encrypted room should have arrived encrypted and decrypted.
	want := s.warmup + aEnc.calls.N
	deadline := time.Now().Add(30 * time.Second)
	for h.agentSeen(encRoom).decrypted+h.agentSeen(encRoom).failed < want && time.Now().Before(deadline) && clock.Sleep(ctx, 100*time.Millisecond) {
	}
	se, sc := h.agentSeen(encRoom), h.agentSeen(clearRoom)
	rep.note(db, "the human's client received the agent's messages: encrypted room %d decrypted, %d in the clear, %d failed to decrypt (of %d sent); clear room %d in the clear, %d decrypted (of %d)",
		se.decrypted, se.clear, se.failed, want, sc.clear, sc.decrypted, s.warmup+aClear.calls.N)
	rep.Checks = append(rep.Checks, benchkit.Check{DB: db, Target: "the human's client decrypts every agent message in the encrypted room",
		Got:  fmt.Sprintf("%d of %d decrypted, %d sent in the clear, %d failed", se.decrypted, want, se.clear, se.failed),
		Pass: se.decrypted == want && se.clear == 0 && se.failed == 0})

	dtos, dups := rc.counts()
	rep.note(db, "webhook: %d distinct DTOs received in all (both rooms' messages, the agent's echoes, membership and the like), %d redeliveries", dtos, dups)
	logNotes(rep, db, st)
	return nil
}

// phaseMark is the start of a measured phase, for its host-load note.
type phaseMark struct {
	cpu benchkit.CPUSnap
	at  time.Time
}

// measure waits for a quiet machine when asked to (-quiet-wait) and marks
// a phase's start.
func (s *settings) measure(ctx context.Context) phaseMark {
	if s.quietWait > 0 {
		waitQuiet(ctx, s.quietCores, s.quietWait)
	}
	return phaseMark{cpu: readCPU(), at: time.Now()}
}

// note records how busy the host was during the phase, and the CPU each
// part spent per event of it.
func (m phaseMark) note(rep *report, db, phase string, events int) {
	now := readCPU()
	rep.note(db, "%s: %s; %s", phase, hostNote(m.cpu, now), cpuPerEvent(m.cpu, now, time.Since(m.at), events))
}

// reportHuman adds phase 1's rows, check and reading.
func reportHuman(rep *report, db string, clear, enc *humanResult, coldClear, coldEnc time.Duration) {
	rep.Rows = append(rep.Rows,
		benchkit.NewRow(db, "human → webhook, clear room", "send start → webhook DTO", clear.latency, clear.errors+clear.missing, clear.rate(), "events/s"),
		benchkit.NewRow(db, "human → webhook, encrypted room", "send start → webhook DTO (decrypt and map)", enc.latency, enc.errors+enc.missing, enc.rate(), "events/s"),
		benchkit.NewRow(db, "human's send, clear room", "client PUT /send", clear.call, clear.errors, float64(len(clear.sends))/clear.sendSpan.Seconds(), "msg/s"),
		benchkit.NewRow(db, "human's send, encrypted room", "client encrypt + PUT /send", enc.call, enc.errors, float64(len(enc.sends))/enc.sendSpan.Seconds(), "msg/s"),
	)
	for _, r := range []struct {
		what string
		res  *humanResult
	}{{"clear", clear}, {"encrypted", enc}} {
		ok := r.res.errors == 0 && r.res.missing == 0 && len(r.res.otherTypes) == 0
		got := fmt.Sprintf("%d of %d sent reached the webhook", r.res.latency.N, len(r.res.sends))
		if len(r.res.otherTypes) > 0 {
			got += fmt.Sprintf("; not message.created: %s", fmtCounts(r.res.otherTypes))
		}
		if r.res.errors > 0 {
			got += fmt.Sprintf("; %d sends failed, last: %s", r.res.errors, r.res.lastErr)
		}
		rep.Checks = append(rep.Checks, benchkit.Check{DB: db, Target: "every message of the human's in the " + r.what + " room arrives as messaging.message.created", Got: got, Pass: ok})
	}
	rep.note(db, "decrypt-and-map throughput (one sender): %.1f events/s end to end in the encrypted room vs %.1f in the clear room; the sender alone managed %.1f vs %.1f msg/s, and %d / %d DTOs were still on their way when its last send returned",
		enc.rate(), clear.rate(), float64(len(enc.sends))/enc.sendSpan.Seconds(), float64(len(clear.sends))/clear.sendSpan.Seconds(), enc.behind, clear.behind)
	rep.note(db, "added latency per encrypted event (encrypted − clear): p50 %+.2f ms, p90 %+.2f ms, p99 %+.2f ms; of it the human's send call (its encryption, and a room key share every 100 messages) %+.2f ms at p50, %+.2f ms at p99",
		benchkit.MS(enc.latency.P50-clear.latency.P50), benchkit.MS(enc.latency.P90-clear.latency.P90), benchkit.MS(enc.latency.P99-clear.latency.P99),
		benchkit.MS(enc.call.P50-clear.call.P50), benchkit.MS(enc.call.P99-clear.call.P99))
	rep.note(db, "after the send returned (webhook receipt − send return): encrypted p50 %.2f ms, p99 %.2f ms; clear p50 %.2f ms, p99 %.2f ms",
		benchkit.MS(enc.after.P50), benchkit.MS(enc.after.P99), benchkit.MS(clear.after.P50), benchkit.MS(clear.after.P99))
	rep.note(db, "the human's first warm-up send: clear %.1f ms, encrypted %.1f ms (the first shares the room key with the agent's device)", benchkit.MS(coldClear), benchkit.MS(coldEnc))
}

// reportAgent adds phase 2's rows and the target's check.
func reportAgent(rep *report, db string, clear, enc *agentResult, coldClear, coldEnc time.Duration) {
	rep.Rows = append(rep.Rows,
		benchkit.NewRow(db, "agent send, clear room", "POST /internal/matrix/send", clear.calls, clear.errors, float64(clear.calls.N)/clear.span.Seconds(), "msg/s"),
		benchkit.NewRow(db, "agent send, encrypted room", "POST /internal/matrix/send (bridge encrypts)", enc.calls, enc.errors, float64(enc.calls.N)/enc.span.Seconds(), "msg/s"),
	)
	ratio := 0.0
	if clear.calls.P50 > 0 {
		ratio = float64(enc.calls.P50) / float64(clear.calls.P50)
	}
	rep.Checks = append(rep.Checks, benchkit.Check{DB: db, Target: "send into an encrypted room p50 ≤ 1.5 × clear p50",
		Got: fmt.Sprintf("%.2f× (encrypted p50 %.2f ms / clear p50 %.2f ms; p99 %.2f / %.2f ms; +%.2f ms at p50)",
			ratio, benchkit.MS(enc.calls.P50), benchkit.MS(clear.calls.P50), benchkit.MS(enc.calls.P99), benchkit.MS(clear.calls.P99), benchkit.MS(enc.calls.P50-clear.calls.P50)),
		Pass: enc.calls.N > 0 && clear.calls.N > 0 && enc.errors == 0 && clear.errors == 0 && ratio <= 1.5})
	for _, r := range []struct {
		what string
		res  *agentResult
	}{{"clear", clear}, {"encrypted", enc}} {
		if r.res.errors > 0 {
			rep.note(db, "agent, %s room: %d failed sends, last: %s", r.what, r.res.errors, r.res.lastErr)
		}
	}
	rep.note(db, "the agent's first warm-up send: clear %.1f ms, encrypted %.1f ms (the first shares the agent's room key with the human's device)", benchkit.MS(coldClear), benchkit.MS(coldEnc))
}

// logNotes counts the bridge's warnings and errors, and names the most
// frequent (the encryption's failures show up there first).
func logNotes(rep *report, db string, st *stack) {
	counts := map[string]int{}
	warn, errs := 0, 0
	for line := range strings.SplitSeq(st.bridge.LogSince(0), "\n") {
		var entry struct {
			Level   string `json:"level"`
			Message string `json:"message"`
		}
		if json.Unmarshal([]byte(line), &entry) != nil || (entry.Level != "warn" && entry.Level != "error") {
			continue
		}
		if entry.Level == "warn" {
			warn++
		} else {
			errs++
		}
		counts[entry.Level+": "+entry.Message]++
	}
	msg := fmt.Sprintf("the bridge logged %d warnings and %d errors", warn, errs)
	if len(counts) > 0 {
		msg += ": " + fmtCounts(counts)
	}
	rep.note(db, "%s", msg)
}

// fmtCounts lists counts, largest first (at most 6).
func fmtCounts(m map[string]int) string {
	keys := slices.Collect(maps.Keys(m))
	slices.SortFunc(keys, func(a, b string) int {
		if m[a] != m[b] {
			return m[b] - m[a]
		}
		return strings.Compare(a, b)
	})
	if len(keys) > 6 {
		keys = keys[:6]
	}
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%q ×%d", k, m[k])
	}
	return strings.Join(parts, ", ")
}
