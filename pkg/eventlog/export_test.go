package eventlog

// OnIndexerWaiting makes RunIndexer call f each time it has emptied the
// journal and starts to wait: a test that journals after that knows that
// only a wake-up (or the poll) can index it. Set it before RunIndexer.
func (l *Log) OnIndexerWaiting(f func()) { l.journal.waiting = f }

// OnIndexerCommitting makes the indexer call f inside each of its database
// transactions, after its writes and before the commit (SQLite's write
// lock held). Set it before RunIndexer.
func (l *Log) OnIndexerCommitting(f func()) { l.journal.committing = f }

// TailCovers reports whether a Read after position is served from the
// in-memory tail.
func (l *Log) TailCovers(after int64) bool {
	_, ok := l.tail.read(after, 1)
	return ok
}

// Handing reports whether JournalParsed hands events to this Log's indexer
// (it runs), and how many rows it holds.
func (l *Log) Handing() (bool, int) {
	l.handoff.mu.Lock()
	defer l.handoff.mu.Unlock()
	return l.handoff.active, len(l.handoff.byseq)
}

// IndexBatchEvents bounds the handed-off events of one indexing commit.
const IndexBatchEvents = indexBatchEvents

// EventsPerInsert bounds the rows of one event insert.
const EventsPerInsert = eventsPerInsert
