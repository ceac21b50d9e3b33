package eventlog

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"

	"github.com/daarion/matrix-bridge/pkg/clock"
	"github.com/daarion/matrix-bridge/pkg/leader"
)

// Parser extracts a transaction's events from its body (the appservice
// package's parser). The indexer runs it again on journalled bodies, which
// were already validated when they were received.
type Parser func(txnID string, body []byte) ([]IncomingEvent, error)

// journal is the transaction path: a transaction's body is committed as one
// row, in one statement, and the homeserver is answered. Everything else —
// splitting it into events, deduplicating, recording the transaction id —
// happens after the answer, in the indexer.
type journal struct {
	db     *dbutil.Database
	prepMu sync.Mutex
	insert *sql.Stmt
	wake   chan struct{}
	// waiting, when set (by tests), is called each time the indexer has
	// emptied the journal and starts to wait.
	waiting func()
	// indexed is IndexerOptions.Indexed of the running indexer, strip its
	// stripping (IndexerOptions.stripper), for handed-off events.
	indexed func(txnIDs []string)
	strip   func([]IncomingEvent) []IncomingEvent
	// token (see self) marks this Log's notifications on PostgreSQL.
	tokenOnce sync.Once
	token     string
	// notifyPending is the one pending signal (see notifyJournalled) of
	// journals not yet notified; notifying is set while their sender runs.
	// (Zero values ready to use: the sender starts on the first journal.)
	notifyPending atomic.Bool
	notifying     atomic.Bool
	// indexing: this process runs the indexer (it leads). Its journals wake
	// it in memory, and no other process reads the journal, so they notify
	// nobody: a single process, and the leader, pay nothing for the
	// cross-process wake.
	indexing atomic.Bool
	// listening, when set (by tests), is called each time the journal
	// listener (re)starts to listen, after it has woken the indexer.
	listening func()
	// committing, when set (by tests), is called inside the indexer's
	// database transaction, after its writes and before its commit.
	committing func()
	// linger is the running indexer's IndexerOptions.GroupCommit, and
	// lastBatch when it last read rows from the journal to index.
	linger    time.Duration
	lastBatch time.Time
}

// lingerAfterCommit waits, when the indexer's last batch was read less
// than linger ago, until linger has passed since that read or this process
// has handed off a full commit's events (indexBatchEvents), or ctx ends: batches
// are read at most once per linger. A batch that took longer than that to
// commit found the next one waiting and waits for nothing more (a
// backlog's commits, tens of milliseconds each, are not slowed).
func (j *journal) lingerAfterCommit(ctx context.Context, h *handoff) {
	if j.linger <= 0 || j.lastBatch.IsZero() {
		return
	}
	wait := j.linger - time.Since(j.lastBatch)
	if wait <= 0 {
		return
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		if pending, _ := h.backlog(); pending >= indexBatchEvents {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			return
		case <-j.wake:
		}
	}
}

const insertJournalQuery = `INSERT INTO txn_journal (txn_id, received_at, body) VALUES ($1, $2, $3) RETURNING seq`

// Journal durably records a transaction's body; it returns after the
// commit. The indexer turns it into log events: it is woken at once in this
// process, and on PostgreSQL in any other by a notification, sent after the
// commit and off the transaction path (see notifyJournalled and listen).
func (l *Log) Journal(ctx context.Context, txnID string, body []byte) error {
	if _, err := l.journalRow(ctx, txnID, body); err != nil {
		return err
	}
	l.journal.wakeIndexer()
	if l.db.Dialect == dbutil.Postgres {
		l.journal.notifyJournalled(ctx)
	}
	return nil
}

// journalRow commits a transaction's body to the journal and returns its seq.
func (l *Log) journalRow(ctx context.Context, txnID string, body []byte) (int64, error) {
	now := time.Now().UnixMilli()
	var seq int64
	var err error
	if l.db.Dialect == dbutil.Postgres {
		var stmt *sql.Stmt
		if stmt, err = l.journal.prepared(ctx); err == nil {
			err = stmt.QueryRowContext(ctx, txnID, now, string(body)).Scan(&seq)
		}
	} else {
		var done func()
		if done, err = l.sqliteWrite(ctx); err == nil {
			err = l.db.QueryRow(ctx, insertJournalQuery, txnID, now, string(body)).Scan(&seq)
			done()
		}
	}
	if err != nil {
		return 0, fmt.Errorf("failed to journal transaction %s: %w", txnID, err)
	}
	return seq, nil
}

