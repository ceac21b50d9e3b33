package webhook

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/internalapi"
	"github.com/daarion/matrix-bridge/pkg/rooms"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// fuzzForbiddenHost reports whether host is an address literal (as either
// of Go's parsers reads it, zone or not) in a range CheckURL must refuse.
func fuzzForbiddenHost(host string, allowLinkLocal bool) (netip.Addr, bool) {
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = append(addrs, a)
	}
	bare, _, _ := strings.Cut(host, "%")
	if ip := net.ParseIP(bare); ip != nil {
		if a, ok := netip.AddrFromSlice(ip); ok {
			addrs = append(addrs, a)
		}
	}
	for _, a := range addrs {
		a = a.WithZone("").Unmap()
		ranges := alwaysForbidden
		if !allowLinkLocal {
			ranges = append(append([]netip.Prefix{}, alwaysForbidden...), forbidden...)
		}
		for _, p := range ranges {
			if p.Contains(a) {
				return a, true
			}
		}
	}
	return netip.Addr{}, false
}

// fuzzCheckAccepted checks a URL CheckURL accepted: http(s), a host, no
// credentials or fragment, and no literal link-local or metadata address.
func fuzzCheckAccepted(t *testing.T, raw string, allowLinkLocal bool) {
	t.Helper()
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		t.Fatalf("accepted %q, which does not parse: %v", raw, err)
	case len(raw) > 2048:
		t.Errorf("accepted %d characters", len(raw))
	case u.Scheme != "http" && u.Scheme != "https":
		t.Errorf("accepted scheme %q in %q", u.Scheme, raw)
	case u.Host == "" || u.Hostname() == "":
		t.Errorf("accepted %q without a host", raw)
	case u.User != nil:
		t.Errorf("accepted credentials in %q", raw)
	case u.Fragment != "":
		t.Errorf("accepted a fragment in %q", raw)
	case strings.ContainsAny(raw, "\x00\r\n"):
		t.Errorf("accepted control characters in %q", raw)
	}
	if a, bad := fuzzForbiddenHost(u.Hostname(), allowLinkLocal); bad {
		t.Errorf("accepted %q, which points at %s", raw, a)
	}
}

func FuzzCheckURL(f *testing.F) {
	for _, s := range []string{
		"https://hooks.example.org/daarion?x=1", "http://127.0.0.1:8080/hook", "HTTP://Example.ORG", "http://[::1]:9000/",
		"http://169.254.169.254/latest/meta-data", "http://[fe80::1]/", "http://[fe80::1%25eth0]/", "http://[fd00:ec2::254]/",
		"http://[fd00:ec2::254%25x]/", "http://[::ffff:169.254.169.254]/", "http://[::ffff:a9fe:a9fe]/", "http://[::ffff:169.254.1.1%25x]/",
		"http://0.0.0.0/", "http://[::]/", "http://224.0.0.1/", "http://[ff02::1%25lo]/", "http://255.255.255.255/",
		"http://2852039166/", "http://0xa9fea9fe/", "http://0251.0376.0251.0376/", "http://169.254.169.254./", "http://169.254.169.254%2f/",
		"http://user:pw@example.org/", "http://@example.org/", "http://example.org/#frag", "ftp://example.org/", "//example.org/",
		"http:///x", "http://:80/", "http://[fe80::1", "http://exa mple.org/", "http://example.org\x00/", "",
		"https://" + strings.Repeat("a", 2040) + ".org",
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, raw string, allowLinkLocal bool) {
		err := Policy{AllowLinkLocal: allowLinkLocal}.CheckURL(raw)
		if err != nil {
			if err.Error() == "" {
				t.Errorf("refusal without a reason")
			}
			return
		}
		fuzzCheckAccepted(t, raw, allowLinkLocal)
		// Allowing link-local only widens what is accepted.
		if !allowLinkLocal {
			if err := (Policy{AllowLinkLocal: true}).CheckURL(raw); err != nil {
				t.Errorf("%q accepted without link-local, refused with it: %v", raw, err)
			}
		}
	})
}

