package testrig

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

// FakeHomeserver is an HTTP server on loopback for unit tests that answers
// only the client-server API calls the test registers with Handle. Any other
// call fails the test and is answered 404 M_UNRECOGNIZED, so a test sees the
// calls it did not expect. It is closed at the end of the test.
type FakeHomeserver struct {
	// URL is the base URL, http://127.0.0.1:<port>, to give a client as its
	// homeserver.
	URL string

	t   testing.TB
	mux *http.ServeMux
}

// NewFakeHomeserver starts a FakeHomeserver that knows no calls yet.
func NewFakeHomeserver(t testing.TB) *FakeHomeserver {
	t.Helper()
	f := &FakeHomeserver{t: t, mux: http.NewServeMux()}
	f.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		f.t.Errorf("unexpected homeserver call %s %s", r.Method, r.URL.Path)
		WriteMatrixError(w, http.StatusNotFound, "M_UNRECOGNIZED", "not faked: "+r.URL.Path)
	})
	srv := httptest.NewServer(f.mux)
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	return f
}

// Handle answers the calls matching pattern, an http.ServeMux pattern such
// as "PUT /_matrix/client/v3/rooms/{room}/send/{type}/{txn}" (r.PathValue
// gives each part unescaped). Register every call before the test makes it.
func (f *FakeHomeserver) Handle(pattern string, handler http.HandlerFunc) {
	f.mux.HandleFunc(pattern, handler)
}

// WriteJSON answers with status and v as JSON.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteMatrixError answers with a Matrix error body: {"errcode", "error"}.
func WriteMatrixError(w http.ResponseWriter, status int, errcode, message string) {
	WriteJSON(w, status, map[string]string{"errcode": errcode, "error": message})
}
