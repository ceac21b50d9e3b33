package eventlog

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync/atomic"
	"time"

	"github.com/lib/pq"
	"github.com/rs/zerolog"
)

// On PostgreSQL a journalled transaction wakes the leader's indexer in
// whichever process took it: once the journal insert has committed, the
// journalling Log NOTIFYs journalChannel, and the indexer LISTENs on it
// through a connection of its own. The poll stays as the safety net (a
// notify that failed, a listener that is down, a pooler that drops LISTEN).
//
// The notification is not sent by the journal insert itself: PostgreSQL
// serialises the commits of notifying transactions (a global lock held past
// the commit's flush), which would take group commit away from concurrent
// journals. It is sent after the commit, in a transaction of its own, off
// the transaction path, and a burst of journals is coalesced into one.

// journalChannel is the PostgreSQL notification channel of the journal.
const journalChannel = "daarion_bridge_journal"

// notifyJournalQuery sends the journal's notification; it runs on the pool,
// autocommit. The payload ($2) is the journalling Log's token, by which that
// Log's own indexer, already woken in its process, ignores it.
const notifyJournalQuery = `SELECT pg_notify($1, $2)`

// notifyTimeout bounds one notification; a notify that takes longer (or
// fails) is dropped, for the poll to cover.
const notifyTimeout = 5 * time.Second

// notifyJournalled tells other processes, without blocking, that this Log
// has journalled (a transaction already committed). A notification not yet
// sent covers this journal too: a burst of journals is coalesced, and one
// journalled while a notification is in flight makes exactly one more. The
// sender runs only while there is something to send, so there is none to
// stop when the Log is closed (beyond a notify in flight, which ends with
// the pool or its timeout).
func (j *journal) notifyJournalled(ctx context.Context) {
	if j.indexing.Load() {
		return // this process's indexer is woken in memory
	}
	if j.notifyPending.Swap(true) {
		return // one pending already, to be sent after this journal's commit
	}
	if j.notifying.CompareAndSwap(false, true) {
		go j.sendNotifications(zerolog.Ctx(ctx).With().Str("component", "journal_notifier").Logger())
	}
}

// sendNotifications sends one notification per pending signal until none
// is pending. At most one runs at a time (j.notifying): a signal that
// arrives as it stops either starts another or is taken by this one.
func (j *journal) sendNotifications(log zerolog.Logger) {
	for {
		if j.notifyPending.Swap(false) {
			j.notify(log)
			continue
		}
		j.notifying.Store(false)
		if !j.notifyPending.Load() || !j.notifying.CompareAndSwap(false, true) {
			return
		}
	}
}

// notify sends one notification; a failure is dropped (the poll is the
// safety net).
func (j *journal) notify(log zerolog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), notifyTimeout)
	defer cancel()
	if _, err := j.db.RawDB.ExecContext(ctx, notifyJournalQuery, journalChannel, j.self()); err != nil {
		log.Debug().Err(err).Msg("Could not notify other processes of a journal; their poll will find it")
	}
}

// Reconnection bounds of the journal listener, and how often it checks a
// quiet connection (a connection can die without a word, as in a network
// partition; pq.Listener only notices when it uses it).
const (
	listenerMinReconnect = 100 * time.Millisecond
	listenerMaxReconnect = 10 * time.Second
	listenerPing         = 30 * time.Second
)

// self is the token this Log's notifications carry.
func (j *journal) self() string {
	j.tokenOnce.Do(func() {
		var b [8]byte
		_, _ = rand.Read(b[:])
		j.token = hex.EncodeToString(b[:])
	})
	return j.token
}

// wakeIndexer wakes the indexer without blocking: a wake-up already pending
// covers this one.
func (j *journal) wakeIndexer() {
	select {
	case j.wake <- struct{}{}:
	default:
	}
}

// listen wakes the indexer whenever another process journals, until ctx
// ends; the returned channel is closed once it has stopped. Its connection
// (to dsn, outside the pool) reconnects by itself; once it listens again,
// the indexer is woken to read the journal once, for the notifications sent
// while it was away. It is woken the same way when it first listens, for
// what was journalled before.
func (j *journal) listen(ctx context.Context, dsn string) <-chan struct{} {
	log := zerolog.Ctx(ctx).With().Str("component", "journal_listener").Logger()
	listener := pq.NewListener(dsn, listenerMinReconnect, listenerMaxReconnect, func(ev pq.ListenerEventType, err error) {
		switch ev {
		case pq.ListenerEventDisconnected:
			log.Warn().Err(err).Msg("Lost the journal listener's connection; reconnecting (the poll covers until then)")
		case pq.ListenerEventConnectionAttemptFailed:
			log.Warn().Err(err).Msg("The journal listener could not connect; retrying")
		case pq.ListenerEventReconnected:
			log.Info().Msg("The journal listener reconnected")
		}
	})
	self := j.self()
	listening := func() {
		j.wakeIndexer()
		if j.listening != nil {
			j.listening()
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			_ = listener.Close()
			// pq closes Notify when its goroutine ends, which may be after
			// a reconnect delay; it must not block on a full channel.
			go func() {
				for range listener.Notify {
				}
			}()
		}()
		listened := make(chan error, 1)
		go func() { listened <- listener.Listen(journalChannel) }()
		ping := time.NewTicker(listenerPing)
		defer ping.Stop()
		var pinging atomic.Bool
		for {
			select {
			case <-ctx.Done():
				return
			case err := <-listened:
				if err != nil {
					if ctx.Err() == nil {
						log.Err(err).Msg("Could not listen for other processes' journals; they are found by the poll only")
					}
					return
				}
				log.Debug().Msg("Listening for other processes' journals")
				listening()
			case n, ok := <-listener.Notify:
				switch {
				case !ok:
					return
				case n == nil: // reconnected: notifications may have been missed
					listening()
				case n.Extra != self:
					j.wakeIndexer()
				}
			case <-ping.C:
				if pinging.CompareAndSwap(false, true) {
					go func() {
						defer pinging.Store(false)
						_ = listener.Ping() // a dead connection fails, and is replaced
					}()
				}
			}
		}
	}()
	return done
}
