package leader

import (
	"context"
	"errors"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"go.mau.fi/util/dbutil"

	"github.com/daarion/matrix-bridge/pkg/testrig"
)

func TestMain(m *testing.M) { os.Exit(testrig.RunTests(m)) }

type candidate struct {
	elector *Elector
	active  atomic.Int32 // lead functions running
	starts  atomic.Int32 // lead functions started
	cancel  context.CancelFunc
	done    chan struct{}
}

func start(db *dbutil.Database) *candidate {
	c := &candidate{elector: New(db, Options{TTL: time.Second, Interval: 100 * time.Millisecond}), done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	go func() {
		defer close(c.done)
		c.elector.Run(ctx, func(ctx context.Context) {
			c.active.Add(1)
			c.starts.Add(1)
			<-ctx.Done()
			c.active.Add(-1)
		})
	}()
	return c
}

func (c *candidate) stop() { c.cancel(); <-c.done }

// Two processes on one PostgreSQL: one leads; when it goes, the other takes over.
func TestOneLeaderAndFailover(t *testing.T) {
	tdb := testrig.NewTestDatabase(t, testrig.Postgres)
	dbA, dbB := testrig.OpenDatabase(t, tdb), testrig.OpenDatabase(t, tdb) // two processes' pools
	a, b := start(dbA), start(dbB)
	defer a.stop()
	defer b.stop()
	testrig.Eventually(t, "a leader", 10*time.Second, func() bool { return a.elector.Leading() || b.elector.Leading() })
	// For a while, never both.
	for i := 0; i < 20; i++ {
		if a.active.Load()+b.active.Load() > 1 {
			t.Fatal("two leaders at once")
		}
		time.Sleep(20 * time.Millisecond)
	}
	leader, standby := a, b
	if b.elector.Leading() {
		leader, standby = b, a
	}
	// The leader stops (its process ends): the standby takes over.
	leader.stop()
	testrig.Eventually(t, "the standby to take over", 10*time.Second, func() bool { return standby.elector.Leading() && standby.active.Load() == 1 })
}

// A leader that stops renewing (its host froze, or was cut off) loses the
// lease once it expires: a standby takes over with a higher epoch, and every
// write fenced with the old epoch fails, while the new epoch's succeed.
func TestExpiredLeaseIsTakenOverAndTheOldEpochIsFenced(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx := context.Background()
		db := testrig.OpenDatabase(t, tdb)
		// The frozen leader: it took the lease and never renews it.
		frozen := New(db, Options{TTL: 500 * time.Millisecond, Interval: 100 * time.Millisecond, Holder: "frozen"})
		oldEpoch, err := frozen.acquire(ctx)
		if err != nil || oldEpoch == 0 {
			t.Fatalf("acquire: %d %v", oldEpoch, err)
		}
		oldCtx := WithEpoch(ctx, oldEpoch)
		if err = fencedWrite(oldCtx, db); err != nil {
			t.Fatalf("the leader's own write: %v", err)
		}
		// The standby cannot take an unexpired lease...
		standby := start(db)
		defer standby.stop()
		if epoch, err := standby.elector.acquire(ctx); err != nil || epoch != 0 {
			t.Fatalf("took a held lease: %d %v", epoch, err)
		}
		// ...and takes it once it has expired.
		testrig.Eventually(t, "the standby to take over", 10*time.Second, func() bool { return standby.elector.Leading() })
		newEpoch := standby.elector.Epoch()
		if newEpoch <= oldEpoch {
			t.Fatalf("new epoch %d, old %d", newEpoch, oldEpoch)
		}
		if err = fencedWrite(oldCtx, db); !errors.Is(err, ErrFenced) {
			t.Errorf("a write with the old epoch: %v, want ErrFenced", err)
		}
		if err = fencedWrite(WithEpoch(ctx, newEpoch), db); err != nil {
			t.Errorf("a write with the new epoch: %v", err)
		}
		lease, err := Current(ctx, db)
		if err != nil || lease.Holder != standby.elector.Holder() || lease.Epoch != newEpoch || !lease.Held(time.Now()) {
			t.Errorf("lease %+v (%v)", lease, err)
		}
	})
}

