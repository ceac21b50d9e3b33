//go:build goolm

package main

import (
	"fmt"
	"time"

	"github.com/daarion/matrix-bridge/internal/benchkit"
)

// report is the whole run: every database's rows, checks and notes. Its
// table prints a missed target as FAIL: one fails the run.
type report struct {
	Started time.Time         `json:"started"`
	Host    map[string]string `json:"host"`
	benchkit.Results
}

func (r *report) note(db, format string, args ...any) {
	r.Notes = append(r.Notes, "["+db+"] "+fmt.Sprintf(format, args...))
}
