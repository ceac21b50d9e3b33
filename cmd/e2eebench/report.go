//go:build goolm

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// row is one line of the table: a measured path on one database.
type row struct {
	DB      string `json:"db"`
	Variant string `json:"variant"`
	// Latency says what the latency columns measure.
	Latency  string  `json:"latency"`
	Count    int     `json:"count"`
	Errors   int     `json:"errors"`
	Rate     float64 `json:"rate"`
	RateUnit string  `json:"rate_unit"`
	P50MS    float64 `json:"p50_ms"`
	P90MS    float64 `json:"p90_ms"`
	P99MS    float64 `json:"p99_ms"`
	MaxMS    float64 `json:"max_ms"`
}

func newRow(db, variant, latency string, s summary, errors int, rate float64, unit string) row {
	return row{DB: db, Variant: variant, Latency: latency, Count: s.N, Errors: errors, Rate: rate, RateUnit: unit,
		P50MS: ms(s.P50), P90MS: ms(s.P90), P99MS: ms(s.P99), MaxMS: ms(s.Max)}
}

// check is one target, met (PASS) or not (FAIL).
type check struct {
	DB     string `json:"db"`
	Target string `json:"target"`
	Got    string `json:"got"`
	Pass   bool   `json:"pass"`
}

// report is the whole run: every database's rows, checks and notes.
type report struct {
	Started time.Time         `json:"started"`
	Host    map[string]string `json:"host"`
	Rows    []row             `json:"rows"`
	Checks  []check           `json:"checks"`
	Notes   []string          `json:"notes,omitempty"`
	Errors  []string          `json:"errors,omitempty"`
}

func (r *report) note(db, format string, args ...any) {
	r.Notes = append(r.Notes, "["+db+"] "+fmt.Sprintf(format, args...))
}

func (r *report) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func fmtFloat(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

// writeTable prints the table, the PASS/FAIL lines, errors and notes, in
// cmd/rigbench's layout.
func (r *report) writeTable(w io.Writer) {
	header := []string{"db", "variant", "n", "err", "rate", "unit", "p50 ms", "p90 ms", "p99 ms", "max ms", "latency measured"}
	right := []bool{false, false, true, true, true, false, true, true, true, true, false}
	cells := [][]string{header}
	for _, x := range r.Rows {
		cells = append(cells, []string{x.DB, x.Variant, strconv.Itoa(x.Count), strconv.Itoa(x.Errors), fmtFloat(x.Rate), x.RateUnit,
			fmtFloat(x.P50MS), fmtFloat(x.P90MS), fmtFloat(x.P99MS), fmtFloat(x.MaxMS), x.Latency})
	}
	widths := make([]int, len(header))
	for _, line := range cells {
		for i, c := range line {
			widths[i] = max(widths[i], len([]rune(c)))
		}
	}
	fmt.Fprintln(w)
	for li, line := range cells {
		var b strings.Builder
		for i, c := range line {
			pad := strings.Repeat(" ", widths[i]-len([]rune(c)))
			if i > 0 {
				b.WriteString("  ")
			}
			switch {
			case right[i]:
				b.WriteString(pad + c)
			case i < len(line)-1:
				b.WriteString(c + pad)
			default:
				b.WriteString(c)
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
		if li == 0 {
			total := 0
			for _, wd := range widths {
				total += wd + 2
			}
			fmt.Fprintln(w, strings.Repeat("-", total-2))
		}
	}
	if len(r.Checks) > 0 {
		fmt.Fprintln(w)
	}
	for _, c := range r.Checks {
		verdict := "FAIL"
		if c.Pass {
			verdict = "PASS"
		}
		fmt.Fprintf(w, "%s  [%s] %s: %s\n", verdict, c.DB, c.Target, c.Got)
	}
	for _, e := range r.Errors {
		fmt.Fprintf(w, "ERROR  %s\n", e)
	}
	if len(r.Notes) > 0 {
		fmt.Fprintln(w)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}
