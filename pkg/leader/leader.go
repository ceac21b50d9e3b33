// Package leader makes sure the bridge's consumers (the journal indexer,
// delivery, room and agent followers) run in exactly one process at a time
// when several bridge processes share one database, and that a leader that
// froze or was cut off cannot write once another has taken over.
//
// Leadership is a lease in the leader_lease table: a holder, an epoch (the
// fencing token) and an expiry. The leader renews it on a heartbeat; a
// standby takes it over once it has expired, with the epoch one higher. The
// leader's context carries its epoch, and every leader-only write checks it
// with Check in the same database transaction, so a leader that comes back
// after a freeze writes nothing and steps down at its next heartbeat. On
// SQLite there is one process; it takes the lease the same way.
package leader

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"

	"github.com/daarion/matrix-bridge/pkg/clock"
)

// leaseName is the row of the consumers' lease.
const leaseName = "consumers"

// Default timings: a standby takes over at most TTL + Interval after the
// leader's last renewal (12 s), well inside the 15 s the operators were promised.
const (
	DefaultTTL      = 10 * time.Second
	DefaultInterval = time.Second
)

// ErrFenced is the error of a leader-only write by a process whose epoch no
// longer holds the lease.
var ErrFenced = errors.New("fenced: a newer leader holds the lease")

// Options tune an Elector; zero values take the defaults.
type Options struct {
	// TTL is how long a renewal keeps the lease.
	TTL time.Duration
	// Interval is how often the leader renews and a standby tries to take over.
	Interval time.Duration
	// Holder names this process in the lease (default host, pid and a random suffix).
	Holder string
}

// Elector runs work while this process holds the lease.
type Elector struct {
	db   *dbutil.Database
	opts Options

	leading atomic.Bool
	epoch   atomic.Int64
}

// New returns an elector for db.
func New(db *dbutil.Database, opts Options) *Elector {
	if opts.TTL <= 0 {
		opts.TTL = DefaultTTL
	}
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Interval >= opts.TTL {
		opts.Interval = opts.TTL / 3
	}
	if opts.Holder == "" {
		host, _ := os.Hostname()
		opts.Holder = fmt.Sprintf("%s/%d/%s", host, os.Getpid(), rand.Text()[:8])
	}
	return &Elector{db: db, opts: opts}
}

// Leading reports whether this process leads now.
func (e *Elector) Leading() bool { return e.leading.Load() }

// Epoch is the epoch this process leads with, 0 when it does not lead.
func (e *Elector) Epoch() int64 { return e.epoch.Load() }

// Holder is this process's name in the lease.
func (e *Elector) Holder() string { return e.opts.Holder }

// Run calls lead with a context that carries the epoch and lives as long as
// this process holds the lease, until ctx ends. lead must return when its
// context is cancelled.
func (e *Elector) Run(ctx context.Context, lead func(ctx context.Context)) {
	log := zerolog.Ctx(ctx).With().Str("component", "leader").Str("holder", e.opts.Holder).Logger()
	for ctx.Err() == nil {
		epoch, err := e.acquire(ctx)
		if err != nil && ctx.Err() == nil {
			log.Warn().Err(err).Msg("Leader election failed; retrying")
		}
		if epoch == 0 {
			clock.Sleep(ctx, e.opts.Interval)
			continue
		}
		log.Info().Int64("epoch", epoch).Msg("This process leads: starting the consumers")
		e.epoch.Store(epoch)
		e.leading.Store(true)
		e.leadWhileHeld(ctx, epoch, lead, log)
		e.leading.Store(false)
		e.epoch.Store(0)
		log.Info().Int64("epoch", epoch).Msg("No longer leading: consumers stopped")
	}
}

const acquireQuery = `
	INSERT INTO leader_lease (name, holder, epoch, expires_at) VALUES ($1, $2, 1, $3)
	ON CONFLICT (name) DO UPDATE
	SET holder = excluded.holder, epoch = leader_lease.epoch + 1, expires_at = excluded.expires_at
	WHERE leader_lease.expires_at < $4
	RETURNING epoch`

// acquire takes the lease if it is free or has expired; the new epoch, or
// 0 when another process holds it.
func (e *Elector) acquire(ctx context.Context) (int64, error) {
	var epoch int64
	err := e.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		if e.db.Dialect == dbutil.Postgres {
			// A frozen leader's fenced write may hold the fence: wait a
			// bounded time (its session is ended by
			// idle_in_transaction_session_timeout).
			if _, err := e.db.Exec(ctx, "SET LOCAL lock_timeout = '2s'"); err != nil {
				return err
			}
			// The takeover waits for the fenced writes in flight, which hold
			// the fence shared (see Check), and holds it until it commits.
			if _, err := e.db.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", fenceLockKey); err != nil {
				return err
			}
		}
		now := time.Now()
		return e.db.QueryRow(ctx, acquireQuery, leaseName, e.opts.Holder, now.Add(e.opts.TTL).UnixMilli(), now.UnixMilli()).Scan(&epoch)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	} else if err != nil {
		return 0, fmt.Errorf("failed to take the leader lease: %w", err)
	}
	return epoch, nil
}

