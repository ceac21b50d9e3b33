package benchkit

import (
	"encoding/json"
	"fmt"
	"io"
	"time"
)

// Row is one line of a results table: a measured path on one database.
type Row struct {
	DB      string `json:"db"`
	Variant string `json:"variant"`
	// Latency says what the latency columns measure.
	Latency string `json:"latency"`
	Count   int    `json:"count"`
	Errors  int    `json:"errors"`
	// Seconds (how long the phase ran) and MeanMS are set by Timed: only
	// rigbench, whose phases run for a set time, reports them. Nil leaves
	// them out of the JSON, which e2eebench's rows have never had.
	Seconds  *float64 `json:"seconds,omitempty"`
	Rate     float64  `json:"rate"`
	RateUnit string   `json:"rate_unit"`
	P50MS    float64  `json:"p50_ms"`
	P90MS    float64  `json:"p90_ms"`
	P99MS    float64  `json:"p99_ms"`
	MaxMS    float64  `json:"max_ms"`
	MeanMS   *float64 `json:"mean_ms,omitempty"`
	// NoLatency hides the latency columns (a row that only has a rate).
	NoLatency bool `json:"-"`
}

// NewRow is a row of s's latencies.
func NewRow(db, variant, latency string, s Summary, errors int, rate float64, unit string) Row {
	return Row{DB: db, Variant: variant, Latency: latency, Count: s.N, Errors: errors, Rate: rate, RateUnit: unit,
		P50MS: MS(s.P50), P90MS: MS(s.P90), P99MS: MS(s.P99), MaxMS: MS(s.Max)}
}

// Timed adds how long the row's phase ran and its mean latency.
func (r Row) Timed(seconds float64, mean time.Duration) Row {
	r.Seconds, r.MeanMS = &seconds, new(MS(mean))
	return r
}

// Check is one target, met or not.
type Check struct {
	DB     string `json:"db"`
	Target string `json:"target"`
	Got    string `json:"got"`
	Pass   bool   `json:"pass"`
}

// Results are the rows, checks, notes and errors of a table; a report
// embeds them, so that they stand at its level in the JSON.
type Results struct {
	Rows   []Row    `json:"rows"`
	Checks []Check  `json:"checks"`
	Notes  []string `json:"notes,omitempty"`
	Errors []string `json:"errors,omitempty"`
}

// Note adds a note.
func (r *Results) Note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// WriteJSON writes a report as indented JSON.
func WriteJSON(w io.Writer, report any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(report)
}
