package homeserver

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"maunium.net/go/mautrix"
)

func httpError(status int, errcode string) error {
	return mautrix.HTTPError{Response: &http.Response{StatusCode: status}, RespError: &mautrix.RespError{ErrCode: errcode}}
}

func TestFailure(t *testing.T) {
	for _, tc := range []struct {
		name      string
		err       error
		status    int
		transient bool
	}{
		{"answered 500", httpError(500, "M_UNKNOWN"), 502, true},
		{"answered 403", httpError(403, "M_FORBIDDEN"), 502, false},
		{"rate limited", httpError(429, "M_LIMIT_EXCEEDED"), 502, true},
		{"unreachable", errors.New("dial tcp 127.0.0.1:9: connection refused"), 503, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var he *Error
			if err := Failure("doing it", tc.err); !errors.As(err, &he) || he.Status != tc.status || !errors.Is(err, tc.err) {
				t.Errorf("Failure = %v (%+v), want status %d wrapping the cause", err, he, tc.status)
			}
			if Transient(tc.err) != tc.transient {
				t.Errorf("Transient = %v, want %v", !tc.transient, tc.transient)
			}
		})
	}
	if !HasCode(httpError(400, "M_ROOM_IN_USE"), "M_ROOM_IN_USE") || HasCode(errors.New("x"), "M_ROOM_IN_USE") {
		t.Error("HasCode")
	}
	if !HasStatus(httpError(409, ""), 409) || HasStatus(httpError(400, ""), 409) {
		t.Error("HasStatus")
	}
}

func TestRateLimited(t *testing.T) {
	limited := func(header string, body map[string]any) error {
		resp := &http.Response{StatusCode: 429, Header: http.Header{}}
		if header != "" {
			resp.Header.Set("Retry-After", header)
		}
		return mautrix.HTTPError{Response: resp, RespError: &mautrix.RespError{ErrCode: "M_LIMIT_EXCEEDED", ExtraData: body}}
	}
	for _, tc := range []struct {
		name    string
		err     error
		wait    time.Duration
		limited bool
	}{
		{"retry_after_ms", limited("", map[string]any{"retry_after_ms": float64(250)}), 250 * time.Millisecond, true},
		{"Retry-After beats the body", limited("2", map[string]any{"retry_after_ms": float64(250)}), 2 * time.Second, true},
		{"neither: one second", limited("", nil), time.Second, true},
		{"capped", limited("3600", nil), 30 * time.Second, true},
		{"not a 429", httpError(403, "M_FORBIDDEN"), 0, false},
		{"not an HTTP error", errors.New("dial tcp: refused"), 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wait, ok := RateLimited(tc.err, 30*time.Second)
			if wait != tc.wait || ok != tc.limited {
				t.Errorf("RateLimited = %v, %v; want %v, %v", wait, ok, tc.wait, tc.limited)
			}
		})
	}
}
