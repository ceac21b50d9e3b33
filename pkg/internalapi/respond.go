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
	// ErrMatrixUnavailable is the rooms bridge spec's homeserver failure.
	ErrMatrixUnavailable = "matrix_unavailable"
)

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

// DecodeJSON decodes the request body, one JSON value, into dst. Its error
// is the answer (an *Error), or an internal failure:
//
//   - a Content-Type other than application/json: 415 M_NOT_JSON (a missing
//     one is accepted);
//   - an empty body: 400 M_NOT_JSON;
//   - malformed JSON or data after the value: 400 M_NOT_JSON;
//   - a field of the wrong type or an unknown field: 400 M_BAD_JSON naming
//     the field (a dotted path for a type mismatch; an unknown field is
//     named as it appears in its object);
//   - a body over the API's MaxBodyBytes: 413 M_TOO_LARGE.
func DecodeJSON(r *http.Request, dst any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return NewError(http.StatusUnsupportedMediaType, ErrNotJSON, "Content-Type must be application/json")
		}
	}
	if r.Body == nil || r.Body == http.NoBody {
		return NewError(http.StatusBadRequest, ErrNotJSON, "request body is required")
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return decodeFailure(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return TooLarge(tooLarge.Limit)
		}
		return NewError(http.StatusBadRequest, ErrNotJSON, "request body must hold a single JSON value")
	}
	return nil
}

// badJSONField is a 400 M_BAD_JSON naming field.
func badJSONField(field, problem string) *Error {
	return &Error{Status: http.StatusBadRequest, Code: ErrBadJSON, Message: field + ": " + problem, Field: field}
}

func decodeFailure(err error) error {
	var (
		tooLarge   *http.MaxBytesError
		syntaxErr  *json.SyntaxError
		typeErr    *json.UnmarshalTypeError
		invalidErr *json.InvalidUnmarshalError
	)
	switch {
	case errors.As(err, &tooLarge):
		return TooLarge(tooLarge.Limit)
	case errors.Is(err, io.EOF):
		return NewError(http.StatusBadRequest, ErrNotJSON, "request body is required")
	case errors.As(err, &syntaxErr), errors.Is(err, io.ErrUnexpectedEOF):
		return NewError(http.StatusBadRequest, ErrNotJSON, "request body is not valid JSON: "+err.Error())
	case errors.As(err, &typeErr):
		want := jsonKind(typeErr.Type)
		if typeErr.Field == "" {
			return NewError(http.StatusBadRequest, ErrBadJSON,
				fmt.Sprintf("request body must be %s, got %s", want, typeErr.Value))
		}
		return badJSONField(typeErr.Field, fmt.Sprintf("must be %s, got %s", want, typeErr.Value))
	case errors.As(err, &invalidErr):
		return fmt.Errorf("decoding the request body: %w", err)
	default:
		if field, ok := unknownField(err); ok {
			return badJSONField(field, "unknown field")
		}
		// Reading the body failed, or a field's own UnmarshalJSON did.
		return NewError(http.StatusBadRequest, ErrBadJSON, "invalid request body: "+err.Error())
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

// DecodeField decodes a body of one string field, {field: value}: another
// key is a 400 M_BAD_JSON naming it, a missing or null value a 400 naming
// field.
func DecodeField(r *http.Request, field string) (string, error) {
	var body map[string]*string
	if err := DecodeJSON(r, &body); err != nil {
		return "", err
	}
	for key := range body {
		if key != field {
			return "", NewError(http.StatusBadRequest, ErrBadJSON, key+": unknown field")
		}
	}
	if body[field] == nil {
		return "", InvalidField(field, "is required")
	}
	return *body[field], nil
}
