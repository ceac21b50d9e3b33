package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/daarion/matrix-bridge/database"
)

type report struct {
	Machine machine      `json:"machine"`
	Config  reportConfig `json:"config"`
	Results []Result     `json:"results"`
	Targets []targetLine `json:"targets"`
}

type reportConfig struct {
	Duration  string `json:"duration"`
	Warmup    string `json:"warmup"`
	Scenarios string `json:"scenarios"`
	MaxTxns   int    `json:"max_txns"`
	// PostgresSettings are the -pg-set overrides of the testrig's configuration.
	PostgresSettings []string `json:"postgres_settings,omitempty"`
}

type machine struct {
	NumCPU     int               `json:"num_cpu"`
	GOMAXPROCS int               `json:"gomaxprocs"`
	CPUModel   string            `json:"cpu_model"`
	Kernel     string            `json:"kernel"`
	GoVersion  string            `json:"go_version"`
	LoadAvg    string            `json:"load_average"`
	Postgres   map[string]string `json:"postgres,omitempty"`
	SQLite     map[string]string `json:"sqlite,omitempty"`
}

func machineInfo() machine {
	m := machine{NumCPU: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), GoVersion: runtime.Version()}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.LoadAvg = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

func postgresInfo(ctx context.Context, db *sql.DB) map[string]string {
	info := map[string]string{}
	for _, name := range []string{"server_version", "fsync", "synchronous_commit", "wal_sync_method", "full_page_writes", "shared_buffers", "wal_level"} {
		var v string
		if err := db.QueryRowContext(ctx, "SHOW "+name).Scan(&v); err == nil {
			info[name] = v
		}
	}
	return info
}

