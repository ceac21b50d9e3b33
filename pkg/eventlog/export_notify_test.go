package eventlog

// OnJournalListening makes the journal listener (PostgreSQL, ListenDSN) call
// f each time it starts to listen, first and after every reconnect, once it
// has woken the indexer for it. Set it before RunIndexer.
func (l *Log) OnJournalListening(f func()) { l.journal.listening = f }

// JournalChannel is the PostgreSQL notification channel of the journal.
const JournalChannel = journalChannel