const (
	renewQuery   = `UPDATE leader_lease SET expires_at = $1 WHERE name = $2 AND holder = $3 AND epoch = $4`
	releaseQuery = `UPDATE leader_lease SET expires_at = 0 WHERE name = $1 AND holder = $2 AND epoch = $3`
)

// leadWhileHeld runs lead and renews the lease every interval. lead is
// cancelled when a renewal finds the lease taken (a standby took over while
// this process was frozen or cut off), or when renewals have failed for so
// long that the lease may have expired. The lease is released when lead
// returns, so a standby takes over at once after a clean stop.
func (e *Elector) leadWhileHeld(ctx context.Context, epoch int64, lead func(ctx context.Context), log zerolog.Logger) {
	leadCtx, cancel := context.WithCancel(WithEpoch(ctx, epoch))
	done := make(chan struct{})
	go func() {
		defer close(done)
		lead(leadCtx)
	}()
	ticker := time.NewTicker(e.opts.Interval)
	defer ticker.Stop()
	// Held until then for sure: renewals after it cannot be trusted.
	heldUntil := time.Now().Add(e.opts.TTL - e.opts.Interval)
loop:
	for {
		select {
		case <-done:
			break loop
		case <-ticker.C:
		}
		now := time.Now()
		if now.After(heldUntil) {
			// Frozen, or the database unreachable, for longer than the lease
			// is sure to be ours: another process may lead by now.
			log.Warn().Int64("epoch", epoch).Msg("Could not renew the leader lease in time; stepping down")
			break loop
		}
		renewCtx, cancelRenew := context.WithTimeout(ctx, e.opts.Interval)
		res, err := e.db.Exec(renewCtx, renewQuery, now.Add(e.opts.TTL).UnixMilli(), leaseName, e.opts.Holder, epoch)
		cancelRenew()
		if err != nil {
			if ctx.Err() == nil {
				log.Warn().Err(err).Msg("Failed to renew the leader lease")
			}
			continue
		}
		if n, _ := res.RowsAffected(); n != 1 {
			log.Warn().Int64("epoch", epoch).Msg("Another process took over the leader lease; stepping down")
			break loop
		}
		heldUntil = now.Add(e.opts.TTL - e.opts.Interval)
	}
	cancel()
	<-done
	releaseCtx, cancelRelease := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancelRelease()
	_, _ = e.db.Exec(releaseCtx, releaseQuery, leaseName, e.opts.Holder, epoch)
}