// A leader whose lease was taken while it was away steps down at its next
// renewal.
func TestLeaderStepsDownWhenItsLeaseWasTaken(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		db := testrig.OpenDatabase(t, tdb)
		a := start(db)
		defer a.stop()
		testrig.Eventually(t, "a to lead", 10*time.Second, func() bool { return a.elector.Leading() && a.active.Load() == 1 })
		if _, err := db.Exec(context.Background(), `UPDATE leader_lease SET holder = 'usurper', epoch = epoch + 1, expires_at = $1`,
			time.Now().Add(time.Hour).UnixMilli()); err != nil {
			t.Fatal(err)
		}
		testrig.Eventually(t, "a to step down", 10*time.Second, func() bool { return !a.elector.Leading() && a.active.Load() == 0 })
	})
}

// fencedWrite is a leader-only write: the fence, then a change, in one
// transaction.
func fencedWrite(ctx context.Context, db *dbutil.Database) error {
	return db.DoTxn(ctx, nil, func(ctx context.Context) error {
		if err := Check(ctx, db); err != nil {
			return err
		}
		_, err := db.Exec(ctx, `UPDATE leader_lease SET holder = holder WHERE name = $1`, leaseName)
		return err
	})
}

// Exec writes with the lease's epoch or with none (not fenced), and refuses,
// changing nothing, with an older one.
func TestExecIsFenced(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx := context.Background()
		db := testrig.OpenDatabase(t, tdb)
		epoch, err := New(db, Options{Holder: "exec"}).acquire(ctx)
		if err != nil || epoch == 0 {
			t.Fatalf("acquire: %d %v", epoch, err)
		}
		const touch = `UPDATE leader_lease SET holder = $2 WHERE name = $1`
		if n, err := Exec(WithEpoch(ctx, epoch), db, touch, leaseName, "exec"); err != nil || n != 1 {
			t.Errorf("with the lease's epoch: %d rows, %v", n, err)
		}
		if n, err := Exec(ctx, db, touch, leaseName, "exec"); err != nil || n != 1 {
			t.Errorf("without an epoch: %d rows, %v", n, err)
		}
		if n, err := Exec(WithEpoch(ctx, epoch-1), db, touch, leaseName, "stale"); !errors.Is(err, ErrFenced) || n != 0 {
			t.Errorf("with an old epoch: %d rows, %v, want ErrFenced", n, err)
		}
		if lease, err := Current(ctx, db); err != nil || lease.Holder != "exec" {
			t.Errorf("after the fenced write: %+v (%v)", lease, err)
		}
	})
}

func TestSQLiteAlwaysLeads(t *testing.T) {
	db := testrig.OpenDatabase(t, testrig.NewTestDatabase(t, testrig.SQLite))
	c := start(db)
	testrig.Eventually(t, "the only process to lead", 10*time.Second, func() bool { return c.elector.Leading() && c.active.Load() == 1 })
	c.stop()
	if c.elector.Leading() || c.active.Load() != 0 {
		t.Error("still leading after stop")
	}
}

// Before any process has led there is no lease: Current answers nil.
func TestCurrentBeforeAnyLeader(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		if lease, err := Current(context.Background(), testrig.OpenDatabase(t, tdb)); lease != nil || err != nil {
			t.Errorf("lease %+v (%v), want none", lease, err)
		}
	})
}

