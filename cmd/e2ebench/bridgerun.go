package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/daarion/matrix-bridge/internal/benchkit"
	"github.com/daarion/matrix-bridge/pkg/clock"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// bridgeRun is one bridge process on a fresh database (and, with -nats, a
// fresh in-process NATS server with JetStream for it).
type bridgeRun struct {
	db, name, dir string
	proc          *testrig.Process
	api           *testrig.APIClient
	asURL         string
	metricsURL    string
	watch         *watcher
	natsSrv       *testrig.NATSServer
	natsURL       string
	consumers     []string // the consumers' names, from its metrics
}

// startBridge starts the bridge for a scenario and waits until it leads
// and runs every consumer (and, with NATS, has connected to it).
func (r *rig) startBridge(ctx context.Context, db, scenario string) (_ *bridgeRun, err error) {
	name, dir := r.nextRun(db, scenario)
	b := &bridgeRun{db: db, name: name, dir: dir,
		asURL:      fmt.Sprintf("http://127.0.0.1:%d", r.asPort),
		metricsURL: fmt.Sprintf("http://127.0.0.1:%d/metrics", r.metricsPort)}
	defer func() {
		if err != nil {
			b.stop()
		}
	}()
	if err = os.MkdirAll(b.dir, 0o700); err != nil {
		return nil, err
	}
	bridgeURL, driver, dsn, err := r.newDatabase(ctx, db, b.dir, name)
	if err != nil {
		return nil, err
	}
	if r.nats {
		if b.natsSrv, err = testrig.NewNATS(testrig.NATSOptions{StoreDir: filepath.Join(b.dir, "nats"), MaxPayload: 8 << 20}); err != nil {
			return nil, fmt.Errorf("starting the in-process NATS server: %w", err)
		}
		b.natsURL = b.natsSrv.URL()
	}
	cfgPath := filepath.Join(b.dir, "config.yaml")
	if err = os.WriteFile(cfgPath, []byte(r.config(bridgeURL, b.natsURL)), 0o600); err != nil {
		return nil, err
	}
	if b.proc, err = testrig.StartProcess(testrig.ProcessOptions{Path: r.bin, Args: []string{"-c", cfgPath},
		LogFile: filepath.Join(b.dir, "bridge.log")}); err != nil {
		return nil, err
	}
	b.api = testrig.NewAPIClient(fmt.Sprintf("http://127.0.0.1:%d", r.apiPort), r.secret, 8, 2*time.Minute)
	if b.watch, err = openWatcher(driver, dsn); err != nil {
		return nil, err
	}
	if err = b.waitReady(ctx); err != nil {
		return nil, err
	}
	if err = b.watch.setConsumers(ctx, b.consumers); err != nil {
		return nil, err
	}
	return b, nil
}

// waitReady waits (at most 90 s) for the bridge to lead with its consumers
// running: the metrics name them (consumer_lag_events, one per runner) and
// say leader 1; with NATS, the sink must also have connected.
func (b *bridgeRun) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(90 * time.Second)
	for ctx.Err() == nil {
		if b.proc.Exited() {
			return fmt.Errorf("the bridge exited during start: %v\n%s", b.proc.Err(), b.logTail(20))
		}
		m, err := scrape(ctx, b.metricsURL)
		if err == nil && m.value("daarion_bridge_leader") == 1 {
			b.consumers = m.labels("daarion_bridge_consumer_lag_events", "consumer")
			natsOK := b.natsSrv == nil || (b.natsSrv.NumClients() > 0 && slices.Contains(b.consumers, "nats"))
			if len(b.consumers) > 0 && natsOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the bridge did not lead with its consumers (and NATS) within 90s (metrics: %v)\n%s", err, b.logTail(20))
		}
		clock.Sleep(ctx, 200*time.Millisecond)
	}
	return ctx.Err()
}

func (b *bridgeRun) logTail(n int) string {
	if b.proc == nil {
		return ""
	}
	return testrig.LastLines(b.proc.LogSince(0), n)
}

