package internalapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strconv"
	"strings"

	"github.com/rs/zerolog"
)

// Error codes of the internal API's error bodies.
const (
	ErrMissingToken  = "M_MISSING_TOKEN"
	ErrUnknownToken  = "M_UNKNOWN_TOKEN"
	ErrForbidden     = "M_FORBIDDEN"
	ErrLimitExceeded = "M_LIMIT_EXCEEDED"
	ErrTooLarge      = "M_TOO_LARGE"
	ErrNotJSON       = "M_NOT_JSON"
	ErrBadJSON       = "M_BAD_JSON"
	ErrInvalidParam  = "M_INVALID_PARAM"
	ErrNotFound      = "M_NOT_FOUND"
	ErrUnrecognized  = "M_UNRECOGNIZED"
	ErrInternal      = "INTERNAL_ERROR"
)

// errorBody is every error response: error and message always, field when
// one is known.
type errorBody struct {
	Error        string `json:"error"`
	Message      string `json:"message"`
	Field        string `json:"field,omitempty"`
	RetryAfterMS int64  `json:"retry_after_ms,omitempty"`
}

// WriteJSON writes v as a JSON response with status. When v cannot be
// encoded, the response is a 500 instead.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		body = []byte(`{"error":"` + ErrInternal + `","message":"internal error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// WriteError writes {"error": errcode, "message": message} with status.
func WriteError(w http.ResponseWriter, status int, errcode, message string) {
	writeErrorBody(w, status, errorBody{Error: errcode, Message: message})
}

// WriteFieldError writes a 400 M_INVALID_PARAM for a request field whose
// value is not acceptable: {"message": "<field>: <problem>", "field": field}.
// (DecodeJSON reports fields of the wrong JSON type as M_BAD_JSON.)
func WriteFieldError(w http.ResponseWriter, field, problem string) {
	writeFieldError(w, ErrInvalidParam, field, problem)
}

// WriteForbiddenField writes a 403 M_FORBIDDEN for a request field whose
// value the caller may not use: {"message": "<field>: <problem>", "field": field}.
func WriteForbiddenField(w http.ResponseWriter, field, problem string) {
	writeErrorBody(w, http.StatusForbidden, errorBody{Error: ErrForbidden, Message: field + ": " + problem, Field: field})
}

// WriteInternalError logs err with the request's logger and writes a 500
// that does not reveal it.
func WriteInternalError(w http.ResponseWriter, r *http.Request, err error) {
	zerolog.Ctx(r.Context()).Err(err).Msg("Internal API request failed")
	WriteError(w, http.StatusInternalServerError, ErrInternal, "internal error")
}

func writeFieldError(w http.ResponseWriter, errcode, field, problem string) {
	writeErrorBody(w, http.StatusBadRequest, errorBody{Error: errcode, Message: field + ": " + problem, Field: field})
}

func writeErrorBody(w http.ResponseWriter, status int, body errorBody) {
	WriteJSON(w, status, body)
}

func writeTooLarge(w http.ResponseWriter, limit int64) {
	WriteError(w, http.StatusRequestEntityTooLarge, ErrTooLarge,
		"request body is larger than "+strconv.FormatInt(limit, 10)+" bytes")
}

// DecodeJSON decodes the request body, one JSON value, into dst. On any
// problem it writes the error response itself and returns false:
//
//   - a Content-Type other than application/json: 415 M_NOT_JSON (a missing
//     one is accepted);
//   - an empty body: 400 M_NOT_JSON;
//   - malformed JSON or data after the value: 400 M_NOT_JSON;
//   - a field of the wrong type or an unknown field: 400 M_BAD_JSON naming
//     the field (a dotted path for a type mismatch; an unknown field is
//     named as it appears in its object);
//   - a body over the API's MaxBodyBytes: 413 M_TOO_LARGE.
func DecodeJSON(w http.ResponseWriter, r *http.Request, dst any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			WriteError(w, http.StatusUnsupportedMediaType, ErrNotJSON, "Content-Type must be application/json")
			return false
		}
	}
	if r.Body == nil || r.Body == http.NoBody {
		WriteError(w, http.StatusBadRequest, ErrNotJSON, "request body is required")
		return false
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		writeDecodeError(w, r, err)
		return false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeTooLarge(w, tooLarge.Limit)
		} else {
			WriteError(w, http.StatusBadRequest, ErrNotJSON, "request body must hold a single JSON value")
		}
		return false
	}
	return true
}

func writeDecodeError(w http.ResponseWriter, r *http.Request, err error) {
	var (
		tooLarge   *http.MaxBytesError
		syntaxErr  *json.SyntaxError
		typeErr    *json.UnmarshalTypeError
		invalidErr *json.InvalidUnmarshalError
	)
	switch {
	case errors.As(err, &tooLarge):
		writeTooLarge(w, tooLarge.Limit)
	case errors.Is(err, io.EOF):
		WriteError(w, http.StatusBadRequest, ErrNotJSON, "request body is required")
	case errors.As(err, &syntaxErr), errors.Is(err, io.ErrUnexpectedEOF):
		WriteError(w, http.StatusBadRequest, ErrNotJSON, "request body is not valid JSON: "+err.Error())
	case errors.As(err, &typeErr):
		want := jsonKind(typeErr.Type)
		if typeErr.Field == "" {
			WriteError(w, http.StatusBadRequest, ErrBadJSON,
				fmt.Sprintf("request body must be %s, got %s", want, typeErr.Value))
			return
		}
		writeFieldError(w, ErrBadJSON, typeErr.Field, fmt.Sprintf("must be %s, got %s", want, typeErr.Value))
	case errors.As(err, &invalidErr):
		WriteInternalError(w, r, err)
	default:
		if field, ok := unknownField(err); ok {
			writeFieldError(w, ErrBadJSON, field, "unknown field")
			return
		}
		// Reading the body failed, or a field's own UnmarshalJSON did.
		WriteError(w, http.StatusBadRequest, ErrBadJSON, "invalid request body: "+err.Error())
	}
}

// unknownField parses the field out of encoding/json's `json: unknown field
// "name"`, the only form DisallowUnknownFields reports it in.
func unknownField(err error) (string, bool) {
	rest, ok := strings.CutPrefix(err.Error(), `json: unknown field `)
	if !ok {
		return "", false
	}
	field, err := strconv.Unquote(rest)
	return field, err == nil
}

// jsonKind names the JSON value a Go type decodes from.
func jsonKind(t reflect.Type) string {
	if t == nil {
		return "a value"
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return "a base64 string"
		}
		return "an array"
	case reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	default:
		return "a " + t.Kind().String()
	}
}

// WriteTooLarge answers 413 M_TOO_LARGE for a body past limit (a handler
// that streams its body sees *http.MaxBytesError only as it reads).
func WriteTooLarge(w http.ResponseWriter, limit int64) { writeTooLarge(w, limit) }
