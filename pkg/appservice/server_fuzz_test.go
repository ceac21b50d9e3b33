package appservice

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

const fuzzHSToken = "fuzz-hs-token"

// pgSafe reports whether PostgreSQL can store s in a text column: lib/pq
// sends strings as they are, and the server refuses NUL and bytes that are
// not UTF-8 ("invalid byte sequence for encoding UTF8").
func pgSafe(s string) bool { return utf8.ValidString(s) && !strings.ContainsRune(s, 0) }

// memJournal is an in-memory transaction journal. Like the real one on
// PostgreSQL, it fails on strings a text column cannot hold.
type memJournal struct {
	calls  int
	txnID  string
	body   []byte
	events []eventlog.IncomingEvent
}

func (j *memJournal) JournalParsed(_ context.Context, txnID string, body []byte, events []eventlog.IncomingEvent) error {
	j.calls++
	j.txnID, j.body, j.events = txnID, bytes.Clone(body), events
	if !pgSafe(txnID) || !pgSafe(string(body)) {
		return errors.New("pq: invalid byte sequence for encoding \"UTF8\"")
	}
	return nil
}

// memQueries records the homeserver's queries; @agent_… users and #city_…
// aliases exist.
type memQueries struct {
	users   []id.UserID
	aliases []id.RoomAlias
}

func (q *memQueries) QueryUser(_ context.Context, userID id.UserID) (bool, error) {
	q.users = append(q.users, userID)
	return strings.HasPrefix(string(userID), "@agent_"), nil
}

func (q *memQueries) QueryAlias(_ context.Context, alias id.RoomAlias) (bool, error) {
	q.aliases = append(q.aliases, alias)
	return strings.HasPrefix(string(alias), "#city_"), nil
}

// rawRequest reads a request the way net/http's server does, from the bytes
// of its request line; ok is false when the server would refuse it itself.
func rawRequest(method, target, auth string, body []byte) (*http.Request, bool) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: bridge.test\r\n", method, target)
	if auth != "" {
		fmt.Fprintf(&b, "Authorization: %s\r\n", auth)
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n", len(body))
	b.Write(body)
	req, err := http.ReadRequest(bufio.NewReader(&b))
	if err != nil {
		return nil, false
	}
	return req, true
}

