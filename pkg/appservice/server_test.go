package appservice_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"

	"github.com/daarion/matrix-bridge/pkg/appservice"
	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

func TestMain(m *testing.M) { os.Exit(testrig.RunTests(m)) }

const hsToken = "hs-secret-token"

type rig struct {
	srv *httptest.Server
	log *eventlog.Log
	db  *dbutil.Database
}

func newRig(t *testing.T, tdb testrig.TestDatabase, opts appservice.Options) *rig {
	t.Helper()
	db := testrig.OpenDatabase(t, tdb)
	l := eventlog.New(db)
	opts.HSToken = hsToken
	srv := httptest.NewServer(appservice.NewServer(opts, l, nil, zerolog.Nop()))
	t.Cleanup(srv.Close)
	// The indexer moves journalled transactions into the log, as in the
	// bridge. It never polls here (an hour): every transaction the handler
	// journals must wake it, or waitIndexed gives up.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.RunIndexer(ctx, appservice.ParseTransaction, eventlog.IndexerOptions{PollInterval: time.Hour})
	}()
	t.Cleanup(func() { cancel(); <-done })
	return &rig{srv: srv, log: l, db: db}
}

type answer struct {
	status  int
	errcode string
	message string
}

func (r *rig) do(t *testing.T, method, path, auth string, body []byte) answer {
	t.Helper()
	req, err := http.NewRequest(method, r.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var parsed struct {
		ErrCode string `json:"errcode"`
		Error   string `json:"error"`
	}
	if err = json.Unmarshal(data, &parsed); err != nil {
		t.Fatalf("%s %s answered %d with non-JSON %q", method, path, resp.StatusCode, data)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s %s answered Content-Type %q", method, path, ct)
	}
	return answer{status: resp.StatusCode, errcode: parsed.ErrCode, message: parsed.Error}
}

func txnBody(prefix string, n int) []byte {
	var evts []string
	for i := 0; i < n; i++ {
		evts = append(evts, fmt.Sprintf(`{"event_id":"$%s%d","room_id":"!room:daarion.test","type":"m.room.message","sender":"@alice:daarion.test","content":{"msgtype":"m.text","body":"hello %d"}}`, prefix, i, i))
	}
	return []byte(`{"events":[` + strings.Join(evts, ",") + `]}`)
}

// countEvents counts the log's events once the journal is indexed.
func countEvents(t *testing.T, l *eventlog.Log) int64 {
	t.Helper()
	waitIndexed(t, l)
	n, err := l.Count(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// waitIndexed waits until the indexer has emptied the journal.
func waitIndexed(t *testing.T, l *eventlog.Log) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := l.JournalBacklog(context.Background())
		if err == nil && n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the journal still holds %d transactions (%v)", n, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

const bearer = "Bearer " + hsToken

func TestAuthAndRouting(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		r := newRig(t, tdb, appservice.Options{})
		authed := []struct{ method, path string }{
			{http.MethodPut, "/_matrix/app/v1/transactions/a1"},
			{http.MethodPut, "/transactions/a2"},
			{http.MethodGet, "/_matrix/app/v1/users/%40agent_x%3Adaarion.test"},
			{http.MethodGet, "/users/%40agent_x%3Adaarion.test"},
			{http.MethodGet, "/_matrix/app/v1/rooms/%23city_x%3Adaarion.test"},
			{http.MethodGet, "/rooms/%23city_x%3Adaarion.test"},
			{http.MethodPost, "/_matrix/app/v1/ping"},
		}
		for _, rt := range authed {
			body := []byte(`{"events":[]}`)
			for _, tc := range []struct {
				auth, errcode string
				status        int
			}{
				{"", "M_MISSING_TOKEN", 401},
				{"Basic " + hsToken, "M_MISSING_TOKEN", 401},
				{"Bearer ", "M_MISSING_TOKEN", 401},
				{"Bearer wrong", "M_FORBIDDEN", 403},
				{"Bearer " + hsToken + "x", "M_FORBIDDEN", 403},
			} {
				if got := r.do(t, rt.method, rt.path, tc.auth, body); got.status != tc.status || got.errcode != tc.errcode {
					t.Errorf("%s %s with %q: %d %s, want %d %s", rt.method, rt.path, tc.auth, got.status, got.errcode, tc.status, tc.errcode)
				}
			}
			// The legacy query parameter is refused unless allowed.
			if got := r.do(t, rt.method, rt.path+"?access_token="+hsToken, "", body); got.status != 401 {
				t.Errorf("%s %s with access_token param: %d, want 401 (not allowed by config)", rt.method, rt.path, got.status)
			}
		}
		if n := countEvents(t, r.log); n != 0 {
			t.Errorf("unauthenticated requests stored %d events", n)
		}

		for _, tc := range []struct {
			method, path, errcode string
			status                int
		}{
			{http.MethodPut, "/_matrix/app/v1/transactions/ok", "", 200},
			{http.MethodPut, "/transactions/ok-legacy", "", 200},
			{http.MethodPost, "/_matrix/app/v1/ping", "", 200},
			{http.MethodGet, "/_matrix/app/v1/users/%40agent_x%3Adaarion.test", "M_NOT_FOUND", 404},
			{http.MethodGet, "/_matrix/app/v1/rooms/%23city_x%3Adaarion.test", "M_NOT_FOUND", 404},
			{http.MethodGet, "/_matrix/app/v1/users/not-a-user", "M_INVALID_PARAM", 400},
			{http.MethodGet, "/_matrix/app/v1/rooms/no-hash", "M_INVALID_PARAM", 400},
			{http.MethodGet, "/_matrix/app/v1/unknown", "M_UNRECOGNIZED", 404},
			{http.MethodGet, "/_matrix/app/v1/thirdparty/protocol/x", "M_UNRECOGNIZED", 404},
			{http.MethodGet, "/_matrix/app/v1/transactions/x", "M_UNRECOGNIZED", 405},
			{http.MethodPost, "/_matrix/app/v1/transactions/x", "M_UNRECOGNIZED", 405},
			{http.MethodGet, "/_matrix/app/v1/ping", "M_UNRECOGNIZED", 405},
		} {
			if got := r.do(t, tc.method, tc.path, bearer, []byte(`{"events":[]}`)); got.status != tc.status || got.errcode != tc.errcode {
				t.Errorf("%s %s: %d %q, want %d %q", tc.method, tc.path, got.status, got.errcode, tc.status, tc.errcode)
			}
		}
	})
}

func TestQueryTokenWhenAllowed(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		r := newRig(t, tdb, appservice.Options{AllowQueryToken: true})
		if got := r.do(t, http.MethodPut, "/transactions/q1?access_token="+hsToken, "", txnBody("q", 2)); got.status != 200 {
			t.Errorf("legacy access_token: %d %s, want 200", got.status, got.errcode)
		}
		if got := r.do(t, http.MethodPut, "/transactions/q2?access_token=wrong", "", txnBody("q", 2)); got.status != 403 || got.errcode != "M_FORBIDDEN" {
			t.Errorf("wrong legacy access_token: %d %s, want 403 M_FORBIDDEN", got.status, got.errcode)
		}
		if n := countEvents(t, r.log); n != 2 {
			t.Errorf("stored %d events, want 2", n)
		}
	})
}

