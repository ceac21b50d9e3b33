package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/clock"
)

// message is one message a producer sent, or tried to.
type message struct {
	Key      string // unique; the body is bodyPrefix+Key
	Producer string // human1, agent2, ...
	Human    bool
	Room     id.RoomID
	EventID  id.EventID // what the send answered; "" if abandoned
	Attempts int
	Seq      int // the producer's own sequence number
	// First and Done are when the first attempt started and the send was
	// answered; Tries lists each failed attempt ("503 @+12.3s").
	First, Done time.Time
	Tries       []string
}

// loadStats is what the producers did.
type loadStats struct {
	mu        sync.Mutex
	produced  []message
	abandoned []message
	// Internal API answers by status, for every attempt of an agent's send.
	apiStatus map[int]int
	// Internal API attempts that got no answer (connection refused/reset, timeout).
	apiNoAnswer int
	// Human sends that failed and were retried (same transaction id), by reason.
	humanRetries map[string]int
	// Answers that were not retried (4xx other than 429), by producer kind.
	hardErrors []string
}

func newLoadStats() *loadStats {
	return &loadStats{apiStatus: map[int]int{}, humanRetries: map[string]int{}}
}

func (l *loadStats) summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var h, a int
	for _, m := range l.produced {
		if m.Human {
			h++
		} else {
			a++
		}
	}
	return fmt.Sprintf("produced %d (humans %d, agents %d), abandoned %d, API 5xx %d, API no answer %d, human retries %d",
		len(l.produced), h, a, len(l.abandoned), l.api5xxLocked(), l.apiNoAnswer, sumValues(l.humanRetries))
}

func (l *loadStats) api5xxLocked() int {
	n := 0
	for status, c := range l.apiStatus {
		if status >= 500 {
			n += c
		}
	}
	return n
}

func sumValues(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func (l *loadStats) producedIDs() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	ids := make([]string, len(l.produced))
	for i, m := range l.produced {
		ids[i] = m.EventID.String()
	}
	return ids
}

func (l *loadStats) snapshot() (produced, abandoned []message) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.produced), slices.Clone(l.abandoned)
}

// startLoad starts one goroutine per producer. Each sends its messages one
// after the other (so a producer's order is the order of its sends), paced
// so that all producers together post about opts.Rate messages a second,
// until stop is closed; a message in flight then still finishes (or is
// abandoned after opts.MsgTimeout).
func (s *soak) startLoad(ctx context.Context, stop <-chan struct{}, wg *sync.WaitGroup) {
	producers := s.opts.Humans + s.opts.Agents
	interval := time.Duration(float64(time.Second) * float64(producers) / s.opts.Rate)
	for i, cli := range s.humans {
		name := fmt.Sprintf("human%d", i+1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.produce(ctx, stop, name, true, i, interval, func(ctx context.Context, m *message) error {
				return s.sendAsHuman(ctx, cli, m)
			})
		}()
	}
	for i := 0; i < s.opts.Agents; i++ {
		name := fmt.Sprintf("agent%d", i+1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.produce(ctx, stop, name, false, s.opts.Humans+i, interval, func(ctx context.Context, m *message) error {
				return s.sendAsAgent(ctx, name, m)
			})
		}()
	}
}

// produce is one producer's loop. offset staggers producers within an interval.
func (s *soak) produce(ctx context.Context, stop <-chan struct{}, name string, human bool, offset int, interval time.Duration,
	send func(ctx context.Context, m *message) error) {
	producers := s.opts.Humans + s.opts.Agents
	next := time.Now().Add(interval * time.Duration(offset) / time.Duration(producers))
	for seq := 1; ; seq++ {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-time.After(time.Until(next)):
		}
		next = next.Add(interval)
		if behind := time.Until(next); behind < -interval {
			next = time.Now() // after an outage, go on at the steady pace, no burst
		}
		m := message{
			Key:      fmt.Sprintf("%s-%05d-%s", name, seq, randomHex(3)),
			Producer: name, Human: human, Seq: seq,
			Room: s.rooms[(offset+seq)%len(s.rooms)],
		}
		msgCtx, cancel := context.WithTimeout(ctx, s.opts.MsgTimeout)
		m.First = time.Now()
		err := send(msgCtx, &m)
		m.Done = time.Now()
		cancel()
		s.load.mu.Lock()
		if err == nil {
			s.load.produced = append(s.load.produced, m)
		} else {
			s.load.abandoned = append(s.load.abandoned, m)
			s.load.hardErrors = append(s.load.hardErrors, fmt.Sprintf("%s %s: %v", name, m.Key, err))
		}
		s.load.mu.Unlock()
	}
}