func sqliteInfo(ctx context.Context, path string) map[string]string {
	info := map[string]string{"driver": database.SQLiteDriver}
	db, err := sql.Open(database.SQLiteDriver, "file:"+path)
	if err != nil {
		return info
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	for name, q := range map[string]string{
		"version":      "SELECT sqlite_version()",
		"journal_mode": "PRAGMA journal_mode",
		"synchronous":  "PRAGMA synchronous",
	} {
		var v string
		if err := db.QueryRowContext(ctx, q).Scan(&v); err == nil {
			info[name] = v
		}
	}
	if info["synchronous"] == "2" {
		info["synchronous"] = "2 (FULL)"
	}
	return info
}

type targetLine struct {
	Status string `json:"status"` // PASS, MISS or SKIP
	Target string `json:"target"`
	Detail string `json:"detail"`
	// Info lines are not among the targets; they are reported for
	// context.
	Info bool `json:"info,omitempty"`
}

func (r *report) result(name string) *Result {
	for i := range r.Results {
		if r.Results[i].Scenario == name && r.Results[i].Error == "" {
			return &r.Results[i]
		}
	}
	return nil
}

func passMiss(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

// evaluate checks the results against the targets of the issue.
func (r *report) evaluate() {
	compare := func(durable string, info bool) {
		t := targetLine{Target: fmt.Sprintf("100-event txns: %s acks >= events/s than mautrix's handler", durable), Info: info}
		d, m := r.result(durable+"-100"), r.result("mautrix-100")
		if d == nil || m == nil {
			t.Status, t.Detail = "SKIP", "needs both "+durable+"-100 and mautrix-100 in the run"
		} else {
			t.Status = passMiss(d.EventsPerSec >= m.EventsPerSec)
			t.Detail = fmt.Sprintf("%.0f vs %.0f events/s (%.2fx)", d.EventsPerSec, m.EventsPerSec, d.EventsPerSec/m.EventsPerSec)
		}
		r.Targets = append(r.Targets, t)
	}
	// judge checks one scenario's result: SKIP when the run lacks it.
	judge := func(t targetLine, scenario string, check func(d *Result) (bool, string)) {
		if d := r.result(scenario); d == nil {
			t.Status, t.Detail = "SKIP", "needs "+scenario+" in the run"
		} else {
			var pass bool
			pass, t.Detail = check(d)
			t.Status = passMiss(pass)
		}
		r.Targets = append(r.Targets, t)
	}
	ackP99 := func(d *Result) (bool, string) { return d.Ack.P99 <= 20, fmt.Sprintf("p99 %.2f ms", d.Ack.P99) }

	compare("postgres", false)
	judge(targetLine{Target: "100-event txns: postgres ack p99 <= 20 ms"}, "postgres-100", ackP99)
	judge(targetLine{Target: "1-event txns: postgres >= 2000 txn/s"}, "postgres-1", func(d *Result) (bool, string) {
		return d.TxnsPerSec >= 2000, fmt.Sprintf("%.0f txn/s (p50 %.3f ms, p99 %.3f ms)", d.TxnsPerSec, d.Ack.P50, d.Ack.P99)
	})

	compare("sqlite", true)
	judge(targetLine{Target: "100-event txns: sqlite ack p99 <= 20 ms", Info: true}, "sqlite-100", ackP99)
	judge(targetLine{Target: "1-event txns: sqlite >= 2000 txn/s", Info: true}, "sqlite-1", func(d *Result) (bool, string) {
		return d.TxnsPerSec >= 2000, fmt.Sprintf("%.0f txn/s", d.TxnsPerSec)
	})
}

func (r *report) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func f3(v float64) string { return fmt.Sprintf("%.3f", v) }

func (r *report) writeText(out io.Writer) error {
	w := bufio.NewWriter(out)
	m := r.Machine
	fmt.Fprintf(w, "machine: %d CPUs (GOMAXPROCS %d), %s, Linux %s, %s, load average at start %s\n", m.NumCPU, m.GOMAXPROCS, m.CPUModel, m.Kernel, m.GoVersion, m.LoadAvg)
	if p := m.Postgres; p != nil {
		fmt.Fprintf(w, "postgres: %s, fsync=%s synchronous_commit=%s wal_sync_method=%s full_page_writes=%s shared_buffers=%s wal_level=%s\n",
			p["server_version"], p["fsync"], p["synchronous_commit"], p["wal_sync_method"], p["full_page_writes"], p["shared_buffers"], p["wal_level"])
	}
	if s := m.SQLite; s != nil {
		fmt.Fprintf(w, "sqlite: %s, driver %s, journal_mode=%s synchronous=%s\n", s["version"], s["driver"], s["journal_mode"], s["synchronous"])
	}
	if len(r.Config.PostgresSettings) > 0 {
		fmt.Fprintf(w, "postgres overrides (-pg-set): %s\n", strings.Join(r.Config.PostgresSettings, " "))
	}
	fmt.Fprintf(w, "run: %s warmup + %s measured per scenario, one transaction at a time over one keep-alive connection\n\n", r.Config.Warmup, r.Config.Duration)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tdurable\tev/txn\tbody B/txn\ttxns\ttxn/s\tevents/s\tp50 ms\tp90 ms\tp99 ms\tp99.9 ms\tmax ms\tconns\t")
	var txnResults, probes, failed []Result
	for _, res := range r.Results {
		switch {
		case res.Error != "":
			failed = append(failed, res)
		case res.Probe != "":
			probes = append(probes, res)
		default:
			txnResults = append(txnResults, res)
		}
	}
	for _, res := range txnResults {
		durable := "yes"
		if !res.Durable {
			durable = "no"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.0f\t%d\t%.0f\t%.0f\t%s\t%s\t%s\t%s\t%s\t%d\t\n",
			res.Scenario, durable, res.EventsPerTxn, res.BodyBytesPerTxn, res.Txns, res.TxnsPerSec, res.EventsPerSec,
			f3(res.Ack.P50), f3(res.Ack.P90), f3(res.Ack.P99), f3(res.Ack.P999), f3(res.Ack.Max), res.Connections)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	if len(txnResults) > 0 {
		fmt.Fprintf(w, "\nWhere the ack time goes (means, ms): client+HTTP = ack - handler; read+parse = handler - commit (the journal insert; bridge only).\n")
		fmt.Fprintf(w, "CPU per txn: this process (client and server together) and all PostgreSQL processes. WAL from pg_stat_wal (approximate counts).\n\n")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "scenario\tack\thandler\tcommit\tclient+HTTP\tread+parse\tcpu µs/txn self\tcpu µs/txn pg\tWAL syncs/txn\tavg sync ms\tWAL kB/txn\tWAL FPI/txn\tother CPU %\t")
		for _, res := range txnResults {
			appendMean, parse := "-", "-"
			if res.Append != nil && res.Handler != nil {
				appendMean = f3(res.Append.Mean)
				parse = f3(res.Handler.Mean - res.Append.Mean)
			}
			handler, httpCost := "-", "-"
			if res.Handler != nil {
				handler = f3(res.Handler.Mean)
				httpCost = f3(res.Ack.Mean - res.Handler.Mean)
			}
			pgCPU, syncs, avgSync, walKB, fpi := "-", "-", "-", "-", "-"
			if res.WAL != nil {
				pgCPU = fmt.Sprintf("%.0f", res.CPUPostgresUSPerTxn)
				syncs = fmt.Sprintf("%.2f", res.WAL.SyncsPerTxn)
				avgSync = f3(res.WAL.AvgSyncMS)
				walKB = fmt.Sprintf("%.1f", res.WAL.BytesPerTxn/1024)
				fpi = fmt.Sprintf("%.1f", res.WAL.FPIPerTxn)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%.1f\t\n",
				res.Scenario, f3(res.Ack.Mean), handler, appendMean, httpCost, parse, res.CPUSelfUSPerTxn, pgCPU, syncs, avgSync, walKB, fpi, res.Noise.OtherPct)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}

	if len(probes) > 0 {
		fmt.Fprintf(w, "\nFloor: one statement at a time on one connection, no HTTP.\n\n")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "probe\tops\tops/s\tmean ms\tp50 ms\tp99 ms\tp99.9 ms\tmax ms\tavg WAL sync ms\tcpu µs/op pg\tother CPU %\t")
		for _, res := range probes {
			avgSync, pgCPU := "-", "-"
			if res.WAL != nil && res.WAL.Syncs > 0 {
				avgSync = f3(res.WAL.AvgSyncMS)
			}
			if res.WAL != nil {
				pgCPU = fmt.Sprintf("%.0f", res.CPUPostgresUSPerTxn)
			}
			fmt.Fprintf(tw, "%s\t%d\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.1f\t\n", res.Scenario, res.Txns, res.TxnsPerSec,
				f3(res.Ack.Mean), f3(res.Ack.P50), f3(res.Ack.P99), f3(res.Ack.P999), f3(res.Ack.Max), avgSync, pgCPU, res.Noise.OtherPct)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		for _, res := range probes {
			for _, s := range scenarios {
				if s.Name == res.Scenario {
					fmt.Fprintf(w, "  %s: %s\n", s.Name, s.Desc)
				}
			}
		}
	}

	noisy := []string{}
	for _, res := range r.Results {
		if res.Error == "" && (res.Noise.OtherPct > 5 || res.Noise.StealPct > 2) {
			n := fmt.Sprintf("%s (%.0f%% other processes", res.Scenario, res.Noise.OtherPct)
			if res.Noise.StealPct > 0.5 {
				n += fmt.Sprintf(", %.0f%% steal", res.Noise.StealPct)
			}
			noisy = append(noisy, n+")")
		}
	}
	if len(noisy) > 0 {
		fmt.Fprintf(w, "\nWARNING: the machine was busy with something else (share of all CPUs) during: %s; those numbers are low.\n", strings.Join(noisy, ", "))
	}

	for _, res := range failed {
		fmt.Fprintf(w, "\nFAILED %s: %s\n", res.Scenario, res.Error)
	}

	fmt.Fprintf(w, "\nTargets:\n")
	for _, t := range r.Targets {
		prefix := ""
		if t.Info {
			prefix = "(info) "
		}
		fmt.Fprintf(w, "  %s  %s%s: %s\n", t.Status, prefix, t.Target, t.Detail)
	}
	fmt.Fprintf(w, "\ngenerated %s\n", time.Now().UTC().Format(time.RFC3339))
	return w.Flush()
}
