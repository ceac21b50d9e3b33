package benchkit

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// StartRun sets up a run: its context, cancelled on ^C or SIGTERM (so that
// everything the run started is stopped) and after maxRuntime (so that a
// run on a shared machine is bounded), and its work directory
// (os.MkdirTemp's pattern). done removes the directory, or with keep
// (-keep) says where it was kept, and cancels the context.
func StartRun(maxRuntime time.Duration, pattern string, keep bool) (ctx context.Context, dir string, done func(), err error) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(ctx, maxRuntime)
	end := func() { cancel(); stop() }
	if dir, err = os.MkdirTemp("", pattern); err != nil {
		end()
		return nil, "", nil, err
	}
	return ctx, dir, func() {
		if keep {
			Progress("kept the work directory %s", dir)
		} else {
			os.RemoveAll(dir)
		}
		end()
	}, nil
}
