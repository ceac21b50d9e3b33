package syncapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/daarion/matrix-bridge/pkg/config"
	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/internalapi"
	"github.com/daarion/matrix-bridge/pkg/syncapi"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

func TestMain(m *testing.M) { os.Exit(testrig.RunTests(m)) }

const (
	secret     = "sync-test-secret-0123456789"
	subsToken  = "subscriptions-token-0123456789"
	roomsToken = "rooms-only-token-0123456789ab"

	roomA = "!a:daarion.test"
	roomB = "!b:daarion.test"
	roomC = "!c:daarion.test"

	// longTimeout is far longer than any wake-up should take: a request that
	// answers well before it was woken, not timed out.
	longTimeout = 20 * time.Second
	// noPoll is a poll interval no test waits out: with it only a wake-up
	// (an append by this process) ends a wait before its timeout.
	noPoll = time.Hour
)

type fixture struct {
	tdb     testrig.TestDatabase
	log     *eventlog.Log
	handler *syncapi.Handler
	srv     *httptest.Server
}

func openLog(t *testing.T, tdb testrig.TestDatabase) *eventlog.Log {
	t.Helper()
	l := eventlog.New(testrig.OpenDatabase(t, tdb))
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func newFixture(t *testing.T, tdb testrig.TestDatabase, opts syncapi.Options) *fixture {
	t.Helper()
	f := &fixture{tdb: tdb, log: openLog(t, tdb)}
	f.handler = syncapi.New(f.log, opts)
	api, err := internalapi.New(internalapi.Options{
		Secret: secret,
		Services: []config.ServiceToken{
			{Name: "subscriber", Token: subsToken, Scopes: []string{"subscriptions"}},
			{Name: "roomsvc", Token: roomsToken, Scopes: []string{"rooms"}},
		},
		RateLimit: config.RateLimit{RequestsPerSecond: 1000, Burst: 1000},
	})
	if err != nil {
		t.Fatalf("internalapi.New: %v", err)
	}
	f.handler.RegisterRoutes(api)
	f.srv = httptest.NewServer(api)
	t.Cleanup(f.srv.Close)
	t.Cleanup(f.handler.Close) // runs first: no request outlives the test
	return f
}

// get sends GET /internal/matrix/sync?query with token.
func (f *fixture) get(t *testing.T, token, query string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, f.srv.URL+syncapi.Path+"?"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set(internalapi.HeaderToken, token)
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("GET sync?%s: %v", query, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	return resp.StatusCode, body
}

// sync sends a sync with the given parameters and decodes the 200 answer.
func (f *fixture) sync(t *testing.T, params map[string]string) *syncapi.Response {
	t.Helper()
	status, body := f.get(t, subsToken, query(params))
	if status != http.StatusOK {
		t.Fatalf("sync %v: %d %s", params, status, body)
	}
	var resp syncapi.Response
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatalf("sync answer %s: %v", body, err)
	}
	return &resp
}

func query(params map[string]string) string {
	q := url.Values{}
	for k, v := range params {
		q.Set(k, v)
	}
	return q.Encode()
}

func (f *fixture) append(t *testing.T, txnID string, evts ...eventlog.IncomingEvent) {
	t.Helper()
	appendTo(t, f.log, txnID, evts...)
}

// appendTo stores evts as transaction txnID the production way: it journals
// the transaction's body and indexes the journal. The body is the events as
// a JSON list, read back as they are by listParser, so that the EDUs keep
// their test ids and every event its place in the transaction.
func appendTo(t *testing.T, l *eventlog.Log, txnID string, evts ...eventlog.IncomingEvent) {
	t.Helper()
	ctx := context.Background()
	before, err := l.Count(ctx)
	if err != nil {
		t.Fatal(err)
	}
	body, err := json.Marshal(evts)
	if err != nil {
		t.Fatal(err)
	}
	if err = l.Journal(ctx, txnID, body); err != nil {
		t.Fatalf("journal %s: %v", txnID, err)
	}
	if _, err = l.IndexPending(ctx, listParser); err != nil {
		t.Fatalf("index %s: %v", txnID, err)
	}
	after, err := l.Count(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if stored := int(after - before); stored != len(evts) {
		t.Fatalf("append %s stored %d of %d events", txnID, stored, len(evts))
	}
}

// listParser reads the bodies appendTo journals.
func listParser(_ string, body []byte) ([]eventlog.IncomingEvent, error) {
	var evts []eventlog.IncomingEvent
	err := json.Unmarshal(body, &evts)
	return evts, err
}

func (f *fixture) head(t *testing.T) int64 {
	t.Helper()
	head, err := f.log.Head(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return head
}

func message(eventID, room string) eventlog.IncomingEvent {
	return eventlog.IncomingEvent{
		EventID: eventID, Kind: eventlog.KindTimeline, RoomID: room, Type: "m.room.message", Sender: "@alice:daarion.test",
		JSON: fmt.Sprintf(`{"type":"m.room.message","event_id":%q,"room_id":%q,"sender":"@alice:daarion.test","content":{"msgtype":"m.text","body":"hello \u00e9 \"q\""},"origin_server_ts":1732445400000}`, eventID, room),
	}
}

func member(eventID, room string) eventlog.IncomingEvent {
	return eventlog.IncomingEvent{
		EventID: eventID, Kind: eventlog.KindTimeline, RoomID: room, Type: "m.room.member", Sender: "@bob:daarion.test",
		JSON: fmt.Sprintf(`{"type":"m.room.member","event_id":%q,"room_id":%q,"sender":"@bob:daarion.test","state_key":"@bob:daarion.test","content":{"membership":"join"}}`, eventID, room),
	}
}

func typing(id, room string) eventlog.IncomingEvent {
	return eventlog.IncomingEvent{
		EventID: "~edu_" + id, Kind: eventlog.KindEphemeral, RoomID: room, Type: "m.typing",
		JSON: fmt.Sprintf(`{"type":"m.typing","room_id":%q,"content":{"user_ids":["@alice:daarion.test"]},"test_id":%q}`, room, id),
	}
}

func receipt(id, room string) eventlog.IncomingEvent {
	return eventlog.IncomingEvent{
		EventID: "~edu_" + id, Kind: eventlog.KindEphemeral, RoomID: room, Type: "m.receipt",
		JSON: fmt.Sprintf(`{"type":"m.receipt","room_id":%q,"content":{"$x":{"m.read":{"@bob:daarion.test":{"ts":1}}}},"test_id":%q}`, room, id),
	}
}

func presence(id string) eventlog.IncomingEvent {
	return eventlog.IncomingEvent{
		EventID: "~edu_" + id, Kind: eventlog.KindEphemeral, Type: "m.presence", Sender: "@alice:daarion.test",
		JSON: fmt.Sprintf(`{"type":"m.presence","sender":"@alice:daarion.test","content":{"presence":"online"},"test_id":%q}`, id),
	}
}

// idOf names an event of an answer: its event_id, or the test_id of an EDU.
func idOf(t *testing.T, raw json.RawMessage) string {
	t.Helper()
	var evt struct {
		EventID string `json:"event_id"`
		TestID  string `json:"test_id"`
	}
	if err := json.Unmarshal(raw, &evt); err != nil {
		t.Fatalf("event %s: %v", raw, err)
	}
	if evt.EventID != "" {
		return evt.EventID
	}
	return "~edu_" + evt.TestID
}

func ids(t *testing.T, events []json.RawMessage) []string {
	t.Helper()
	out := make([]string, 0, len(events))
	for _, raw := range events {
		out = append(out, idOf(t, raw))
	}
	return out
}

// timelineIDs is every timeline event of an answer, room by room (rooms in
// id order).
func timelineIDs(t *testing.T, resp *syncapi.Response) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for room, jr := range resp.Rooms.Join {
		if len(jr.Timeline.Events) > 0 {
			out[room] = ids(t, jr.Timeline.Events)
		}
	}
	return out
}

func countEvents(resp *syncapi.Response) int {
	n := len(resp.Presence.Events)
	for _, jr := range resp.Rooms.Join {
		n += len(jr.Timeline.Events) + len(jr.Ephemeral.Events)
	}
	return n
}

func position(t *testing.T, token string) int64 {
	t.Helper()
	pos, err := syncapi.ParseToken(token)
	if err != nil {
		t.Fatalf("token %q: %v", token, err)
	}
	return pos
}

func isEmpty(resp *syncapi.Response) bool {
	return len(resp.Rooms.Join) == 0 && len(resp.Presence.Events) == 0
}

// seed appends 30 timeline events over three rooms in five transactions.
func seed(t *testing.T, f *fixture) (all []string, byRoom map[string][]string) {
	t.Helper()
	byRoom = map[string][]string{}
	rooms := []string{roomA, roomB, roomC}
	n := 0
	for txn := 0; txn < 5; txn++ {
		var evts []eventlog.IncomingEvent
		for i := 0; i < 6; i++ {
			id := fmt.Sprintf("$e%02d", n)
			room := rooms[(n*7/3)%3]
			evts = append(evts, message(id, room))
			all = append(all, id)
			byRoom[room] = append(byRoom[room], id)
			n++
		}
		f.append(t, fmt.Sprintf("txn%d", txn), evts...)
	}
	return all, byRoom
}

func TestTokens(t *testing.T) {
	for _, pos := range []int64{0, 1, 42, 1 << 62} {
		if got, err := syncapi.ParseToken(syncapi.Token(pos)); err != nil || got != pos {
			t.Errorf("ParseToken(Token(%d)) = %d, %v", pos, got, err)
		}
	}
	for _, bad := range []string{"", "s", "0", "5", "s-1", "s+1", "s01", "s1a", "s 1", "S1", "s9223372036854775808", "s1_2_3", "p1"} {
		if _, err := syncapi.ParseToken(bad); err == nil {
			t.Errorf("ParseToken(%q) accepted", bad)
		}
	}
}

func TestPaginationCoversEveryEventOnceInOrder(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		f := newFixture(t, tdb, syncapi.Options{MaxTimeout: 30 * time.Second})
		all, byRoom := seed(t, f)
		head := f.head(t)

		// One event per answer: the whole log, in log order.
		var got []string
		since := "s0"
		for i := 0; ; i++ {
			if i > len(all)+1 {
				t.Fatalf("pagination did not end after %d answers", i)
			}
			resp := f.sync(t, map[string]string{"since": since, "timeout": "0", "filter": `{"limit":1}`})
			if isEmpty(resp) {
				if resp.NextBatch != since {
					t.Errorf("empty answer moved next_batch from %s to %s", since, resp.NextBatch)
				}
				break
			}
			if position(t, resp.NextBatch) <= position(t, since) {
				t.Fatalf("next_batch %s does not move past since %s", resp.NextBatch, since)
			}
			for _, evts := range timelineIDs(t, resp) {
				got = append(got, evts...)
			}
			since = resp.NextBatch
		}
		if !slices.Equal(got, all) {
			t.Errorf("limit 1 pages gave\n%v\nwant\n%v", got, all)
		}
		if since != syncapi.Token(head) {
			t.Errorf("final next_batch %s, want the head %s", since, syncapi.Token(head))
		}

		// Seven per answer: every event once, each room in order.
		gotByRoom := map[string][]string{}
		since = "s0"
		total := 0
		for i := 0; ; i++ {
			if i > len(all)+1 {
				t.Fatalf("pagination did not end after %d answers", i)
			}
			resp := f.sync(t, map[string]string{"since": since, "timeout": "0", "filter": `{"limit":7}`})
			if isEmpty(resp) {
				break
			}
			n := countEvents(resp)
			total += n
			more := total < len(all)
			for room, jr := range resp.Rooms.Join {
				gotByRoom[room] = append(gotByRoom[room], ids(t, jr.Timeline.Events)...)
				if jr.Timeline.Limited != more {
					t.Errorf("answer %d: %s limited = %v with %d of %d events read", i, room, jr.Timeline.Limited, total, len(all))
				}
				first := ids(t, jr.Timeline.Events)[0]
				if want := syncapi.Token(positionOf(t, f, first) - 1); jr.Timeline.PrevBatch != want {
					t.Errorf("%s prev_batch = %s, want %s (just before %s)", room, jr.Timeline.PrevBatch, want, first)
				}
			}
			if more && n != 7 {
				t.Errorf("answer %d has %d events, want 7", i, n)
			}
			since = resp.NextBatch
		}
		if total != len(all) {
			t.Errorf("limit 7 pages gave %d events, want %d", total, len(all))
		}
		for room, want := range byRoom {
			if !slices.Equal(gotByRoom[room], want) {
				t.Errorf("room %s: got %v, want %v", room, gotByRoom[room], want)
			}
		}

		// prev_batch read as a since gives the room's events again from there.
		resp := f.sync(t, map[string]string{"since": "s10", "timeout": "0", "filter": `{"limit":5}`})
		for room, jr := range resp.Rooms.Join {
			again := f.sync(t, map[string]string{"since": jr.Timeline.PrevBatch, "timeout": "0", "filter": fmt.Sprintf(`{"rooms":[%q],"limit":%d}`, room, len(jr.Timeline.Events))})
			if !slices.Equal(ids(t, again.Rooms.Join[room].Timeline.Events), ids(t, jr.Timeline.Events)) {
				t.Errorf("since=prev_batch of %s gave %v, want %v", room, timelineIDs(t, again), ids(t, jr.Timeline.Events))
			}
		}
	})
}