// On PostgreSQL a fenced write in flight holds the fence (an advisory lock,
// shared): a takeover waits for it to commit (so no write of the old epoch lands after the new
// epoch begins), but the holder's renewal does not (so a long indexing
// commit cannot make the leader miss its renewals and step down).
func TestTakeoverWaitsForAFencedWriteButRenewalDoesNot(t *testing.T) {
	tdb := testrig.NewTestDatabase(t, testrig.Postgres)
	ctx := context.Background()
	db, standbyDB := testrig.OpenDatabase(t, tdb), testrig.OpenDatabase(t, tdb)
	holder := New(db, Options{TTL: time.Minute, Interval: 100 * time.Millisecond, Holder: "holder"})
	epoch, err := holder.acquire(ctx)
	if err != nil || epoch == 0 {
		t.Fatalf("acquire: %d %v", epoch, err)
	}

	checked, release, written := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		written <- db.DoTxn(WithEpoch(ctx, epoch), nil, func(ctx context.Context) error {
			if err := Check(ctx, db); err != nil {
				return err
			}
			close(checked)
			<-release
			_, err := db.Exec(ctx, `INSERT INTO consumer_cursor (name, position, updated_at) VALUES ('fenced', 1, 0)`)
			return err
		})
	}()
	<-checked

	// The renewal goes through at once; with a lock wait it would time out.
	err = standbyDB.DoTxn(ctx, nil, func(ctx context.Context) error {
		if _, err := standbyDB.Exec(ctx, "SET LOCAL lock_timeout = '300ms'"); err != nil {
			return err
		}
		_, err := standbyDB.Exec(ctx, renewQuery, time.Now().Add(time.Minute).UnixMilli(), leaseName, "holder", epoch)
		return err
	})
	if err != nil {
		t.Fatalf("the renewal waited for the fenced write: %v", err)
	}

	// The lease expires; a standby's takeover waits for the write.
	if _, err = standbyDB.Exec(ctx, `UPDATE leader_lease SET expires_at = 0`); err != nil {
		t.Fatal(err)
	}
	standby := New(standbyDB, Options{TTL: time.Minute, Interval: 100 * time.Millisecond, Holder: "standby"})
	took := make(chan int64, 1)
	go func() {
		e, err := standby.acquire(ctx)
		if err != nil {
			t.Errorf("takeover: %v", err)
		}
		took <- e
	}()
	testrig.Eventually(t, "the takeover to wait for the lease row", 10*time.Second, func() bool {
		var waiting int
		_ = db.RawDB.QueryRow(`SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%pg_advisory_xact_lock(%'`).Scan(&waiting)
		return waiting == 1
	})
	close(release)
	if err = <-written; err != nil {
		t.Fatalf("the fenced write, checked before the takeover: %v", err)
	}
	if e := <-took; e != epoch+1 {
		t.Fatalf("the takeover took epoch %d, want %d", e, epoch+1)
	}
	if err = fencedWrite(WithEpoch(ctx, epoch), db); !errors.Is(err, ErrFenced) {
		t.Errorf("a write of the old epoch after the takeover: %v, want ErrFenced", err)
	}
}

// A guarded statement changes rows for the lease's epoch (and without one),
// none for an old epoch.
func TestGuardFencesOneStatement(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx := context.Background()
		db := testrig.OpenDatabase(t, tdb)
		epoch, err := New(db, Options{Holder: "guard"}).acquire(ctx)
		if err != nil || epoch == 0 {
			t.Fatalf("acquire: %d %v", epoch, err)
		}
		touch := func(ctx context.Context, holder string) int64 {
			t.Helper()
			cond, args := Guard(ctx, 3)
			res, err := db.Exec(ctx, `UPDATE leader_lease SET holder = $2 WHERE name = $1 AND `+cond, append([]any{leaseName, holder}, args...)...)
			if err != nil {
				t.Fatal(err)
			}
			n, _ := res.RowsAffected()
			return n
		}
		for _, tc := range []struct {
			name string
			ctx  context.Context
			want int64
		}{
			{"the lease's epoch", WithEpoch(ctx, epoch), 1},
			{"no epoch", ctx, 1},
			{"an old epoch", WithEpoch(ctx, epoch-1), 0},
		} {
			if n := touch(tc.ctx, "guard"); n != tc.want {
				t.Errorf("%s: %d rows changed, want %d", tc.name, n, tc.want)
			}
		}
	})
}
