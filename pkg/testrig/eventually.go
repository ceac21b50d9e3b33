package testrig

import (
	"testing"
	"time"
)

// Eventually polls cond every 20ms until it is true, and fails the test
// (t.Fatalf, "timed out after <timeout> waiting for <what>") if it is not
// within timeout.
func Eventually(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