func positionOf(t *testing.T, f *fixture, eventID string) int64 {
	t.Helper()
	evts, err := f.log.Read(context.Background(), 0, 100000)
	if err != nil {
		t.Fatal(err)
	}
	for _, evt := range evts {
		if evt.EventID == eventID {
			return evt.Position
		}
	}
	t.Fatalf("event %s is not in the log", eventID)
	return 0
}

func TestStartWithoutSince(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		f := newFixture(t, tdb, syncapi.Options{MaxTimeout: longTimeout})

		// An empty log: the head is s0.
		start := time.Now()
		resp := f.sync(t, map[string]string{"timeout": fmt.Sprint(longTimeout.Milliseconds())})
		if resp.NextBatch != "s0" || !isEmpty(resp) {
			t.Errorf("initial sync of an empty log: %+v", resp)
		}

		all, _ := seed(t, f)
		resp = f.sync(t, nil)
		if want := syncapi.Token(f.head(t)); resp.NextBatch != want || !isEmpty(resp) {
			t.Errorf("initial sync: next_batch %s, %d events; want %s and none", resp.NextBatch, countEvents(resp), want)
		}
		if elapsed := time.Since(start); elapsed > longTimeout/2 {
			t.Errorf("initial syncs waited %v; they answer at once", elapsed)
		}

		// since=s0 reads the log from its start.
		resp = f.sync(t, map[string]string{"since": "s0"})
		got := 0
		for _, evts := range timelineIDs(t, resp) {
			got += len(evts)
		}
		if got != len(all) {
			t.Errorf("since=s0 gave %d events, want %d", got, len(all))
		}
	})
}

