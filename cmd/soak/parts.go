package main

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/daarion/matrix-bridge/pkg/clock"
	"github.com/daarion/matrix-bridge/pkg/delivery/webhook"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// ---- the bridge as a child process ----

// spawnBridge starts the bridge binary as a testrig.Process: SIGKILL from
// the kernel if the soak dies, so it does not leave a bridge running.
func spawnBridge(bin, configPath, logPath string) (*testrig.Process, error) {
	return testrig.StartProcess(testrig.ProcessOptions{Path: bin, Args: []string{"-c", configPath}, LogFile: logPath})
}

// terminate sends SIGTERM and waits up to timeout, then SIGKILL; clean is
// an exit with status 0 on SIGTERM.
func terminate(p *testrig.Process, timeout time.Duration) (clean bool) {
	if p.Exited() {
		return false
	}
	return p.Stop(timeout) == nil && p.Err() == nil
}

// ---- the signed webhook receivers ----

// hookDelivery is one DTO the receiver accepted (answered 2xx).
type hookDelivery struct {
	dtoID, roomID, dtoType, key string
	at                          time.Time // when the receiver accepted it
}

// receiver is a webhook endpoint on loopback that checks every signature
// and records what it accepted, in arrival order. A slow receiver (holdEvery
// > 0) holds the first request for every holdEvery-th DTO (chosen by its id)
// for hold, longer than the bridge's attempt timeout, so the attempt fails
// and is retried; the retry is answered at once.
type receiver struct {
	name string
	url  string
	srv  *http.Server
	ln   net.Listener

	holdEvery int
	hold      time.Duration

	mu       sync.Mutex
	secret   string
	failing  bool
	accepted []hookDelivery
	requests map[string]int // requests per DTO id (slow receiver)
	attempts int            // every request
	refused  int            // answered 500 on purpose
	held     int            // held past the attempt timeout on purpose
	badSig   int
	badBody  int
}

func startReceiver(name string, holdEvery int, hold time.Duration) (*receiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	rc := &receiver{name: name, ln: ln, url: "http://" + ln.Addr().String() + "/hook", holdEvery: holdEvery, hold: hold, requests: map[string]int{}}
	rc.srv = &http.Server{Handler: http.HandlerFunc(rc.serve), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = rc.srv.Serve(ln) }()
	return rc, nil
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	rc.mu.Lock()
	status, hold := rc.judgeLocked(r, body, err)
	rc.mu.Unlock()
	if hold {
		// Slower than the attempt timeout: the bridge gives up first and
		// retries; nothing is recorded.
		clock.Sleep(r.Context(), rc.hold)
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(status)
}

// judgeLocked checks one request and records it when accepted; hold says
// to hold it instead. With rc.mu held, so that accepted is in answer order.
func (rc *receiver) judgeLocked(r *http.Request, body []byte, readErr error) (status int, hold bool) {
	rc.attempts++
	if readErr != nil {
		rc.badBody++
		return http.StatusBadRequest, false
	}
	if rc.failing {
		rc.refused++
		return http.StatusInternalServerError, false
	}
	if rc.secret == "" {
		// Not subscribed yet (the subscribe answer is still on its way).
		return http.StatusServiceUnavailable, false
	}
	ts, _ := strconv.ParseInt(r.Header.Get("webhook-timestamp"), 10, 64)
	if !webhook.Verify(rc.secret, r.Header.Get("webhook-id"), ts, body, r.Header.Get("webhook-signature")) {
		// Not accepted: a receiver must not trust it. The bridge retries.
		rc.badSig++
		return http.StatusUnauthorized, false
	}
	var b webhook.Body
	var dto dtoFields
	if json.Unmarshal(body, &b) != nil || json.Unmarshal(b.DTO, &dto) != nil || dto.ID == "" || dto.ID != r.Header.Get("webhook-id") {
		rc.badBody++
		return http.StatusBadRequest, false
	}
	if rc.holdEvery > 0 {
		rc.requests[dto.ID]++
		h := fnv.New32a()
		_, _ = h.Write([]byte(dto.ID))
		if rc.requests[dto.ID] == 1 && h.Sum32()%uint32(rc.holdEvery) == 0 {
			rc.held++
			return 0, true
		}
	}
	rc.accepted = append(rc.accepted, hookDelivery{dtoID: dto.ID, roomID: b.RoomID, dtoType: dto.Type, key: dto.key(), at: time.Now()})
	return http.StatusNoContent, false
}

func (rc *receiver) setSecret(secret string) {
	rc.mu.Lock()
	rc.secret = secret
	rc.mu.Unlock()
}

func (rc *receiver) setFailing(f bool) {
	rc.mu.Lock()
	rc.failing = f
	rc.mu.Unlock()
}

func (rc *receiver) snapshot() []hookDelivery {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]hookDelivery(nil), rc.accepted...)
}

