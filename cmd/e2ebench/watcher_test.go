package main

import "testing"

func TestStatementShape(t *testing.T) {
	cases := []struct{ query, want string }{
		{"SELECT epoch FROM leader_lease WHERE name = $1", "SELECT epoch FROM leader_lease WHERE name = $1"},
		{"DELETE FROM txn_journal WHERE seq IN ($1, $2, $3)", "DELETE FROM txn_journal WHERE seq IN (…)"},
		{"DELETE FROM txn_journal WHERE seq IN ($1)", "DELETE FROM txn_journal WHERE seq IN (…)"},
		{"INSERT INTO t (a, b)\n\t VALUES ($1, $2), ($3, $4),\n ($5, $6) ON CONFLICT DO NOTHING", "INSERT INTO t (a, b) VALUES (…) ON CONFLICT DO NOTHING"},
		{"SELECT pg_advisory_xact_lock($1), set_config($2, $3, $4)", "SELECT pg_advisory_xact_lock(…), set_config(…)"},
	}
	for _, tc := range cases {
		if got := statementShape(tc.query); got != tc.want {
			t.Errorf("statementShape(%q) = %q, want %q", tc.query, got, tc.want)
		}
	}
}
