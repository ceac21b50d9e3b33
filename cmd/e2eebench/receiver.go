//go:build goolm

package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/daarion/matrix-bridge/pkg/clock"
)

// arrival is when a DTO reached the receiver, and what it was.
type arrival struct {
	at   time.Time
	typ  string
	room string
}

// receiver is the loopback webhook endpoint: it notes when each DTO
// arrives, keyed by its id (the webhook-id header, which is the Matrix event
// id of a room event, the same for a decrypted one), and answers 204 at
// once. An event's id is known to the sender only when its send returns,
// which can be after its DTO arrived, so arrivals are kept and matched
// afterwards.
type receiver struct {
	srv *http.Server
	url string

	mu   sync.Mutex
	got  map[string]arrival
	dups int
}

func startReceiver() (*receiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	rc := &receiver{url: "http://" + ln.Addr().String() + "/hook", got: map[string]arrival{}}
	rc.srv = &http.Server{Handler: http.HandlerFunc(rc.serve), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = rc.srv.Serve(ln) }()
	return rc, nil
}

func (rc *receiver) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = rc.srv.Shutdown(ctx)
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	// The time of receipt is taken first: reading and decoding the body
	// is the receiver's cost, not the bridge's.
	at := time.Now()
	body, _ := io.ReadAll(r.Body)
	w.WriteHeader(http.StatusNoContent)
	var b struct {
		RoomID string `json:"room_id"`
		DTO    struct {
			Type string `json:"type"`
		} `json:"dto"`
	}
	_ = json.Unmarshal(body, &b)
	id := r.Header.Get("webhook-id")
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if _, seen := rc.got[id]; seen {
		rc.dups++ // a redelivery: the first arrival counts
		return
	}
	rc.got[id] = arrival{at: at, typ: b.DTO.Type, room: b.RoomID}
}

// lookup returns the arrivals of ids (absent: not arrived).
func (rc *receiver) lookup(ids []string) map[string]arrival {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	out := make(map[string]arrival, len(ids))
	for _, id := range ids {
		if a, ok := rc.got[id]; ok {
			out[id] = a
		}
	}
	return out
}

// waitFor waits until every id has arrived or timeout has passed, and
// returns how many have not.
func (rc *receiver) waitFor(ctx context.Context, ids []string, timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	for {
		missing := len(ids) - len(rc.lookup(ids))
		if missing == 0 || time.Now().After(deadline) || !clock.Sleep(ctx, 10*time.Millisecond) {
			return missing
		}
	}
}

// counts returns how many distinct DTOs and redeliveries arrived in all.
func (rc *receiver) counts() (dtos, dups int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.got), rc.dups
}
