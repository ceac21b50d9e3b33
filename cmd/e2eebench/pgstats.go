//go:build goolm

package main

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	_ "github.com/lib/pq"
)

// pgStats reads, on PostgreSQL, how much database work the bridge did:
// commits and rows written in its database (pg_stat_database). Per event,
// clear against encrypted, it shows what the encrypted path adds in
// writes (the clear form journalled as a transaction of its own, and
// mautrix's crypto store), which CPU and latency alone do not tell apart.
type pgStats struct {
	db *sql.DB
}

type pgCounts struct{ commits, inserted, updated, deleted int64 }

func openPGStats(dsn string) (*pgStats, error) {
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	return &pgStats{db: db}, nil
}

func (p *pgStats) close() { _ = p.db.Close() }

// read takes a reading; PostgreSQL flushes a backend's statistics at most
// once a second, so it waits that out first.
func (p *pgStats) read(ctx context.Context) (pgCounts, error) {
	time.Sleep(1100 * time.Millisecond)
	var c pgCounts
	err := p.db.QueryRowContext(ctx, `SELECT xact_commit, tup_inserted, tup_updated, tup_deleted
		FROM pg_stat_database WHERE datname = current_database()`).Scan(&c.commits, &c.inserted, &c.updated, &c.deleted)
	return c, err
}

// perEvent formats the work between two readings per event.
func (a pgCounts) perEvent(b pgCounts, events int) string {
	n := float64(max(events, 1))
	return fmt.Sprintf("%.1f commits, %.1f rows inserted, %.1f updated, %.1f deleted",
		float64(b.commits-a.commits)/n, float64(b.inserted-a.inserted)/n, float64(b.updated-a.updated)/n, float64(b.deleted-a.deleted)/n)
}
