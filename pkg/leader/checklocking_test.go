package leader

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.mau.fi/util/dbutil"

	"github.com/daarion/matrix-bridge/pkg/testrig"
)

const testLockKey int64 = 0x54455354 // "TEST"

// leadingPool returns a pool on a fresh PostgreSQL database that holds the
// lease, with its epoch, and another pool on the same database.
func leadingPool(t *testing.T) (db, other *dbutil.Database, epoch int64) {
	tdb := testrig.NewTestDatabase(t, testrig.Postgres)
	db, other = testrig.OpenDatabase(t, tdb), testrig.OpenDatabase(t, tdb)
	epoch, err := New(db, Options{TTL: time.Minute, Holder: "holder"}).acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return db, other, epoch
}

// CheckLocking holds its lock exclusively, and the fence shared only with an
// epoch, until the transaction ends; an old epoch is fenced.
func TestCheckLockingHoldsItsLockAndTheFence(t *testing.T) {
	ctx := context.Background()
	db, other, epoch := leadingPool(t)
	// free tells whether another session could take key exclusively now.
	free := func(key int64) bool {
		conn, err := other.RawDB.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		var took bool
		if err := conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&took); err != nil {
			t.Fatal(err)
		}
		if took {
			_, _ = conn.ExecContext(ctx, `SELECT pg_advisory_unlock($1)`, key)
		}
		return took
	}
	for _, tc := range []struct {
		name              string
		ctx               context.Context
		lockKey           int64
		wantLock, wantFen bool
		wantErr           error
	}{
		{"epoch and lock", WithEpoch(ctx, epoch), testLockKey, true, true, nil},
		{"epoch only", WithEpoch(ctx, epoch), 0, false, true, nil},
		{"lock only, not fenced", ctx, testLockKey, true, false, nil},
		{"an old epoch", WithEpoch(ctx, epoch-1), testLockKey, true, true, ErrFenced},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := db.DoTxn(tc.ctx, nil, func(ctx context.Context) error {
				err := CheckLocking(ctx, db, tc.lockKey)
				if tc.lockKey != 0 {
					if held := !free(tc.lockKey); held != tc.wantLock {
						t.Errorf("lock held: %v, want %v", held, tc.wantLock)
					}
				}
				if held := !free(fenceLockKey); held != tc.wantFen {
					t.Errorf("fence held: %v, want %v", held, tc.wantFen)
				}
				return err
			})
			if !errors.Is(err, tc.wantErr) && (tc.wantErr != nil || err != nil) {
				t.Errorf("CheckLocking: %v, want %v", err, tc.wantErr)
			}
			if !free(testLockKey) || !free(fenceLockKey) {
				t.Error("a lock outlived its transaction")
			}
		})
	}
}

// The lock comes before the fence: a write waiting for the lock does not
// hold the fence meanwhile (a takeover queued for the fence would stand
// between it and the lock's holder).
func TestCheckLockingWaitsForItsLockBeforeTheFence(t *testing.T) {
	ctx := context.Background()
	db, other, epoch := leadingPool(t)
	holder, err := other.RawDB.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	if _, err := holder.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, testLockKey); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- db.DoTxn(WithEpoch(ctx, epoch), nil, func(ctx context.Context) error {
			return CheckLocking(ctx, db, testLockKey)
		})
	}()
	testrig.Eventually(t, "the write to wait for the lock", 10*time.Second, func() bool {
		var waiting int
		_ = other.RawDB.QueryRow(`SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`).Scan(&waiting)
		return waiting == 1
	})
	var fenceHeld int
	if err := other.RawDB.QueryRow(`SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = $1`, fenceLockKey&0xffffffff).Scan(&fenceHeld); err != nil {
		t.Fatal(err)
	}
	if fenceHeld != 0 {
		t.Error("the write holds the fence while it waits for its lock")
	}
	if _, err := holder.ExecContext(ctx, `SELECT pg_advisory_unlock($1)`, testLockKey); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("the write, once the lock was let go: %v", err)
	}
}
