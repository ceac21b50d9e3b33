package consumer

import (
	"net/http"
	"strconv"

	"github.com/daarion/matrix-bridge/pkg/internalapi"
)

// maxListLimit bounds a page of the parked list.
const maxListLimit = 500

// RegisterParkedRoutes adds the parked-event endpoints (scope admin): the
// list, and a retry of one event or of all a consumer parked. names are the
// consumers that exist; others are a 404.
func RegisterParkedRoutes(api *internalapi.API, store *ParkedStore, names func() []string) {
	known := func(name string) bool {
		for _, n := range names() {
			if n == name {
				return true
			}
		}
		return false
	}
	api.Handle(http.MethodGet, "/internal/matrix/parked-events", internalapi.ScopeAdmin, func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		opts := ListOptions{Consumer: q.Get("consumer"), Limit: 100}
		if opts.Consumer != "" && !known(opts.Consumer) {
			internalapi.WriteFieldError(w, "consumer", "is not a consumer of this bridge")
			return
		}
		if v := q.Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > maxListLimit {
				internalapi.WriteFieldError(w, "limit", "must be an integer from 1 to "+strconv.Itoa(maxListLimit))
				return
			}
			opts.Limit = n
		}
		if v := q.Get("after"); v != "" {
			// after is "<consumer>:<position>" from next_after.
			name, pos, ok := cutLast(v)
			n, err := strconv.ParseInt(pos, 10, 64)
			if !ok || err != nil || n < 0 || !known(name) {
				internalapi.WriteFieldError(w, "after", "must be a next_after value of an earlier page")
				return
			}
			opts.AfterConsumer, opts.AfterPosition = name, n
		}
		list, err := store.List(r.Context(), opts)
		if err != nil {
			internalapi.WriteInternalError(w, r, err)
			return
		}
		resp := map[string]any{"parked_events": list}
		if len(list) == opts.Limit {
			last := list[len(list)-1]
			resp["next_after"] = last.Consumer + ":" + strconv.FormatInt(last.Position, 10)
		}
		if list == nil {
			resp["parked_events"] = []*ParkedEvent{}
		}
		internalapi.WriteJSON(w, http.StatusOK, resp)
	})
	api.Handle(http.MethodPost, "/internal/matrix/parked-events/{consumer}/retry", internalapi.ScopeAdmin, func(w http.ResponseWriter, r *http.Request) {
		name, ok := internalapi.PathVar(r, "consumer")
		if !ok || !known(name) {
			internalapi.WriteError(w, http.StatusNotFound, "M_NOT_FOUND", "no such consumer")
			return
		}
		var position int64
		if v := r.URL.Query().Get("position"); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 1 {
				internalapi.WriteFieldError(w, "position", "must be a positive integer (the parked event's position)")
				return
			}
			position = n
		}
		n, err := store.RequestRetry(r.Context(), name, position)
		if err != nil {
			internalapi.WriteInternalError(w, r, err)
			return
		}
		if n == 0 && position != 0 {
			internalapi.WriteError(w, http.StatusNotFound, "M_NOT_FOUND", "no parked event at that position")
			return
		}
		internalapi.WriteJSON(w, http.StatusAccepted, map[string]int64{"retry_requested": n})
	})
}

func cutLast(s string) (before, after string, ok bool) {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == ':' {
			return s[:i], s[i+1:], true
		}
	}
	return "", "", false
}
