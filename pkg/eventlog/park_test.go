package eventlog_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"go.mau.fi/util/dbutil"

	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// refuseEvent makes the database refuse, with a constraint error, any
// event_log row with this event id: a row the indexer can never store.
func refuseEvent(t *testing.T, db *dbutil.Database, eventID string) {
	t.Helper()
	var stmts []string
	if db.Dialect == dbutil.Postgres {
		stmts = []string{
			`CREATE FUNCTION refuse_event() RETURNS trigger LANGUAGE plpgsql AS $fn$
			BEGIN
				IF NEW.event_id = '` + eventID + `' THEN
					RAISE EXCEPTION 'event % refused', NEW.event_id USING ERRCODE = 'check_violation';
				END IF;
				RETURN NEW;
			END $fn$`,
			`CREATE TRIGGER refuse_event BEFORE INSERT ON event_log FOR EACH ROW EXECUTE FUNCTION refuse_event()`,
		}
	} else {
		stmts = []string{`CREATE TRIGGER refuse_event BEFORE INSERT ON event_log
			WHEN NEW.event_id = '` + eventID + `'
			BEGIN SELECT RAISE(ABORT, 'event refused'); END`}
	}
	for _, stmt := range stmts {
		if _, err := db.RawDB.Exec(stmt); err != nil {
			t.Fatalf("create the refusing trigger: %v", err)
		}
	}
}

// incompressible returns n bytes of hex that PostgreSQL cannot compress
// below its btree entry limit.
func incompressible(n int) string {
	var b strings.Builder
	sum := sha256.Sum256([]byte("seed"))
	for b.Len() < n {
		b.WriteString(hex.EncodeToString(sum[:]))
		sum = sha256.Sum256(sum[:])
	}
	return b.String()[:n]
}

// Regression: a journalled transaction the database refused for its data (a
// 4,000-byte transaction id is too large for as_transaction's btree on
// PostgreSQL) failed the indexer's batch on every attempt, so nothing was
// indexed again. Such a row is parked now, whole, and the rows around it
// are indexed in order.
func TestIndexerParksRowsTheDatabaseRefuses(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx := context.Background()
		db := testrig.OpenDatabase(t, tdb)
		l := eventlog.New(db)
		t.Cleanup(func() { _ = l.Close() })
		refuseEvent(t, db, "$refused")
		longID := incompressible(4000)
		journal := []struct {
			txn string
			ids []string
		}{
			{"ok1", []string{"$a"}},
			{"refused", []string{"$r1", "$refused"}},
			{"ok2", []string{"$b", "$c"}},
			{longID, []string{"$long"}},
			{"ok3", []string{"$d"}},
		}
		for _, j := range journal {
			if err := l.Journal(ctx, j.txn, body(j.ids...)); err != nil {
				t.Fatal(err)
			}
		}
		moved, err := l.IndexPending(ctx, testParser)
		if err != nil || moved != len(journal) {
			t.Fatalf("IndexPending = %d, %v; want %d, nil", moved, err, len(journal))
		}
		if n, err := l.JournalBacklog(ctx); err != nil || n != 0 {
			t.Fatalf("journal backlog = %d, %v; want 0", n, err)
		}

		// PostgreSQL refuses the long id; SQLite has no such limit and
		// stores it.
		wantParked := map[string]string{"refused": "refused"}
		wantLog := []string{"$a", "$b", "$c", "$long", "$d"}
		if db.Dialect == dbutil.Postgres {
			wantParked[longID] = "index row"
			wantLog = []string{"$a", "$b", "$c", "$d"}
		}
		var ids []string
		for _, evt := range readAll(t, l) {
			ids = append(ids, evt.EventID)
		}
		if fmt.Sprint(ids) != fmt.Sprint(wantLog) {
			t.Errorf("log = %v, want %v", ids, wantLog)
		}
		parked, err := l.ParkedTransactions(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(parked) != len(wantParked) {
			t.Errorf("%d transactions parked, want %d", len(parked), len(wantParked))
		}
		for _, p := range parked {
			want, ok := wantParked[p.TxnID]
			if !ok {
				t.Errorf("parked %.20q…: %s", p.TxnID, p.Error)
				continue
			}
			if !strings.Contains(p.Error, want) {
				t.Errorf("parked %.20q… with error %q, want it to say %q", p.TxnID, p.Error, want)
			}
			// Nothing is lost: the body is kept as it was journalled.
			for _, j := range journal {
				if j.txn == p.TxnID && p.Body != string(body(j.ids...)) {
					t.Errorf("parked %.20q… with body %q", p.TxnID, p.Body)
				}
			}
			if p.Seq <= 0 || p.ReceivedAt.IsZero() || p.ParkedAt.Before(p.ReceivedAt) {
				t.Errorf("parked row %+v", p)
			}
		}
		if txn, _ := l.Transaction(ctx, "refused"); txn != nil {
			t.Errorf("a parked transaction was recorded: %+v", txn)
		}
		if txn, _ := l.Transaction(ctx, "ok3"); txn == nil || txn.StoredCount != 1 {
			t.Errorf("ok3 record = %+v, want 1 stored", txn)
		}
		// Indexing again finds nothing to do.
		if moved, err = l.IndexPending(ctx, testParser); err != nil || moved != 0 {
			t.Errorf("second IndexPending = %d, %v", moved, err)
		}
	})
}

// A failure that is not about the data (here the table is missing, as with a
// broken deployment; a lost connection is the common case) parks nothing:
// the rows stay in the journal and are indexed once the cause is gone.
func TestIndexerKeepsRowsOnOtherFailures(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx := context.Background()
		db := testrig.OpenDatabase(t, tdb)
		l := eventlog.New(db)
		t.Cleanup(func() { _ = l.Close() })
		for i, txn := range []string{"k1", "k2"} {
			if err := l.Journal(ctx, txn, body(fmt.Sprintf("$k%d", i))); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := db.RawDB.Exec(`ALTER TABLE event_log RENAME TO event_log_away`); err != nil {
			t.Fatal(err)
		}
		if moved, err := l.IndexPending(ctx, testParser); err == nil || moved != 0 {
			t.Fatalf("IndexPending without event_log = %d, %v; want an error", moved, err)
		}
		if n, _ := l.JournalBacklog(ctx); n != 2 {
			t.Errorf("journal backlog = %d, want 2", n)
		}
		if parked, err := l.ParkedTransactions(ctx); err != nil || len(parked) != 0 {
			t.Errorf("parked %d transactions (%v), want none", len(parked), err)
		}
		if _, err := db.RawDB.Exec(`ALTER TABLE event_log_away RENAME TO event_log`); err != nil {
			t.Fatal(err)
		}
		if moved, err := l.IndexPending(ctx, testParser); err != nil || moved != 2 {
			t.Fatalf("IndexPending = %d, %v; want 2", moved, err)
		}
		if n := len(readAll(t, l)); n != 2 {
			t.Errorf("log holds %d events, want 2", n)
		}
	})
}
