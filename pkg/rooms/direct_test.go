package rooms

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/testrig"
)

const directBot = id.UserID("@daarion-bot:daarion.test")

// directHomeserver keeps the bot's m.direct as a homeserver does, shared
// by every process of the bridge.
type directHomeserver struct {
	*testrig.FakeHomeserver
	mu     sync.Mutex
	direct map[id.UserID][]id.RoomID // nil: no such account data (404)
	reads  int
	writes int
	// failReads and failWrites answer 500.
	failReads, failWrites bool
}

func newDirectHomeserver(t *testing.T) *directHomeserver {
	hs := &directHomeserver{FakeHomeserver: testrig.NewFakeHomeserver(t)}
	path := "/_matrix/client/v3/user/" + directBot.String() + "/account_data/m.direct"
	hs.Handle("GET "+path, func(w http.ResponseWriter, _ *http.Request) {
		hs.mu.Lock()
		defer hs.mu.Unlock()
		hs.reads++
		switch {
		case hs.failReads:
			testrig.WriteMatrixError(w, http.StatusInternalServerError, "M_UNKNOWN", "disk on fire")
		case hs.direct == nil:
			testrig.WriteMatrixError(w, http.StatusNotFound, "M_NOT_FOUND", "no such account data")
		default:
			testrig.WriteJSON(w, http.StatusOK, hs.direct)
		}
	})
	hs.Handle("PUT "+path, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		hs.mu.Lock()
		defer hs.mu.Unlock()
		hs.writes++
		if hs.failWrites {
			testrig.WriteMatrixError(w, http.StatusInternalServerError, "M_UNKNOWN", "disk on fire")
			return
		}
		var direct map[id.UserID][]id.RoomID
		if err := json.Unmarshal(body, &direct); err != nil {
			testrig.WriteMatrixError(w, http.StatusBadRequest, "M_NOT_JSON", err.Error())
			return
		}
		hs.direct = direct
		testrig.WriteJSON(w, http.StatusOK, map[string]any{})
	})
	return hs
}

// set changes m.direct as another bridge process (the leader) does.
func (hs *directHomeserver) set(direct map[id.UserID][]id.RoomID) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	hs.direct = direct
}

func (hs *directHomeserver) counts() (reads, writes int) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return hs.reads, hs.writes
}

func newTestDirectChats(t *testing.T, hs *directHomeserver) (*DirectChats, *fakeClock) {
	t.Helper()
	client, err := mautrix.NewClient(hs.URL, directBot, "as-token")
	if err != nil {
		t.Fatal(err)
	}
	client.DefaultHTTPRetries = 0
	clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	d := NewDirectChats(client)
	d.now = clock.Now
	return d, clock
}

func wantDirect(t *testing.T, d *DirectChats, roomID id.RoomID, want bool) {
	t.Helper()
	got, err := d.Has(context.Background(), roomID)
	if err != nil || got != want {
		t.Fatalf("Has(%s) = %v, %v; want %v", roomID, got, err, want)
	}
}

// A process that is not the leader learns of direct chats the leader's bot
// opened (or left) from m.direct, read again once its copy is Refresh old.
func TestDirectChatsRefresh(t *testing.T) {
	hs := newDirectHomeserver(t)
	hs.set(map[id.UserID][]id.RoomID{"@admin:daarion.test": {"!dm1:daarion.test"}})
	d, clock := newTestDirectChats(t, hs)
	if d.Refresh != DefaultDirectChatsRefresh || DefaultDirectChatsRefresh != 10*time.Second {
		t.Fatalf("refresh %v, default %v; want 10s", d.Refresh, DefaultDirectChatsRefresh)
	}
	if d.Cached("!dm1:daarion.test") {
		t.Error("Cached before the first read")
	}
	wantDirect(t, d, "!dm1:daarion.test", true)
	if !d.Cached("!dm1:daarion.test") {
		t.Error("not Cached after the first read")
	}

	// The leader opens a second direct chat and forgets the first.
	hs.set(map[id.UserID][]id.RoomID{"@admin:daarion.test": {"!dm2:daarion.test"}})
	clock.Advance(d.Refresh - time.Millisecond)
	wantDirect(t, d, "!dm2:daarion.test", false) // the copy is trusted for Refresh
	wantDirect(t, d, "!dm1:daarion.test", true)
	if reads, _ := hs.counts(); reads != 1 {
		t.Fatalf("%d reads of m.direct within the refresh interval, want 1", reads)
	}
	clock.Advance(time.Millisecond)
	wantDirect(t, d, "!dm2:daarion.test", true)
	wantDirect(t, d, "!dm1:daarion.test", false)
	if !d.Cached("!dm2:daarion.test") || d.Cached("!dm1:daarion.test") {
		t.Error("Cached does not follow the refreshed copy")
	}
	if reads, writes := hs.counts(); reads != 2 || writes != 0 {
		t.Fatalf("%d reads and %d writes of m.direct after one refresh, want 2 and 0", reads, writes)
	}

	// A shorter interval is honoured too.
	d.Refresh = time.Second
	hs.set(map[id.UserID][]id.RoomID{"@admin:daarion.test": {"!dm3:daarion.test"}})
	clock.Advance(time.Second)
	wantDirect(t, d, "!dm3:daarion.test", true)
}