// retryWait is the pause before attempt n (1-based) of a message.
func retryWait(n int) time.Duration {
	return min(200*time.Millisecond<<min(n-1, 4), 2*time.Second)
}

// sendAsHuman sends with a real Matrix client, retrying connection errors,
// 5xx and 429 with the same transaction id (as clients do).
func (s *soak) sendAsHuman(ctx context.Context, cli *mautrix.Client, m *message) error {
	content := &event.MessageEventContent{MsgType: event.MsgText, Body: bodyPrefix + m.Key}
	txnID := "soak-" + m.Key
	for {
		m.Attempts++
		resp, err := cli.SendMessageEvent(ctx, m.Room, event.EventMessage, content, mautrix.ReqSendEvent{TransactionID: txnID})
		if err == nil {
			m.EventID = resp.EventID
			return nil
		}
		var httpErr mautrix.HTTPError
		reason := "no answer"
		if errors.As(err, &httpErr) && httpErr.Response != nil {
			code := httpErr.Response.StatusCode
			if code < 500 && code != http.StatusTooManyRequests {
				return fmt.Errorf("homeserver answered %d: %w", code, err)
			}
			reason = fmt.Sprintf("HTTP %d", code)
		}
		s.load.mu.Lock()
		s.load.humanRetries[reason]++
		s.load.mu.Unlock()
		m.Tries = append(m.Tries, fmt.Sprintf("%s @+%.1fs", reason, time.Since(s.start).Seconds()))
		if !clock.Sleep(ctx, retryWait(m.Attempts)) {
			return fmt.Errorf("gave up after %d attempts: %w", m.Attempts, err)
		}
	}
}

// sendAsAgent posts through the internal API with an Idempotency-Key,
// retrying connection errors, 5xx and 429 with the same key.
func (s *soak) sendAsAgent(ctx context.Context, agent string, m *message) error {
	body := map[string]any{"room_id": m.Room, "sender": "agent:" + agent, "msgtype": "m.text", "body": bodyPrefix + m.Key}
	header := map[string]string{"Idempotency-Key": "soak-" + m.Key}
	for {
		m.Attempts++
		var out struct {
			EventID id.EventID `json:"event_id"`
		}
		status, raw, err := s.api.Call(ctx, http.MethodPost, "/internal/matrix/send", header, body, &out)
		s.load.mu.Lock()
		if status == 0 {
			s.load.apiNoAnswer++
		} else {
			s.load.apiStatus[status]++
		}
		s.load.mu.Unlock()
		switch {
		case err == nil && status == http.StatusOK && strings.HasPrefix(out.EventID.String(), "$"):
			m.EventID = out.EventID
			return nil
		case err == nil && status < 500 && status != http.StatusTooManyRequests:
			return fmt.Errorf("internal API answered %d: %s", status, raw)
		}
		if err == nil {
			err = fmt.Errorf("internal API answered %d: %s", status, raw)
			m.Tries = append(m.Tries, fmt.Sprintf("%d @+%.1fs", status, time.Since(s.start).Seconds()))
		} else {
			m.Tries = append(m.Tries, fmt.Sprintf("no answer @+%.1fs", time.Since(s.start).Seconds()))
		}
		if !clock.Sleep(ctx, retryWait(m.Attempts)) {
			return fmt.Errorf("gave up after %d attempts: %w", m.Attempts, err)
		}
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// statusCounts renders a status → count map, sorted.
func statusCounts(m map[int]int) string {
	var keys []int
	for k := range m {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d×%d", m[k], k))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
