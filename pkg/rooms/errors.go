// Package rooms maps DAARION city rooms to Matrix rooms (#city_<slug>) and
// manages rooms for DAARION services: creation by slug (idempotent, one
// Matrix room per city room), lookup and adoption, metadata from a state
// cache, archive, and following room upgrades.
package rooms

import (
	"github.com/daarion/matrix-bridge/pkg/homeserver"
	"github.com/daarion/matrix-bridge/pkg/internalapi"
)

// Bad input is an *identity.FieldError naming the field, the bridge's one
// field error.

// ErrNotFound means no such room (or the bot is not in it): a 404.
var ErrNotFound error = notFoundError{}

type notFoundError struct{}

func (notFoundError) Error() string { return "not found" }

func (notFoundError) APIError() *internalapi.Error {
	return internalapi.NotFound("no such room, or the bridge bot is not in it")
}

// ErrNoSpace is the answer of the space calls when rooms.space.enabled is
// false: a 404.
var ErrNoSpace error = noSpaceError{}

type noSpaceError struct{}

func (noSpaceError) Error() string {
	return "the city space is turned off (rooms.space.enabled)"
}

func (e noSpaceError) APIError() *internalapi.Error { return internalapi.NotFound(e.Error()) }

// ConflictError means the request collides with something that exists, such
// as a #city_ alias that points at a room the bridge does not control.
type ConflictError struct{ Detail string }

func (e *ConflictError) Error() string { return "conflict: " + e.Detail }

// APIError is the answer: 409 M_ROOM_IN_USE.
func (e *ConflictError) APIError() *internalapi.Error {
	return internalapi.Conflict("M_ROOM_IN_USE", e.Detail)
}

// MatrixError means the homeserver failed or could not be reached (502/503,
// answered by internalapi.WriteError).
type MatrixError = homeserver.Error

// matrixFailure classifies a failed homeserver call.
var matrixFailure = homeserver.Failure

// isMatrixCode reports whether err is the homeserver answering errcode.
var isMatrixCode = homeserver.HasCode

// isHTTPStatus reports whether err is the homeserver answering status.
var isHTTPStatus = homeserver.HasStatus
