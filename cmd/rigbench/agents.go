package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/internal/benchkit"
)

const humanPassword = "correct horse battery staple"

// sender posts one message and reports how long it took.
type sender func(ctx context.Context, body string) (time.Duration, error)

// agentSender posts through the bridge as agent:<agentID>.
func agentSender(br *bridgeRun, agentID string, roomID id.RoomID) sender {
	return func(ctx context.Context, body string) (time.Duration, error) {
		_, d, err := benchkit.SendAsAgent(ctx, br.api, roomID, "agent:"+agentID, string(event.MsgText), body)
		return d, err
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
// against a direct client-server send by a human (and, for diagnosis, the
// same ghost sending straight through the appservice API), taking turns,
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
	// A diagnostic third: the same ghost sending through the bridge's own
	// appservice client, straight to the homeserver (what the bridge does
	// after its HTTP API and database), to split the bridge's overhead from
	// the homeserver's cost of an appservice (masquerading) send.
	ghost := id.NewUserID("agent_rbseq-"+tag, serverName)
	ghostIntent := br.b.AS.Intent(ghost)
	viaAppservice := func(ctx context.Context, body string) (time.Duration, error) {
		t0 := time.Now()
		_, err := ghostIntent.SendMessageEvent(ctx, room, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: body})
		return time.Since(t0), err
	}
	var recBridge, recDirect, recAS recorder
	endPhase := s.phase("send-seq")
	start := time.Now()
	deadline := start.Add(s.duration)
	for i := 0; ctx.Err() == nil && time.Now().Before(deadline); i++ {
		order := []struct {
			send sender
			rec  *recorder
		}{{viaBridge, &recBridge}, {direct, &recDirect}, {viaAppservice, &recAS}}
		// None always goes first.
		order = append(order[i%3:], order[:i%3]...)
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
	sb, sd, sa := benchkit.Summarize(recBridge.samples), benchkit.Summarize(recDirect.samples), benchkit.Summarize(recAS.samples)
	rep.Rows = append(rep.Rows,
		newRow(db, "sequential: agent via bridge", "POST /internal/matrix/send", sb, recBridge.errors, elapsed,
			float64(sb.N)/elapsed.Seconds(), "msg/s"),
		newRow(db, "sequential: human direct", "client-server PUT /send", sd, recDirect.errors, elapsed,
			float64(sd.N)/elapsed.Seconds(), "msg/s"),
		newRow(db, "sequential: same ghost, appservice API direct", "PUT /send?user_id= (diagnostic)", sa, recAS.errors, elapsed,
			float64(sa.N)/elapsed.Seconds(), "msg/s"))
	for _, rc := range []struct {
		name string
		rec  *recorder
	}{{"bridge", &recBridge}, {"direct", &recDirect}, {"appservice", &recAS}} {
		if rc.rec.errors > 0 {
			rep.Note("[%s] sequential %s: %d failed sends, last: %s", db, rc.name, rc.rec.errors, rc.rec.lastErr)
		}
	}
	ratio := 0.0
	if sd.P50 > 0 {
		ratio = float64(sb.P50) / float64(sd.P50)
	}
	rep.Checks = append(rep.Checks, benchkit.Check{DB: db, Target: "send-as-agent p50 ≤ 1.2 × direct p50",
		Got: fmt.Sprintf("%.2f× (bridge p50 %.2f ms / direct p50 %.2f ms; p99 %.2f / %.2f ms; overhead +%.2f ms)",
			ratio, benchkit.MS(sb.P50), benchkit.MS(sd.P50), benchkit.MS(sb.P99), benchkit.MS(sd.P99), benchkit.MS(sb.P50-sd.P50)),
		Pass: sb.N > 0 && sd.N > 0 && recBridge.errors == 0 && ratio <= 1.2})

	rep.Note("[%s] %s", db, sendPathFloor(ctx, br, room))
	rep.Note("[%s] of the bridge's +%.2f ms at p50, the homeserver's appservice send as the ghost accounts for %+.2f ms (appservice-direct p50 %.2f ms vs human %.2f ms)",
		db, benchkit.MS(sb.P50-sd.P50), benchkit.MS(sa.P50-sd.P50), benchkit.MS(sa.P50), benchkit.MS(sd.P50))
	rep.Note("[%s] the bridge's appservice state store has the sequential agent's ghost joined to the room: %v (false: each send first asks the homeserver to join it)",
		db, br.b.AS.StateStore.IsInRoom(ctx, room, ghost))

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
	rec, elapsed := closedLoop(ctx, len(senders), s.duration, func(i, n int) (time.Duration, error) {
		d, err := senders[i](ctx, fmt.Sprintf("rigbench concurrent %d/%d", i, n))
		if err != nil {
			time.Sleep(failurePause)
		}
		return d, err
	})
	if err := ctx.Err(); err != nil {
		return err
	}
	sum := benchkit.Summarize(rec.samples)
	rep.Rows = append(rep.Rows, newRow(db, variant, latency, sum, rec.errors, elapsed, float64(sum.N)/elapsed.Seconds(), "msg/s"))
	if rec.errors > 0 {
		rep.Note("[%s] %s: %d failed sends, last: %s", db, variant, rec.errors, rec.lastErr)
	}
	return nil
}

// sendPathFloor times, one at a time, what the bridge adds to a send besides
// the homeserver's own work: a round trip through the internal API (a
// cached metadata GET: auth, routing, JSON), the room lookup a send makes
// (rooms.Store.ByRoomID, as resolveRoom calls it), and the sent_event
// record written after it (the same INSERT, with a throwaway event id).
func sendPathFloor(ctx context.Context, br *bridgeRun, room id.RoomID) string {
	const n = 200
	var api, lookup, record []time.Duration
	path := roomPath(room)
	for i := range n {
		t := time.Now()
		if status, _, err := br.api.Call(ctx, http.MethodGet, path, nil, nil, nil); err != nil || status != http.StatusOK {
			return fmt.Sprintf("send path floor: GET %s: %d %v", path, status, err)
		}
		api = append(api, time.Since(t))
		t = time.Now()
		if _, err := br.b.Rooms.Store().ByRoomID(ctx, room); err != nil {
			return "send path floor: " + err.Error()
		}
		lookup = append(lookup, time.Since(t))
		t = time.Now()
		eventID := fmt.Sprintf("$rbfloor%d", i)
		if _, err := br.b.DB.Exec(ctx, `INSERT INTO sent_event (event_id, service, idem_key, sent_at) VALUES ($1, $2, $3, $4)
			ON CONFLICT (event_id) DO NOTHING`, eventID, "rigbench", nil, time.Now().UnixMilli()); err != nil {
			return "send path floor: " + err.Error()
		}
		record = append(record, time.Since(t))
	}
	_, _ = br.b.DB.Exec(ctx, `DELETE FROM sent_event WHERE service = 'rigbench'`)
	a, l, r := benchkit.Summarize(api), benchkit.Summarize(lookup), benchkit.Summarize(record)
	return fmt.Sprintf("the bridge's own part of a send, timed alone (p50): internal API round trip %.2f ms + room lookup %.2f ms + sent_event insert (a commit) %.2f ms = %.2f ms",
		benchkit.MS(a.P50), benchkit.MS(l.P50), benchkit.MS(r.P50), benchkit.MS(a.P50+l.P50+r.P50))
}
