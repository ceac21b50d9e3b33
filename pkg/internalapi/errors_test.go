package internalapi

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"maunium.net/go/mautrix"

	"github.com/daarion/matrix-bridge/pkg/homeserver"
	"github.com/daarion/matrix-bridge/pkg/identity"
)

type knowsItsAnswer struct{}

func (knowsItsAnswer) Error() string    { return "gone" }
func (knowsItsAnswer) APIError() *Error { return NewError(http.StatusGone, "M_GONE", "gone for good") }

func refusal(status int, errcode string) error {
	return mautrix.HTTPError{
		Response:  &http.Response{StatusCode: status},
		RespError: &mautrix.RespError{ErrCode: errcode, Err: "refused"},
	}
}

// WriteError is the one place errors become answers.
func TestWriteError(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		status int
		body   string
	}{
		{"api error", Conflict("M_ROOM_IN_USE", "taken"), 409, `{"error":"M_ROOM_IN_USE","message":"taken"}`},
		{"wrapped api error", fmt.Errorf("creating: %w", Forbidden("no")), 403, `{"error":"M_FORBIDDEN","message":"no"}`},
		{"answerer", fmt.Errorf("x: %w", knowsItsAnswer{}), 410, `{"error":"M_GONE","message":"gone for good"}`},
		{"field error", &identity.FieldError{Field: "sender", Problem: "is bad"}, 400,
			`{"error":"M_INVALID_PARAM","message":"sender: is bad","field":"sender"}`},
		{"forbidden field", ForbiddenField("room_id", "is out of reach"), 403,
			`{"error":"M_FORBIDDEN","message":"room_id: is out of reach","field":"room_id"}`},
		{"homeserver error", &homeserver.Error{Status: 502, Detail: "sending: homeserver answered 500 M_UNKNOWN"}, 502,
			`{"error":"matrix_unavailable","detail":"sending: homeserver answered 500 M_UNKNOWN"}`},
		{"homeserver refusal passed on", refusal(403, "M_FORBIDDEN"), 403, `{"error":"M_FORBIDDEN","message":"refused"}`},
		{"homeserver still rate limiting", refusal(429, "M_LIMIT_EXCEEDED"), 503,
			`{"error":"matrix_unavailable","detail":"the homeserver keeps rate limiting the bridge"}`},
		{"homeserver failing", refusal(500, "M_UNKNOWN"), 502,
			`{"error":"matrix_unavailable","detail":"calling the homeserver: homeserver answered 500 M_UNKNOWN"}`},
		{"homeserver unreachable", &url.Error{Op: "Post", URL: "http://hs", Err: errors.New("connection refused")}, 503,
			`{"error":"matrix_unavailable","detail":"calling the homeserver: homeserver unreachable"}`},
		{"body too large", fmt.Errorf("reading: %w", &http.MaxBytesError{Limit: 64}), 413,
			`{"error":"M_TOO_LARGE","message":"request body is larger than 64 bytes"}`},
		{"anything else", errors.New("database is on fire"), 500, `{"error":"INTERNAL_ERROR","message":"internal error"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			WriteError(w, httptest.NewRequest(http.MethodGet, "/", nil), tc.err)
			if got := strings.TrimSpace(w.Body.String()); w.Code != tc.status || got != tc.body {
				t.Errorf("got %d %s, want %d %s", w.Code, got, tc.status, tc.body)
			}
		})
	}
}

// A handler that fails after starting its answer gets no second one.
func TestErrorsAfterResponseStarted(t *testing.T) {
	f := newFixture(t, nil)
	f.api.Handle(http.MethodGet, "/v1/late", ScopeRooms, func(w http.ResponseWriter, r *http.Request) error {
		WriteJSON(w, http.StatusAccepted, map[string]string{"status": "started"})
		return errors.New("failed afterwards")
	})
	rec := f.do(t, request{path: "/v1/late", token: roomsToken})
	if rec.Code != http.StatusAccepted || strings.Contains(rec.Body.String(), "INTERNAL_ERROR") {
		t.Errorf("got %d %s", rec.Code, rec.Body)
	}
}
