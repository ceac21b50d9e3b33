package main

import (
	"fmt"
	"io"
	"time"

	"github.com/daarion/matrix-bridge/internal/benchkit"
)

// newRow is a row of a phase that ran for elapsed.
func newRow(db, variant, latency string, s benchkit.Summary, errors int, elapsed time.Duration, rate float64, unit string) benchkit.Row {
	return benchkit.NewRow(db, variant, latency, s, errors, rate, unit).Timed(elapsed.Seconds(), s.Mean)
}

// scenarioReport is everything one scenario measured, on every database.
type scenarioReport struct {
	Name  string `json:"scenario"`
	Title string `json:"title"`
	benchkit.Results
}

// report is the whole run.
type report struct {
	Started   time.Time         `json:"started"`
	Host      map[string]string `json:"host"`
	Settings  map[string]string `json:"settings"`
	Scenarios []*scenarioReport `json:"scenarios"`
}

// writeTable prints a scenario's table, its PASS/MISS lines and notes: a
// missed target is a reading, not a failed run.
func (s *scenarioReport) writeTable(w io.Writer) {
	fmt.Fprintf(w, "\n== %s: %s\n\n", s.Name, s.Title)
	s.Render(w, "MISS")
}
