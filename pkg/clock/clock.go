// Package clock holds the waits that end early with their context.
package clock

import (
	"context"
	"time"
)

// Sleep waits for d or until ctx ends, whichever comes first; it reports
// false when ctx ended.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
