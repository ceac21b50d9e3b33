package eventlog

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"testing"

	"github.com/lib/pq"
	"github.com/mattn/go-sqlite3"
)

func TestRefusedForData(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("failed to index 1 journalled transactions: %w", err) }
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"postgres index row too large", &pq.Error{Code: "54000"}, true},
		{"postgres check violation, wrapped", wrap(&pq.Error{Code: "23514"}), true},
		{"postgres unique violation", &pq.Error{Code: "23505"}, true},
		{"postgres invalid byte sequence", &pq.Error{Code: "22021"}, true},
		{"postgres value too long", &pq.Error{Code: "22001"}, true},
		{"postgres connection failure", &pq.Error{Code: "08006"}, false},
		{"postgres admin shutdown", wrap(&pq.Error{Code: "57P01"}), false},
		{"postgres serialization failure", &pq.Error{Code: "40001"}, false},
		{"postgres disk full", &pq.Error{Code: "53100"}, false},
		{"postgres undefined table", &pq.Error{Code: "42P01"}, false},
		{"sqlite constraint", wrap(sqlite3.Error{Code: sqlite3.ErrConstraint, ExtendedCode: sqlite3.ErrConstraintTrigger}), true},
		{"sqlite too big", sqlite3.Error{Code: sqlite3.ErrTooBig}, true},
		{"sqlite busy", wrap(sqlite3.Error{Code: sqlite3.ErrBusy}), false},
		{"sqlite disk full", sqlite3.Error{Code: sqlite3.ErrFull}, false},
		{"sqlite I/O error", sqlite3.Error{Code: sqlite3.ErrIoErr}, false},
		{"sqlite no such table", sqlite3.Error{Code: sqlite3.ErrError}, false},
		{"bad connection", wrap(driver.ErrBadConn), false},
		{"connection closed", sql.ErrConnDone, false},
		{"deadline", wrap(context.DeadlineExceeded), false},
		{"other", errors.New("something"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := refusedForData(tc.err); got != tc.want {
				t.Errorf("refusedForData(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}
