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
	api.Handle(http.MethodGet, "/internal/matrix/parked-events", internalapi.ScopeAdmin, func(w http.ResponseWriter, r *http.Request) error {
		q := r.URL.Query()
		opts := ListOptions{Consumer: q.Get("consumer"), Limit: 100}
		if opts.Consumer != "" && !known(opts.Consumer) {
			return internalapi.InvalidField("consumer", "is not a consumer of this bridge")
		}
		if v := q.Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > maxListLimit {
				return internalapi.InvalidField("limit", "must be an integer from 1 to "+strconv.Itoa(maxListLimit))
			}
			opts.Limit = n
		}
		if v := q.Get("after"); v != "" {
			// after is "<consumer>:<position>" from next_after.
			name, pos, ok := cutLast(v)
			n, err := strconv.ParseInt(pos, 10, 64)
			if !ok || err != nil || n < 0 || !known(name) {
				return internalapi.InvalidField("after", "must be a next_after value of an earlier page")
			}
			opts.AfterConsumer, opts.AfterPosition = name, n
		}
		list, err := store.List(r.Context(), opts)
		if err != nil {
			return err
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
		return nil
	})
	api.Handle(http.MethodPost, "/internal/matrix/parked-events/{consumer}/retry", internalapi.ScopeAdmin, func(w http.ResponseWriter, r *http.Request) error {
		name, ok := internalapi.PathVar(r, "consumer")
		if !ok || !known(name) {
			return internalapi.NotFound("no such consumer")
		}
		var position int64
		if v := r.URL.Query().Get("position"); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 1 {
				return internalapi.InvalidField("position", "must be a positive integer (the parked event's position)")
			}
			position = n
		}
		n, err := store.RequestRetry(r.Context(), name, position)
		if err != nil {
			return err
		}
		if n == 0 && position != 0 {
			return internalapi.NotFound("no parked event at that position")
		}
		internalapi.WriteJSON(w, http.StatusAccepted, map[string]int64{"retry_requested": n})
		return nil
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
