package leader

import (
	"context"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"

	"github.com/daarion/matrix-bridge/database"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

func TestMain(m *testing.M) { os.Exit(testrig.RunTests(m)) }

func open(t *testing.T, tdb testrig.TestDatabase) *dbutil.Database {
	t.Helper()
	db, err := database.Open(context.Background(), database.Target{Type: tdb.Type, URI: tdb.URI}, database.PoolOptions{}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

type candidate struct {
	elector *Elector
	active  atomic.Int32 // lead functions running
	starts  atomic.Int32 // lead functions started
	cancel  context.CancelFunc
	done    chan struct{}
}

func start(db *dbutil.Database) *candidate {
	c := &candidate{elector: New(db, 100*time.Millisecond), done: make(chan struct{})}
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

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Two processes on one PostgreSQL: one leads; when it goes, the other takes over.
func TestOneLeaderAndFailover(t *testing.T) {
	tdb := testrig.NewTestDatabase(t, testrig.Postgres)
	dbA, dbB := open(t, tdb), open(t, tdb) // two processes' pools
	a, b := start(dbA), start(dbB)
	defer a.stop()
	defer b.stop()
	waitUntil(t, "a leader", func() bool { return a.elector.Leading() || b.elector.Leading() })
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
	waitUntil(t, "the standby to take over", func() bool { return standby.elector.Leading() && standby.active.Load() == 1 })
}

// The leader's session is killed under it (a network cut, a DBA's
// pg_terminate_backend): it stops leading, and someone leads again.
func TestLostSessionStopsTheLeader(t *testing.T) {
	tdb := testrig.NewTestDatabase(t, testrig.Postgres)
	dbA, dbB, admin := open(t, tdb), open(t, tdb), open(t, tdb)
	a := start(dbA)
	defer a.stop()
	waitUntil(t, "a to lead", func() bool { return a.elector.Leading() })
	b := start(dbB)
	defer b.stop()
	// A bigint advisory key shows in pg_locks as classid (high half) and objid (low half).
	key := lockKey
	var killed int
	if err := admin.QueryRow(context.Background(),
		`SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = $1 AND objid = $2) AS t`,
		int64(uint32(key>>32)), int64(uint32(key))).Scan(&killed); err != nil || killed != 1 {
		t.Fatalf("terminated %d sessions holding the lock (%v), want 1", killed, err)
	}
	waitUntil(t, "leadership to be taken again", func() bool {
		return a.starts.Load()+b.starts.Load() == 2 && a.active.Load()+b.active.Load() == 1
	})
}

func TestSQLiteAlwaysLeads(t *testing.T) {
	db := open(t, testrig.NewTestDatabase(t, testrig.SQLite))
	c := start(db)
	waitUntil(t, "the only process to lead", func() bool { return c.elector.Leading() && c.active.Load() == 1 })
	c.stop()
	if c.elector.Leading() || c.active.Load() != 0 {
		t.Error("still leading after stop")
	}
}