// startSync runs a sync in the background; the channel gives its answer.
type syncResult struct {
	resp *syncapi.Response
	err  error
	at   time.Time
}

func (f *fixture) startSync(params map[string]string) <-chan syncResult {
	done := make(chan syncResult, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, f.srv.URL+syncapi.Path+"?"+query(params), nil)
		req.Header.Set(internalapi.HeaderToken, subsToken)
		resp, err := f.srv.Client().Do(req)
		if err != nil {
			done <- syncResult{err: err, at: time.Now()}
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			done <- syncResult{err: fmt.Errorf("status %d: %s", resp.StatusCode, body), at: time.Now()}
			return
		}
		var out syncapi.Response
		err = json.Unmarshal(body, &out)
		done <- syncResult{resp: &out, err: err, at: time.Now()}
	}()
	return done
}

// mustWait checks that a started sync has not answered yet: it is waiting.
func mustWait(t *testing.T, done <-chan syncResult) {
	t.Helper()
	select {
	case res := <-done:
		t.Fatalf("sync answered before any event came: %+v, %v", res.resp, res.err)
	case <-time.After(300 * time.Millisecond):
	}
}

func awaitSync(t *testing.T, done <-chan syncResult, within time.Duration) syncResult {
	t.Helper()
	select {
	case res := <-done:
		if res.err != nil {
			t.Fatalf("sync: %v", res.err)
		}
		return res
	case <-time.After(within):
		t.Fatalf("sync did not answer within %v", within)
		panic("unreachable")
	}
}