// stripped applies the running indexer's stripping to handed-off events.
func (j *journal) stripped(events []IncomingEvent) []IncomingEvent {
	if j.strip == nil {
		return events
	}
	return j.strip(events)
}

// prepared returns the journal insert, prepared once: one round trip per
// transaction, no re-planning.
func (j *journal) prepared(ctx context.Context) (*sql.Stmt, error) {
	j.prepMu.Lock()
	defer j.prepMu.Unlock()
	if j.insert == nil {
		stmt, err := j.db.RawDB.PrepareContext(ctx, insertJournalQuery)
		if err != nil {
			return nil, fmt.Errorf("failed to prepare the journal insert: %w", err)
		}
		j.insert = stmt
	}
	return j.insert, nil
}

// JournalBacklog counts transactions received but not yet in the log.
func (l *Log) JournalBacklog(ctx context.Context) (int64, error) {
	return l.count(ctx, "SELECT COUNT(*) FROM txn_journal", "the journal")
}

// indexBatch bounds how many journalled transactions one indexing commit takes.
const indexBatch = 64

type journalRow struct {
	seq        int64
	txnID      string
	receivedAt int64
	// The row's body, read from the database (hasBody), or what the
	// transaction path handed off (handed: body and events).
	body    string
	hasBody bool
	handed  *handedOff
}

// text is the row's body as stored (to park it).
func (r *journalRow) text() string {
	if r.handed != nil {
		return string(r.handed.body)
	}
	return r.body
}

type parkedRow struct {
	row   journalRow
	cause error
}

// IndexPending moves journalled transactions into the log, oldest first,
// until the journal is empty; it returns how many it took out of the
// journal, indexed or parked. Only one indexer may run at a time (the bridge
// runs it in the leader process).
func (l *Log) IndexPending(ctx context.Context, parse Parser) (int, error) {
	total, full := 0, false
	for {
		if !full {
			// A full read says more is waiting: no reason to wait for it.
			l.journal.lingerAfterCommit(ctx, &l.handoff)
		}
		read := time.Now()
		rows, err := l.readJournal(ctx)
		if err != nil || len(rows) == 0 {
			return total, err
		}
		l.journal.lastBatch, full = read, len(rows) == indexBatch
		for len(rows) > 0 {
			chunk := rows[:commitRows(rows)]
			if err = l.indexRows(ctx, parse, chunk); err != nil {
				return total, err
			}
			seqs := make([]int64, len(chunk))
			for i, row := range chunk {
				seqs[i] = row.seq
			}
			l.handoff.done(seqs, chunk[0].seq)
			total += len(chunk)
			rows = rows[len(chunk):]
		}
	}
}

// indexBatchEvents bounds the handed-off events of one indexing commit: a
// commit of 64 full transactions (6,400 events) took a third of a second,
// and everything waiting for the log (the consumers, and a transaction
// answer held back by Pace) waited for all of it.
const indexBatchEvents = 2000

// commitRows is how many of rows (at least one) go in the next commit:
// up to indexBatchEvents handed-off events (a row read back counts as one).
func commitRows(rows []journalRow) int {
	events := 0
	for i, row := range rows {
		n := 1
		if row.handed != nil {
			n = max(1, len(row.handed.events))
		}
		if i > 0 && events+n > indexBatchEvents {
			return i
		}
		events += n
	}
	return len(rows)
}

// readJournal reads the oldest journalled rows, with the events handed off
// by this process's transaction path, or else their bodies.
func (l *Log) readJournal(ctx context.Context) ([]journalRow, error) {
	rows, err := l.db.Query(ctx, `SELECT seq, txn_id, received_at FROM txn_journal ORDER BY seq LIMIT $1`, indexBatch)
	out, err := dbutil.NewRowIterWithError(rows, func(row dbutil.Scannable) (r journalRow, err error) {
		err = row.Scan(&r.seq, &r.txnID, &r.receivedAt)
		return r, err
	}, err).AsList()
	if err != nil {
		return nil, fmt.Errorf("failed to read the journal: %w", err)
	}
	if err = l.readBodies(ctx, out); err != nil {
		return nil, err
	}
	// A row gone between the two reads (an operator's delete) is left out.
	return slices.DeleteFunc(out, func(r journalRow) bool { return r.handed == nil && !r.hasBody }), nil
}

