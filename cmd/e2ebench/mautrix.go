package main

import (
	"context"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	mautrixas "maunium.net/go/mautrix/appservice"
)

// mautrixRef serves mautrix's default, non-durable transaction handler in
// this process (as cmd/loadgen's reference does): it answers 200 once the
// events are handed to its in-memory Events channel, which a goroutine
// drains. Its answer rate, under the same load and on the same cores, is
// the yardstick of the bridge's end-to-end rate (issue 15).
type mautrixRef struct {
	url     string
	token   string
	srv     *http.Server
	done    chan struct{}
	drained atomic.Int64
	as      *mautrixas.AppService
}

func startMautrix(token string) (*mautrixRef, error) {
	as := mautrixas.Create()
	as.Registration = &mautrixas.Registration{ServerToken: token}
	m := &mautrixRef{token: token, done: make(chan struct{}), as: as}
	go func() {
		for {
			select {
			case <-as.Events:
				m.drained.Add(1)
			case <-m.done:
				return
			}
		}
	}()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		close(m.done)
		return nil, err
	}
	m.url = "http://" + ln.Addr().String()
	m.srv = &http.Server{Handler: as.Router, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = m.srv.Serve(ln) }() // a failure shows as the sender's errors
	return m, nil
}

// count is how many events the handler took in (after the last answer,
// the drainer gets a moment for the channel's last ones).
func (m *mautrixRef) count() int64 {
	for i := 0; i < 100 && len(m.as.Events) > 0; i++ {
		time.Sleep(time.Millisecond)
	}
	return m.drained.Load()
}

func (m *mautrixRef) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = m.srv.Shutdown(ctx)
	close(m.done)
}
