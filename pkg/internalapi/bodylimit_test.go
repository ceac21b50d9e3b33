package internalapi

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/daarion/matrix-bridge/pkg/config"
)

func TestHandleWithBodyLimit(t *testing.T) {
	api, err := New(Options{Secret: "secret-secret-secret", MaxBodyBytes: 1024, RateLimit: config.RateLimit{RequestsPerSecond: 1000, Burst: 1000}})
	if err != nil {
		t.Fatal(err)
	}
	read := func(w http.ResponseWriter, r *http.Request) error {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			return err // *http.MaxBytesError: 413
		}
		WriteJSON(w, http.StatusOK, map[string]int64{"read": n})
		return nil
	}
	api.Handle(http.MethodPost, "/small", ScopeRooms, read)
	api.HandleWithBodyLimit(http.MethodPost, "/upload", ScopeMessaging, 8192, read)
	for _, tc := range []struct {
		path    string
		size    int
		chunked bool
		status  int
	}{
		{"/small", 1000, false, 200},
		{"/small", 2000, false, 413},
		{"/upload", 2000, false, 200},
		{"/upload", 8192, false, 200},
		{"/upload", 9000, false, 413},
		{"/upload", 9000, true, 413}, // no Content-Length: caught while streaming
		{"/small", 2000, true, 413},
	} {
		var body io.Reader = bytes.NewReader(bytes.Repeat([]byte("x"), tc.size))
		if tc.chunked {
			body = io.MultiReader(strings.NewReader(""), body) // hides the length
		}
		req := httptest.NewRequest(http.MethodPost, tc.path, body)
		if tc.chunked {
			req.ContentLength = -1
		}
		req.Header.Set(HeaderToken, "secret-secret-secret")
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, req)
		if rec.Code != tc.status {
			t.Errorf("%s with %d bytes (chunked %v): %d %s, want %d", tc.path, tc.size, tc.chunked, rec.Code, rec.Body, tc.status)
		}
	}
}
