package eventlog

// OnIndexerWaiting makes RunIndexer call f each time it has emptied the
// journal and starts to wait: a test that journals after that knows that
// only a wake-up (or the poll) can index it. Set it before RunIndexer.
func (l *Log) OnIndexerWaiting(f func()) { l.journal.waiting = f }
