package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/internal/benchkit"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// runRoomsMetadata: one city room, its metadata warmed into the cache by
// one GET, then s.clients clients GET it in a closed loop for s.duration.
func runRoomsMetadata(ctx context.Context, r *rig, s *settings, db string, rep *scenarioReport) error {
	br, err := r.startBridge(ctx, db, "rooms-metadata", rep, nil)
	if err != nil {
		return err
	}
	defer br.stop()
	roomID, err := br.createCityRoom(ctx, "rbmeta-"+r.runID+"-"+db)
	if err != nil {
		return err
	}
	path := roomPath(roomID)
	status, body, err := br.api.Call(ctx, http.MethodGet, path, nil, nil, nil)
	if err != nil || status != http.StatusOK {
		return fmt.Errorf("warming GET %s: %d %s %v", path, status, body, err)
	}

	url := br.api.Base + path
	defer s.phase("metadata")()
	rec, elapsed := closedLoop(ctx, s.clients, s.duration, func(int, int) (time.Duration, error) {
		t0 := time.Now()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		req.Header.Set(testrig.ServiceTokenHeader, br.api.Token)
		resp, err := br.api.HTTP.Do(req)
		if err != nil {
			time.Sleep(failurePause)
			return 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		d := time.Since(t0)
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("status %d", resp.StatusCode)
		}
		return d, nil
	})
	if err := ctx.Err(); err != nil {
		return err
	}
	sum := benchkit.Summarize(rec.samples)
	rep.Rows = append(rep.Rows, newRow(db, fmt.Sprintf("%d clients, 1 room", s.clients), "request (client side)",
		sum, rec.errors, elapsed, float64(sum.N)/elapsed.Seconds(), "req/s"))
	rep.Checks = append(rep.Checks, benchkit.Check{DB: db, Target: "cached metadata p99 ≤ 5 ms",
		Got:  fmt.Sprintf("p99 %.2f ms (p50 %.2f ms, %.0f req/s)", benchkit.MS(sum.P99), benchkit.MS(sum.P50), float64(sum.N)/elapsed.Seconds()),
		Pass: sum.N > 0 && rec.errors == 0 && sum.P99 <= 5*time.Millisecond})
	if rec.errors > 0 {
		rep.Note("[%s] %d failed requests, last: %s", db, rec.errors, rec.lastErr)
	}
	return nil
}

// runRoomsCreate: s.createRooms new slugs one after another, then as many
// again from s.createClients concurrent clients; each phase also stops
// after s.duration.
func runRoomsCreate(ctx context.Context, r *rig, s *settings, db string, rep *scenarioReport) error {
	br, err := r.startBridge(ctx, db, "rooms-create", rep, nil)
	if err != nil {
		return err
	}
	defer br.stop()
	// The first create also waits for the bridge to register its bot.
	if _, err = br.createCityRoom(ctx, "rbwarm-"+r.runID+"-"+db); err != nil {
		return err
	}
	phase := func(name string, clients int) (benchkit.Summary, int, string, time.Duration) {
		defer s.phase("create-" + name)()
		var rec recorder
		var next atomic.Int64
		start := time.Now()
		deadline := start.Add(s.duration)
		var wg sync.WaitGroup
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil && time.Now().Before(deadline) {
					i := next.Add(1)
					if i > int64(s.createRooms) {
						return
					}
					slug := fmt.Sprintf("rb%s-%s-%s-%d", name, r.runID, db, i)
					body := map[string]string{"slug": slug, "name": "Rigbench " + slug, "visibility": "public"}
					var out struct {
						RoomID id.RoomID `json:"matrix_room_id"`
					}
					t0 := time.Now()
					status, raw, err := br.api.Call(ctx, http.MethodPost, "/internal/matrix/rooms/create", nil, body, &out)
					d := time.Since(t0)
					switch {
					case err != nil:
						rec.fail(err.Error())
					case status != http.StatusOK || out.RoomID == "":
						rec.fail(fmt.Sprintf("%d %s", status, raw))
					default:
						rec.add(d)
					}
				}
			}()
		}
		wg.Wait()
		return benchkit.Summarize(rec.samples), rec.errors, rec.lastErr, time.Since(start)
	}
	for _, p := range []struct {
		name    string
		clients int
	}{{"seq", 1}, {"conc", s.createClients}} {
		sum, errs, lastErr, elapsed := phase(p.name, p.clients)
		if err := ctx.Err(); err != nil {
			return err
		}
		variant := "sequential"
		if p.clients > 1 {
			variant = fmt.Sprintf("%d clients", p.clients)
		}
		rep.Rows = append(rep.Rows, newRow(db, variant, "create request (client side)", sum, errs, elapsed,
			float64(sum.N)/elapsed.Seconds(), "rooms/s"))
		if errs > 0 {
			rep.Note("[%s] %s: %d failed creates, last: %s", db, variant, errs, lastErr)
		}
		if sum.N < s.createRooms {
			rep.Note("[%s] %s: %d of %d rooms made within %s", db, variant, sum.N, s.createRooms, s.duration)
		}
	}
	return nil
}
