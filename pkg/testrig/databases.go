package testrig

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/lib/pq"
	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	_ "go.mau.fi/util/dbutil/litestream"

	"github.com/daarion/matrix-bridge/database"
)

// Database kinds accepted by NewTestDatabase.
const (
	Postgres = "postgres"
	SQLite   = "sqlite"
)

// Database kinds that ForEachDatabase runs, in order.
var DatabaseKinds = []string{Postgres, SQLite}

// SQLiteDriver is the database/sql driver (and dbutil dialect type) used for
// SQLite: foreign keys on, WAL, synchronous=FULL, busy_timeout=5s. It is
// registered by go.mau.fi/util/dbutil/litestream (cgo only).
const SQLiteDriver = "sqlite3-fk-wal-fullsync"

var shared struct {
	once    sync.Once
	cluster *PostgresCluster
	err     error
	started atomic.Bool
}

// SharedPostgres returns the cluster shared by the whole test binary,
// starting it on first use. RunTests removes it when the tests are done.
func SharedPostgres() (*PostgresCluster, error) {
	shared.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		shared.cluster, shared.err = StartPostgres(ctx, "")
		if shared.err != nil {
			shared.err = fmt.Errorf("starting the shared test PostgreSQL: %w", shared.err)
		} else {
			shared.started.Store(true)
		}
	})
	return shared.cluster, shared.err
}

// RunTests runs the tests and then removes the shared PostgreSQL cluster, if
// one was started. Use it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(testrig.RunTests(m)) }
func RunTests(m *testing.M) int {
	code := m.Run()
	if shared.started.Load() {
		if err := shared.cluster.Remove(); err != nil {
			fmt.Fprintf(os.Stderr, "testrig: removing the shared PostgreSQL cluster: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// TestDatabase is a fresh, empty database for one test.
type TestDatabase struct {
	// Name is the kind: "postgres" or "sqlite".
	Name string
	// Type is the database/sql driver name and dbutil dialect type:
	// "postgres" or "sqlite3-fk-wal-fullsync".
	Type string
	// URI is the DSN to pass with Type to sql.Open or dbutil.NewWithDialect.
	URI string
}

// URL is the database as the bridge's DATABASE_URL names it.
func (d TestDatabase) URL() string {
	if d.Name == SQLite {
		return "sqlite:" + d.URI
	}
	return d.URI
}

var dbCounter atomic.Int64

// NewTestDatabase returns a fresh, empty database of the given kind
// ("postgres" or "sqlite"): a new database with a unique name in the shared
// cluster, or a new file in t.TempDir(). It fails the test if that is not
// possible; it never skips.
func NewTestDatabase(t testing.TB, kind string) TestDatabase {
	t.Helper()
	switch kind {
	case Postgres:
		c, err := SharedPostgres()
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("t%d_%s", dbCounter.Add(1), sanitizeDBName(t.Name()))
		if len(name) > 63 {
			name = name[:63]
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		dsn, err := c.CreateDatabase(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return TestDatabase{Name: Postgres, Type: "postgres", URI: dsn}
	case SQLite:
		if !slices.Contains(sql.Drivers(), SQLiteDriver) {
			t.Fatalf("database/sql driver %q is not registered: go.mau.fi/util/dbutil/litestream "+
				"registers it only when built with cgo (CGO_ENABLED=1 and a C compiler)", SQLiteDriver)
		}
		path := filepath.Join(t.TempDir(), fmt.Sprintf("test%d.db", dbCounter.Add(1)))
		return TestDatabase{Name: SQLite, Type: SQLiteDriver, URI: SQLiteURI(path)}
	default:
		t.Fatalf("testrig.NewTestDatabase: unknown database kind %q (want %q or %q)", kind, Postgres, SQLite)
		panic("unreachable")
	}
}

// SQLiteURI returns a file: URI for the SQLite database at path, with
// _txlock=immediate so that write transactions take the write lock at BEGIN
// instead of failing with SQLITE_BUSY when they first write.
func SQLiteURI(path string) string {
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	// EscapedPath escapes '?', '#', '%' and spaces, which SQLite decodes.
	return "file:" + (&url.URL{Path: filepath.ToSlash(path)}).EscapedPath() + "?_txlock=immediate"
}

func sanitizeDBName(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

// ForEachDatabase runs fn as the subtests "postgres" and "sqlite", each with a
// fresh, empty database.
func ForEachDatabase(t *testing.T, fn func(t *testing.T, db TestDatabase)) {
	t.Helper()
	for _, kind := range DatabaseKinds {
		t.Run(kind, func(t *testing.T) {
			fn(t, NewTestDatabase(t, kind))
		})
	}
}

// OpenDatabase opens tdb as the bridge does (database.Open: the schema
// brought up to date, the default pool) and closes it at the end of the
// test. Each call is a pool of its own, as another process would have.
func OpenDatabase(t testing.TB, tdb TestDatabase) *dbutil.Database {
	t.Helper()
	db, err := database.Open(context.Background(), database.Target{Type: tdb.Type, URI: tdb.URI}, database.PoolOptions{}, zerolog.Nop())
	if err != nil {
		t.Fatalf("opening the %s test database: %v", tdb.Name, err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// OpenMautrixDatabase opens tdb as the bridge opens it for mautrix's stores
// (database.OpenForMautrix beside database.Open: on PostgreSQL a pool of its
// own) and closes it at the end of the test.
func OpenMautrixDatabase(t testing.TB, tdb TestDatabase) *dbutil.Database {
	t.Helper()
	target := database.Target{Type: tdb.Type, URI: tdb.URI}
	db := OpenDatabase(t, tdb)
	stores, err := database.OpenForMautrix(context.Background(), target, db, database.PoolOptions{}, zerolog.Nop())
	if err != nil {
		t.Fatalf("opening the %s test database for mautrix's stores: %v", tdb.Name, err)
	}
	if stores != db {
		t.Cleanup(func() { _ = stores.Close() })
	}
	return stores
}
