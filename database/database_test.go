package database_test

import (
	"context"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/daarion/matrix-bridge/database"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// The bridge's pool on PostgreSQL sends parameters with the statement
// (binary_parameters: a []byte goes as binary data, which a jsonb cast
// refuses); mautrix's pool does not, whatever the URL says; on SQLite the
// two are one pool.
func TestThePoolsParameters(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name, query string
		wantBinary  bool // the bridge's pool sends []byte as binary
	}{
		{"default", "", true},
		{"the operator's no", "binary_parameters=no", false},
		{"the operator's yes", "binary_parameters=yes", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tdb := testrig.NewTestDatabase(t, testrig.Postgres)
			if tc.query != "" {
				tdb.URI += "&" + tc.query
			}
			target := database.Target{Type: tdb.Type, URI: tdb.URI}
			db, err := database.Open(ctx, target, database.PoolOptions{}, zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			stores, err := database.OpenForMautrix(ctx, target, db, database.PoolOptions{}, zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			defer stores.Close()
			if stores == db {
				t.Fatal("mautrix's stores got the bridge's pool on PostgreSQL")
			}
			var out string
			err = db.QueryRow(ctx, `SELECT ($1::jsonb)->>'a'`, []byte(`{"a":"b"}`)).Scan(&out)
			if tc.wantBinary {
				if err == nil || !strings.Contains(err.Error(), "unsupported jsonb version") {
					t.Errorf("the bridge's pool took a []byte as text (err %v): binary_parameters is off", err)
				}
			} else if err != nil || out != "b" {
				t.Errorf("the bridge's pool with the operator's binary_parameters=no: %q, %v", out, err)
			}
			out = ""
			if err := stores.QueryRow(ctx, `SELECT ($1::jsonb)->>'a'`, []byte(`{"a":"b"}`)).Scan(&out); err != nil || out != "b" {
				t.Errorf("mautrix's pool: %q, %v; want b (a []byte as text)", out, err)
			}
		})
	}

	t.Run("sqlite", func(t *testing.T) {
		tdb := testrig.NewTestDatabase(t, testrig.SQLite)
		db := testrig.OpenDatabase(t, tdb)
		stores, err := database.OpenForMautrix(ctx, database.Target{Type: tdb.Type, URI: tdb.URI}, db, database.PoolOptions{}, zerolog.Nop())
		if err != nil || stores != db {
			t.Errorf("SQLite: mautrix's stores got %p, %v; want the bridge's pool %p", stores, err, db)
		}
	})
}
