// Package homeserver classifies failed calls to the Matrix homeserver, the
// same way for every part of the bridge: the internal API answers a
// homeserver that answered with an error as 502 and one it could not reach
// as 503, both as {"error":"matrix_unavailable","detail":…}.
package homeserver

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"go.mau.fi/util/retryafter"

	"maunium.net/go/mautrix"
)

// Error is a failed homeserver call.
type Error struct {
	// Status is 502 when the homeserver answered with an error, 503 when it
	// could not be reached.
	Status int
	Detail string
	Err    error
}

func (e *Error) Error() string { return e.Detail }
func (e *Error) Unwrap() error { return e.Err }

// Failure classifies err, a failed call made while doing action.
func Failure(action string, err error) error {
	var httpErr mautrix.HTTPError
	if errors.As(err, &httpErr) && httpErr.Response != nil {
		errcode := ""
		if httpErr.RespError != nil {
			errcode = httpErr.RespError.ErrCode
		}
		return &Error{
			Status: http.StatusBadGateway,
			Detail: fmt.Sprintf("%s: homeserver answered %d %s", action, httpErr.Response.StatusCode, errcode),
			Err:    err,
		}
	}
	return &Error{Status: http.StatusServiceUnavailable, Detail: action + ": homeserver unreachable", Err: err}
}

// HasCode reports whether err is the homeserver answering errcode.
func HasCode(err error, errcode string) bool {
	var httpErr mautrix.HTTPError
	return errors.As(err, &httpErr) && httpErr.RespError != nil && httpErr.RespError.ErrCode == errcode
}

// HasStatus reports whether err is the homeserver answering status.
func HasStatus(err error, status int) bool {
	var httpErr mautrix.HTTPError
	return errors.As(err, &httpErr) && httpErr.Response != nil && httpErr.Response.StatusCode == status
}

// Transient reports whether a failed call may succeed later: the homeserver
// was unreachable, failed, or rate limited the bridge.
func Transient(err error) bool {
	var httpErr mautrix.HTTPError
	if errors.As(err, &httpErr) && httpErr.Response != nil {
		code := httpErr.Response.StatusCode
		return code >= 500 || code == http.StatusTooManyRequests
	}
	return true
}

// Permanent reports whether the homeserver refused for good: it answered a
// 4xx other than 429, so asking again gives the same answer. It is the one
// classifier of failed homeserver calls: consumers park an event whose
// handling failed this way (pkg/consumer), and retry everything else.
func Permanent(err error) bool {
	var httpErr mautrix.HTTPError
	if errors.As(err, &httpErr) && httpErr.Response != nil {
		code := httpErr.Response.StatusCode
		return code >= 400 && code < 500 && code != http.StatusTooManyRequests
	}
	return false
}

// RateLimited reports whether err is the homeserver's 429, and how long it
// asked to wait: the Retry-After header (Matrix v1.10), else the body's
// retry_after_ms, else one second; at most limit.
func RateLimited(err error, limit time.Duration) (time.Duration, bool) {
	var httpErr mautrix.HTTPError
	if !errors.As(err, &httpErr) || httpErr.Response == nil || httpErr.Response.StatusCode != http.StatusTooManyRequests {
		return 0, false
	}
	wait := time.Second
	if httpErr.RespError != nil {
		if ms, ok := httpErr.RespError.ExtraData["retry_after_ms"].(float64); ok && ms > 0 {
			wait = time.Duration(ms) * time.Millisecond
		}
	}
	wait = retryafter.Parse(httpErr.Response.Header.Get("Retry-After"), wait)
	return min(max(wait, 0), limit), true
}

// Answered5xx reports whether the homeserver answered err's request with a
// server error (as opposed to refusing it, or not answering at all).
func Answered5xx(err error) bool {
	var httpErr mautrix.HTTPError
	return errors.As(err, &httpErr) && httpErr.Response != nil && httpErr.Response.StatusCode >= 500
}
