package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	_ "github.com/lib/pq"           // the bridge's PostgreSQL driver
	_ "github.com/mattn/go-sqlite3" // "sqlite3", the engine under the bridge's own SQLite driver

	"github.com/daarion/matrix-bridge/pkg/clock"
)

// watcher reads the bridge's database directly, beside the bridge, for
// what "through every consumer" means there: the journal (transactions
// answered but not yet in the event log), the log's head, and each
// consumer's durable cursor. Only reads, one connection.
type watcher struct {
	db        *sql.DB
	consumers []string // the bridge's consumers; one without a cursor row is at 0
	noJournal bool     // the schema has no txn_journal (a build that dropped it): backlog 0
}

func openWatcher(driver, dsn string) (*watcher, error) {
	db, err := sql.Open(driver, dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	return &watcher{db: db}, nil
}

func (w *watcher) close() { _ = w.db.Close() }

// setConsumers takes the runners' names from the metrics, plus any cursor
// row already in the table (every consumer_cursor row must pass the last
// event, also one of a consumer the metrics did not name).
func (w *watcher) setConsumers(ctx context.Context, names []string) error {
	cur, err := w.cursors(ctx)
	if err != nil {
		return err
	}
	w.consumers = slices.Clone(names)
	for name := range cur {
		if !slices.Contains(w.consumers, name) {
			w.consumers = append(w.consumers, name)
		}
	}
	slices.Sort(w.consumers)
	return nil
}

func (w *watcher) cursors(ctx context.Context) (map[string]int64, error) {
	rows, err := w.db.QueryContext(ctx, "SELECT name, position FROM consumer_cursor")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var name string
		var pos int64
		if err := rows.Scan(&name, &pos); err != nil {
			return nil, err
		}
		out[name] = pos
	}
	return out, rows.Err()
}

// sample is one reading of the pipeline's state.
type sample struct {
	At       time.Duration    `json:"-"`
	AtS      float64          `json:"t_s"` // since the phase began
	Backlog  int64            `json:"journal_backlog"`
	Head     int64            `json:"log_head"`
	MaxLag   int64            `json:"max_consumer_lag"`
	Slowest  string           `json:"slowest_consumer"`
	MinCurs  int64            `json:"-"`
	Cursors  map[string]int64 `json:"-"`
	ReadTook time.Duration    `json:"-"`
}

func (w *watcher) read(ctx context.Context) (sample, error) {
	t := time.Now()
	var s sample
	if !w.noJournal {
		err := w.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM txn_journal").Scan(&s.Backlog)
		if err != nil && missingTable(err) {
			w.noJournal = true
		} else if err != nil {
			return s, fmt.Errorf("counting txn_journal: %w", err)
		}
	}
	var head sql.NullInt64
	if err := w.db.QueryRowContext(ctx, "SELECT MAX(position) FROM event_log").Scan(&head); err != nil {
		return s, fmt.Errorf("reading the log head: %w", err)
	}
	s.Head = head.Int64
	cur, err := w.cursors(ctx)
	if err != nil {
		return s, fmt.Errorf("reading consumer_cursor: %w", err)
	}
	s.Cursors = map[string]int64{}
	s.MinCurs = -1
	for _, name := range w.consumers {
		pos := cur[name]
		s.Cursors[name] = pos
		if s.MinCurs < 0 || pos < s.MinCurs {
			s.MinCurs, s.Slowest = pos, name
		}
	}
	s.MaxLag = max(s.Head-s.MinCurs, 0)
	s.ReadTook = time.Since(t)
	return s, nil
}

func missingTable(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "no such table") || strings.Contains(msg, "does not exist")
}

// position is the log position of an event, 0 while it is not in the log.
func (w *watcher) position(ctx context.Context, eventID string) (int64, error) {
	var pos int64
	err := w.db.QueryRowContext(ctx, "SELECT position FROM event_log WHERE event_id = $1", eventID).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return pos, err
}

// through is the moment every consumer had passed lastID and the journal
// was empty; it polls every 5 ms from now for at most timeout. ok is false
// when it never happened; last is the final reading.
func (w *watcher) through(ctx context.Context, lastID string, timeout time.Duration) (at time.Time, last sample, ok bool, err error) {
	deadline := time.Now().Add(timeout)
	var pos int64
	for ctx.Err() == nil {
		t := time.Now()
		if pos == 0 {
			if pos, err = w.position(ctx, lastID); err != nil {
				return t, last, false, err
			}
		}
		if last, err = w.read(ctx); err != nil {
			return t, last, false, err
		}
		if pos > 0 && last.Backlog == 0 && last.MinCurs >= pos {
			// The moment is when the reading started: the state held by then
			// at the latest, and the reading's own time is the bench's.
			return t, last, true, nil
		}
		if time.Now().After(deadline) {
			return t, last, false, nil
		}
		clock.Sleep(ctx, 5*time.Millisecond)
	}
	return time.Now(), last, false, ctx.Err()
}

