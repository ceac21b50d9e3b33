package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/daarion/matrix-bridge/internal/benchkit"
	"github.com/daarion/matrix-bridge/pkg/clock"
)

// txnSender pushes appservice transactions as a homeserver does: PUT
// /_matrix/app/v1/transactions/{txnId} with the hs_token as a bearer token,
// over one keep-alive connection, one transaction in flight (Synapse never
// sends the next before the answer to the previous).
type txnSender struct {
	base   string // the appservice endpoint, http://host:port
	token  string
	prefix string // transaction ids are prefix + a counter: never numeric, so the bridge's gap watch for Synapse's ids ignores them
	client *http.Client
	seq    int
}

func newTxnSender(base, token, prefix string) *txnSender {
	tr := &http.Transport{
		Proxy:               nil, // loopback, whatever $HTTP_PROXY says
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}
	return &txnSender{base: base, token: token, prefix: prefix, client: &http.Client{Transport: tr, Timeout: time.Minute}}
}

func (s *txnSender) close() { s.client.CloseIdleConnections() }

// put sends one transaction and returns how long its answer took (send to
// the whole 200 read).
func (s *txnSender) put(ctx context.Context, body []byte) (time.Duration, error) {
	s.seq++
	req, err := http.NewRequestWithContext(ctx, http.MethodPut,
		s.base+"/_matrix/app/v1/transactions/"+s.prefix+strconv.Itoa(s.seq), bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, err
	}
	answer, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	d := time.Since(start)
	if err != nil {
		return d, err
	}
	if resp.StatusCode != http.StatusOK {
		return d, fmt.Errorf("transaction %d: HTTP %d: %s", s.seq, resp.StatusCode, bytes.TrimSpace(answer))
	}
	return d, nil
}

// loadResult is what a closed loop of transactions measured.
type loadResult struct {
	txns, events int
	errors       int
	lastErr      string
	first, end   time.Time // the first send, and the last answer
	answers      []time.Duration
	lastID       string // the last event sent
}

func (r *loadResult) rate() float64 {
	if d := r.end.Sub(r.first).Seconds(); d > 0 {
		return float64(r.events) / d
	}
	return 0
}

// closedLoop sends batch-event transactions back to back for d (or until
// maxTxns): the homeserver's push when it has a backlog. A failed
// transaction is counted and, as a homeserver would, retried after a
// short pause with the same event ids under a new transaction id (the
// bridge stores each event once, by event id).
func closedLoop(ctx context.Context, s *txnSender, g *payloadGen, phase byte, first, batch int, d time.Duration) loadResult {
	res := loadResult{answers: make([]time.Duration, 0, 1<<14)}
	res.first = time.Now()
	deadline := res.first.Add(d)
	seq := first
	for ctx.Err() == nil && time.Now().Before(deadline) {
		body := g.transaction(phase, seq, batch, time.Now(), nil)
		took, err := s.put(ctx, body)
		if err != nil {
			res.errors++
			res.lastErr = err.Error()
			if !clock.Sleep(ctx, 50*time.Millisecond) {
				break
			}
			continue
		}
		res.answers = append(res.answers, took)
		res.txns++
		res.events += batch
		res.lastID = g.eventID(phase, seq+batch-1)
		seq += batch
	}
	res.end = time.Now()
	return res
}

// answerRow is the row of a loop's answers.
func answerRow(db, variant string, r loadResult) benchkit.Row {
	return benchkit.NewRow(db, variant, "answer: PUT → 200 (n = transactions)", benchkit.Summarize(r.answers), r.errors, r.rate(), "events/s")
}