// Lease is the state of the consumers' lease.
type Lease struct {
	Holder    string    `json:"holder"`
	Epoch     int64     `json:"epoch"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Held reports whether the lease is held (not expired) at now.
func (l *Lease) Held(now time.Time) bool { return l != nil && now.Before(l.ExpiresAt) }

// Scan reads a leader_lease row (currentQuery).
func (l *Lease) Scan(row dbutil.Scannable) (*Lease, error) {
	var expires int64
	if err := row.Scan(&l.Holder, &l.Epoch, &expires); err != nil {
		return nil, err
	}
	l.ExpiresAt = time.UnixMilli(expires)
	return l, nil
}

const currentQuery = `SELECT holder, epoch, expires_at FROM leader_lease WHERE name = $1`

// Current reads the lease; nil when no process has ever led.
func Current(ctx context.Context, db *dbutil.Database) (*Lease, error) {
	l, err := dbutil.MakeQueryHelperSimple(db, func() *Lease { return &Lease{} }).QueryOne(ctx, currentQuery, leaseName)
	if err != nil {
		return nil, fmt.Errorf("failed to read the leader lease: %w", err)
	}
	return l, nil
}

type epochKey struct{}

// WithEpoch returns a context whose leader-only writes are fenced by epoch.
func WithEpoch(ctx context.Context, epoch int64) context.Context {
	return context.WithValue(ctx, epochKey{}, epoch)
}

// EpochFrom returns the epoch a context leads with.
func EpochFrom(ctx context.Context) (int64, bool) {
	epoch, ok := ctx.Value(epochKey{}).(int64)
	return epoch, ok
}

const checkQuery = `SELECT epoch FROM leader_lease WHERE name = $1`

// fenceLockKey is the PostgreSQL advisory lock of the fence: every fenced
// write holds it shared for its transaction, a takeover exclusively. An
// advisory lock, not a lock on the lease row: a row lock is written into
// the row (WAL, and a MultiXact when several writes hold it at once), which
// at hundreds of fenced writes a second cost the database more than the
// writes; and the holder's renewal, an UPDATE of the row, must not wait for
// them.
const fenceLockKey int64 = 0x4c45415345 // "LEASE"

// Check is the fence of a leader-only write. Called inside the write's
// database transaction (db.DoTxn), it confirms that the context's epoch
// still holds the lease, and keeps it so until the transaction ends: on
// PostgreSQL the transaction holds the fence lock shared first, so a
// takeover waits for the write to commit, and a write that starts after a
// takeover waits for it and then reads the new epoch (read committed: each
// statement sees what committed before it); a write that was frozen mid-way
// is cut off by the server after 5 s idle in its transaction. A context
// without an epoch (tools, tests of one part) is not fenced.
func Check(ctx context.Context, db *dbutil.Database) error {
	return CheckLocking(ctx, db, 0)
}

// CheckLocking is Check for a write that also serialises on an advisory
// transaction lock of its own (the event log's appends, lockKey): on
// PostgreSQL it takes that lock exclusively in the fence's statement, before
// the fence, one round trip less than taking it apart. The lock comes first,
// as it would in a statement before: a write waiting for it must not hold
// the fence shared meanwhile, or a takeover queued for the fence would stand
// between it and the lock's holder (a deadlock). The lock is taken without
// an epoch in ctx too (then nothing is fenced). lockKey 0: none.
func CheckLocking(ctx context.Context, db *dbutil.Database, lockKey int64) error {
	epoch, ok := EpochFrom(ctx)
	if db.Dialect == dbutil.Postgres {
		var err error
		switch {
		case ok && lockKey != 0:
			// PostgreSQL evaluates a target list in order: the lock, the
			// bound on idling, then the fence.
			_, err = db.Exec(ctx, `SELECT pg_advisory_xact_lock($1), set_config('idle_in_transaction_session_timeout', '5s', true), pg_advisory_xact_lock_shared($2)`, lockKey, fenceLockKey)
		case ok:
			// One round trip: the bound on idling, then the lock.
			_, err = db.Exec(ctx, `SELECT set_config('idle_in_transaction_session_timeout', '5s', true), pg_advisory_xact_lock_shared($1)`, fenceLockKey)
		case lockKey != 0:
			_, err = db.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockKey)
		}
		if err != nil && lockKey != 0 {
			return fmt.Errorf("failed to take lock %#x and the fence: %w", lockKey, err)
		} else if err != nil {
			return fmt.Errorf("failed to take the fence: %w", err)
		}
	}
	if !ok {
		return nil
	}
	var current int64
	err := db.QueryRow(ctx, checkQuery, leaseName).Scan(&current)
	if errors.Is(err, sql.ErrNoRows) || err == nil && current != epoch {
		return fmt.Errorf("%w (this process has epoch %d, the lease %d)", ErrFenced, epoch, current)
	} else if err != nil {
		return fmt.Errorf("failed to check the leader lease: %w", err)
	}
	return nil
}

// Fenced runs fn, a leader-only write, in one database transaction that
// first runs Check: a leader back from a freeze must not write its stale
// view over its successor's. A context without an epoch is not fenced; fn
// runs as it is.
func Fenced(ctx context.Context, db *dbutil.Database, fn func(ctx context.Context) error) error {
	if _, ok := EpochFrom(ctx); !ok {
		return fn(ctx)
	}
	return db.DoTxn(ctx, nil, func(ctx context.Context) error {
		if err := Check(ctx, db); err != nil {
			return err
		}
		return fn(ctx)
	})
}

// Exec runs one leader-only statement, Fenced, and returns how many rows it
// changed.
func Exec(ctx context.Context, db *dbutil.Database, query string, args ...any) (int64, error) {
	var n int64
	err := Fenced(ctx, db, func(ctx context.Context) error {
		res, err := db.Exec(ctx, query, args...)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, err
}

// Guard is the epoch check as a condition of a leader-only statement that
// is one statement: its WHERE adds the returned condition (its parameters
// numbered from first, args appended to the statement's), one round trip
// instead of a fenced transaction of four. It holds no fence: it reads the
// epoch as the statement starts, so a takeover committing while the
// statement runs does not stop it. It suits only writes that are right
// whoever leads, made fenced so a stale leader stops soon: the delete of
// rows this process has delivered. A stale leader's statement changes
// nothing rather than failing. Without an epoch in ctx the condition is
// always true.
func Guard(ctx context.Context, first int) (condition string, args []any) {
	epoch, ok := EpochFrom(ctx)
	if !ok {
		return "1 = 1", nil
	}
	return fmt.Sprintf("EXISTS (SELECT 1 FROM leader_lease WHERE name = $%d AND epoch = $%d)", first, first+1), []any{leaseName, epoch}
}