// An append by this process wakes a waiting sync. The handler never polls
// here (noPoll): only the wake-up can answer before the timeout.
func TestLongPollWakesOnAppend(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		f := newFixture(t, tdb, syncapi.Options{MaxTimeout: longTimeout, PollInterval: noPoll})
		f.append(t, "first", message("$old", roomA))
		since := syncapi.Token(f.head(t))
		params := map[string]string{"since": since, "timeout": fmt.Sprint(longTimeout.Milliseconds())}

		done := f.startSync(params)
		mustWait(t, done)
		appended := time.Now()
		f.append(t, "second", message("$new", roomA))
		res := awaitSync(t, done, longTimeout+5*time.Second)
		if took := res.at.Sub(appended); took > longTimeout/2 {
			t.Errorf("the sync answered %v after the append; it should wake on it, not time out", took)
		}
		if got := timelineIDs(t, res.resp); !slices.Equal(got[roomA], []string{"$new"}) || len(got) != 1 {
			t.Errorf("woken sync gave %v, want only $new", got)
		}
		if res.resp.NextBatch != syncapi.Token(f.head(t)) {
			t.Errorf("next_batch %s, want the head %s", res.resp.NextBatch, syncapi.Token(f.head(t)))
		}
	})
}

// An append by another process (another Log on its own connection) wakes
// nothing here: the poll finds it.
func TestLongPollFindsOtherProcessesAppends(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		f := newFixture(t, tdb, syncapi.Options{MaxTimeout: longTimeout, PollInterval: 100 * time.Millisecond})
		f.append(t, "first", message("$old", roomA))
		other := openLog(t, tdb)
		done := f.startSync(map[string]string{"since": syncapi.Token(f.head(t)), "timeout": fmt.Sprint(longTimeout.Milliseconds())})
		mustWait(t, done)
		appended := time.Now()
		appendTo(t, other, "elsewhere", message("$remote", roomB))
		res := awaitSync(t, done, longTimeout+5*time.Second)
		if took := res.at.Sub(appended); took > longTimeout/2 {
			t.Errorf("the sync answered %v after another process's append; the poll should find it", took)
		}
		if got := timelineIDs(t, res.resp); !slices.Equal(got[roomB], []string{"$remote"}) || len(got) != 1 {
			t.Errorf("polled sync gave %v, want only $remote", got)
		}
	})
}

func TestTimeout(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		f := newFixture(t, tdb, syncapi.Options{MaxTimeout: longTimeout})
		seed(t, f)
		since := syncapi.Token(f.head(t))

		start := time.Now()
		resp := f.sync(t, map[string]string{"since": since, "timeout": "300"})
		if elapsed := time.Since(start); elapsed < 300*time.Millisecond {
			t.Errorf("timeout=300 answered after %v", elapsed)
		}
		if !isEmpty(resp) || resp.NextBatch != since {
			t.Errorf("timed-out sync: next_batch %s and %d events; want %s and none", resp.NextBatch, countEvents(resp), since)
		}
		if resp.Rooms.Join == nil || resp.Presence.Events == nil {
			t.Errorf("timed-out sync lacks rooms.join or presence.events: %+v", resp)
		}

		// A negative timeout is 0: no wait.
		start = time.Now()
		resp = f.sync(t, map[string]string{"since": since, "timeout": "-5"})
		if elapsed := time.Since(start); elapsed > longTimeout/2 || !isEmpty(resp) || resp.NextBatch != since {
			t.Errorf("timeout=-5 answered after %v with %+v", elapsed, resp)
		}

		// Past the maximum, and without a timeout: the handler's maximum.
		short := newFixture(t, tdb, syncapi.Options{MaxTimeout: 400 * time.Millisecond})
		for _, params := range []map[string]string{
			{"since": since, "timeout": "86400000"},
			{"since": since, "timeout": "99999999999999999999999"},
			{"since": since},
		} {
			start = time.Now()
			resp = short.sync(t, params)
			elapsed := time.Since(start)
			if elapsed < 400*time.Millisecond || elapsed > longTimeout/2 {
				t.Errorf("%v with a 400ms maximum answered after %v", params, elapsed)
			}
			if !isEmpty(resp) || resp.NextBatch != since {
				t.Errorf("%v: %+v", params, resp)
			}
		}

		// Events the filter drops while waiting move next_batch on.
		f.append(t, "other-room", message("$b1", roomB), message("$b2", roomB))
		resp = f.sync(t, map[string]string{"since": since, "timeout": "300", "filter": fmt.Sprintf(`{"rooms":[%q]}`, roomA)})
		if !isEmpty(resp) || resp.NextBatch != syncapi.Token(f.head(t)) {
			t.Errorf("filtered-out events: next_batch %s and %d events; want %s and none", resp.NextBatch, countEvents(resp), syncapi.Token(f.head(t)))
		}
	})
}

// Events the filter drops wake the wait (no poll here), which goes on
// waiting; the wanted event wakes it again and is answered.
func TestFilteredWaitKeepsWaiting(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		f := newFixture(t, tdb, syncapi.Options{MaxTimeout: longTimeout, PollInterval: noPoll})
		since := syncapi.Token(f.head(t))
		done := f.startSync(map[string]string{
			"since": since, "timeout": fmt.Sprint(longTimeout.Milliseconds()),
			"filter": fmt.Sprintf(`{"rooms":[%q],"types":["m.room.message"]}`, roomA),
		})
		mustWait(t, done)
		f.append(t, "dropped", message("$b", roomB), member("$m", roomA))
		mustWait(t, done) // nothing it wants yet
		f.append(t, "wanted", message("$a", roomA))
		res := awaitSync(t, done, longTimeout+5*time.Second)
		if got := timelineIDs(t, res.resp); len(got) != 1 || !slices.Equal(got[roomA], []string{"$a"}) {
			t.Errorf("filtered wait gave %v, want only $a", got)
		}
		if res.resp.NextBatch != syncapi.Token(f.head(t)) {
			t.Errorf("next_batch %s, want %s", res.resp.NextBatch, syncapi.Token(f.head(t)))
		}
	})
}

