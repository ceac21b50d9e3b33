package benchkit

import (
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Render prints the table, then a line per check (PASS, or missed: a word
// for what a missed target means to the run, MISS or FAIL), the errors and
// the notes.
func (r *Results) Render(w io.Writer, missed string) {
	header := []string{"db", "variant", "n", "err", "rate", "unit", "p50 ms", "p90 ms", "p99 ms", "max ms", "latency measured"}
	right := []bool{false, false, true, true, true, false, true, true, true, true, false}
	cells := [][]string{header}
	for _, x := range r.Rows {
		line := []string{x.DB, x.Variant, strconv.Itoa(x.Count), strconv.Itoa(x.Errors), fmtFloat(x.Rate), x.RateUnit}
		if x.NoLatency {
			line = append(line, "-", "-", "-", "-", x.Latency)
		} else {
			line = append(line, fmtFloat(x.P50MS), fmtFloat(x.P90MS), fmtFloat(x.P99MS), fmtFloat(x.MaxMS), x.Latency)
		}
		cells = append(cells, line)
	}
	// Widths count runes: variants hold arrows and dashes.
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
		verdict := missed
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

// fmtFloat keeps about three significant digits.
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
