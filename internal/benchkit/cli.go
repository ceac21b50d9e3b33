package benchkit

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// Progress prints a timestamped line to stderr; stdout is the report's.
func Progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// SplitList splits a comma-separated flag, dropping empty items.
func SplitList(v string) []string {
	var out []string
	for p := range strings.SplitSeq(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// CheckDatabases rejects a -db list naming anything but sqlite and postgres.
func CheckDatabases(dbs []string) error {
	for _, db := range dbs {
		if db != testrig.SQLite && db != testrig.Postgres {
			return fmt.Errorf("unknown database %q (sqlite or postgres)", db)
		}
	}
	return nil
}
