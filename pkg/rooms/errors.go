// Package rooms maps DAARION city rooms to Matrix rooms (#city_<slug>) and
// manages rooms for DAARION services: creation by slug (idempotent, one
// Matrix room per city room), lookup and adoption, metadata from a state
// cache, archive, and following room upgrades.
package rooms

import (
	"errors"

	"github.com/daarion/matrix-bridge/pkg/homeserver"
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

// MatrixError means the homeserver failed or could not be reached (502/503).
type MatrixError = homeserver.Error

// matrixFailure classifies a failed homeserver call.
var matrixFailure = homeserver.Failure

// isMatrixCode reports whether err is the homeserver answering errcode.
var isMatrixCode = homeserver.HasCode

// isHTTPStatus reports whether err is the homeserver answering status.
var isHTTPStatus = homeserver.HasStatus
