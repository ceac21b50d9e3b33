package e2ee

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// The waiting list keeps each event once, oldest log position first, and
// forgets what is removed, on both databases.
func TestPendingStore(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx := context.Background()
		store := newPendingStore(testrig.OpenDatabase(t, tdb))
		since := time.UnixMilli(1732445400000)
		for _, p := range []pendingEvent{
			{EventID: "$b", RoomID: "!r:s", SessionID: "s2", Position: 20, Since: since},
			{EventID: "$a", RoomID: "!r:s", SessionID: "s1", Position: 10, Since: since},
			{EventID: "$a", RoomID: "!r:s", SessionID: "s1", Position: 10, Since: since.Add(time.Hour)}, // again: kept once, first time kept
		} {
			if err := store.add(ctx, p); err != nil {
				t.Fatal(err)
			}
		}
		list, err := store.list(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 2 || list[0].EventID != "$a" || list[1].EventID != "$b" || !list[0].Since.Equal(since) || list[0].SessionID != "s1" {
			t.Fatalf("list = %+v", list)
		}
		if n, _ := store.count(ctx); n != 2 {
			t.Errorf("count = %d, want 2", n)
		}
		if limited, _ := store.list(ctx, 1); len(limited) != 1 {
			t.Errorf("list(1) gave %d", len(limited))
		}
		if err := store.remove(ctx, "$a"); err != nil {
			t.Fatal(err)
		}
		if has, _ := store.has(ctx, "$a"); has {
			t.Error("$a still waiting after remove")
		}
		if has, _ := store.has(ctx, "$b"); !has {
			t.Error("$b is no longer waiting")
		}
	})
}

func TestDecryptedIDs(t *testing.T) {
	a, b := DecryptedLogID("$one:s"), DecryptedLogID("$two:s")
	if a == b || !strings.HasPrefix(a, DecryptedIDPrefix) || len(a) != len(DecryptedIDPrefix)+32 || a != DecryptedLogID("$one:s") {
		t.Errorf("DecryptedLogID: %q %q", a, b)
	}
	if !IsDecryptedTxn(DecryptedTxnPrefix+"$x") || IsDecryptedTxn("123") || IsDecryptedTxn("daarion-reconcile:1") {
		t.Error("IsDecryptedTxn")
	}
}
