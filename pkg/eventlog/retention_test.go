package eventlog_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// Under a steady stream whose consumers keep up, pruning keeps the log's
// size bounded: it stops growing, it never drops what a consumer has not
// passed, and it always keeps the newest event (the head).
func TestPruningBoundsTheLog(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx := context.Background()
		l := openLog(t, tdb)
		var sizes []int64
		for round := 0; round < 6; round++ {
			mustAppend(t, l, fmt.Sprint("r", round), events(fmt.Sprintf("r%d_", round), 50))
			head, err := l.Head(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// The fast consumer is at the head, the slow one 20 behind.
			if err = l.SaveCursor(ctx, "fast", head); err != nil {
				t.Fatal(err)
			}
			if err = l.SaveCursor(ctx, "slow", head-20); err != nil {
				t.Fatal(err)
			}
			upTo, err := l.MinCursor(ctx, []string{"fast", "slow"})
			if err != nil || upTo != head-20 {
				t.Fatalf("MinCursor = %d (%v), want %d", upTo, err, head-20)
			}
			if _, err = l.Prune(ctx, upTo, time.Now().Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			n, err := l.Count(ctx)
			if err != nil {
				t.Fatal(err)
			}
			sizes = append(sizes, n)
			// What the slow consumer has not read is all there.
			rest, err := l.Read(ctx, upTo, 1000)
			if err != nil || len(rest) != 20 || rest[len(rest)-1].Position != head {
				t.Fatalf("round %d: %d events after the slow cursor (%v), want 20 up to the head", round, len(rest), err)
			}
			if through, _ := l.PrunedThrough(ctx); through != upTo {
				t.Errorf("round %d: pruned through %d, want %d", round, through, upTo)
			}
		}
		for i, n := range sizes {
			if n != 20 {
				t.Errorf("after round %d the log holds %d events, want 20 (sizes %v)", i, n, sizes)
			}
		}
		// Nothing younger than the retention is pruned.
		mustAppend(t, l, "young", events("young_", 5))
		head, _ := l.Head(ctx)
		if deleted, err := l.Prune(ctx, head, time.Now().Add(-time.Hour)); err != nil || deleted != 0 {
			t.Errorf("pruned %d young events (%v)", deleted, err)
		}
		// The head is kept even when everything may go.
		if _, err := l.Prune(ctx, head, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if got, _ := l.Head(ctx); got != head {
			t.Errorf("head %d after pruning everything, want %d", got, head)
		}
	})
}
