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
	resp := map[string]string{"status": "ok", "synapse": "connected", "database": "connected"}
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
	internalapi.WriteJSON(w, status, resp)
}