func FuzzSignVerify(f *testing.F) {
	f.Add("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", int64(1674087231), []byte(`{"test":2432232314}`), "")
	f.Add("whsec_", "", int64(0), []byte{}, "v1,x")
	f.Add("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "id", int64(-1), []byte("x"), "v1,a v1,b")
	f.Add("whsec_not base64!", "id", int64(1), []byte("x"), "")
	f.Add(NewSecret(), "id.with.dots", int64(1<<62), []byte("\x00\xff"), "v2,x v1")
	f.Fuzz(func(t *testing.T, secret, msgID string, ts int64, body []byte, extra string) {
		sig, err := Sign(secret, msgID, ts, body)
		if err != nil {
			if _, derr := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, secretPrefix)); derr == nil {
				t.Fatalf("Sign refused a base64 secret: %v", err)
			}
			if Verify(secret, msgID, ts, body, extra) {
				t.Errorf("Verify accepted with an invalid secret")
			}
			return
		}
		if !strings.HasPrefix(sig, "v1,") || strings.ContainsAny(sig, " \r\n") {
			t.Fatalf("signature %q", sig)
		}
		if again, _ := Sign(secret, msgID, ts, body); again != sig {
			t.Errorf("signing is not deterministic")
		}
		// A receiver finds it among other signatures.
		if !Verify(secret, msgID, ts, body, sig) || !Verify(secret, msgID, ts, body, extra+" "+sig) || !Verify(secret, msgID, ts, body, sig+"  "+extra) {
			t.Errorf("Verify rejects its own signature")
		}
		// Anything else signed differently does not verify.
		if Verify(secret, msgID+".", ts, body, sig) || Verify(secret, msgID, ts+1, body, sig) || Verify(secret, msgID, ts, append(bytes.Clone(body), 'x'), sig) {
			t.Errorf("a signature verifies for another message")
		}
		if !slices.Contains(strings.Fields(extra), sig) && Verify(secret, msgID, ts, body, extra) {
			t.Errorf("Verify accepted %q without the signature %q", extra, sig)
		}
	})
}

// fuzzArgChecker is a database logger that records query arguments
// PostgreSQL could not store in text columns (NUL, bytes that are not UTF-8).
type fuzzArgChecker struct {
	dbutil.DatabaseLogger
	mu  sync.Mutex
	bad []string
}

func (c *fuzzArgChecker) QueryTiming(_ context.Context, _, _ string, args []any, _ int, _ time.Duration, _ error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, a := range args {
		if s, ok := a.(string); ok && (!utf8.ValidString(s) || strings.ContainsRune(s, 0)) {
			c.bad = append(c.bad, s)
		}
	}
}

func (c *fuzzArgChecker) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	bad := c.bad
	c.bad = nil
	return bad
}

const fuzzSecret = "webhook-fuzz-secret-0123456789"