func TestDirectChatsReads(t *testing.T) {
	for _, tc := range []struct {
		name      string
		direct    map[id.UserID][]id.RoomID
		failReads bool
		roomID    id.RoomID
		want      bool
		wantErr   bool
	}{
		{name: "no account data yet", roomID: "!dm:s", want: false},
		{name: "a direct chat of one admin", direct: map[id.UserID][]id.RoomID{"@a:s": {"!x:s", "!dm:s"}}, roomID: "!dm:s", want: true},
		{name: "a direct chat of another admin", direct: map[id.UserID][]id.RoomID{"@a:s": {"!x:s"}, "@b:s": {"!dm:s"}}, roomID: "!dm:s", want: true},
		{name: "another room", direct: map[id.UserID][]id.RoomID{"@a:s": {"!x:s"}}, roomID: "!dm:s", want: false},
		{name: "the homeserver fails", failReads: true, roomID: "!dm:s", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hs := newDirectHomeserver(t)
			hs.direct, hs.failReads = tc.direct, tc.failReads
			d, _ := newTestDirectChats(t, hs)
			got, err := d.Has(context.Background(), tc.roomID)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("Has = %v, %v; want %v (error: %v)", got, err, tc.want, tc.wantErr)
			}
			// A failed read leaves nothing loaded: the next call reads again.
			_, _ = d.Has(context.Background(), tc.roomID)
			wantReads := 1
			if tc.wantErr {
				wantReads = 2
			}
			if reads, _ := hs.counts(); reads != wantReads {
				t.Errorf("%d reads, want %d", reads, wantReads)
			}
		})
	}
}

func TestDirectChatsAddWritesThrough(t *testing.T) {
	ctx := context.Background()
	hs := newDirectHomeserver(t)
	hs.set(map[id.UserID][]id.RoomID{"@b:s": {"!b:s"}})
	d, _ := newTestDirectChats(t, hs)
	if err := d.Add(ctx, "@a:s", "!a1:s"); err != nil {
		t.Fatal(err)
	}
	if err := d.Add(ctx, "@a:s", "!a2:s"); err != nil {
		t.Fatal(err)
	}
	// Adding a known chat writes nothing.
	if err := d.Add(ctx, "@a:s", "!a1:s"); err != nil {
		t.Fatal(err)
	}
	reads, writes := hs.counts()
	if reads != 1 || writes != 2 {
		t.Errorf("%d reads and %d writes, want 1 and 2", reads, writes)
	}
	hs.mu.Lock()
	stored := hs.direct
	hs.mu.Unlock()
	if !slices.Equal(stored["@a:s"], []id.RoomID{"!a1:s", "!a2:s"}) || !slices.Equal(stored["@b:s"], []id.RoomID{"!b:s"}) {
		t.Errorf("m.direct = %v, want both of @a:s's chats and @b:s's kept", stored)
	}
	for _, roomID := range []id.RoomID{"!a1:s", "!a2:s", "!b:s"} {
		if !d.Cached(roomID) {
			t.Errorf("%s is not cached", roomID)
		}
	}

	// A failed write is an error and leaves the copy as the homeserver has it.
	hs.mu.Lock()
	hs.failWrites = true
	hs.mu.Unlock()
	if err := d.Add(ctx, "@a:s", "!a3:s"); err == nil {
		t.Fatal("Add succeeded while the homeserver failed")
	}
	wantDirect(t, d, "!a3:s", false)

	// A failed read fails Add before any write.
	hs2 := newDirectHomeserver(t)
	hs2.failReads = true
	d2, _ := newTestDirectChats(t, hs2)
	if err := d2.Add(ctx, "@a:s", "!a1:s"); err == nil {
		t.Fatal("Add succeeded while m.direct could not be read")
	}
	if _, writes := hs2.counts(); writes != 0 {
		t.Errorf("%d writes after a failed read", writes)
	}
}
