package messaging

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/daarion/matrix-bridge/pkg/internalapi"
)

func TestSendTimestamp(t *testing.T) {
	now := time.UnixMilli(1_800_000_000_000)
	importer := internalapi.WithService(context.Background(), &internalapi.Service{Name: "importer",
		Scopes: []internalapi.Scope{internalapi.ScopeMessaging, internalapi.ScopeTimestamps}})
	plain := internalapi.WithService(context.Background(), &internalapi.Service{Name: "internal",
		Scopes: []internalapi.Scope{internalapi.ScopeMessaging}})
	ms := func(v int64) *int64 { return &v }
	for _, tc := range []struct {
		name   string
		ctx    context.Context
		ts     *int64
		want   int64
		status int // 0: no error
	}{
		{"none: now", plain, nil, 0, 0},
		{"imported history", importer, ms(1_500_000_000_000), 1_500_000_000_000, 0},
		{"a little ahead", importer, ms(now.Add(time.Minute).UnixMilli()), now.Add(time.Minute).UnixMilli(), 0},
		{"without the scope", plain, ms(1_500_000_000_000), 0, http.StatusForbidden},
		{"zero", importer, ms(0), 0, http.StatusBadRequest},
		{"negative", importer, ms(-1), 0, http.StatusBadRequest},
		{"far ahead", importer, ms(now.Add(time.Hour).UnixMilli()), 0, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := &sendRequest{Timestamp: tc.ts}
			got, err := req.timestamp(tc.ctx, now)
			if tc.status == 0 {
				if err != nil || got != tc.want {
					t.Fatalf("timestamp = %d, %v; want %d", got, err, tc.want)
				}
				return
			}
			var apiErr *internalapi.Error
			if !errors.As(err, &apiErr) || apiErr.Status != tc.status || apiErr.Field != "timestamp" {
				t.Fatalf("error %v, want %d naming timestamp", err, tc.status)
			}
		})
	}
}
