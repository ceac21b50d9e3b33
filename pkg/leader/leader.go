// Package leader makes sure the bridge's consumers (delivery, room and
// agent followers) run in exactly one process at a time when several
// bridge processes share one PostgreSQL database: the leader holds a
// session-level advisory lock on a dedicated connection. When the leader
// dies, PostgreSQL ends its session and frees the lock, and a standby
// takes over within one poll interval. On SQLite there is one process, the
// leader.
package leader

import (
	"context"
	"database/sql"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
)

// lockKey is the advisory lock of the consumers' leader ("DAARLEAD").
const lockKey int64 = 0x444141524c454144

// Elector runs work while this process leads.
type Elector struct {
	db       *dbutil.Database
	interval time.Duration
	leading  atomic.Bool
}

// New returns an elector polling every interval (default 1 s).
func New(db *dbutil.Database, interval time.Duration) *Elector {
	if interval <= 0 {
		interval = time.Second
	}
	return &Elector{db: db, interval: interval}
}

// Leading reports whether this process leads now.
func (e *Elector) Leading() bool { return e.leading.Load() }

// Run calls lead with a context that lives as long as this process leads,
// until ctx ends. lead must return when its context is cancelled.
func (e *Elector) Run(ctx context.Context, lead func(ctx context.Context)) {
	log := zerolog.Ctx(ctx).With().Str("component", "leader").Logger()
	if e.db.Dialect != dbutil.Postgres {
		e.leading.Store(true)
		lead(ctx)
		e.leading.Store(false)
		return
	}
	for ctx.Err() == nil {
		conn, err := e.tryLock(ctx)
		if err != nil && ctx.Err() == nil {
			log.Warn().Err(err).Msg("Leader election failed; retrying")
		}
		if conn == nil {
			sleep(ctx, e.interval)
			continue
		}
		log.Info().Msg("This process leads: starting the consumers")
		e.leading.Store(true)
		e.leadWhileHeld(ctx, conn, lead)
		e.leading.Store(false)
		log.Info().Msg("No longer leading: consumers stopped")
	}
}

// tryLock takes the lock on a connection of its own; nil when another
// process holds it.
func (e *Elector) tryLock(ctx context.Context) (*sql.Conn, error) {
	conn, err := e.db.RawDB.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("failed to get a connection: %w", err)
	}
	var got bool
	if err = conn.QueryRowContext(ctx, "SELECT pg_try_advisory_lock($1)", lockKey).Scan(&got); err != nil || !got {
		_ = conn.Close()
		if err != nil {
			return nil, fmt.Errorf("failed to try the leader lock: %w", err)
		}
		return nil, nil
	}
	return conn, nil
}

// leadWhileHeld runs lead and checks the lock's connection every interval;
// if the connection fails (and with it the session and the lock), lead is
// cancelled, and the lock is given back when lead returns.
func (e *Elector) leadWhileHeld(ctx context.Context, conn *sql.Conn, lead func(ctx context.Context)) {
	leadCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		lead(leadCtx)
	}()
	ticker := time.NewTicker(e.interval)
	defer ticker.Stop()
loop:
	for {
		select {
		case <-done:
			break loop
		case <-ticker.C:
			checkCtx, cancelCheck := context.WithTimeout(ctx, e.interval)
			err := conn.PingContext(checkCtx)
			cancelCheck()
			if err != nil {
				zerolog.Ctx(ctx).Warn().Err(err).Msg("Lost the leader lock's connection")
				break loop
			}
		}
	}
	cancel()
	<-done
	unlockCtx, cancelUnlock := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancelUnlock()
	_, _ = conn.ExecContext(unlockCtx, "SELECT pg_advisory_unlock($1)", lockKey)
	_ = conn.Close()
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
