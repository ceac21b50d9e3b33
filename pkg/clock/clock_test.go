package clock

import (
	"context"
	"testing"
	"time"
)

func TestSleepWaits(t *testing.T) {
	start := time.Now()
	if !Sleep(context.Background(), 20*time.Millisecond) {
		t.Fatal("Sleep reported an ended context")
	}
	if took := time.Since(start); took < 20*time.Millisecond {
		t.Fatalf("Sleep returned after %v, before its 20ms", took)
	}
}

func TestSleepEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(10*time.Millisecond, cancel)
	start := time.Now()
	if Sleep(ctx, time.Minute) {
		t.Fatal("Sleep reported the whole wait, but its context ended")
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("Sleep took %v after its context ended", took)
	}
}