func TestFilter(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		f := newFixture(t, tdb, syncapi.Options{MaxTimeout: longTimeout})
		f.append(t, "t1",
			message("$a1", roomA), member("$a2", roomA), message("$b1", roomB),
			typing("ty", roomA), presence("pr"), receipt("rb", roomB),
			member("$c1", roomC), message("$a3", roomA),
		)
		head := syncapi.Token(f.head(t))
		for _, tc := range []struct {
			name      string
			filter    string
			timeline  map[string][]string
			ephemeral map[string][]string
			presence  []string
		}{
			{"none", ``,
				map[string][]string{roomA: {"$a1", "$a2", "$a3"}, roomB: {"$b1"}, roomC: {"$c1"}},
				map[string][]string{roomA: {"~edu_ty"}, roomB: {"~edu_rb"}}, []string{"~edu_pr"}},
			{"empty object", `{}`,
				map[string][]string{roomA: {"$a1", "$a2", "$a3"}, roomB: {"$b1"}, roomC: {"$c1"}},
				map[string][]string{roomA: {"~edu_ty"}, roomB: {"~edu_rb"}}, []string{"~edu_pr"}},
			{"nulls", `{"rooms":null,"types":null,"limit":null}`,
				map[string][]string{roomA: {"$a1", "$a2", "$a3"}, roomB: {"$b1"}, roomC: {"$c1"}},
				map[string][]string{roomA: {"~edu_ty"}, roomB: {"~edu_rb"}}, []string{"~edu_pr"}},
			{"one room", fmt.Sprintf(`{"rooms":[%q]}`, roomA),
				map[string][]string{roomA: {"$a1", "$a2", "$a3"}},
				map[string][]string{roomA: {"~edu_ty"}}, []string{"~edu_pr"}},
			{"two rooms", fmt.Sprintf(`{"rooms":[%q,%q]}`, roomB, roomC),
				map[string][]string{roomB: {"$b1"}, roomC: {"$c1"}},
				map[string][]string{roomB: {"~edu_rb"}}, []string{"~edu_pr"}},
			{"no rooms", `{"rooms":[]}`, nil, nil, []string{"~edu_pr"}},
			{"unknown room", `{"rooms":["!nowhere:daarion.test"],"types":["m.room.message"]}`, nil, nil, nil},
			{"messages", `{"types":["m.room.message"]}`,
				map[string][]string{roomA: {"$a1", "$a3"}, roomB: {"$b1"}}, nil, nil},
			{"members and typing", `{"types":["m.room.member","m.typing"]}`,
				map[string][]string{roomA: {"$a2"}, roomC: {"$c1"}},
				map[string][]string{roomA: {"~edu_ty"}}, nil},
			{"prefix", `{"types":["m.room.*"]}`,
				map[string][]string{roomA: {"$a1", "$a2", "$a3"}, roomB: {"$b1"}, roomC: {"$c1"}}, nil, nil},
			{"presence only", `{"types":["m.presence"]}`, nil, nil, []string{"~edu_pr"}},
			{"room and type", fmt.Sprintf(`{"rooms":[%q],"types":["m.room.message","m.receipt"]}`, roomA),
				map[string][]string{roomA: {"$a1", "$a3"}}, nil, nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				params := map[string]string{"since": "s0", "timeout": "0"}
				if tc.filter != "" {
					params["filter"] = tc.filter
				}
				resp := f.sync(t, params)
				if resp.NextBatch != head {
					t.Errorf("next_batch %s, want the head %s (dropped events still advance it)", resp.NextBatch, head)
				}
				gotTimeline, gotEphemeral := map[string][]string{}, map[string][]string{}
				for room, jr := range resp.Rooms.Join {
					if len(jr.Timeline.Events) > 0 {
						gotTimeline[room] = ids(t, jr.Timeline.Events)
					}
					if len(jr.Ephemeral.Events) > 0 {
						gotEphemeral[room] = ids(t, jr.Ephemeral.Events)
					}
					if jr.Timeline.Limited {
						t.Errorf("%s is limited", room)
					}
				}
				if !mapsEqual(gotTimeline, tc.timeline) {
					t.Errorf("timeline %v, want %v", gotTimeline, tc.timeline)
				}
				if !mapsEqual(gotEphemeral, tc.ephemeral) {
					t.Errorf("ephemeral %v, want %v", gotEphemeral, tc.ephemeral)
				}
				if got := ids(t, resp.Presence.Events); !slices.Equal(got, tc.presence) && (len(got) != 0 || len(tc.presence) != 0) {
					t.Errorf("presence %v, want %v", got, tc.presence)
				}
			})
		}
	})
}