func TestTransactionIsCommittedBeforeTheAnswer(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		r := newRig(t, tdb, appservice.Options{})
		if got := r.do(t, http.MethodPut, "/_matrix/app/v1/transactions/c1", bearer, txnBody("c", 100)); got.status != 200 {
			t.Fatalf("transaction: %d %s", got.status, got.message)
		}
		// Read through a separate connection pool: what was answered 200 is
		// committed — in the journal, or already split into the log.
		other := testrig.OpenDatabase(t, tdb) // a second pool, as another process has
		var n int
		if err := other.QueryRow(context.Background(),
			"SELECT (SELECT COUNT(*) FROM txn_journal WHERE txn_id = 'c1') + (SELECT COUNT(*) FROM as_transaction WHERE txn_id = 'c1')").Scan(&n); err != nil || n < 1 {
			t.Errorf("a second connection sees the transaction %d times (%v), want it committed", n, err)
		}
		waitIndexed(t, r.log)
		if err := other.QueryRow(context.Background(), "SELECT COUNT(*) FROM event_log WHERE txn_id = 'c1'").Scan(&n); err != nil || n != 100 {
			t.Errorf("a second connection sees %d events in the log (%v), want 100", n, err)
		}

		// With the database gone the bridge must not answer 200.
		_ = r.db.Close()
		if got := r.do(t, http.MethodPut, "/_matrix/app/v1/transactions/c2", bearer, txnBody("d", 3)); got.status != 500 || got.errcode != "M_UNKNOWN" {
			t.Errorf("transaction without a database: %d %s, want 500 M_UNKNOWN", got.status, got.errcode)
		}
		if err := other.QueryRow(context.Background(), "SELECT COUNT(*) FROM event_log").Scan(&n); err != nil || n != 100 {
			t.Errorf("log holds %d events (%v), want 100", n, err)
		}
	})
}

