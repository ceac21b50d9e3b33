// Package rooms maps DAARION city rooms to Matrix rooms (#city_<slug>) and
// manages rooms for DAARION services: creation by slug (idempotent, one
// Matrix room per city room), lookup and adoption, metadata from a state
// cache, archive, and following room upgrades.
package rooms

import (
	"errors"
	"fmt"
	"net/http"

	"maunium.net/go/mautrix"
)

// FieldError is bad input; it names the field.
type FieldError struct {
	Field   string
	Problem string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Problem }

// ErrNotFound means no such room (or the bot is not in it).
var ErrNotFound = errors.New("not found")

// ConflictError means the request collides with something that exists, such
// as a #city_ alias that points at a room the bridge does not control.
type ConflictError struct{ Detail string }

func (e *ConflictError) Error() string { return "conflict: " + e.Detail }

// MatrixError means the homeserver failed or could not be reached.
type MatrixError struct {
	// Status is 503 when the homeserver is unreachable, 502 when it answered
	// with an error.
	Status int
	Detail string
	Err    error
}

func (e *MatrixError) Error() string { return e.Detail }
func (e *MatrixError) Unwrap() error { return e.Err }

// matrixFailure classifies a failed homeserver call.
func matrixFailure(action string, err error) error {
	var httpErr mautrix.HTTPError
	if errors.As(err, &httpErr) && httpErr.Response != nil {
		errcode := ""
		if httpErr.RespError != nil {
			errcode = httpErr.RespError.ErrCode
		}
		return &MatrixError{
			Status: http.StatusBadGateway,
			Detail: fmt.Sprintf("%s: homeserver answered %d %s", action, httpErr.Response.StatusCode, errcode),
			Err:    err,
		}
	}
	return &MatrixError{Status: http.StatusServiceUnavailable, Detail: action + ": homeserver unreachable", Err: err}
}

// isMatrixCode reports whether err is the homeserver answering errcode.
func isMatrixCode(err error, errcode string) bool {
	var httpErr mautrix.HTTPError
	return errors.As(err, &httpErr) && httpErr.RespError != nil && httpErr.RespError.ErrCode == errcode
}

// isHTTPStatus reports whether err is the homeserver answering status.
func isHTTPStatus(err error, status int) bool {
	var httpErr mautrix.HTTPError
	return errors.As(err, &httpErr) && httpErr.Response != nil && httpErr.Response.StatusCode == status
}
