package internalapi

import (
	"errors"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"

	"github.com/daarion/matrix-bridge/pkg/homeserver"
	"github.com/daarion/matrix-bridge/pkg/identity"
)

// Error is every answer of the internal API that is not a success: a status
// and the body {"error": Code, "message": Message, "field": Field} (field
// when one is at fault). Handlers return it; WriteError writes it.
type Error struct {
	Status  int
	Code    string
	Message string
	// Field names the request field at fault, if one is.
	Field string
	// Detail is set for ErrMatrixUnavailable only, which is answered in the
	// rooms bridge spec's shape {"error":"matrix_unavailable","detail":…}.
	Detail string
	// RetryAfter, for a 429, is how long the caller should wait: the
	// Retry-After header (whole seconds) and retry_after_ms.
	RetryAfter time.Duration
	// Err is the cause, for errors.Is/As; it is never answered.
	Err error
}

func (e *Error) Error() string {
	if e.Code == ErrMatrixUnavailable {
		return e.Code + ": " + e.Detail
	}
	return e.Code + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// APIError is an error that knows its answer, for error types of domain
// packages (such as a room out of the caller's reach).
type APIError interface {
	error
	APIError() *Error
}

// NewError is an error answered with status, errcode and message.
func NewError(status int, errcode, message string) *Error {
	return &Error{Status: status, Code: errcode, Message: message}
}

// InvalidField is a 400 M_INVALID_PARAM for a request field whose value is
// not acceptable: {"message": "<field>: <problem>", "field": field}. Domain
// code returns *identity.FieldError instead, which answers the same.
func InvalidField(field, problem string) *Error {
	return &Error{Status: http.StatusBadRequest, Code: ErrInvalidParam, Message: field + ": " + problem, Field: field}
}

// ForbiddenField is a 403 M_FORBIDDEN for a request field whose value the
// caller may not use.
func ForbiddenField(field, problem string) *Error {
	return &Error{Status: http.StatusForbidden, Code: ErrForbidden, Message: field + ": " + problem, Field: field}
}

// Forbidden is a 403 M_FORBIDDEN.
func Forbidden(message string) *Error {
	return NewError(http.StatusForbidden, ErrForbidden, message)
}

// NotFound is a 404 M_NOT_FOUND.
func NotFound(message string) *Error {
	return NewError(http.StatusNotFound, ErrNotFound, message)
}

// Conflict is a 409 with errcode (M_ROOM_IN_USE, M_USER_IN_USE, …).
func Conflict(errcode, message string) *Error {
	return NewError(http.StatusConflict, errcode, message)
}

// TooLarge is a 413 M_TOO_LARGE for a body past limit (a handler that
// streams its body sees *http.MaxBytesError only as it reads; returning that
// error answers the same).
func TooLarge(limit int64) *Error {
	return NewError(http.StatusRequestEntityTooLarge, ErrTooLarge,
		"request body is larger than "+strconv.FormatInt(limit, 10)+" bytes")
}

// MatrixUnavailable is the rooms bridge spec's homeserver failure: 502 when
// the homeserver answered with an error, 503 when it could not be reached.
func MatrixUnavailable(status int, detail string) *Error {
	return &Error{Status: status, Code: ErrMatrixUnavailable, Detail: detail}
}

// RateLimited is a 429 M_LIMIT_EXCEEDED asking to retry after wait.
func RateLimited(wait time.Duration) *Error {
	ms := max(int64(math.Ceil(float64(wait)/float64(time.Millisecond))), 1)
	return &Error{
		Status:     http.StatusTooManyRequests,
		Code:       ErrLimitExceeded,
		Message:    "too many requests; retry after " + strconv.FormatInt(ms, 10) + " ms",
		RetryAfter: time.Duration(ms) * time.Millisecond,
	}
}

// AsError is the answer to err, or nil when err is not one the API may
// reveal (an internal failure). It is the one place that maps the bridge's
// errors to answers:
//
//   - an *Error, or an APIError, as it says;
//   - *identity.FieldError: 400 M_INVALID_PARAM naming the field;
//   - *homeserver.Error: 502/503 matrix_unavailable;
//   - the homeserver refusing what was asked (mautrix.HTTPError with a
//     Matrix error and a 4xx): its status and errcode passed on, as the
//     gateway spec shows; a 429 that outlasted the retries is a 503
//     matrix_unavailable;
//   - any other failed homeserver call, or net/http's client failing
//     (*url.Error): 502/503 matrix_unavailable (homeserver.Failure);
//   - *http.MaxBytesError: 413 M_TOO_LARGE.
func AsError(err error) *Error {
	var (
		apiErr   *Error
		answerer APIError
		fieldErr *identity.FieldError
		hsErr    *homeserver.Error
		httpErr  mautrix.HTTPError
		tooLarge *http.MaxBytesError
	)
	switch {
	case err == nil:
		return nil
	case errors.As(err, &apiErr):
		return apiErr
	case errors.As(err, &answerer):
		return answerer.APIError()
	case errors.As(err, &fieldErr):
		return InvalidField(fieldErr.Field, fieldErr.Problem)
	case errors.As(err, &hsErr):
		return MatrixUnavailable(hsErr.Status, hsErr.Detail)
	case errors.As(err, &httpErr) && httpErr.RespError != nil && httpErr.Response != nil && httpErr.Response.StatusCode < 500:
		status := httpErr.Response.StatusCode
		if status == http.StatusTooManyRequests {
			// Still limited after the retries: the homeserver is unavailable to us.
			return MatrixUnavailable(http.StatusServiceUnavailable, "the homeserver keeps rate limiting the bridge")
		}
		return NewError(status, httpErr.RespError.ErrCode, httpErr.RespError.Err)
	case errors.As(err, &httpErr) || isNetworkError(err):
		failure := homeserver.Failure("calling the homeserver", err).(*homeserver.Error)
		return MatrixUnavailable(failure.Status, failure.Detail)
	case errors.As(err, &tooLarge):
		return TooLarge(tooLarge.Limit)
	default:
		return nil
	}
}

// isNetworkError reports whether err is net/http's client failing to reach
// a server: in a handler, the homeserver (mautrix wraps its own failures in
// mautrix.HTTPError). A database's network error is not one: that is a 500.
func isNetworkError(err error) bool {
	var urlErr *url.Error
	return errors.As(err, &urlErr)
}

// errorBody is the body of every error answer but matrix_unavailable.
type errorBody struct {
	Error        string `json:"error"`
	Message      string `json:"message"`
	Field        string `json:"field,omitempty"`
	RetryAfterMS int64  `json:"retry_after_ms,omitempty"`
}

// matrixUnavailableBody is the rooms bridge spec's homeserver failure.
type matrixUnavailableBody struct {
	Error  string `json:"error"`
	Detail string `json:"detail"`
}

var internalError = NewError(http.StatusInternalServerError, ErrInternal, "internal error")

// WriteError answers err (see AsError). An error the API may not reveal is
// logged with the request's logger and answered 500 INTERNAL_ERROR.
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	e := AsError(err)
	if e == nil {
		zerolog.Ctx(r.Context()).Err(err).Msg("Internal API request failed")
		e = internalError
	}
	switch {
	case e.Code == ErrMatrixUnavailable:
		WriteJSON(w, e.Status, matrixUnavailableBody{Error: e.Code, Detail: e.Detail})
	case e.RetryAfter > 0:
		ms := e.RetryAfter.Milliseconds()
		w.Header().Set("Retry-After", strconv.FormatInt(max((ms+999)/1000, 1), 10))
		WriteJSON(w, e.Status, errorBody{Error: e.Code, Message: e.Message, Field: e.Field, RetryAfterMS: ms})
	default:
		WriteJSON(w, e.Status, errorBody{Error: e.Code, Message: e.Message, Field: e.Field})
	}
}

// HandlerFunc is an internal API handler: it writes its success itself and
// returns its failure, which WriteError answers.
type HandlerFunc func(w http.ResponseWriter, r *http.Request) error

// Errors adapts h to net/http: a returned error is answered by WriteError.
// (A handler that already started its response and then fails can only log:
// the error is logged and nothing more is written.)
func Errors(h HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		err := h(w, r)
		if err == nil {
			return
		}
		if rec, ok := w.(*recorder); ok && rec.wroteHeader {
			zerolog.Ctx(r.Context()).Err(err).Msg("Internal API request failed after its response started")
			return
		}
		WriteError(w, r, err)
	}
}