func (rc *receiver) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = rc.srv.Shutdown(ctx)
}

// dtoFields is the part of a DTO the soak reads.
type dtoFields struct {
	ID   string `json:"id"`
	Type string `json:"type"`
	Room *struct {
		MatrixRoomID string `json:"matrix_room_id"`
	} `json:"room"`
	Data struct {
		Body string `json:"body"`
	} `json:"data"`
}

// key is the soak message key in a message DTO's body, "" for other DTOs.
func (d dtoFields) key() string {
	return messageKey(d.Data.Body)
}

// bodyPrefix starts the body of every message the soak sends.
const bodyPrefix = "soak "

func messageKey(body string) string {
	k, ok := strings.CutPrefix(body, bodyPrefix)
	if !ok {
		return ""
	}
	return k
}

// ---- the front door ----

// front stands where the homeserver and the agents reach the bridge (the
// registration's appservice URL and the internal API's base URL) and
// forwards every request to one of the bridge processes, as a load balancer
// in front of several would. The soak chooses which: see setTarget. When
// the target is down, the client's connection is closed without an answer,
// as it would be by the dead process itself.
type front struct {
	targets []frontTarget

	mu     sync.Mutex
	target int
	srvs   []*http.Server
}

// frontTarget is one bridge process's own listeners.
type frontTarget struct {
	appservice, api *url.URL
}

func startFront(asPort, apiPort int, targets []frontTarget) (*front, error) {
	f := &front{targets: targets}
	transport := &http.Transport{MaxIdleConnsPerHost: 32, IdleConnTimeout: 30 * time.Second}
	for _, l := range []struct {
		port int
		pick func(frontTarget) *url.URL
	}{
		{asPort, func(t frontTarget) *url.URL { return t.appservice }},
		{apiPort, func(t frontTarget) *url.URL { return t.api }},
	} {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", l.port))
		if err != nil {
			f.close()
			return nil, fmt.Errorf("front door on port %d: %w", l.port, err)
		}
		pick := l.pick
		proxy := &httputil.ReverseProxy{
			Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(pick(f.current())) },
			Transport: transport,
			ErrorLog:  log.New(io.Discard, "", 0),
			ErrorHandler: func(http.ResponseWriter, *http.Request, error) {
				panic(http.ErrAbortHandler) // no answer, as from a dead process
			},
		}
		srv := &http.Server{Handler: proxy, ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
		f.srvs = append(f.srvs, srv)
		go func() { _ = srv.Serve(ln) }()
	}
	return f, nil
}

func (f *front) current() frontTarget {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.targets[f.target]
}

// setTarget sends new requests to process i; those in flight finish where
// they are.
func (f *front) setTarget(i int) {
	f.mu.Lock()
	f.target = i
	f.mu.Unlock()
}

func (f *front) targetIndex() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.target
}

func (f *front) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, srv := range f.srvs {
		_ = srv.Shutdown(ctx)
	}
}