func mapsEqual(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

func TestLimit(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		f := newFixture(t, tdb, syncapi.Options{MaxTimeout: longTimeout})
		var evts []eventlog.IncomingEvent
		for i := 0; i < 150; i++ {
			evts = append(evts, message(fmt.Sprintf("$m%03d", i), roomA))
		}
		f.append(t, "many", evts...)

		// Default limit: 100.
		resp := f.sync(t, map[string]string{"since": "s0"})
		tl := resp.Rooms.Join[roomA].Timeline
		if len(tl.Events) != syncapi.DefaultLimit || !tl.Limited {
			t.Fatalf("default limit: %d events, limited %v; want %d, true", len(tl.Events), tl.Limited, syncapi.DefaultLimit)
		}
		if idOf(t, tl.Events[99]) != "$m099" || resp.NextBatch != syncapi.Token(positionOf(t, f, "$m099")) {
			t.Errorf("default limit ends at %s with next_batch %s", idOf(t, tl.Events[99]), resp.NextBatch)
		}
		resp = f.sync(t, map[string]string{"since": resp.NextBatch})
		tl = resp.Rooms.Join[roomA].Timeline
		if len(tl.Events) != 50 || tl.Limited || idOf(t, tl.Events[0]) != "$m100" {
			t.Errorf("second page: %d events from %s, limited %v; want 50 from $m100, false", len(tl.Events), idOf(t, tl.Events[0]), tl.Limited)
		}

		// An explicit limit, counting ephemeral events too.
		f.append(t, "mixed", message("$x1", roomB), typing("t1", roomB), presence("p1"), message("$x2", roomB))
		since := syncapi.Token(positionOf(t, f, "$m149"))
		resp = f.sync(t, map[string]string{"since": since, "filter": `{"limit":3}`})
		jr := resp.Rooms.Join[roomB]
		if countEvents(resp) != 3 || !jr.Timeline.Limited || len(resp.Presence.Events) != 1 {
			t.Errorf("limit 3: %d events, limited %v, presence %d", countEvents(resp), jr.Timeline.Limited, len(resp.Presence.Events))
		}
		resp = f.sync(t, map[string]string{"since": resp.NextBatch, "filter": `{"limit":3}`})
		if got := timelineIDs(t, resp); countEvents(resp) != 1 || !slices.Equal(got[roomB], []string{"$x2"}) || resp.Rooms.Join[roomB].Timeline.Limited {
			t.Errorf("after limit 3: %v, limited %v; want only $x2, not limited", got, resp.Rooms.Join[roomB].Timeline.Limited)
		}

		// Exactly limit events are there: not limited.
		resp = f.sync(t, map[string]string{"since": since, "filter": `{"limit":4}`})
		if countEvents(resp) != 4 || resp.Rooms.Join[roomB].Timeline.Limited {
			t.Errorf("limit 4 of 4: %d events, limited %v", countEvents(resp), resp.Rooms.Join[roomB].Timeline.Limited)
		}

		// The limit counts only events the filter keeps.
		resp = f.sync(t, map[string]string{"since": "s0", "filter": fmt.Sprintf(`{"rooms":[%q],"types":["m.room.message"],"limit":2}`, roomB)})
		if got := timelineIDs(t, resp); !slices.Equal(got[roomB], []string{"$x1", "$x2"}) || len(got) != 1 || resp.Rooms.Join[roomB].Timeline.Limited {
			t.Errorf("filtered limit 2: %v", got)
		}
		if resp.NextBatch != syncapi.Token(f.head(t)) {
			t.Errorf("filtered limit 2: next_batch %s, want the head", resp.NextBatch)
		}
	})
}

func TestEphemeralPlacement(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		f := newFixture(t, tdb, syncapi.Options{MaxTimeout: longTimeout})
		f.append(t, "t1", message("$a1", roomA), typing("ta", roomA), receipt("ra", roomA), presence("p1"), typing("tb", roomB), presence("p2"))
		resp := f.sync(t, map[string]string{"since": "s0"})

		a := resp.Rooms.Join[roomA]
		if a == nil || !slices.Equal(ids(t, a.Timeline.Events), []string{"$a1"}) || !slices.Equal(ids(t, a.Ephemeral.Events), []string{"~edu_ta", "~edu_ra"}) {
			t.Fatalf("room A: %+v", a)
		}
		b := resp.Rooms.Join[roomB]
		if b == nil || len(b.Timeline.Events) != 0 || !slices.Equal(ids(t, b.Ephemeral.Events), []string{"~edu_tb"}) {
			t.Fatalf("room B (typing only): %+v", b)
		}
		if want := syncapi.Token(positionOf(t, f, "~edu_tb") - 1); b.Timeline.PrevBatch != want {
			t.Errorf("room B prev_batch %s, want %s", b.Timeline.PrevBatch, want)
		}
		if got := ids(t, resp.Presence.Events); !slices.Equal(got, []string{"~edu_p1", "~edu_p2"}) {
			t.Errorf("presence %v", got)
		}

		// The raw answer: events as stored, and the keys a Matrix sync has.
		status, body := f.get(t, subsToken, "since=s0")
		if status != http.StatusOK {
			t.Fatalf("%d %s", status, body)
		}
		var raw struct {
			NextBatch *string `json:"next_batch"`
			Rooms     struct {
				Join map[string]map[string]json.RawMessage `json:"join"`
			} `json:"rooms"`
			Presence struct {
				Events []json.RawMessage `json:"events"`
			} `json:"presence"`
		}
		if err := json.Unmarshal(body, &raw); err != nil || raw.NextBatch == nil {
			t.Fatalf("answer %s: %v", body, err)
		}
		var timeline struct {
			Events    []json.RawMessage `json:"events"`
			Limited   *bool             `json:"limited"`
			PrevBatch *string           `json:"prev_batch"`
		}
		if err := json.Unmarshal(raw.Rooms.Join[roomA]["timeline"], &timeline); err != nil || timeline.Limited == nil || timeline.PrevBatch == nil {
			t.Errorf("room A timeline %s lacks limited or prev_batch", raw.Rooms.Join[roomA]["timeline"])
		}
		if len(timeline.Events) != 1 || !jsonEqual(t, timeline.Events[0], []byte(message("$a1", roomA).JSON)) {
			t.Errorf("timeline event %s is not the stored event %s", timeline.Events, message("$a1", roomA).JSON)
		}
		if len(raw.Presence.Events) != 2 || !jsonEqual(t, raw.Presence.Events[0], []byte(presence("p1").JSON)) {
			t.Errorf("presence %s is not as stored", raw.Presence.Events)
		}
	})
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var ca, cb bytes.Buffer
	if err := json.Compact(&ca, a); err != nil {
		t.Fatal(err)
	}
	if err := json.Compact(&cb, b); err != nil {
		t.Fatal(err)
	}
	var va, vb any
	_ = json.Unmarshal(ca.Bytes(), &va)
	_ = json.Unmarshal(cb.Bytes(), &vb)
	ja, _ := json.Marshal(va)
	jb, _ := json.Marshal(vb)
	return bytes.Equal(ja, jb)
}

