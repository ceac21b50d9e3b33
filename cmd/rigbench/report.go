package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// row is one line of a scenario's table.
type row struct {
	DB      string `json:"db"`
	Variant string `json:"variant"`
	// Latency says what the latency columns measure.
	Latency  string  `json:"latency"`
	Count    int     `json:"count"`
	Errors   int     `json:"errors"`
	Seconds  float64 `json:"seconds"`
	Rate     float64 `json:"rate"`
	RateUnit string  `json:"rate_unit"`
	P50MS    float64 `json:"p50_ms"`
	P90MS    float64 `json:"p90_ms"`
	P99MS    float64 `json:"p99_ms"`
	MaxMS    float64 `json:"max_ms"`
	MeanMS   float64 `json:"mean_ms"`
	// NoLatency hides the latency columns (a row that only has a rate).
	NoLatency bool `json:"-"`
}

func newRow(db, variant, latency string, s summary, errors int, elapsed time.Duration, rate float64, unit string) row {
	return row{
		DB: db, Variant: variant, Latency: latency, Count: s.N, Errors: errors,
		Seconds: elapsed.Seconds(), Rate: rate, RateUnit: unit,
		P50MS: ms(s.P50), P90MS: ms(s.P90), P99MS: ms(s.P99), MaxMS: ms(s.Max), MeanMS: ms(s.Mean),
	}
}

// check is one target, met (PASS) or not (MISS).
type check struct {
	DB     string `json:"db"`
	Target string `json:"target"`
	Got    string `json:"got"`
	Pass   bool   `json:"pass"`
}

// scenarioReport is everything one scenario measured, on every database.
type scenarioReport struct {
	Name   string   `json:"scenario"`
	Title  string   `json:"title"`
	Rows   []row    `json:"rows"`
	Checks []check  `json:"checks"`
	Notes  []string `json:"notes,omitempty"`
	Errors []string `json:"errors,omitempty"`
}

func (s *scenarioReport) note(format string, args ...any) {
	s.Notes = append(s.Notes, fmt.Sprintf(format, args...))
}

// report is the whole run.
type report struct {
	Started   time.Time         `json:"started"`
	Host      map[string]string `json:"host"`
	Settings  map[string]string `json:"settings"`
	Scenarios []*scenarioReport `json:"scenarios"`
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

// writeTable prints a scenario's table, its PASS/MISS lines and notes.
func (s *scenarioReport) writeTable(w io.Writer) {
	fmt.Fprintf(w, "\n== %s: %s\n\n", s.Name, s.Title)
	header := []string{"db", "variant", "n", "err", "rate", "unit", "p50 ms", "p90 ms", "p99 ms", "max ms", "latency measured"}
	right := []bool{false, false, true, true, true, false, true, true, true, true, false}
	cells := [][]string{header}
	for _, r := range s.Rows {
		line := []string{r.DB, r.Variant, strconv.Itoa(r.Count), strconv.Itoa(r.Errors), fmtFloat(r.Rate), r.RateUnit}
		if r.NoLatency {
			line = append(line, "-", "-", "-", "-", r.Latency)
		} else {
			line = append(line, fmtFloat(r.P50MS), fmtFloat(r.P90MS), fmtFloat(r.P99MS), fmtFloat(r.MaxMS), r.Latency)
		}
		cells = append(cells, line)
	}
	widths := make([]int, len(header))
	for _, line := range cells {
		for i, c := range line {
			widths[i] = max(widths[i], len([]rune(c)))
		}
	}
	for li, line := range cells {
		var b strings.Builder
		for i, c := range line {
			pad := strings.Repeat(" ", widths[i]-len([]rune(c)))
			if i > 0 {
				b.WriteString("  ")
			}
			if right[i] {
				b.WriteString(pad + c)
			} else if i < len(line)-1 {
				b.WriteString(c + pad)
			} else {
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
	if len(s.Checks) > 0 {
		fmt.Fprintln(w)
	}
	for _, c := range s.Checks {
		verdict := "MISS"
		if c.Pass {
			verdict = "PASS"
		}
		fmt.Fprintf(w, "%s  [%s] %s: %s\n", verdict, c.DB, c.Target, c.Got)
	}
	for _, e := range s.Errors {
		fmt.Fprintf(w, "ERROR  %s\n", e)
	}
	if len(s.Notes) > 0 {
		fmt.Fprintln(w)
	}
	for _, n := range s.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}
