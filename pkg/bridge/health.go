package bridge

import (
	"context"
	"net/http"
	"time"

	"github.com/daarion/matrix-bridge/pkg/internalapi"
)

// handleHealth answers GET /healthz: the database and the homeserver are
// checked on every call, with a short timeout each.
func (b *Bridge) handleHealth(w http.ResponseWriter, r *http.Request) {
	resp := map[string]any{"status": "ok", "synapse": "connected", "database": "connected"}
	status := http.StatusOK

	dbCtx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := b.DB.RawDB.PingContext(dbCtx); err != nil {
		resp["database"], resp["status"], status = "unreachable", "unavailable", http.StatusServiceUnavailable
	}
	hsCtx, cancelHS := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancelHS()
	if _, err := b.AS.BotClient().Versions(hsCtx); err != nil {
		resp["synapse"], resp["status"], status = "unreachable", "unavailable", http.StatusServiceUnavailable
	}
	// Without a leader nothing is indexed or delivered, though every process
	// still takes transactions; a backlog past its threshold means delivery
	// is falling behind. Degraded, not down: 200, so that a load balancer
	// keeps sending the homeserver's transactions here.
	{
		switch {
		case b.Leader != nil && b.Leader.Leading():
			resp["leader"] = "this process"
		case b.pressure.leaderHeld.Load():
			resp["leader"] = "another process"
		case b.pressure.sampled.Load():
			resp["leader"] = "none"
		default:
			resp["leader"] = "unknown"
		}
		if why := b.degradation(); len(why) > 0 {
			resp["degraded"] = why
			if status == http.StatusOK {
				resp["status"] = "degraded"
			}
		}
		resp["journal_backlog"] = b.pressure.journalBacklog.Load()
		resp["max_consumer_lag"] = b.pressure.maxLag.Load()
	}
	internalapi.WriteJSON(w, status, resp)
}
