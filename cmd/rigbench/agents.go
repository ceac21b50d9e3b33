package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

const humanPassword = "correct horse battery staple"

// sender posts one message and reports how long it took.
type sender func(ctx context.Context, body string) (time.Duration, error)

// agentSender posts through the bridge as agent:<agentID>.
func agentSender(br *bridgeRun, agentID string, roomID id.RoomID) sender {
	return func(ctx context.Context, body string) (time.Duration, error) {
		data, _ := json.Marshal(map[string]string{
			"room_id": string(roomID), "sender": "agent:" + agentID, "msgtype": "m.text", "body": body,
		})
		t0 := time.Now()
		status, raw, err := br.api.raw(ctx, http.MethodPost, "/internal/matrix/send", bytes.NewReader(data), nil)
		d := time.Since(t0)
		if err != nil {
			return d, err
		}
		if status != http.StatusOK {
			return d, fmt.Errorf("send as agent:%s answered %d: %s", agentID, status, raw)
		}
		return d, nil
	}
}

// humanSender posts directly to the homeserver's client-server API.
func humanSender(cli *mautrix.Client, roomID id.RoomID) sender {
	return func(ctx context.Context, body string) (time.Duration, error) {
		t0 := time.Now()
		_, err := cli.SendMessageEvent(ctx, roomID, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: body})
		return time.Since(t0), err
	}
}

// joinedHuman registers a human and joins it to the room.
func joinedHuman(ctx context.Context, r *rig, localpart string, roomID id.RoomID) (*mautrix.Client, error) {
	cli, err := r.hs.RegisterUser(ctx, localpart, humanPassword, false)
	if err != nil {
		return nil, err
	}
	if _, err = cli.JoinRoomByID(ctx, roomID); err != nil {
		return nil, fmt.Errorf("%s joining %s: %w", localpart, roomID, err)
	}
	return cli, nil
}