func FuzzSubscribe(f *testing.F) {
	for _, body := range []string{
		`{"room_id":"*","webhook_url":"https://hooks.example.org/x","events":["messaging.message.created","m.room.message"]}`,
		`{"room_id":"!r:daarion.space","webhook_url":"http://10.0.0.5:8080/hook"}`,
		`{"city_slug":"kyiv","webhook_url":"https://hooks.example.org/x","events":[]}`,
		`{"room_id":"*","city_slug":"kyiv","webhook_url":"https://x.org"}`,
		`{"room_id":"kyiv","webhook_url":"https://x.org"}`,
		`{"city_slug":"Kyiv","webhook_url":"https://x.org"}`,
		`{"webhook_url":"https://x.org"}`,
		`{"room_id":"*"}`,
		`{"room_id":"*","webhook_url":"http://169.254.169.254/"}`,
		`{"room_id":"*","webhook_url":"http://[fe80::1%25eth0]/"}`,
		`{"room_id":"*","webhook_url":"https://u:p@x.org/"}`,
		`{"room_id":"*","webhook_url":"https://x.org","events":[""]}`,
		`{"room_id":"*","webhook_url":"https://x.org","events":["a b","m.x\u0000"]}`,
		`{"room_id":"!r\u0000:s","webhook_url":"https://x.org"}`,
		`{"room_id":"*","webhook_url":"https://x.org","events":null}`,
		`{"room_id":"*","webhook_url":"https://x.org","events":"m.x"}`,
		`{"room_id":"*","webhook_url":"https://x.org","unknown":true}`,
		`{}`, `[]`, ``,
	} {
		f.Add([]byte(body))
	}
	tdb := testrig.NewTestDatabase(f, testrig.SQLite)
	db := testrig.OpenDatabase(f, tdb)
	checker := &fuzzArgChecker{DatabaseLogger: dbutil.NoopLogger}
	db.Log = checker
	store := NewStore(db)
	api, err := internalapi.New(internalapi.Options{Secret: fuzzSecret, MaxBodyBytes: 8192, Logger: zerolog.Nop()})
	if err != nil {
		f.Fatal(err)
	}
	NewAPI(store, Policy{}, nil).RegisterRoutes(api)

	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/internal/matrix/webhook/subscribe", bytes.NewReader(body))
		req.Header.Set(internalapi.HeaderToken, fuzzSecret)
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, req)
		if bad := checker.take(); len(bad) > 0 {
			t.Fatalf("passed %q to the database, which PostgreSQL refuses (a 500 there)", bad)
		}
		if rec.Code >= 500 {
			t.Fatalf("answered %d: %s", rec.Code, rec.Body)
		}
		if rec.Code != http.StatusOK {
			var eb struct{ Error, Message, Field string }
			if json.Unmarshal(rec.Body.Bytes(), &eb) != nil || eb.Message == "" {
				t.Fatalf("answered %d: %s", rec.Code, rec.Body)
			}
			switch eb.Error {
			case internalapi.ErrNotJSON, internalapi.ErrBadJSON, internalapi.ErrTooLarge:
			case internalapi.ErrInvalidParam:
				base, _, _ := strings.Cut(eb.Field, "[")
				if rec.Code != http.StatusBadRequest || (base != "room_id" && base != "city_slug" && base != "webhook_url" && base != "events") {
					t.Errorf("refusal %d names %q", rec.Code, eb.Field)
				}
			default:
				t.Errorf("answered %d %s", rec.Code, eb.Error)
			}
			return
		}
		var resp struct {
			SubscriptionID string `json:"subscription_id"`
			Secret         string `json:"secret"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil || !strings.HasPrefix(resp.SubscriptionID, "sub_") {
			t.Fatalf("200 body %s", rec.Body)
		}
		if _, err := Sign(resp.Secret, "msg", 1, body); err != nil {
			t.Errorf("the new secret %q does not sign: %v", resp.Secret, err)
		}
		sub, err := store.Subscription(context.Background(), resp.SubscriptionID)
		if err != nil || sub == nil {
			t.Fatalf("subscription %s not stored: %v", resp.SubscriptionID, err)
		}
		fuzzCheckAccepted(t, sub.URL, false)
		switch {
		case sub.RoomFilter == "*":
		case strings.HasPrefix(sub.RoomFilter, "city:"):
			if rooms.ValidateSlug("city_slug", strings.TrimPrefix(sub.RoomFilter, "city:")) != nil {
				t.Errorf("room filter %q", sub.RoomFilter)
			}
		default:
			if rooms.ValidateRoomID("room_id", id.RoomID(sub.RoomFilter)) != nil {
				t.Errorf("room filter %q", sub.RoomFilter)
			}
		}
		if sub.EventTypes == nil || len(sub.EventTypes) > maxEventTypes {
			t.Errorf("event types %v", sub.EventTypes)
		}
		for _, typ := range sub.EventTypes {
			if typ == "" || len(typ) > 255 || strings.ContainsAny(typ, " \x00") {
				t.Errorf("event type %q", typ)
			}
		}
	})
}

// Regression: a subscription id in the path that is not UTF-8, or holds NUL,
// reached PostgreSQL, which refused the query: 500. It is a 404 now.
func TestSubscriptionIDThatCannotBeStored(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		db := testrig.OpenDatabase(t, tdb)
		api, err := internalapi.New(internalapi.Options{Secret: fuzzSecret, Logger: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		NewAPI(NewStore(db), Policy{}, nil).RegisterRoutes(api)
		for _, tc := range []struct{ method, path string }{
			{http.MethodGet, "/internal/matrix/webhook/subscribe/%FF"},
			{http.MethodGet, "/internal/matrix/webhook/subscribe/sub_%00"},
			{http.MethodDelete, "/internal/matrix/webhook/subscribe/%C0%AF"},
			{http.MethodGet, "/internal/matrix/webhook/subscribe/%FF/dead-letters"},
			{http.MethodPost, "/internal/matrix/webhook/subscribe/a%00b/pause"},
		} {
			req := httptest.NewRequest(tc.method, tc.path, nil)
			req.Header.Set(internalapi.HeaderToken, fuzzSecret)
			rec := httptest.NewRecorder()
			api.ServeHTTP(rec, req)
			if rec.Code != http.StatusNotFound {
				t.Errorf("%s %s: %d %s, want 404", tc.method, tc.path, rec.Code, rec.Body)
			}
		}
	})
}
