// Package database opens the bridge's database (PostgreSQL or SQLite) and
// brings its schema up to date.
package database

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"

	// Drivers: lib/pq registers "postgres"; litestream registers the SQLite
	// variants with foreign keys, WAL and the synchronous level we ask for.
	_ "github.com/lib/pq"
	_ "go.mau.fi/util/dbutil/litestream"

	"github.com/daarion/matrix-bridge/database/upgrades"
)

// SQLiteDriver is the SQLite driver variant used: WAL with synchronous=FULL,
// so a transaction acknowledged to the homeserver survives a power loss too,
// not only a crash of the bridge.
const SQLiteDriver = "sqlite3-fk-wal-fullsync"

// Target is a parsed DATABASE_URL: the dbutil driver type and the URI for it.
type Target struct {
	Type string
	URI  string
}

// Dialect names the SQL dialect of the target: "postgres" or "sqlite".
func (t Target) Dialect() string {
	if t.Type == "postgres" {
		return "postgres"
	}
	return "sqlite"
}

// ParseURL turns a DATABASE_URL (`postgres://…`, `postgresql://…` or
// `sqlite:PATH`) into a driver type and URI.
func ParseURL(raw string) (Target, error) {
	switch {
	case strings.HasPrefix(raw, "postgres://"), strings.HasPrefix(raw, "postgresql://"):
		if _, err := url.Parse(raw); err != nil {
			return Target{}, fmt.Errorf("invalid PostgreSQL URL: %w", err)
		}
		return Target{Type: "postgres", URI: raw}, nil
	case strings.HasPrefix(raw, "sqlite:"):
		path := strings.TrimPrefix(strings.TrimPrefix(raw, "sqlite:"), "//")
		if path == "" {
			return Target{}, fmt.Errorf("sqlite URL needs a path, as in sqlite:daarion-bridge.db")
		}
		uri := path
		if !strings.HasPrefix(uri, "file:") {
			uri = "file:" + uri
		}
		// Write transactions take SQLite's write lock up front, so two writers
		// queue instead of failing with SQLITE_BUSY on lock upgrade.
		if !strings.Contains(uri, "_txlock=") {
			if strings.Contains(uri, "?") {
				uri += "&_txlock=immediate"
			} else {
				uri += "?_txlock=immediate"
			}
		}
		return Target{Type: SQLiteDriver, URI: uri}, nil
	default:
		return Target{}, fmt.Errorf("unsupported database URL %q: use postgres://… or sqlite:PATH", redactURL(raw))
	}
}

// redactURL hides the password of a URL so it can go into an error message.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		if strings.Contains(raw, "@") {
			return "(unparseable URL)"
		}
		return raw
	}
	return u.Redacted()
}

// DefaultMaxIdleConns is the idle pool size when the config leaves it 0.
const DefaultMaxIdleConns = 16

// PoolOptions sizes the connection pool.
type PoolOptions struct {
	MaxOpenConns int
	MaxIdleConns int
}

// MautrixMaxIdleConns is the idle size of the pool mautrix's stores get on
// PostgreSQL (see OpenForMautrix): they write on state changes and key
// traffic, not per event.
const MautrixMaxIdleConns = 4

// Open connects to the target and runs the schema upgrades. On PostgreSQL
// the pool sends a statement's parameters in the same round trip as the
// statement (lib/pq's binary_parameters, unless the URL sets it): without
// it lib/pq asks the server to describe every parameterised statement first
// and waits for the answer, two round trips each, which was most of the
// indexer's and the deliverer's time per statement. It changes how []byte
// parameters travel (as binary data), which the bridge's own tables take;
// mautrix's stores do not (see OpenForMautrix).
func Open(ctx context.Context, target Target, pool PoolOptions, log zerolog.Logger) (*dbutil.Database, error) {
	if target.Type == "postgres" {
		target.URI = withQueryDefault(target.URI, "binary_parameters", "yes")
	}
	db, err := openPool(ctx, target, pool, log.With().Str("component", "database").Logger())
	if err != nil {
		return nil, err
	}
	db.Owner = "daarion-matrix-bridge"
	db.UpgradeTable = upgrades.Table
	if err = db.Upgrade(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("failed to upgrade %s database schema: %w", target.Dialect(), err)
	}
	return db, nil
}

// OpenForMautrix returns the database mautrix's stores (sqlstatestore, the
// crypto store) use, which bring their own tables up to date. On SQLite it
// is db itself: one pool for the one writer. On PostgreSQL it is a second
// pool on the same database without binary_parameters: mautrix passes JSON
// for jsonb columns as []byte (the state store's encryption event, the
// crypto store's ratchet safety), which that mode sends as binary jsonb,
// and PostgreSQL refuses it ("unsupported jsonb version number").
func OpenForMautrix(ctx context.Context, target Target, db *dbutil.Database, pool PoolOptions, log zerolog.Logger) (*dbutil.Database, error) {
	if target.Type != "postgres" {
		return db, nil
	}
	target.URI = withQuery(target.URI, "binary_parameters", "no")
	if pool.MaxIdleConns <= 0 || pool.MaxIdleConns > MautrixMaxIdleConns {
		pool.MaxIdleConns = MautrixMaxIdleConns
	}
	return openPool(ctx, target, pool, log.With().Str("component", "database").Str("pool", "mautrix").Logger())
}

// openPool opens and pings a pool on target, sized by pool.
func openPool(ctx context.Context, target Target, pool PoolOptions, log zerolog.Logger) (*dbutil.Database, error) {
	db, err := dbutil.NewWithDialect(target.URI, target.Type)
	if err != nil {
		return nil, fmt.Errorf("failed to open %s database: %w", target.Dialect(), err)
	}
	db.Log = dbutil.ZeroLogger(log)
	if pool.MaxOpenConns > 0 {
		db.RawDB.SetMaxOpenConns(pool.MaxOpenConns)
	}
	// database/sql keeps only 2 idle connections by default: under the
	// bridge's concurrency (API, consumers, deliverer) PostgreSQL connections
	// would be closed and opened again (a process fork each) all the time.
	idle := pool.MaxIdleConns
	if idle <= 0 {
		idle = DefaultMaxIdleConns
	}
	db.RawDB.SetMaxIdleConns(idle)
	if err = db.RawDB.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("failed to connect to %s database: %w", target.Dialect(), err)
	}
	return db, nil
}

// withQueryDefault returns the URL uri with query parameter key set to
// value unless it sets key already.
func withQueryDefault(uri, key, value string) string {
	if u, err := url.Parse(uri); err == nil && u.Query().Has(key) {
		return uri
	}
	return withQuery(uri, key, value)
}

// withQuery returns the URL uri with query parameter key set to value (uri
// as it is when it does not parse; ParseURL has parsed it).
func withQuery(uri, key, value string) string {
	u, err := url.Parse(uri)
	if err != nil {
		return uri
	}
	q := u.Query()
	q.Set(key, value)
	u.RawQuery = q.Encode()
	return u.String()
}
