package bridge

import (
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/daarion/matrix-bridge/pkg/config"
	"github.com/daarion/matrix-bridge/pkg/syncapi"
)

// serverTimeouts bound how long one connection may hold a listener: while it
// sends its headers, trickles its body, waits for its answer, or idles.
type serverTimeouts struct {
	// Header bounds reading a request's line and headers.
	Header time.Duration
	// BodyGrace and BodyMinRate pace a request body, as Apache's
	// mod_reqtimeout does (body=20,MinRate=500): the body has BodyGrace to
	// start, and each byte received earns 1/BodyMinRate s more. A large body
	// on a fast link is read whole however long it takes (one fixed read
	// timeout cannot allow a 32 MiB transaction and still cut off a trickle
	// soon); a body sent a byte at a time is cut off soon after BodyGrace.
	BodyGrace   time.Duration
	BodyMinRate int64 // bytes per second
	// Answer is how long the handler has to answer once the request is in
	// (its body, or its headers when there is none): the write deadline,
	// when the request's context ends too.
	Answer time.Duration
	// Idle bounds the wait for the next request on a kept-alive connection.
	Idle time.Duration
}

const (
	headerTimeout = 10 * time.Second
	bodyGrace     = 10 * time.Second
	// bodyMinRate lets the largest bodies through on any link a homeserver
	// or a DAARION service should use (a 32 MiB transaction may take 8.5
	// minutes, a 50 MiB upload about 13) and cuts off a trickle within
	// moments of bodyGrace.
	bodyMinRate = 64 << 10
	// idleTimeout is above Synapse's keep-alive (its HTTP client pool drops
	// a connection idle for 2 minutes), so that an idle connection is closed
	// by the client rather than under a request the client is sending.
	idleTimeout = 3 * time.Minute
	// answerMargin is added to the longest a handler may wait on purpose.
	answerMargin = 30 * time.Second
	// paceMaxWait is the longest a transaction's answer is held back while
	// the indexer catches up (appservice.pace_journal_events): far below
	// Synapse's 60 s timeout, so pacing slows the homeserver and never
	// makes it retry.
	paceMaxWait = time.Second
)

// appserviceTimeouts: a transaction is answered once committed, and a commit
// may take a minute (appservice.Options.CommitTimeout); Synapse itself gives
// up after 60 s.
func appserviceTimeouts() serverTimeouts {
	return serverTimeouts{Header: headerTimeout, BodyGrace: bodyGrace, BodyMinRate: bodyMinRate,
		Answer: 2 * time.Minute, Idle: idleTimeout}
}

// internalAPITimeouts: the longest waits are a sync long-poll (syncMax) and
// a request waiting on the homeserver, such as an upload's copy to its media
// repository (the appservice client's timeout, homeserverTimeout).
func internalAPITimeouts(syncMax, homeserverTimeout time.Duration) serverTimeouts {
	return serverTimeouts{Header: headerTimeout, BodyGrace: bodyGrace, BodyMinRate: bodyMinRate,
		Answer: max(syncMax, homeserverTimeout) + answerMargin, Idle: idleTimeout}
}

// metricsTimeouts: a scrape reads the latest status sample and in-memory
// counters, never the database.
func metricsTimeouts() serverTimeouts {
	return serverTimeouts{Header: headerTimeout, BodyGrace: bodyGrace, BodyMinRate: bodyMinRate,
		Answer: answerMargin, Idle: idleTimeout}
}

// syncMaxTimeout is the longest sync long-poll: delivery.sync_timeout_ms, or
// the sync API's default when that is 0 (as syncapi.New reads it).
func syncMaxTimeout(cfg *config.Config) time.Duration {
	if d := cfg.Delivery.SyncTimeout(); d > 0 {
		return d
	}
	return syncapi.DefaultMaxTimeout
}

// newServer returns the HTTP server of one listener, with the timeouts t.
// pace sets each request's read and write deadlines; ReadTimeout and
// WriteTimeout are what a request would get without it.
func newServer(handler http.Handler, t serverTimeouts) *http.Server {
	return &http.Server{
		Handler:           t.pace(handler),
		ReadHeaderTimeout: t.Header,
		ReadTimeout:       t.Header + t.Answer,
		WriteTimeout:      t.Answer,
		IdleTimeout:       t.Idle,
	}
}

// pace sets a request's deadlines: Answer from now without a body, or
// following the body as it arrives (see serverTimeouts).
func (t serverTimeouts) pace(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if r.Body == nil || r.Body == http.NoBody {
			t.answerBy(rc, time.Now().Add(t.Answer))
		} else {
			body := &pacedBody{ReadCloser: r.Body, rc: rc, t: t, start: time.Now()}
			body.extend()
			r.Body = body
		}
		next.ServeHTTP(w, r)
	})
}

// answerBy sets both deadlines of a request that is in. The read deadline
// applies to the server's background read (which watches for the client
// going away, without a deadline of its own): when it passes, the request's
// context ends, so a handler past its time stops instead of working on for
// an answer that can no longer be written.
func (serverTimeouts) answerBy(rc *http.ResponseController, deadline time.Time) {
	_ = rc.SetReadDeadline(deadline)
	_ = rc.SetWriteDeadline(deadline)
}

// pacedBody is a request body that must keep up BodyMinRate after BodyGrace.
type pacedBody struct {
	io.ReadCloser
	rc    *http.ResponseController
	t     serverTimeouts
	start time.Time
	read  int64
	done  bool
}

func (b *pacedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.read += int64(n)
	switch {
	case b.done:
	case errors.Is(err, io.EOF):
		// The body is in: the handler has Answer, as without a body.
		b.done = true
		b.t.answerBy(b.rc, time.Now().Add(b.t.Answer))
	case n > 0:
		b.extend()
	}
	return n, err
}

// extend sets the read deadline the bytes so far have earned, and the write
// deadline Answer after it: nothing can be answered before the body is in.
func (b *pacedBody) extend() {
	earned := time.Duration(float64(b.read) / float64(b.t.BodyMinRate) * float64(time.Second))
	deadline := b.start.Add(b.t.BodyGrace + earned)
	_ = b.rc.SetReadDeadline(deadline)
	_ = b.rc.SetWriteDeadline(deadline.Add(b.t.Answer))
}