// matrixAnswer checks an answer of the appservice API: never a 5xx, and a
// JSON body (an errcode unless 200). A 301 is mux redirecting to the clean
// path (no body).
func matrixAnswer(t *testing.T, rec *httptest.ResponseRecorder) (errcode string) {
	t.Helper()
	if rec.Code >= 500 {
		t.Fatalf("answered %d: %s", rec.Code, rec.Body)
	}
	if rec.Code == http.StatusMovedPermanently {
		return ""
	}
	var body struct {
		ErrCode string `json:"errcode"`
		Error   string `json:"error"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("answered %d with a body that is not JSON: %q", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("answered %d with Content-Type %q", rec.Code, ct)
	}
	switch {
	case rec.Code == http.StatusOK && body.ErrCode != "":
		t.Errorf("200 with errcode %s", body.ErrCode)
	case rec.Code != http.StatusOK && (body.ErrCode == "" || body.Error == ""):
		t.Errorf("%d without errcode and error: %s", rec.Code, rec.Body)
	}
	return body.ErrCode
}

func FuzzTransactionHandler(f *testing.F) {
	for i, body := range fuzzTransactionSeeds {
		f.Add(fmt.Sprintf("txn%d", i), []byte(body), false)
	}
	f.Add("1732445400000", []byte(`{"events":[]}`), true)
	f.Add("a%2Fb", []byte(`{"events":[]}`), false)
	f.Add("%E2%9C%93", []byte(`{"events":[]}`), false)
	f.Add("bad%zz", []byte(`{"events":[]}`), false)
	f.Add("x?access_token="+fuzzHSToken, []byte(`{"events":[]}`), true)
	f.Add("", []byte(`{"events":[]}`), false)
	f.Add("big", []byte(`{"events":[],"pad":"`+strings.Repeat("x", 5000)+`"}`), false)
	f.Add(strings.Repeat("a", maxTxnIDBytes), []byte(`{"events":[]}`), false)
	f.Add(strings.Repeat("a", maxTxnIDBytes+1), []byte(`{"events":[]}`), false)
	f.Add(strings.Repeat("%E2%9C%93", maxTxnIDBytes/3+1), []byte(`{"events":[]}`), true)
	f.Fuzz(func(t *testing.T, txnSegment string, body []byte, legacy bool) {
		journal := &memJournal{}
		srv := NewServer(Options{HSToken: fuzzHSToken, AllowQueryToken: true, MaxBodyBytes: 4096}, journal, nil, zerolog.Nop())
		prefix := "/_matrix/app/v1"
		if legacy {
			prefix = ""
		}
		req, ok := rawRequest(http.MethodPut, prefix+"/transactions/"+txnSegment, "Bearer "+fuzzHSToken, body)
		if !ok {
			return
		}
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		errcode := matrixAnswer(t, rec)
		if rec.Code != http.StatusOK {
			if journal.calls != 0 {
				t.Errorf("answered %d %s after journalling the transaction", rec.Code, errcode)
			}
			return
		}
		if journal.calls != 1 {
			t.Fatalf("answered 200 after %d journal writes", journal.calls)
		}
		// What was journalled is the transaction as sent, and the indexer,
		// parsing it again after the answer, gets only valid events from it.
		if !pgSafe(journal.txnID) || journal.txnID == "" || len(journal.txnID) > maxTxnIDBytes || !bytes.Equal(journal.body, body) {
			t.Errorf("journalled %q: %q", journal.txnID, journal.body)
		}
		events, err := ParseTransaction(journal.txnID, journal.body)
		if err != nil {
			t.Fatalf("answered 200, but the indexer would drop the transaction: %v", err)
		}
		checkParsedEvents(t, journal.txnID, journal.body, events)
		// The events handed to the indexer with the body are the ones it
		// would parse from it.
		if !reflect.DeepEqual(journal.events, events) && (len(journal.events) > 0 || len(events) > 0) {
			t.Errorf("handed off %+v, the body parses to %+v", journal.events, events)
		}
	})
}

func FuzzQueryPaths(f *testing.F) {
	for _, seg := range []string{
		"%40agent_sofia%3Adaarion.test", "@agent_sofia:daarion.test", "%40alice%3As", "not-a-user", "%40", "%40%3A", "@:",
		"%23city_kyiv%3Adaarion.test", "#city_kyiv:daarion.test", "%23x", "%23%3A", "no-hash", "%zz", "%00", "%40a%00%3As",
		"a/b", "..", "%2e%2e", "%40a%3As/..", "%40a%3As?x=1", "%40%E2%9C%93%3As", "%FF",
	} {
		f.Add(seg, false, false)
		f.Add(seg, true, true)
	}
	f.Fuzz(func(t *testing.T, segment string, room, legacy bool) {
		queries := &memQueries{}
		srv := NewServer(Options{HSToken: fuzzHSToken}, &memJournal{}, queries, zerolog.Nop())
		prefix := "/_matrix/app/v1"
		if legacy {
			prefix = ""
		}
		kind := "/users/"
		if room {
			kind = "/rooms/"
		}
		req, ok := rawRequest(http.MethodGet, prefix+kind+segment, "Bearer "+fuzzHSToken, nil)
		if !ok {
			return
		}
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		errcode := matrixAnswer(t, rec)
		asked := len(queries.users) + len(queries.aliases)
		if asked > 1 {
			t.Fatalf("one request asked %d queries", asked)
		}
		switch rec.Code {
		case http.StatusOK:
			if asked != 1 {
				t.Errorf("answered 200 without asking")
			}
		case http.StatusNotFound:
			if errcode != "M_NOT_FOUND" && errcode != "M_UNRECOGNIZED" {
				t.Errorf("404 %s", errcode)
			}
		case http.StatusBadRequest:
			if errcode != "M_INVALID_PARAM" || asked != 0 {
				t.Errorf("400 %s after %d queries", errcode, asked)
			}
		case http.StatusMovedPermanently, http.StatusMethodNotAllowed:
		default:
			t.Errorf("answered %d %s", rec.Code, errcode)
		}
		// The handler is asked only about ids of the right shape, exactly
		// as the homeserver sent them (path-decoded).
		raw := req.URL.EscapedPath()
		raw = raw[strings.LastIndex(raw, "/")+1:]
		decoded, _ := url.PathUnescape(raw)
		for _, u := range queries.users {
			if _, _, err := u.Parse(); err != nil || string(u) != decoded {
				t.Errorf("QueryUser(%q) for path segment %q", u, raw)
			}
		}
		for _, a := range queries.aliases {
			if !strings.HasPrefix(string(a), "#") || !strings.Contains(string(a), ":") || string(a) != decoded {
				t.Errorf("QueryAlias(%q) for path segment %q", a, raw)
			}
		}
	})
}

// Regression (found by FuzzTransactionHandler): a transaction id that is
// not UTF-8, or holds NUL, made PostgreSQL refuse the append and the bridge
// answer 500, so the homeserver retried it forever. It is a 400 now, on
// both databases, and nothing is journalled.
func TestTransactionIDThatCannotBeStored(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		l := eventlog.New(testrig.OpenDatabase(t, tdb))
		srv := NewServer(Options{HSToken: fuzzHSToken}, l, nil, zerolog.Nop())
		body := []byte(`{"events":[{"event_id":"$1","room_id":"!r:s","type":"m.x"}]}`)
		for _, segment := range []string{"%8C", "%00", "a%00b", "%FF%FE", "\x8c"} {
			req, ok := rawRequest(http.MethodPut, "/_matrix/app/v1/transactions/"+segment, "Bearer "+fuzzHSToken, body)
			if !ok {
				t.Fatalf("request for %q not readable", segment)
			}
			rec := httptest.NewRecorder()
			srv.ServeHTTP(rec, req)
			if errcode := matrixAnswer(t, rec); rec.Code != http.StatusBadRequest || errcode != "M_INVALID_PARAM" {
				t.Errorf("txn id %q: %d %s, want 400 M_INVALID_PARAM", segment, rec.Code, errcode)
			}
		}
		if n, err := l.JournalBacklog(context.Background()); err != nil || n != 0 {
			t.Errorf("journal holds %d transactions (%v), want 0", n, err)
		}
		req, _ := rawRequest(http.MethodPut, "/_matrix/app/v1/transactions/%E2%9C%93", "Bearer "+fuzzHSToken, body)
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Errorf("UTF-8 txn id: %d %s", rec.Code, rec.Body)
		}
		if n, err := l.JournalBacklog(context.Background()); err != nil || n != 1 {
			t.Errorf("journal holds %d transactions (%v), want 1", n, err)
		}
	})
}
