package testrig

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mau.fi/util/dbutil"
)

func TestMain(m *testing.M) { os.Exit(RunTests(m)) }

func TestPostgresBinDir(t *testing.T) {
	d, err := PostgresBinDir()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("using %s", d)

	t.Setenv("PG_BINDIR", filepath.Join(t.TempDir(), "nope"))
	if _, err := PostgresBinDir(); err == nil || !strings.Contains(err.Error(), "PG_BINDIR") {
		t.Fatalf("bogus PG_BINDIR: got err %v", err)
	}
	t.Setenv("PG_BINDIR", d)
	if got, err := PostgresBinDir(); err != nil || got != d {
		t.Fatalf("PG_BINDIR=%s: got %q, %v", d, got, err)
	}
}

func TestPostgresCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	t0 := time.Now()
	c, err := StartPostgres(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("StartPostgres: %v (port %d, dir %s)", time.Since(t0), c.Port, c.Dir)
	defer func() {
		t0 := time.Now()
		if err := c.Remove(); err != nil {
			t.Error(err)
		}
		t.Logf("Remove: %v", time.Since(t0))
		if _, err := os.Stat(c.Dir); !os.IsNotExist(err) {
			t.Errorf("cluster dir still there after Remove: %v", err)
		}
	}()

	if _, err := os.Stat(filepath.Join(c.SocketDir, fmt.Sprintf(".s.PGSQL.%d", c.Port))); err != nil {
		t.Errorf("unix socket: %v", err)
	}

	var dsns []string
	for _, name := range []string{"alpha", "beta"} {
		t0 := time.Now()
		dsn, err := c.CreateDatabase(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("CreateDatabase(%s): %v -> %s", name, time.Since(t0), dsn)
		want := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.Port, name)
		if dsn != want {
			t.Errorf("DSN = %q, want %q", dsn, want)
		}
		dsns = append(dsns, dsn)
	}
	if _, err := c.CreateDatabase(ctx, "alpha"); err == nil {
		t.Error("creating alpha twice succeeded")
	}

	alpha, err := sql.Open("postgres", dsns[0])
	if err != nil {
		t.Fatal(err)
	}
	defer alpha.Close()
	beta, err := sql.Open("postgres", dsns[1])
	if err != nil {
		t.Fatal(err)
	}
	defer beta.Close()

	for setting, want := range map[string]string{
		"fsync":              "on",
		"synchronous_commit": "on",
		"full_page_writes":   "on",
		"max_connections":    "200",
		"listen_addresses":   "127.0.0.1",
	} {
		var got string
		if err := alpha.QueryRowContext(ctx, "SHOW "+setting).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s = %q, want %q", setting, got, want)
		}
	}

	mustExec(t, alpha, "CREATE TABLE things (id BIGINT PRIMARY KEY, name TEXT NOT NULL)")
	mustExec(t, alpha, "INSERT INTO things (id, name) VALUES (1, 'one'), (2, 'two')")
	mustExec(t, beta, "CREATE TABLE things (id BIGINT PRIMARY KEY, name TEXT NOT NULL)")
	mustExec(t, beta, "INSERT INTO things (id, name) VALUES (7, 'seven')")
	checkThings(t, alpha, "1:one,2:two")
	checkThings(t, beta, "7:seven")

	t0 = time.Now()
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("Stop: %v", time.Since(t0))
	if err := alpha.PingContext(ctx); err == nil {
		t.Fatal("ping succeeded while the cluster is stopped")
	}
	if _, err := alpha.ExecContext(ctx, "SELECT 1"); err == nil {
		t.Fatal("query succeeded while the cluster is stopped")
	}
	if _, err := c.CreateDatabase(ctx, "gamma"); err == nil {
		t.Fatal("CreateDatabase succeeded while the cluster is stopped")
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}

	t0 = time.Now()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("Start after Stop: %v", time.Since(t0))
	if err := c.Start(ctx); err != nil {
		t.Fatalf("Start while running: %v", err)
	}
	// database/sql discards the dead pooled connections and reconnects.
	checkThings(t, alpha, "1:one,2:two")
	checkThings(t, beta, "7:seven")
	mustExec(t, alpha, "INSERT INTO things (id, name) VALUES (3, 'three')")
	checkThings(t, alpha, "1:one,2:two,3:three")

	// Concurrent creation, as parallel tests on the shared cluster do.
	t0 = time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			_, err := c.CreateDatabase(ctx, fmt.Sprintf("par%d", i))
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	t.Logf("8 concurrent CreateDatabase: %v", time.Since(t0))
}