func TestDuplicateTransactions(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		r := newRig(t, tdb, appservice.Options{})
		body := txnBody("dup", 20)
		for i := 0; i < 2; i++ {
			if got := r.do(t, http.MethodPut, "/_matrix/app/v1/transactions/seq", bearer, body); got.status != 200 {
				t.Fatalf("attempt %d: %d %s", i, got.status, got.message)
			}
		}
		var wg sync.WaitGroup
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if got := r.do(t, http.MethodPut, "/_matrix/app/v1/transactions/conc", bearer, body); got.status != 200 {
					t.Errorf("concurrent copy: %d %s", got.status, got.message)
				}
			}()
		}
		wg.Wait()
		if n := countEvents(t, r.log); n != 20 {
			t.Errorf("log holds %d events, want 20", n)
		}
		txn, err := r.log.Transaction(context.Background(), "conc")
		if err != nil || txn == nil || txn.Attempts != 8 {
			t.Errorf("concurrent transaction record: %+v %v, want 8 attempts", txn, err)
		}
		seq, err := r.log.Transaction(context.Background(), "seq")
		if err != nil || seq == nil || seq.Attempts != 2 || seq.StoredCount != 20 {
			t.Errorf("sequential transaction record: %+v %v, want 2 attempts, 20 stored", seq, err)
		}
	})
}

