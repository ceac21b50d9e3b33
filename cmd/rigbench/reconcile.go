package main

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/internal/benchkit"
	"github.com/daarion/matrix-bridge/pkg/config"
	"github.com/daarion/matrix-bridge/pkg/reconcile"
)

// runReconcile: a city of s.reconcileRooms rooms with s.reconcileEvents
// messages each (made through POST /internal/matrix/rooms/ensure and sent
// by the bot straight to the homeserver), then reconciles of the whole city
// as the leader runs them: once with nothing missing, once with every 20th
// message deleted from the event log (5% missing).
func runReconcile(ctx context.Context, r *rig, s *settings, db string, rep *scenarioReport) error {
	br, err := r.startBridge(ctx, db, "reconcile", rep, func(cfg *config.Config) {
		// Only the runs below: none after start, on a timer or on a gap.
		cfg.Reconcile.AfterStart, cfg.Reconcile.Interval = config.NewDuration("0s"), config.NewDuration("0s")
		cfg.Reconcile.OnTransactionGap = false
		cfg.Reconcile.Window = s.reconcileEvents
	})
	if err != nil {
		return err
	}
	defer br.stop()
	if _, err = br.createCityRoom(ctx, "rbwarm-"+r.runID+"-"+db); err != nil {
		return err
	}

	benchkit.Progress("[%s] reconcile: ensuring %d city rooms", db, s.reconcileRooms)
	var roomIDs []id.RoomID
	for start := 0; start < s.reconcileRooms; start += 25 {
		var rooms []map[string]string
		for i := start; i < min(start+25, s.reconcileRooms); i++ {
			slug := fmt.Sprintf("rbrec-%s-%s-%d", r.runID, db, i)
			rooms = append(rooms, map[string]string{"slug": slug, "name": slug})
		}
		var out struct {
			Rooms []struct {
				RoomID id.RoomID `json:"matrix_room_id"`
			} `json:"rooms"`
		}
		status, raw, err := br.api.Call(ctx, http.MethodPost, "/internal/matrix/rooms/ensure", nil, map[string]any{"rooms": rooms}, &out)
		if err != nil || status != http.StatusOK {
			return fmt.Errorf("ensure: %d %s %v", status, raw, err)
		}
		for _, room := range out.Rooms {
			roomIDs = append(roomIDs, room.RoomID)
		}
	}

	benchkit.Progress("[%s] reconcile: sending %d messages", db, len(roomIDs)*s.reconcileEvents)
	bot := br.b.AS.BotClient()
	var sent []id.EventID
	var mu sync.Mutex
	var next atomic.Int64
	var failed atomic.Int64
	var wg sync.WaitGroup
	total := int64(len(roomIDs) * s.reconcileEvents)
	// One sender by default: Dendrite (on SQLite) serialises its writes, and
	// concurrent sends only wait on each other — eight at once took 2.5–4.7 s
	// each where one alone took 15 ms (measured: the bridge kept up, its
	// journal empty and every consumer at the head).
	for range max(s.reconcileSenders, 1) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= total {
					return
				}
				roomID := roomIDs[i%int64(len(roomIDs))]
				resp, err := bot.SendMessageEvent(ctx, roomID, event.EventMessage, &event.MessageEventContent{
					MsgType: event.MsgText, Body: fmt.Sprintf("history %d", i)})
				if err != nil {
					failed.Add(1)
					continue
				}
				mu.Lock()
				sent = append(sent, resp.EventID)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		rep.Note("[%s] %d of %d seed messages failed", db, n, total)
	}
	ids := make([]string, len(sent))
	for i, e := range sent {
		ids[i] = e.String()
	}
	// Every seed message in the log before the first run, or as many as
	// the homeserver pushed within two minutes: the first reconcile then
	// recovers the rest (and says how many).
	deadline := time.Now().Add(2 * time.Minute)
	notPushed := 0
	for {
		known, err := br.b.EventLog.Known(ctx, ids)
		if err != nil {
			return err
		}
		notPushed = len(ids) - len(known)
		if notPushed == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if notPushed > 0 {
		rep.Note("[%s] %d of %d seed messages were not in the log 2 minutes after the last send (the homeserver had not pushed them)", db, notPushed, len(ids))
	}

	run := func(variant string, wantRecovered int) error {
		defer s.phase("reconcile-" + variant)()
		before := homeserverRequests(br)
		report, err := br.b.Reconciler.City(ctx, reconcile.TriggerCommand)
		if err != nil {
			return err
		}
		requests := homeserverRequests(br) - before
		rooms := len(report.Rooms)
		rep.Rows = append(rep.Rows, benchkit.Row{DB: db, Variant: variant, Latency: "whole city (one reconcile)",
			Count: rooms, Errors: report.Failed,
			Rate: float64(rooms) / report.Duration.Seconds(), RateUnit: "rooms/s"}.Timed(report.Duration.Seconds(), 0))
		rep.Note("[%s] %s: %d rooms in %s, %d /messages pages (%.2f a room), %d homeserver requests, %d recovered (want %d)",
			db, variant, rooms, report.Duration.Round(time.Millisecond), report.Pages, float64(report.Pages)/float64(rooms),
			requests, report.Recovered, wantRecovered)
		if variant != "5% missing" {
			rep.Checks = append(rep.Checks, benchkit.Check{DB: db, Target: fmt.Sprintf("clean city of %d rooms × %d events under 30 s, ≤ 1 page a room", rooms, s.reconcileEvents),
				Got:  fmt.Sprintf("%s, %d pages", report.Duration.Round(time.Millisecond), report.Pages),
				Pass: report.Duration < 30*time.Second && report.Pages <= rooms && report.Failed == 0 && report.Recovered == wantRecovered})
		} else {
			rep.Checks = append(rep.Checks, benchkit.Check{DB: db, Target: "5% missing: every missing event recovered",
				Got:  fmt.Sprintf("%d of %d in %s", report.Recovered, wantRecovered, report.Duration.Round(time.Millisecond)),
				Pass: report.Recovered == wantRecovered && report.Failed == 0})
		}
		return nil
	}
	first := "clean"
	if notPushed > 0 {
		first = "not pushed"
	}
	if err := run(first, notPushed); err != nil {
		return err
	}
	var missing []any
	for i := 0; i < len(ids); i += 20 {
		missing = append(missing, ids[i])
	}
	for start := 0; start < len(missing); start += 500 {
		chunk := missing[start:min(start+500, len(missing))]
		query := "DELETE FROM event_log WHERE event_id IN ("
		for i := range chunk {
			if i > 0 {
				query += ", "
			}
			query += fmt.Sprintf("$%d", i+1)
		}
		if _, err := br.b.DB.Exec(ctx, query+")", chunk...); err != nil {
			return fmt.Errorf("deleting the missing events: %w", err)
		}
	}
	return run("5% missing", len(missing))
}

// homeserverRequests sums the bridge's homeserver request counter.
func homeserverRequests(br *bridgeRun) int64 {
	families, err := br.b.Metrics.Registry.Gather()
	if err != nil {
		return 0
	}
	var n float64
	for _, f := range families {
		if f.GetName() != "daarion_bridge_homeserver_requests_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			n += m.GetCounter().GetValue()
		}
	}
	return int64(n)
}
