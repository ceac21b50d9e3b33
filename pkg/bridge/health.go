package bridge

import (
	"net/http"

	"github.com/daarion/matrix-bridge/pkg/internalapi"
)

// handleHealth answers GET /healthz from the latest status sample (at most
// a second old): the database and the homeserver each pinged, the leader,
// and why health is degraded.
func (b *Bridge) handleHealth(w http.ResponseWriter, r *http.Request) {
	s := b.Status()
	resp := map[string]any{"status": "ok", "synapse": "connected", "database": "connected"}
	status := http.StatusOK
	if !s.Sampled() {
		// Only in the first second after start.
		resp["status"], status = "starting", http.StatusServiceUnavailable
	}
	if s.Sampled() && !s.Database.Reachable {
		resp["database"], resp["status"], status = "unreachable", "unavailable", http.StatusServiceUnavailable
	}
	if s.Sampled() && !s.Homeserver.Reachable {
		resp["synapse"], resp["status"], status = "unreachable", "unavailable", http.StatusServiceUnavailable
	}
	// Without a leader nothing is indexed or delivered, though every process
	// still takes transactions; a backlog past its threshold means delivery
	// is falling behind. Degraded, not down: 200, so that a load balancer
	// keeps sending the homeserver's transactions here.
	resp["leader"] = s.Leader()
	if why := s.Degradation(b.healthThresholds()); len(why) > 0 {
		resp["degraded"] = why
		if status == http.StatusOK {
			resp["status"] = "degraded"
		}
	}
	resp["journal_backlog"] = s.JournalBacklog
	resp["max_consumer_lag"] = s.MaxLag
	internalapi.WriteJSON(w, status, resp)
}
