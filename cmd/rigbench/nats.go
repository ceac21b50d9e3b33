package main

import (
	"errors"
	"sync/atomic"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// natsProbe is an in-process nats-server with JetStream and a subscriber
// counting what arrives on daarion.>: the DTO subjects of the JetStream
// sink (pkg/delivery/jetstream). It tells whether the bridge uses
// delivery.nats_url at all, and how fast DTOs reach NATS when it does.
type natsProbe struct {
	srv      *natsserver.Server
	nc       *nats.Conn
	url      string
	received atomic.Int64
}

// startNATSProbe starts the server; observe gets each message's
// Nats-Msg-Id (the DTO id).
func startNATSProbe(storeDir string, observe func(dtoID string)) (*natsProbe, error) {
	srv, err := natsserver.NewServer(&natsserver.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: storeDir,
		NoSigs: true, NoLog: true, MaxPayload: 8 << 20,
	})
	if err != nil {
		return nil, err
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("nats-server did not become ready")
	}
	p := &natsProbe{srv: srv, url: srv.ClientURL()}
	if p.nc, err = nats.Connect(p.url); err != nil {
		srv.Shutdown()
		return nil, err
	}
	if _, err = p.nc.Subscribe("daarion.>", func(m *nats.Msg) {
		p.received.Add(1)
		observe(m.Header.Get(nats.MsgIdHdr))
	}); err != nil {
		p.close()
		return nil, err
	}
	return p, p.nc.Flush()
}

func (p *natsProbe) close() {
	if p.nc != nil {
		p.nc.Close()
	}
	p.srv.Shutdown()
	p.srv.WaitForShutdown()
}