// runAgentsSend measures, in one run: (1) send-as-agent through the bridge
// against a direct client-server send by a human, alternating one of each,
// sequentially; (2) s.agents agents posting concurrently through the
// bridge; (3) as a reference, s.agents humans posting concurrently
// directly.
func runAgentsSend(ctx context.Context, r *rig, s *settings, db string, rep *scenarioReport) error {
	br, err := r.startBridge(ctx, db, "agents-send", rep, nil)
	if err != nil {
		return err
	}
	defer br.stop()
	tag := r.runID + "-" + db
	rooms := make([]id.RoomID, s.agentRooms)
	for i := range rooms {
		if rooms[i], err = br.createCityRoom(ctx, fmt.Sprintf("rbagents-%s-%d", tag, i)); err != nil {
			return err
		}
	}
	room := rooms[0]

	// (1) Sequential, side by side. The ghost and the human are in the
	// room before anything is timed.
	human, err := joinedHuman(ctx, r, "rbhuman-"+tag, room)
	if err != nil {
		return err
	}
	viaBridge := agentSender(br, "rbseq-"+tag, room)
	direct := humanSender(human, room)
	for i := range 3 {
		if _, err = viaBridge(ctx, fmt.Sprintf("warm-up %d", i)); err != nil {
			return fmt.Errorf("warming up the agent: %w", err)
		}
		if _, err = direct(ctx, fmt.Sprintf("warm-up %d", i)); err != nil {
			return fmt.Errorf("warming up the human: %w", err)
		}
	}
	var recBridge, recDirect recorder
	endPhase := s.phase("send-seq")
	start := time.Now()
	deadline := start.Add(s.duration)
	for i := 0; ctx.Err() == nil && time.Now().Before(deadline); i++ {
		order := []struct {
			send sender
			rec  *recorder
		}{{viaBridge, &recBridge}, {direct, &recDirect}}
		if i%2 == 1 { // neither always goes first
			order[0], order[1] = order[1], order[0]
		}
		for _, o := range order {
			d, err := o.send(ctx, fmt.Sprintf("rigbench sequential %d", i))
			if err != nil {
				o.rec.fail(err.Error())
			} else {
				o.rec.add(d)
			}
		}
	}
	elapsed := time.Since(start)
	endPhase()
	if err := ctx.Err(); err != nil {
		return err
	}
	sb, sd := summarize(recBridge.samples), summarize(recDirect.samples)
	rep.Rows = append(rep.Rows,
		newRow(db, "sequential: agent via bridge", "POST /internal/matrix/send", sb, recBridge.errors, elapsed,
			float64(sb.N)/elapsed.Seconds(), "msg/s"),
		newRow(db, "sequential: human direct", "client-server PUT /send", sd, recDirect.errors, elapsed,
			float64(sd.N)/elapsed.Seconds(), "msg/s"))
	for _, rc := range []struct {
		name string
		rec  *recorder
	}{{"bridge", &recBridge}, {"direct", &recDirect}} {
		if rc.rec.errors > 0 {
			rep.note("[%s] sequential %s: %d failed sends, last: %s", db, rc.name, rc.rec.errors, rc.rec.lastErr)
		}
	}
	ratio := 0.0
	if sd.P50 > 0 {
		ratio = float64(sb.P50) / float64(sd.P50)
	}
	rep.Checks = append(rep.Checks, check{DB: db, Target: "send-as-agent p50 ≤ 1.2 × direct p50",
		Got: fmt.Sprintf("%.2f× (bridge p50 %.2f ms / direct p50 %.2f ms; p99 %.2f / %.2f ms; overhead +%.2f ms)",
			ratio, ms(sb.P50), ms(sd.P50), ms(sb.P99), ms(sd.P99), ms(sb.P50-sd.P50)),
		Pass: sb.N > 0 && sd.N > 0 && recBridge.errors == 0 && ratio <= 1.2})

	// (2) Concurrent agents through the bridge; every ghost joins first.
	agentSenders := make([]sender, s.agents)
	for i := range agentSenders {
		agentSenders[i] = agentSender(br, fmt.Sprintf("rbc%d-%s", i, tag), rooms[i%len(rooms)])
		if _, err = agentSenders[i](ctx, "warm-up"); err != nil {
			return fmt.Errorf("warming up concurrent agent %d: %w", i, err)
		}
	}
	where := "all in 1 room"
	if len(rooms) > 1 {
		where = fmt.Sprintf("over %d rooms", len(rooms))
	}
	if err := concurrentPhase(ctx, s, db, "send-agents", fmt.Sprintf("%d agents via bridge, %s", s.agents, where),
		"POST /internal/matrix/send", agentSenders, rep); err != nil {
		return err
	}

	// (3) The same load sent directly by humans, for reference.
	humanSenders := make([]sender, s.agents)
	for i := range humanSenders {
		cli, err := joinedHuman(ctx, r, fmt.Sprintf("rbh%d-%s", i, tag), rooms[i%len(rooms)])
		if err != nil {
			return err
		}
		humanSenders[i] = humanSender(cli, rooms[i%len(rooms)])
		if _, err = humanSenders[i](ctx, "warm-up"); err != nil {
			return fmt.Errorf("warming up concurrent human %d: %w", i, err)
		}
	}
	return concurrentPhase(ctx, s, db, "send-humans", fmt.Sprintf("%d humans direct, %s (reference)", s.agents, where),
		"client-server PUT /send", humanSenders, rep)
}

// concurrentPhase runs every sender in a closed loop for s.duration.
func concurrentPhase(ctx context.Context, s *settings, db, phase, variant, latency string, senders []sender, rep *scenarioReport) error {
	defer s.phase(phase)()
	var rec recorder
	start := time.Now()
	deadline := start.Add(s.duration)
	var wg sync.WaitGroup
	for i, send := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var samples []time.Duration
			errs, lastErr := 0, ""
			for n := 0; ctx.Err() == nil && time.Now().Before(deadline); n++ {
				d, err := send(ctx, fmt.Sprintf("rigbench concurrent %d/%d", i, n))
				if err != nil {
					errs, lastErr = errs+1, err.Error()
					time.Sleep(10 * time.Millisecond)
					continue
				}
				samples = append(samples, d)
			}
			rec.merge(samples, errs, lastErr)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := ctx.Err(); err != nil {
		return err
	}
	sum := summarize(rec.samples)
	rep.Rows = append(rep.Rows, newRow(db, variant, latency, sum, rec.errors, elapsed, float64(sum.N)/elapsed.Seconds(), "msg/s"))
	if rec.errors > 0 {
		rep.note("[%s] %s: %d failed sends, last: %s", db, variant, rec.errors, rec.lastErr)
	}
	return nil
}
