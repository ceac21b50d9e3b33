package jetstream

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"

	"github.com/daarion/matrix-bridge/pkg/appservice"
	"github.com/daarion/matrix-bridge/pkg/consumer"
	"github.com/daarion/matrix-bridge/pkg/delivery"
	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/identity"
	"github.com/daarion/matrix-bridge/pkg/mapping"
	"github.com/daarion/matrix-bridge/pkg/messaging"
	"github.com/daarion/matrix-bridge/pkg/rooms"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

func TestMain(m *testing.M) { os.Exit(testrig.RunTests(m)) }

const (
	serverName = "daarion.test"
	roomID     = "!kyiv:daarion.test"
	// consumerName is the runner's cursor name, as the bridge will use it.
	consumerName = "nats"
)

// harness is a real database with the event log and the DTO source.
type harness struct {
	ctx context.Context
	db  *dbutil.Database
	log *eventlog.Log
	src *delivery.DTOSource
	// sent lists what was appended, in log order.
	sent []expected
}

type expected struct {
	id, dtoType string
}

func newHarness(t *testing.T, tdb testrig.TestDatabase) *harness {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	db := testrig.OpenDatabase(t, tdb)
	log := eventlog.New(db)
	t.Cleanup(func() { _ = log.Close() })
	return &harness{
		ctx: ctx,
		db:  db,
		log: log,
		src: delivery.NewDTOSource(identity.Mapper{ServerName: serverName, BotLocalpart: "daarion"}, rooms.NewStore(db), messaging.NewIdempotencyStore(db), log),
	}
}

// appendTxn appends one transaction of n timeline events: text messages,
// with every fourth a reaction to the message before it.
func (h *harness) appendTxn(t *testing.T, txnID string, n int) {
	t.Helper()
	events := make([]json.RawMessage, 0, n)
	base := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC).UnixMilli()
	for i := range n {
		eventID := fmt.Sprintf("$%s_%03d", txnID, i)
		evt := map[string]any{
			"event_id":         eventID,
			"room_id":          roomID,
			"sender":           "@alice:" + serverName,
			"origin_server_ts": base + int64(len(h.sent)),
			"unsigned":         map[string]any{"age": 12},
		}
		want := expected{id: eventID}
		if i%4 == 3 {
			evt["type"] = "m.reaction"
			evt["content"] = map[string]any{"m.relates_to": map[string]any{
				"rel_type": "m.annotation", "event_id": fmt.Sprintf("$%s_%03d", txnID, i-1), "key": "👍",
			}}
			want.dtoType = mapping.ReactionAdded
		} else {
			evt["type"] = "m.room.message"
			evt["content"] = map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("Привіт, Київ! message %d of %s", i, txnID)}
			want.dtoType = mapping.MessageCreated
		}
		raw, err := json.Marshal(evt)
		if err != nil {
			t.Fatal(err)
		}
		events = append(events, raw)
		h.sent = append(h.sent, want)
	}
	// Stored the production way: the transaction's body journalled, then
	// indexed with the appservice parser.
	before, err := h.log.Count(h.ctx)
	if err != nil {
		t.Fatal(err)
	}
	body, err := json.Marshal(map[string]any{"events": events})
	if err != nil {
		t.Fatal(err)
	}
	if err = h.log.Journal(h.ctx, txnID, body); err != nil {
		t.Fatal(err)
	}
	if _, err = h.log.IndexPending(h.ctx, appservice.ParseTransaction); err != nil {
		t.Fatal(err)
	}
	after, err := h.log.Count(h.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if stored := int(after - before); stored != n {
		t.Fatalf("appended %d events of %s, want %d", stored, txnID, n)
	}
}

func (h *harness) head(t *testing.T) int64 {
	t.Helper()
	head, err := h.log.Head(h.ctx)
	if err != nil {
		t.Fatal(err)
	}
	return head
}

func (h *harness) cursor(t *testing.T) int64 {
	t.Helper()
	pos, err := h.log.Cursor(h.ctx, consumerName)
	if err != nil {
		t.Fatal(err)
	}
	return pos
}

// newSink makes a sink for url with test timings; it is closed at the end
// of the test.
func (h *harness) newSink(t *testing.T, url string, edit func(*Options)) *Sink {
	t.Helper()
	opts := Options{
		URL:              url,
		Source:           h.src,
		Logger:           testLogger(t),
		PublishTimeout:   5 * time.Second,
		MaxReconnectWait: 200 * time.Millisecond,
	}
	if edit != nil {
		edit(&opts)
	}
	sink, err := New(h.ctx, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(sink.Close)
	return sink
}

// testLogger logs to the test until it ends; NATS callbacks may still run
// just after.
func testLogger(t *testing.T) zerolog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return zerolog.New(zerolog.ConsoleWriter{Out: w, NoColor: true, PartsExclude: []string{zerolog.TimestampFieldName}}).
		Level(zerolog.InfoLevel)
}

type testWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

var fastRunner = consumer.Options{
	BatchSize:    8,
	PollInterval: 50 * time.Millisecond,
	MinBackoff:   50 * time.Millisecond,
	MaxBackoff:   300 * time.Millisecond,
}

// startRunner runs handler as the "nats" consumer of the log; the group is
// stopped at the end of the test (again, harmlessly, if the test did).
func (h *harness) startRunner(t *testing.T, handler consumer.Handler, opts consumer.Options) (*consumer.Runner, *consumer.Group) {
	t.Helper()
	runner := consumer.NewRunner(consumerName, h.log, handler, opts)
	group := consumer.NewGroup(runner)
	group.Start(h.ctx)
	t.Cleanup(group.Stop)
	return runner, group
}

// waitCaughtUp waits until the runner has handled the whole log.
func (h *harness) waitCaughtUp(t *testing.T, runner *consumer.Runner, timeout time.Duration) {
	t.Helper()
	head := h.head(t)
	testrig.Eventually(t, fmt.Sprintf("the runner to reach position %d", head), timeout, func() bool {
		return runner.Position() >= head
	})
}

// received is one message read back from the stream.
type received struct {
	seq     uint64
	subject string
	msgID   string
	dto     mapping.DTO
}

// connectJS is a separate client connection, as a DAARION service has.
func connectJS(t *testing.T, url string) natsjs.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("failed to connect to NATS: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := natsjs.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// readStream reads the whole stream with a JetStream consumer of its own
// and checks that it holds exactly want: each DTO once, in log order, on
// subject <prefix><type> with Nats-Msg-Id = DTO id.
func readStream(t *testing.T, url, stream, prefix string, want []expected) []received {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := connectJS(t, url)
	cons, err := js.OrderedConsumer(ctx, stream, natsjs.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("failed to make a consumer of %s: %v", stream, err)
	}
	var got []received
	for len(got) < len(want) && ctx.Err() == nil {
		batch, err := cons.Fetch(len(want)-len(got), natsjs.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatalf("fetch: %v", err)
		}
		for msg := range batch.Messages() {
			got = append(got, decode(t, msg))
		}
		if err := batch.Error(); err != nil {
			t.Fatalf("fetch: %v", err)
		}
	}
	// Nothing more may follow: no duplicate, no stray message.
	batch, err := cons.Fetch(10, natsjs.FetchMaxWait(300*time.Millisecond))
	if err != nil {
		t.Fatalf("fetch: %v", err)
	}
	for msg := range batch.Messages() {
		r := decode(t, msg)
		t.Errorf("unexpected extra message #%d %s on %s", r.seq, r.msgID, r.subject)
	}

	if len(got) != len(want) {
		t.Fatalf("read %d messages from %s, want %d", len(got), stream, len(want))
	}
	seen := map[string]bool{}
	for i, r := range got {
		w := want[i]
		if seen[r.msgID] {
			t.Errorf("message #%d: %s arrived twice", r.seq, r.msgID)
		}
		seen[r.msgID] = true
		if r.msgID != w.id || r.dto.ID != w.id {
			t.Errorf("message %d: Nats-Msg-Id %q, DTO id %q, want %q (log order)", i, r.msgID, r.dto.ID, w.id)
		}
		if r.subject != prefix+w.dtoType || r.dto.Type != w.dtoType {
			t.Errorf("message %d (%s): subject %q, DTO type %q, want %q / %q", i, w.id, r.subject, r.dto.Type, prefix+w.dtoType, w.dtoType)
		}
		if r.dto.Version != mapping.Version || r.dto.Room == nil || r.dto.Room.MatrixRoomID != roomID ||
			r.dto.Sender == nil || r.dto.Sender.MatrixID != "@alice:"+serverName || r.dto.OccurredAt.Year() != 2026 {
			t.Errorf("message %d (%s): unexpected DTO %+v", i, w.id, r.dto)
		}
	}

	info, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	if state := info.CachedInfo().State; state.Msgs != uint64(len(want)) {
		t.Errorf("stream %s holds %d messages, want %d", stream, state.Msgs, len(want))
	}
	return got
}

func decode(t *testing.T, msg natsjs.Msg) received {
	t.Helper()
	r := received{subject: msg.Subject(), msgID: msg.Headers().Get(natsjs.MsgIDHeader)}
	if md, err := msg.Metadata(); err == nil {
		r.seq = md.Sequence.Stream
	}
	if err := json.Unmarshal(msg.Data(), &r.dto); err != nil {
		t.Fatalf("message %s on %s is not a DTO: %v", r.msgID, r.subject, err)
	}
	return r
}
