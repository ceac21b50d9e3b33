package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/lib/pq"
	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	mautrixas "maunium.net/go/mautrix/appservice"

	"github.com/daarion/matrix-bridge/database"
	"github.com/daarion/matrix-bridge/pkg/appservice"
	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// target is one transaction endpoint served on a real 127.0.0.1 listener.
type target struct {
	baseURL string
	// handler records the time spent inside the HTTP handler (routing,
	// auth, reading and parsing the body, storing, writing the answer).
	handler *recorder
	// appends records the time spent in eventlog.Log.Append (nil for mautrix).
	appends *recorder
	// count returns how many events the endpoint has taken in (stored in
	// the log, or drained from mautrix's Events channel).
	count func(ctx context.Context) (int64, error)
	// conns counts the TCP connections accepted.
	conns *atomic.Int64
	close func()
}

// timedHandler records how long each request spends in the handler.
type timedHandler struct {
	next http.Handler
	rec  *recorder
}

func (h timedHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	h.next.ServeHTTP(w, r)
	h.rec.add(time.Since(start))
}

// timedAppender records how long each journal commit (what the answer
// waits for) takes.
type timedAppender struct {
	log *eventlog.Log
	rec *recorder
}

func (a *timedAppender) JournalParsed(ctx context.Context, txnID string, body []byte, events []eventlog.IncomingEvent) error {
	start := time.Now()
	err := a.log.JournalParsed(ctx, txnID, body, events)
	a.rec.add(time.Since(start))
	return err
}

// serveLoopback serves h with net/http on a fresh 127.0.0.1 port, counting
// the connections it accepts in conns.
func serveLoopback(h http.Handler, conns *atomic.Int64) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute,
		ConnState: func(_ net.Conn, state http.ConnState) {
			if state == http.StateNew {
				conns.Add(1)
			}
		}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			progress("HTTP server: %v", err)
		}
	}()
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}
	return "http://" + ln.Addr().String(), stop, nil
}

// openDatabase returns a fresh database for a scenario: a new database in the
// throwaway cluster, or a new SQLite file in the run's temporary directory;
// and its DSN.
func (e *env) openDatabase(ctx context.Context, store, name string) (*dbutil.Database, string, error) {
	var tgt database.Target
	switch store {
	case storePostgres, storePostgresNoSync:
		dbName := "bench_" + strings.ReplaceAll(name, "-", "_")
		dsn, err := e.cluster.CreateDatabase(ctx, dbName)
		if err != nil {
			return nil, "", err
		}
		if store == storePostgresNoSync {
			// Diagnostic only: commits are acknowledged before the WAL is
			// flushed, which shows how much of the latency is the fsync.
			if _, err := e.admin.ExecContext(ctx, "ALTER DATABASE "+pq.QuoteIdentifier(dbName)+" SET synchronous_commit = off"); err != nil {
				return nil, "", err
			}
		}
		tgt = database.Target{Type: "postgres", URI: dsn}
	case storeSQLite:
		tgt = database.Target{Type: database.SQLiteDriver, URI: testrig.SQLiteURI(filepath.Join(e.dir, name+".db"))}
	default:
		return nil, "", fmt.Errorf("unknown store %q", store)
	}
	db, err := database.Open(ctx, tgt, database.PoolOptions{}, zerolog.Nop())
	return db, tgt.URI, err
}

// startBridge serves the bridge's own durable transaction endpoint over a
// fresh database.
func (e *env) startBridge(ctx context.Context, sc scenarioDef) (*target, error) {
	db, dsn, err := e.openDatabase(ctx, sc.Store, sc.Name)
	if err != nil {
		return nil, err
	}
	log := eventlog.New(db)
	app := &timedAppender{log: log, rec: &recorder{}}
	srv := appservice.NewServer(appservice.Options{HSToken: e.token}, app, nil, zerolog.Nop())
	handler := &recorder{}
	conns := &atomic.Int64{}
	url, stop, err := serveLoopback(timedHandler{next: srv, rec: handler}, conns)
	if err != nil {
		_ = log.Close()
		_ = db.Close()
		return nil, err
	}
	// The indexer runs beside the endpoint, as in the bridge: it competes for
	// the same CPUs, so its cost is in the figures; and, as in the bridge,
	// it listens for notifications of journals (PostgreSQL), so what they
	// cost is in the figures too.
	indexCtx, stopIndexer := context.WithCancel(context.Background())
	indexed := make(chan struct{})
	go func() {
		defer close(indexed)
		log.RunIndexer(indexCtx, appservice.ParseTransaction, eventlog.IndexerOptions{ListenDSN: dsn})
	}()
	return &target{
		baseURL: url,
		handler: handler,
		appends: app.rec,
		// Every acknowledged event must reach the log: wait for the journal
		// to drain (bounded), then count.
		count: func(ctx context.Context) (int64, error) {
			deadline := time.Now().Add(2 * time.Minute)
			for {
				n, err := log.JournalBacklog(ctx)
				if err != nil || n == 0 || time.Now().After(deadline) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			return log.Count(ctx)
		},
		conns: conns,
		close: func() {
			stop()
			stopIndexer()
			<-indexed
			_ = log.Close()
			_ = db.Close()
		},
	}, nil
}

// startMautrix serves mautrix's default transaction handler, which answers
// 200 once the events are handed to the in-memory Events channel. A
// goroutine drains the channel so that it never blocks.
func (e *env) startMautrix() (*target, error) {
	as := mautrixas.Create()
	as.Registration = &mautrixas.Registration{ServerToken: e.token}
	var drained atomic.Int64
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-as.Events:
				drained.Add(1)
			case <-done:
				return
			}
		}
	}()
	handler := &recorder{}
	conns := &atomic.Int64{}
	url, stop, err := serveLoopback(timedHandler{next: as.Router, rec: handler}, conns)
	if err != nil {
		close(done)
		return nil, err
	}
	return &target{
		baseURL: url,
		handler: handler,
		conns:   conns,
		count: func(ctx context.Context) (int64, error) {
			// The handler answers once the events are in the channel; give
			// the drainer a moment to take the last ones.
			for i := 0; i < 100 && len(as.Events) > 0; i++ {
				time.Sleep(time.Millisecond)
			}
			return drained.Load(), nil
		},
		close: func() {
			stop()
			close(done)
		},
	}, nil
}