// indexRows moves several journalled transactions into the log. The batch
// goes in one database transaction; if the database refuses it for its data
// (see refusedForData), the rows go in one at a time instead, and the ones it
// refuses are parked, so that one row nothing can store does not hold back
// the journal for ever. Any other failure leaves the batch in the journal for
// the next attempt.
func (l *Log) indexRows(ctx context.Context, parse Parser, rows []journalRow) error {
	err := l.indexBatch(ctx, parse, rows)
	if err == nil || !refusedForData(err) {
		return err
	}
	log := zerolog.Ctx(ctx)
	if len(rows) > 1 {
		log.Warn().Err(err).Int("transactions", len(rows)).
			Msg("The database refused a batch of journalled transactions; indexing them one by one")
	}
	for _, row := range rows {
		refusal := l.indexBatch(ctx, parse, []journalRow{row})
		if refusal == nil {
			continue
		}
		if !refusedForData(refusal) {
			return refusal
		}
		if err = l.park(ctx, row, refusal); err != nil {
			return err
		}
		log.Error().Err(refusal).Int64("seq", row.seq).Str("txn_id", row.txnID).
			Msg("The database refused a journalled transaction; parked")
	}
	return nil
}

// indexBatch stores the events of several journalled transactions and
// deletes them from the journal, in one database transaction: one commit
// for the batch, and a crash leaves either all of it or none.
func (l *Log) indexBatch(ctx context.Context, parse Parser, rows []journalRow) error {
	log := zerolog.Ctx(ctx)
	var added []*Event
	var unparseable []parkedRow
	done, err := l.sqliteWrite(ctx)
	if err != nil {
		return fmt.Errorf("failed to index %d journalled transactions: %w", len(rows), err)
	}
	l.appendMu.Lock()
	err = l.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		// Fenced: only the leader of this epoch moves journal rows into the
		// log; and appends are serialised across processes (appendLockKey).
		if err := leader.CheckLocking(ctx, l.db, appendLockKey); err != nil {
			return err
		}
		seqs := make([]any, 0, len(rows))
		marks := make([]string, 0, len(rows))
		txns := make([]*pendingTransaction, 0, len(rows))
		for _, row := range rows {
			seqs = append(seqs, row.seq)
			marks = append(marks, fmt.Sprintf("$%d", len(seqs)))
			var events []IncomingEvent
			var parseErr error
			if row.handed != nil {
				events = l.journal.stripped(row.handed.events)
			} else {
				events, parseErr = parse(row.txnID, []byte(row.body))
			}
			if parseErr != nil {
				// It was valid when it was answered 200; a parser change
				// must not wedge the journal, so it is parked.
				if err := l.insertParked(ctx, row, fmt.Errorf("no longer parses: %w", parseErr)); err != nil {
					return err
				}
				unparseable = append(unparseable, parkedRow{row, parseErr})
				continue
			}
			txns = append(txns, &pendingTransaction{txnID: row.txnID, receivedAt: row.receivedAt, events: events})
		}
		var err error
		if added, err = l.insertTransactions(ctx, txns); err != nil {
			return err
		}
		_, err = l.db.Exec(ctx, `DELETE FROM txn_journal WHERE seq IN (`+strings.Join(marks, ", ")+`)`, seqs...)
		if err != nil {
			return fmt.Errorf("failed to clear indexed journal rows: %w", err)
		}
		if l.journal.committing != nil {
			l.journal.committing()
		}
		return nil
	})
	if err == nil {
		// Before the wake-up below, so that a consumer it wakes finds them.
		sort.Slice(added, func(i, j int) bool { return added[i].Position < added[j].Position })
		l.tail.add(added)
	} else {
		// The commit may have happened all the same (a connection lost
		// during COMMIT): the tail no longer knows the log; the indexer
		// arms it again from the database.
		l.tail.disarm()
	}
	l.appendMu.Unlock()
	done()
	if err != nil {
		return fmt.Errorf("failed to index %d journalled transactions: %w", len(rows), err)
	}
	for _, p := range unparseable {
		log.Error().Err(p.cause).Int64("seq", p.row.seq).Str("txn_id", p.row.txnID).
			Msg("Journalled transaction no longer parses; parked")
	}
	if len(added) > 0 {
		l.changed.notify()
	}
	if l.journal.indexed != nil {
		ids := make([]string, len(rows))
		for i, row := range rows {
			ids[i] = row.txnID
		}
		l.journal.indexed(ids)
	}
	log.Debug().Int("transactions", len(rows)).Int("stored", len(added)).Msg("Indexed journalled transactions")
	return nil
}

// DefaultPollInterval is how often the indexer looks at the journal when
// IndexerOptions sets no interval.
const DefaultPollInterval = time.Second