func TestBadInput(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		f := newFixture(t, tdb, syncapi.Options{MaxTimeout: longTimeout})
		seed(t, f)
		past := syncapi.Token(f.head(t) + 1)
		for _, tc := range []struct {
			query string
			field string
		}{
			{"since=", "since"},
			{"since=abc", "since"},
			{"since=s", "since"},
			{"since=5", "since"},
			{"since=s-1", "since"},
			{"since=s01", "since"},
			{"since=s1.5", "since"},
			{"since=s99999999999999999999", "since"},
			{"since=" + past, "since"},
			{"since=s999999", "since"},
			{"since=s0&timeout=", "timeout"},
			{"since=s0&timeout=abc", "timeout"},
			{"since=s0&timeout=1.5", "timeout"},
			{"since=s0&timeout=1e3", "timeout"},
			{"since=s0&timeout=30s", "timeout"},
			{"timeout=abc", "timeout"},
			{"since=s0&filter=", "filter"},
			{"since=s0&filter=" + url.QueryEscape("{"), "filter"},
			{"since=s0&filter=" + url.QueryEscape("[]"), "filter"},
			{"since=s0&filter=null", "filter"},
			{"since=s0&filter=" + url.QueryEscape(`"rooms"`), "filter"},
			{"since=s0&filter=" + url.QueryEscape(`{} {}`), "filter"},
			{"since=s0&filter=" + url.QueryEscape(`{}}`), "filter"},
			{"since=s0&filter=" + url.QueryEscape(`{"rooms":"!a:x"}`), "filter.rooms"},
			{"since=s0&filter=" + url.QueryEscape(`{"rooms":{}}`), "filter.rooms"},
			{"since=s0&filter=" + url.QueryEscape(`{"rooms":["!a:x",1]}`), "filter.rooms[1]"},
			{"since=s0&filter=" + url.QueryEscape(`{"rooms":[""]}`), "filter.rooms[0]"},
			{"since=s0&filter=" + url.QueryEscape(`{"rooms":["#city_kyiv:x"]}`), "filter.rooms[0]"},
			{"since=s0&filter=" + url.QueryEscape(`{"rooms":["!`+strings.Repeat("x", 300)+`"]}`), "filter.rooms[0]"},
			{"since=s0&filter=" + url.QueryEscape(`{"types":"m.room.message"}`), "filter.types"},
			{"since=s0&filter=" + url.QueryEscape(`{"types":[null]}`), "filter.types[0]"},
			{"since=s0&filter=" + url.QueryEscape(`{"types":["m.room.message",""]}`), "filter.types[1]"},
			{"since=s0&filter=" + url.QueryEscape(`{"types":["m.*.message"]}`), "filter.types[0]"},
			{"since=s0&filter=" + url.QueryEscape(`{"limit":"5"}`), "filter.limit"},
			{"since=s0&filter=" + url.QueryEscape(`{"limit":0}`), "filter.limit"},
			{"since=s0&filter=" + url.QueryEscape(`{"limit":-1}`), "filter.limit"},
			{"since=s0&filter=" + url.QueryEscape(`{"limit":1001}`), "filter.limit"},
			{"since=s0&filter=" + url.QueryEscape(`{"limit":1.5}`), "filter.limit"},
			{"since=s0&filter=" + url.QueryEscape(`{"limit":1e2}`), "filter.limit"},
			{"since=s0&filter=" + url.QueryEscape(`{"limit":true}`), "filter.limit"},
			{"since=s0&filter=" + url.QueryEscape(`{"not_rooms":[]}`), "filter.not_rooms"},
			{"filter=" + url.QueryEscape(`{"room":{}}`), "filter.room"},
		} {
			status, body := f.get(t, subsToken, tc.query)
			var e struct {
				Error   string `json:"error"`
				Message string `json:"message"`
				Field   string `json:"field"`
			}
			if err := json.Unmarshal(body, &e); err != nil {
				t.Errorf("%s: body %s: %v", tc.query, body, err)
				continue
			}
			if status != http.StatusBadRequest || e.Field != tc.field || e.Error != internalapi.ErrInvalidParam || !strings.HasPrefix(e.Message, tc.field+": ") {
				t.Errorf("%s: %d %s; want 400 %s naming %s", tc.query, status, body, internalapi.ErrInvalidParam, tc.field)
			}
		}

		// The limits themselves are fine, and the head is a valid since.
		for _, q := range []string{
			"since=" + syncapi.Token(f.head(t)) + "&timeout=0",
			"since=s0&filter=" + url.QueryEscape(`{"limit":1000}`),
			"since=s0&filter=" + url.QueryEscape(` {"limit":1} `),
			"since=s0&timeout=0&filter=" + url.QueryEscape(`{"types":["*"]}`),
		} {
			if status, body := f.get(t, subsToken, q); status != http.StatusOK {
				t.Errorf("%s: %d %s", q, status, body)
			}
		}
	})
}

func TestScope(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		f := newFixture(t, tdb, syncapi.Options{MaxTimeout: longTimeout})
		for _, tc := range []struct {
			token  string
			status int
			errors string
		}{
			{"", http.StatusUnauthorized, internalapi.ErrMissingToken},
			{"not-a-token-0123456789abcdef", http.StatusUnauthorized, internalapi.ErrUnknownToken},
			{roomsToken, http.StatusForbidden, internalapi.ErrForbidden},
			{subsToken, http.StatusOK, ""},
			{secret, http.StatusOK, ""},
		} {
			status, body := f.get(t, tc.token, "timeout=0")
			if status != tc.status {
				t.Errorf("token %q: %d %s, want %d", tc.token, status, body, tc.status)
				continue
			}
			if tc.errors != "" {
				var e struct{ Error, Message string }
				_ = json.Unmarshal(body, &e)
				if e.Error != tc.errors {
					t.Errorf("token %q: %s, want %s", tc.token, body, tc.errors)
				}
				if tc.status == http.StatusForbidden && !strings.Contains(e.Message, `"subscriptions"`) {
					t.Errorf("403 does not name the scope: %s", body)
				}
			}
		}
	})
}

