package testrig

import "testing"

// FreePort never hands out a port twice in one process, even one nothing
// has bound yet.
func TestFreePortHandsOutEachPortOnce(t *testing.T) {
	seen := map[int]bool{}
	for range 500 {
		port, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if seen[port] {
			t.Fatalf("port %d handed out twice", port)
		}
		seen[port] = true
	}
}