// sampler reads the pipeline's state every second in the background.
type sampler struct {
	mu      sync.Mutex
	samples []sample
	errs    int
	stop    chan struct{}
	done    chan struct{}
}

func (w *watcher) startSampler(ctx context.Context, start time.Time) *sampler {
	s := &sampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-s.stop:
				return
			case <-tick.C:
			}
			r, err := w.read(ctx)
			s.mu.Lock()
			if err != nil {
				s.errs++
			} else {
				r.At = time.Since(start)
				r.AtS = r.At.Seconds()
				s.samples = append(s.samples, r)
			}
			s.mu.Unlock()
		}
	}()
	return s
}

// finish stops the sampler and returns its samples.
func (s *sampler) finish() []sample {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.samples
}

// resetStatements creates pg_stat_statements in the bridge's database (the
// cluster loads it: -pg-statements) and zeroes its counts.
func (w *watcher) resetStatements(ctx context.Context) error {
	if _, err := w.db.ExecContext(ctx, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`); err != nil {
		return fmt.Errorf("creating pg_stat_statements: %w", err)
	}
	if _, err := w.db.ExecContext(ctx, `SELECT pg_stat_statements_reset()`); err != nil {
		return fmt.Errorf("resetting pg_stat_statements: %w", err)
	}
	return nil
}

// statementStat is one normalised statement's counts since resetStatements.
type statementStat struct {
	Query  string  `json:"query"`
	Calls  int64   `json:"calls"`
	ExecMS float64 `json:"exec_ms"`
	Rows   int64   `json:"rows"`
}

type statementStats struct {
	top   []statementStat
	calls int64 // every statement's, not only top's
}

// statements reads the n statements run most often since resetStatements,
// the ones of the same shape but for the number of rows (an IN list, a
// multi-row VALUES) counted as one; and how many statements ran in all.
func (w *watcher) statements(ctx context.Context, n int) (statementStats, error) {
	rows, err := w.db.QueryContext(ctx, `SELECT query, calls, total_exec_time, rows FROM pg_stat_statements`)
	if err != nil {
		return statementStats{}, fmt.Errorf("reading pg_stat_statements: %w", err)
	}
	defer rows.Close()
	var out statementStats
	byShape := map[string]*statementStat{}
	for rows.Next() {
		var st statementStat
		if err := rows.Scan(&st.Query, &st.Calls, &st.ExecMS, &st.Rows); err != nil {
			return statementStats{}, fmt.Errorf("reading pg_stat_statements: %w", err)
		}
		out.calls += st.Calls
		shape := statementShape(st.Query)
		if have := byShape[shape]; have != nil {
			have.Calls, have.ExecMS, have.Rows = have.Calls+st.Calls, have.ExecMS+st.ExecMS, have.Rows+st.Rows
			continue
		}
		st.Query = shape
		byShape[shape] = &st
	}
	if err := rows.Err(); err != nil {
		return statementStats{}, fmt.Errorf("reading pg_stat_statements: %w", err)
	}
	for _, st := range byShape {
		out.top = append(out.top, *st)
	}
	slices.SortFunc(out.top, func(a, b statementStat) int { return int(b.Calls - a.Calls) })
	out.top = out.top[:min(n, len(out.top))]
	return out, nil
}

var (
	spaces     = regexp.MustCompile(`\s+`)
	paramLists = regexp.MustCompile(`\(\$\d+(, \$\d+)*\)(, \(\$\d+(, \$\d+)*\))*`)
)

// statementShape is a statement's text on one line, its parameter lists
// (an IN list, each VALUES row) shown as (…), cut at 140 characters.
func statementShape(query string) string {
	q := paramLists.ReplaceAllString(strings.TrimSpace(spaces.ReplaceAllString(query, " ")), "(…)")
	if len(q) > 140 {
		q = q[:140] + "…"
	}
	return q
}

// describe is the statements, one a line, with their calls per event.
func (s statementStats) describe(events int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "    %d statements in all, %.2f per event", s.calls, float64(s.calls)/float64(max(events, 1)))
	for _, st := range s.top {
		fmt.Fprintf(&b, "\n    %9d  %6.3f/event  %8.0f ms  %9d rows  %s", st.Calls, float64(st.Calls)/float64(max(events, 1)), st.ExecMS, st.Rows, st.Query)
	}
	return b.String()
}