func TestBadInputStoresNothing(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		r := newRig(t, tdb, appservice.Options{MaxBodyBytes: 17 << 20})
		for _, tc := range []struct {
			name, body, errcode string
		}{
			{"not json", `{"events": [`, "M_NOT_JSON"},
			{"not an object", `"events"`, "M_BAD_JSON"},
			// A valid event before the bad one must not be stored either.
			{"one bad event", `{"events":[{"event_id":"$ok","room_id":"!r:s","type":"m.x"},{"room_id":"!r:s","type":"m.x"}]}`, "M_BAD_JSON"},
			// Past the nesting bound (about 10000 levels), in an event's content.
			{"nested too deep", `{"events":[{"event_id":"$deep","room_id":"!r:s","type":"m.x","content":{"a":` +
				strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}}]}`, "M_BAD_JSON"},
		} {
			got := r.do(t, http.MethodPut, "/_matrix/app/v1/transactions/bad-"+strings.ReplaceAll(tc.name, " ", "-"), bearer, []byte(tc.body))
			if got.status != 400 || got.errcode != tc.errcode {
				t.Errorf("%s: %d %s, want 400 %s", tc.name, got.status, got.errcode, tc.errcode)
			}
		}
		if got := r.do(t, http.MethodPut, "/_matrix/app/v1/transactions/huge", bearer, bytes.Repeat([]byte(" "), 18<<20)); got.status != 413 || got.errcode != "M_TOO_LARGE" {
			t.Errorf("18 MiB body: %d %s, want 413 M_TOO_LARGE", got.status, got.errcode)
		}
		if n := countEvents(t, r.log); n != 0 {
			t.Errorf("bad input stored %d events", n)
		}
		if txn, _ := r.log.Transaction(context.Background(), "bad-one-bad-event"); txn != nil {
			t.Error("a rejected transaction was recorded")
		}
	})
}

func TestSixteenMiBTransactionIsAccepted(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		r := newRig(t, tdb, appservice.Options{}) // default limit
		// 100 events of ~165 KiB each: a body just over 16 MiB.
		filler := strings.Repeat("x", 165<<10)
		var evts []string
		for i := 0; i < 100; i++ {
			evts = append(evts, fmt.Sprintf(`{"event_id":"$big%d","room_id":"!r:s","type":"m.room.message","content":{"body":%q}}`, i, filler))
		}
		body := []byte(`{"events":[` + strings.Join(evts, ",") + `]}`)
		if len(body) < 16<<20 {
			t.Fatalf("body is %d bytes, want at least 16 MiB", len(body))
		}
		if got := r.do(t, http.MethodPut, "/_matrix/app/v1/transactions/big", bearer, body); got.status != 200 {
			t.Fatalf("16 MiB transaction: %d %s %s", got.status, got.errcode, got.message)
		}
		if n := countEvents(t, r.log); n != 100 {
			t.Errorf("stored %d events, want 100", n)
		}
	})
}

func TestEphemeralEventsAreStored(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		r := newRig(t, tdb, appservice.Options{})
		typing := `{"type":"m.typing","room_id":"!r:s","content":{"user_ids":["@a:s"]}}`
		receipt := `{"type":"m.receipt","room_id":"!r:s","content":{"$1":{"m.read":{"@a:s":{"ts":1}}}}}`
		stable := []byte(`{"events":[],"ephemeral":[` + typing + `,` + receipt + `]}`)
		unstable := []byte(`{"events":[],"de.sorunome.msc2409.ephemeral":[` + typing + `]}`)
		for _, tc := range []struct {
			txn  string
			body []byte
		}{{"e1", stable}, {"e1", stable}, {"e2", unstable}} {
			if got := r.do(t, http.MethodPut, "/_matrix/app/v1/transactions/"+tc.txn, bearer, tc.body); got.status != 200 {
				t.Fatalf("%s: %d %s", tc.txn, got.status, got.message)
			}
		}
		waitIndexed(t, r.log)
		evts, err := r.log.Read(context.Background(), 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		// e1 twice is stored once; e2's typing is a new event.
		if len(evts) != 3 {
			t.Fatalf("stored %d ephemeral events, want 3", len(evts))
		}
		wantTypes := []string{"m.typing", "m.receipt", "m.typing"}
		for i, evt := range evts {
			if evt.Kind != eventlog.KindEphemeral || evt.Type != wantTypes[i] || evt.RoomID != "!r:s" {
				t.Errorf("event %d = %s %s %s", i, evt.Kind, evt.Type, evt.RoomID)
			}
		}
	})
}

// Regression: a 4,000-byte transaction id was answered 200, and then the
// indexer's as_transaction insert failed on PostgreSQL on every attempt (the
// btree entry limit), so nothing was indexed again. An id longer than 255
// bytes is a 400 now, naming txnId, and nothing is journalled.
func TestTransactionIDLengthIsBounded(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		r := newRig(t, tdb, appservice.Options{})
		long := make([]byte, 0, 4000)
		for sum := sha256.Sum256(nil); len(long) < 4000; sum = sha256.Sum256(sum[:]) {
			long = hex.AppendEncode(long, sum[:])
		}
		cases := []struct {
			name, txnID string
			status      int
		}{
			{"255 bytes", strings.Repeat("a", 255), 200},
			{"255 bytes of three-byte runes", strings.Repeat("✓", 85), 200},
			{"256 bytes", strings.Repeat("b", 256), 400},
			{"258 bytes of three-byte runes", strings.Repeat("✗", 86), 400},
			{"4,000 bytes", string(long[:4000]), 400},
		}
		accepted := 0
		for i, tc := range cases {
			got := r.do(t, http.MethodPut, "/_matrix/app/v1/transactions/"+url.PathEscape(tc.txnID), bearer, txnBody(fmt.Sprintf("len%d_", i), 1))
			if got.status != tc.status {
				t.Errorf("%s: %d %s %s, want %d", tc.name, got.status, got.errcode, got.message, tc.status)
			}
			if tc.status == 200 {
				accepted++
			} else if got.errcode != "M_INVALID_PARAM" || !strings.Contains(got.message, "txnId") {
				t.Errorf("%s: %s %q, want M_INVALID_PARAM naming txnId", tc.name, got.errcode, got.message)
			}
		}
		if n := countEvents(t, r.log); n != int64(accepted) {
			t.Errorf("log holds %d events, want %d", n, accepted)
		}
		for _, tc := range cases {
			txn, err := r.log.Transaction(context.Background(), tc.txnID)
			if err != nil || (txn != nil) != (tc.status == 200) {
				t.Errorf("%s: recorded %v (%v), want %v", tc.name, txn != nil, err, tc.status == 200)
			}
		}
		if parked, err := r.log.ParkedTransactions(context.Background()); err != nil || len(parked) != 0 {
			t.Errorf("%d transactions parked (%v), want none", len(parked), err)
		}
	})
}

// Options.Pace runs after the commit and before the answer: the
// transaction is stored when it is called, and the 200 waits for it (Pace
// marks its return 100 ms after it is let go: an answer written before or
// beside it would come first).
func TestAnswerWaitsForPaceAfterTheCommit(t *testing.T) {
	var r *rig
	called, release := make(chan bool, 1), make(chan struct{})
	var paced atomic.Bool
	var pacedEvents atomic.Int64
	observed := &paceObserver{}
	r = newRig(t, testrig.NewTestDatabase(t, testrig.SQLite), appservice.Options{Observer: observed, Pace: func(ctx context.Context, events int) time.Duration {
		pacedEvents.Store(int64(events))
		var stored int
		_ = r.db.QueryRow(ctx, `SELECT (SELECT COUNT(*) FROM txn_journal WHERE txn_id = 'p1') + (SELECT COUNT(*) FROM as_transaction WHERE txn_id = 'p1')`).Scan(&stored)
		called <- stored > 0
		<-release
		time.Sleep(100 * time.Millisecond)
		paced.Store(true)
		return time.Millisecond
	}})
	answered := make(chan answer, 1)
	go func() {
		answered <- r.do(t, http.MethodPut, "/_matrix/app/v1/transactions/p1", "Bearer "+hsToken, txnBody("p", 3))
	}()
	if stored := <-called; !stored {
		t.Error("Pace was called before the transaction was stored")
	}
	close(release)
	if got := <-answered; got.status != http.StatusOK {
		t.Fatalf("answer %+v", got)
	}
	if !paced.Load() {
		t.Error("answered before Pace returned")
	}
	if n := pacedEvents.Load(); n != 3 {
		t.Errorf("Pace was told of %d events, the transaction had 3", n)
	}
	if got := observed.waits(); len(got) != 1 || got[0] != time.Millisecond {
		t.Errorf("observed pace waits %v, want the 1 ms Pace returned", got)
	}
}

// paceObserver records what the server observes of the pacing.
type paceObserver struct {
	mu     sync.Mutex
	waited []time.Duration
}

func (o *paceObserver) ObserveTransaction(string, []eventlog.IncomingEvent, time.Duration) {}
func (o *paceObserver) ObservePace(waited time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.waited = append(o.waited, waited)
}
func (o *paceObserver) waits() []time.Duration {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]time.Duration(nil), o.waited...)
}