// IndexerOptions tune RunIndexer; zero values take the defaults.
type IndexerOptions struct {
	// PollInterval is how often the journal is read without a wake-up: the
	// safety net for transactions journalled by another process, which on
	// PostgreSQL with ListenDSN set wake it by notification (this process's
	// own journals wake it at once). Default DefaultPollInterval.
	PollInterval time.Duration
	// ListenDSN, on PostgreSQL, is the connection string (the pool's own)
	// of the connection the indexer LISTENs through for other processes'
	// journals: one connection more, outside the pool. Ignored on SQLite;
	// empty: the poll only.
	ListenDSN string
	// Indexed, when set, is told the ids of each batch of transactions once
	// it is committed to the log, in journal order (the homeserver's order of
	// sending): the reconciler watches them for gaps.
	Indexed func(txnIDs []string)
	// Confidential and Strip, when both set, keep the message content of
	// confidential rooms out of the log: the room events (timeline and
	// decrypted) of a room Confidential names are stored as Strip returns
	// them (mapping.StripContent, which leaves state and ciphertext as they
	// are). Both are called for every event indexed: Confidential must
	// answer from memory (rooms.ConfidentialRooms.Is). The journal row,
	// which holds the whole transaction, is deleted in the same commit.
	Confidential func(roomID string) bool
	Strip        func(eventJSON []byte) []byte
	// GroupCommit is how often, at most, the indexer reads a batch from the
	// journal: while transactions come faster, each commit takes all that
	// came in that time, not the one or two that came during the last
	// commit. A batch that took longer to commit, and an indexer idle for
	// longer, do not wait. 0: none.
	GroupCommit time.Duration
}

// Parser returns parse with the options' stripping applied to what it
// extracts (parse itself when Confidential or Strip is unset): what
// RunIndexer indexes with.
func (opts IndexerOptions) Parser(parse Parser) Parser {
	strip := opts.stripper()
	if strip == nil {
		return parse
	}
	return func(txnID string, body []byte) ([]IncomingEvent, error) {
		events, err := parse(txnID, body)
		return strip(events), err
	}
}

// stripper returns the options' stripping of a transaction's events, nil
// when there is none. It does not change events: a stripped list is a copy
// (handed-off events are shared with the transaction path).
func (opts IndexerOptions) stripper() func([]IncomingEvent) []IncomingEvent {
	if opts.Confidential == nil || opts.Strip == nil {
		return nil
	}
	return func(events []IncomingEvent) []IncomingEvent {
		copied := false
		for i := range events {
			evt := &events[i]
			if (evt.Kind == KindTimeline || evt.Kind == KindDecrypted) && evt.RoomID != "" && opts.Confidential(evt.RoomID) {
				if !copied {
					events, copied = slices.Clone(events), true
					evt = &events[i]
				}
				evt.JSON = string(opts.Strip([]byte(evt.JSON)))
			}
		}
		return events
	}
}

// RunIndexer indexes the journal until ctx ends: at once when this process
// journals a transaction, on PostgreSQL (opts.ListenDSN) at once when
// another process does, and every opts.PollInterval in any case.
func (l *Log) RunIndexer(ctx context.Context, parse Parser, opts IndexerOptions) {
	log := zerolog.Ctx(ctx).With().Str("component", "indexer").Logger()
	ctx = log.WithContext(ctx)
	parse = opts.Parser(parse)
	l.journal.indexed = opts.Indexed
	l.journal.strip = opts.stripper()
	l.journal.linger = opts.GroupCommit
	l.journal.indexing.Store(true)
	l.handoff.setActive(true)
	defer func() {
		l.handoff.setActive(false)
		l.journal.indexed, l.journal.strip, l.journal.linger = nil, nil, 0
		l.journal.indexing.Store(false)
		l.tail.disarm()
	}()
	if opts.ListenDSN != "" && l.db.Dialect == dbutil.Postgres {
		listenCtx, stopListening := context.WithCancel(ctx)
		listened := l.journal.listen(listenCtx, opts.ListenDSN)
		defer func() { stopListening(); <-listened }()
	}
	poll := opts.PollInterval
	if poll <= 0 {
		poll = DefaultPollInterval
	}
	wait := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := l.rearmTail(ctx)
		if err == nil {
			_, err = l.IndexPending(ctx, parse)
		}
		if err != nil && ctx.Err() == nil {
			log.Err(err).Dur("retry_in", wait).Msg("Indexing the journal failed")
			clock.Sleep(ctx, wait)
			wait = min(wait*2, 10*time.Second)
			continue
		}
		wait = 100 * time.Millisecond
		if l.journal.waiting != nil {
			l.journal.waiting()
		}
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
		case <-l.journal.wake:
		case <-t.C:
		}
		t.Stop()
	}
}