func mustExec(t *testing.T, db *sql.DB, q string) {
	t.Helper()
	if _, err := db.Exec(q); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func checkThings(t *testing.T, db *sql.DB, want string) {
	t.Helper()
	rows, err := db.Query("SELECT id, name FROM things ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var id int64
		var name string
		if err := rows.Scan(&id, &name); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%d:%s", id, name))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if g := strings.Join(got, ","); g != want {
		t.Fatalf("things = %s, want %s", g, want)
	}
}

func TestForEachDatabase(t *testing.T) {
	var seen []string
	ForEachDatabase(t, func(t *testing.T, tdb TestDatabase) {
		seen = append(seen, tdb.Name)
		t.Logf("%s: type %s, uri %s", tdb.Name, tdb.Type, tdb.URI)
		db, err := dbutil.NewWithDialect(tdb.URI, tdb.Type)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		ctx := context.Background()

		wantDialect := map[string]dbutil.Dialect{Postgres: dbutil.Postgres, SQLite: dbutil.SQLite}[tdb.Name]
		if db.Dialect != wantDialect {
			t.Errorf("dialect = %v, want %v", db.Dialect, wantDialect)
		}
		if _, err := db.Exec(ctx, "CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER NOT NULL)"); err != nil {
			t.Fatal(err)
		}
		err = db.DoTxn(ctx, nil, func(ctx context.Context) error {
			for i, k := range []string{"a", "b", "c"} {
				if _, err := db.Exec(ctx, "INSERT INTO kv (k, v) VALUES ($1, $2)", k, i+1); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		var n, sum int
		if err := db.QueryRow(ctx, "SELECT COUNT(*), SUM(v) FROM kv").Scan(&n, &sum); err != nil {
			t.Fatal(err)
		}
		if n != 3 || sum != 6 {
			t.Errorf("count, sum = %d, %d; want 3, 6", n, sum)
		}

		if tdb.Name == SQLite {
			// The driver's connect hook must have run.
			for pragma, want := range map[string]string{"foreign_keys": "1", "journal_mode": "wal", "synchronous": "2"} {
				var got string
				if err := db.QueryRow(ctx, "PRAGMA "+pragma).Scan(&got); err != nil {
					t.Fatal(err)
				}
				if got != want {
					t.Errorf("PRAGMA %s = %s, want %s", pragma, got, want)
				}
			}
		}
	})
	if strings.Join(seen, ",") != "postgres,sqlite" {
		t.Errorf("ran %v, want [postgres sqlite]", seen)
	}

	// Two databases of the same kind are distinct and empty.
	for _, kind := range DatabaseKinds {
		a, b := NewTestDatabase(t, kind), NewTestDatabase(t, kind)
		if a.URI == b.URI {
			t.Errorf("%s: two test databases share URI %s", kind, a.URI)
		}
	}
}

func TestSQLiteURI(t *testing.T) {
	got := SQLiteURI("/tmp/a b#c%d/x.db")
	want := "file:/tmp/a%20b%23c%25d/x.db?_txlock=immediate"
	if got != want {
		t.Errorf("SQLiteURI = %q, want %q", got, want)
	}
	// And the driver opens exactly that path.
	dir := filepath.Join(t.TempDir(), "we?ird #dir %41")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "x.db")
	db, err := sql.Open(SQLiteDriver, SQLiteURI(path))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("CREATE TABLE t (x INTEGER)"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("database file not at %s: %v", path, err)
	}
}