func TestCloseEndsWaits(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		f := newFixture(t, tdb, syncapi.Options{MaxTimeout: longTimeout})
		f.append(t, "t1", message("$a1", roomA))
		since := syncapi.Token(f.head(t))
		done := f.startSync(map[string]string{"since": since, "timeout": fmt.Sprint(longTimeout.Milliseconds())})
		mustWait(t, done)
		closed := time.Now()
		f.handler.Close()
		res := awaitSync(t, done, longTimeout+5*time.Second)
		if took := res.at.Sub(closed); took > longTimeout/2 {
			t.Errorf("the sync answered %v after Close", took)
		}
		if !isEmpty(res.resp) || res.resp.NextBatch != since {
			t.Errorf("closed sync: %+v", res.resp)
		}
		// After Close a sync still answers what is there, without waiting.
		f.append(t, "t2", message("$a2", roomA))
		resp := f.sync(t, map[string]string{"since": since})
		if got := timelineIDs(t, resp); !slices.Equal(got[roomA], []string{"$a2"}) {
			t.Errorf("sync after Close gave %v", got)
		}
	})
}

func TestScanBudget(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		f := newFixture(t, tdb, syncapi.Options{MaxTimeout: longTimeout})
		f.handler.SetScanLimits(6, 3)
		var evts []eventlog.IncomingEvent
		for i := 0; i < 14; i++ {
			evts = append(evts, message(fmt.Sprintf("$b%02d", i), roomB))
		}
		f.append(t, "others", append(evts, message("$a", roomA))...)

		// Past the budget an answer goes out at once, empty, with next_batch
		// moved on; the next sync carries on from there and finds the event.
		params := map[string]string{
			"since": "s0", "timeout": fmt.Sprint(longTimeout.Milliseconds()),
			"filter": fmt.Sprintf(`{"rooms":[%q]}`, roomA),
		}
		start := time.Now()
		var found []string
		var answers int
		for len(found) == 0 && answers < 10 {
			resp := f.sync(t, params)
			answers++
			if position(t, resp.NextBatch) <= position(t, params["since"]) {
				t.Fatalf("answer %d did not move next_batch on from %s", answers, params["since"])
			}
			found = timelineIDs(t, resp)[roomA]
			params["since"] = resp.NextBatch
		}
		if !slices.Equal(found, []string{"$a"}) || answers != 3 {
			t.Errorf("found %v after %d answers; want $a after 3 (6 + 6 + 3 events scanned)", found, answers)
		}
		if elapsed := time.Since(start); elapsed > longTimeout/2 {
			t.Errorf("budget-cut answers took %v; they do not wait", elapsed)
		}
	})
}

// A since older than what retention kept asks for events that are gone: a
// 400 naming since tells the client to start again, instead of an answer
// that silently skips them. A since at the pruned position is still fine.
func TestSinceOlderThanRetentionIsRefused(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		f := newFixture(t, tdb, syncapi.Options{MaxTimeout: longTimeout})
		seed(t, f)
		head := f.head(t)
		through := head / 2
		if _, err := f.log.Prune(context.Background(), through, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		status, body := f.get(t, subsToken, query(map[string]string{"since": string(syncapi.Token(through - 1))}))
		var answer struct {
			Field string `json:"field"`
		}
		_ = json.Unmarshal(body, &answer)
		if status != http.StatusBadRequest || answer.Field != "since" {
			t.Errorf("since older than retention: %d %s, want 400 naming since", status, body)
		}
		resp := f.sync(t, map[string]string{"since": string(syncapi.Token(through))})
		if countEvents(resp) == 0 {
			t.Errorf("since at the pruned position gave nothing")
		}
	})
}

// A confidential room's room events are answered stripped (those the log
// holds whole, from before the room was marked, too); its state, its
// ephemeral events and other rooms are answered as stored.
func TestConfidentialRoomsAreStripped(t *testing.T) {
	f := newFixture(t, testrig.NewTestDatabase(t, testrig.SQLite), syncapi.Options{
		MaxTimeout: longTimeout, PollInterval: noPoll,
		Confidential: func(roomID string) bool { return roomID == roomA },
	})
	f.append(t, "t1", message("$a1", roomA), member("$a2", roomA), typing("1", roomA), message("$b1", roomB))
	resp := f.sync(t, map[string]string{"since": "s0", "timeout": "0"})
	a, b := resp.Rooms.Join[roomA], resp.Rooms.Join[roomB]
	if a == nil || b == nil || len(a.Timeline.Events) != 2 || len(b.Timeline.Events) != 1 || len(a.Ephemeral.Events) != 1 {
		t.Fatalf("answer %+v", resp)
	}
	if got, want := string(a.Timeline.Events[0]), `{"content":{"msgtype":"m.text"},"event_id":"$a1","origin_server_ts":1732445400000,"room_id":"!a:daarion.test","sender":"@alice:daarion.test","type":"m.room.message","unsigned":{"net.daarion.confidential":true}}`; got != want {
		t.Errorf("the confidential room's message is\n%s, want\n%s", got, want)
	}
	if got := string(a.Timeline.Events[1]); got != member("$a2", roomA).JSON {
		t.Errorf("the confidential room's state is %s", got)
	}
	if got := string(a.Ephemeral.Events[0]); got != typing("1", roomA).JSON {
		t.Errorf("the confidential room's typing is %s", got)
	}
	if got := string(b.Timeline.Events[0]); got != message("$b1", roomB).JSON {
		t.Errorf("the other room's message is %s", got)
	}
}
