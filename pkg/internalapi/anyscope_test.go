package internalapi

import (
	"net/http"
	"strings"
	"testing"
)

// A route taking any of several scopes admits a service with one of them,
// and the handler sees which it has.
func TestHandleAnyScope(t *testing.T) {
	f := newFixture(t, nil)
	f.api.HandleAnyScope(http.MethodGet, "/v1/either", []Scope{ScopeRooms, ScopeSubscriptions}, func(w http.ResponseWriter, r *http.Request) error {
		svc := ServiceFrom(r.Context())
		WriteJSON(w, http.StatusOK, map[string]bool{"rooms": svc.Has(ScopeRooms), "subscriptions": svc.Has(ScopeSubscriptions)})
		return nil
	})
	for _, tc := range []struct {
		token  string
		status int
		body   string
	}{
		{roomsToken, 200, `{"rooms":true,"subscriptions":false}`},
		{messagingToken, 200, `{"rooms":false,"subscriptions":true}`},
		{secretToken, 200, `{"rooms":true,"subscriptions":true}`},
		{wrongToken, 401, `"M_UNKNOWN_TOKEN"`},
		{"", 401, `"M_MISSING_TOKEN"`},
	} {
		rec := f.do(t, request{path: "/v1/either", token: tc.token})
		if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.body) {
			t.Errorf("token %q: %d %s, want %d %s", tc.token, rec.Code, rec.Body, tc.status, tc.body)
		}
	}
	f.api.HandleAnyScope(http.MethodGet, "/v1/admin-or-agents", []Scope{ScopeAdmin, ScopeAgents}, func(w http.ResponseWriter, r *http.Request) error {
		t.Error("the handler ran for a service with neither scope")
		return nil
	})
	rec := f.do(t, request{path: "/v1/admin-or-agents", token: roomsToken})
	if rec.Code != 403 || !strings.Contains(rec.Body.String(), `lacks the scopes this route needs (one of [\"admin\" \"agents\"])`) {
		t.Errorf("%d %s", rec.Code, rec.Body)
	}
	for _, scopes := range [][]Scope{nil, {ScopeRooms, "nonsense"}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("HandleAnyScope(%v) did not panic", scopes)
				}
			}()
			f.api.HandleAnyScope(http.MethodGet, "/v1/bad", scopes, func(http.ResponseWriter, *http.Request) error { return nil })
		}()
	}
}
