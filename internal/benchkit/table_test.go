package benchkit

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

// The table is what both benchmarks print and readers compare across runs
// and commits: its layout must not move. want is the output of
// cmd/rigbench's own renderer, before the two commands shared this one.
func TestRenderLayout(t *testing.T) {
	sum := Summarize([]time.Duration{5 * time.Millisecond, time.Millisecond, 130 * time.Millisecond,
		12345 * time.Microsecond, 2 * time.Millisecond, 7 * time.Millisecond, 3 * time.Millisecond})
	r := Results{
		Rows: []Row{
			NewRow("sqlite", "sequential: agent via bridge", "POST /internal/matrix/send", sum, 2, 123.456, "msg/s"),
			NewRow("postgres", "10 agents — über", "x", Summarize(nil), 0, 0.5, "msg/s"),
			{DB: "sqlite", Variant: "webhook: delivered, 10 rooms", Latency: "DTOs received in [2s, 10s]",
				Count: 40000, Rate: 5000.4, RateUnit: "DTOs/s", NoLatency: true},
		},
		Checks: []Check{{DB: "sqlite", Target: "p50 ≤ 1.2 × direct", Got: "1.10×", Pass: true}, {DB: "postgres", Target: "t2", Got: "g2"}},
		Errors: []string{"[postgres] boom"},
	}
	r.Note("[%s] hello %d", "sqlite", 3)
	var b bytes.Buffer
	r.Render(&b, "MISS")
	const want = `db        variant                           n  err  rate  unit    p50 ms  p90 ms  p99 ms  max ms  latency measured
----------------------------------------------------------------------------------------------------------------------------
sqlite    sequential: agent via bridge      7    2   123  msg/s     5.00     130     130     130  POST /internal/matrix/send
postgres  10 agents — über                  0    0  0.50  msg/s     0.00    0.00    0.00    0.00  x
sqlite    webhook: delivered, 10 rooms  40000    0  5000  DTOs/s       -       -       -       -  DTOs received in [2s, 10s]

PASS  [sqlite] p50 ≤ 1.2 × direct: 1.10×
MISS  [postgres] t2: g2
ERROR  [postgres] boom

note: [sqlite] hello 3
`
	if got := b.String(); got != want {
		t.Errorf("Render:\n%s\nwant:\n%s", got, want)
	}

	// Without checks, errors or notes: only the table, no blank lines.
	b.Reset()
	(&Results{}).Render(&b, "FAIL")
	const empty = "db  variant  n  err  rate  unit  p50 ms  p90 ms  p99 ms  max ms  latency measured\n" +
		"---------------------------------------------------------------------------------\n"
	if b.String() != empty {
		t.Errorf("empty Render:\n%q\nwant:\n%q", b.String(), empty)
	}
}

// A row's JSON has seconds and mean_ms, in their places, only when Timed
// (rigbench's rows), so that e2eebench's JSON keeps its fields.
func TestRowJSON(t *testing.T) {
	sum := Summarize([]time.Duration{time.Millisecond, 3 * time.Millisecond})
	row := NewRow("sqlite", "v", "l", sum, 1, 2.5, "msg/s")
	for _, c := range []struct {
		row  Row
		want string
	}{
		{row, `{"db":"sqlite","variant":"v","latency":"l","count":2,"errors":1,"rate":2.5,"rate_unit":"msg/s","p50_ms":1,"p90_ms":3,"p99_ms":3,"max_ms":3}`},
		{row.Timed(1.5, sum.Mean), `{"db":"sqlite","variant":"v","latency":"l","count":2,"errors":1,"seconds":1.5,"rate":2.5,"rate_unit":"msg/s","p50_ms":1,"p90_ms":3,"p99_ms":3,"max_ms":3,"mean_ms":2}`},
		{Row{DB: "x", NoLatency: true}.Timed(0, 0), `{"db":"x","variant":"","latency":"","count":0,"errors":0,"seconds":0,"rate":0,"rate_unit":"","p50_ms":0,"p90_ms":0,"p99_ms":0,"max_ms":0,"mean_ms":0}`},
	} {
		got, err := json.Marshal(c.row)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != c.want {
			t.Errorf("got  %s\nwant %s", got, c.want)
		}
	}
}