// warnings counts the bridge's log lines at warn or error and returns the
// last one, cut to 300 bytes.
func (b *bridgeRun) warnings() (n int, last string) {
	if b.proc == nil {
		return 0, ""
	}
	for line := range strings.SplitSeq(b.proc.LogSince(0), "\n") {
		if strings.Contains(line, `"level":"warn"`) || strings.Contains(line, `"level":"error"`) {
			n, last = n+1, line
		}
	}
	if len(last) > 300 {
		last = last[:300] + "…"
	}
	return n, last
}

// stop stops the bridge (SIGTERM, SIGKILL after 20 s), by its PID, then
// the NATS server, and removes the run's files (the SQLite database and
// the JetStream store can be gigabytes) unless keep.
func (b *bridgeRun) stop() { b.stopKeep(false) }

func (b *bridgeRun) stopKeep(keep bool) {
	if b.watch != nil {
		b.watch.close()
	}
	if b.proc != nil {
		if err := b.proc.Stop(20 * time.Second); err != nil {
			benchkit.Progress("[%s] stopping the bridge: %v", b.db, err)
		}
	}
	if b.api != nil {
		b.api.Close()
	}
	if b.natsSrv != nil {
		b.natsSrv.Stop()
	}
	if !keep {
		_ = os.RemoveAll(filepath.Join(b.dir, "nats"))
		for _, f := range []string{"bridge.db", "bridge.db-wal", "bridge.db-shm"} {
			_ = os.Remove(filepath.Join(b.dir, f))
		}
	}
}

// metrics is one scrape of a Prometheus text page: each sample line's
// name{labels} with its value.
type metrics map[string]float64

func scrape(ctx context.Context, url string) (metrics, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %d", url, resp.StatusCode)
	}
	m := metrics{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			m[line[:i]] = v
		}
	}
	return m, sc.Err()
}

// value is the sample of name without labels.
func (m metrics) value(name string) float64 { return m[name] }

// labels lists the values of label among name's samples, sorted.
func (m metrics) labels(name, label string) []string {
	var out []string
	for k := range m {
		if rest, ok := strings.CutPrefix(k, name+"{"); ok {
			if v := labelValue(rest, label); v != "" {
				out = append(out, v)
			}
		}
	}
	slices.Sort(out)
	return out
}

// sum adds name's samples whose labels contain every one of match
// (`key="value"` pairs).
func (m metrics) sum(name string, match ...string) float64 {
	var total float64
	for k, v := range m {
		rest, ok := strings.CutPrefix(k, name+"{")
		if !ok && k != name {
			continue
		}
		all := true
		for _, want := range match {
			all = all && strings.Contains(rest, want)
		}
		if all {
			total += v
		}
	}
	return total
}

func labelValue(labels, key string) string {
	_, rest, ok := strings.Cut(labels, key+`="`)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, `"`)
	return v
}

// profile takes a CPU profile of the bridge process over the next d (at
// most 25 s: the metrics listener answers within 30) into
// PREFIX-DB-SCENARIO.pprof when prefix is set; the returned func waits for
// it and says where it went, or why it failed.
func (b *bridgeRun) profile(ctx context.Context, prefix, scenario string, d time.Duration) func() string {
	if prefix == "" {
		return func() string { return "" }
	}
	seconds := max(1, int(min(d, 25*time.Second).Seconds()))
	path := fmt.Sprintf("%s-%s-%s.pprof", prefix, b.db, scenario)
	url := strings.TrimSuffix(b.metricsURL, "/metrics") + fmt.Sprintf("/debug/pprof/profile?seconds=%d", seconds)
	done := make(chan string, 1)
	go func() {
		done <- func() string {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return err.Error()
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Sprintf("profiling the bridge: %v", err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Sprintf("profiling the bridge: %s", resp.Status)
			}
			f, err := os.Create(path)
			if err != nil {
				return err.Error()
			}
			defer f.Close()
			if _, err = io.Copy(f, resp.Body); err != nil {
				return fmt.Sprintf("writing %s: %v", path, err)
			}
			return fmt.Sprintf("bridge CPU profile (%d s): %s", seconds, path)
		}()
	}()
	return func() string { return <-done }
}

// nextRun names a scenario's run (its database's name) and its directory.
func (r *rig) nextRun(db, scenario string) (name, dir string) {
	r.runSeq++
	return fmt.Sprintf("%s_%d_%s", r.tag, r.runSeq, scenario), filepath.Join(r.dir, db+"-"+scenario)
}
