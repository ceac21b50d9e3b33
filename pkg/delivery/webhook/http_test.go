package webhook

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/daarion/matrix-bridge/pkg/internalapi"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// Text PostgreSQL cannot store (NUL; bytes that are not UTF-8), in any path
// or body value of the subscription endpoints, is refused with a 4xx (a 400
// naming the body field) before it reaches the database, where it was a 500.
func TestUnstorableTextIsRefused(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		db := testrig.OpenDatabase(t, tdb)
		checker := &fuzzArgChecker{DatabaseLogger: db.Log}
		db.Log = checker
		store := NewStore(db)
		api, err := internalapi.New(internalapi.Options{Secret: fuzzSecret, Logger: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		NewAPI(store, Policy{}, NewDeliverer(store, DelivererOptions{})).RegisterRoutes(api)
		sub := &Subscription{ID: "sub_nul", Service: "internal", RoomFilter: "*", URL: "https://hooks.example.org/x",
			EventTypes: []string{}, Secret: NewSecret(), State: StateActive}
		if err := store.CreateSubscription(context.Background(), sub); err != nil {
			t.Fatal(err)
		}
		const base = "/internal/matrix/webhook/subscribe"
		for _, tc := range []struct {
			name, method, path, body string
			status                   int
			field                    string // for a 400: the field the answer names
		}{
			{"redeliver event_id with NUL", http.MethodPost, base + "/sub_nul/redeliver", `{"event_id":"$ev\u0000nt:s"}`, 400, "event_id"},
			{"redeliver event_id of only NUL", http.MethodPost, base + "/sub_nul/redeliver", `{"event_id":"\u0000"}`, 400, "event_id"},
			{"redeliver id with NUL", http.MethodPost, base + "/sub_%00/redeliver", `{"event_id":"$e:s"}`, 404, ""},
			{"redeliver id not UTF-8", http.MethodPost, base + "/%FF/redeliver", ``, 404, ""},
			{"get id with NUL", http.MethodGet, base + "/sub_nul%00", ``, 404, ""},
			{"delete id with NUL", http.MethodDelete, base + "/%00", ``, 404, ""},
			{"dead-letters id with NUL", http.MethodGet, base + "/sub_nul%00/dead-letters", ``, 404, ""},
			{"pause id not UTF-8", http.MethodPost, base + "/%C0%AF/pause", ``, 404, ""},
			{"resume id with NUL", http.MethodPost, base + "/%00sub_nul/resume", ``, 404, ""},
			{"subscribe room_id with NUL", http.MethodPost, base, `{"room_id":"!r\u0000:s","webhook_url":"https://x.org"}`, 400, "room_id"},
			{"subscribe city_slug with NUL", http.MethodPost, base, `{"city_slug":"kyiv\u0000","webhook_url":"https://x.org"}`, 400, "city_slug"},
			{"subscribe webhook_url with NUL", http.MethodPost, base, `{"room_id":"*","webhook_url":"https://x.org/\u0000"}`, 400, "webhook_url"},
			{"subscribe event type with NUL", http.MethodPost, base, `{"room_id":"*","webhook_url":"https://x.org","events":["m.room.message","m.\u0000"]}`, 400, "events[1]"},
			// What is storable still works.
			{"redeliver event_id", http.MethodPost, base + "/sub_nul/redeliver", `{"event_id":"$event:s"}`, 200, ""},
			{"redeliver everything", http.MethodPost, base + "/sub_nul/redeliver", ``, 200, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				req := httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body))
				if tc.body == "" {
					req.Body, req.ContentLength = http.NoBody, 0
				}
				req.Header.Set(internalapi.HeaderToken, fuzzSecret)
				req.Header.Set("Content-Type", "application/json")
				rec := httptest.NewRecorder()
				api.ServeHTTP(rec, req)
				if bad := checker.take(); len(bad) > 0 {
					t.Errorf("passed %q to the database", bad)
				}
				if rec.Code != tc.status {
					t.Fatalf("answered %d %s, want %d", rec.Code, rec.Body, tc.status)
				}
				if tc.status != http.StatusBadRequest {
					return
				}
				var answer struct{ Error, Message, Field string }
				if err := json.Unmarshal(rec.Body.Bytes(), &answer); err != nil {
					t.Fatal(err)
				}
				if answer.Error != internalapi.ErrInvalidParam || answer.Field != tc.field || !strings.HasPrefix(answer.Message, tc.field+": ") {
					t.Errorf("answer %s does not name %s", rec.Body, tc.field)
				}
			})
		}
	})
}
