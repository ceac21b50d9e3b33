package main

import (
	"sync/atomic"

	"github.com/nats-io/nats.go"

	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// natsProbe is an in-process NATS server with JetStream and a subscriber
// counting what arrives on daarion.>: the DTO subjects of the JetStream
// sink (pkg/delivery/jetstream). It tells whether the bridge uses
// delivery.nats_url at all, and how fast DTOs reach NATS when it does.
type natsProbe struct {
	srv      *testrig.NATSServer
	nc       *nats.Conn
	url      string
	received atomic.Int64
}

// startNATSProbe starts the server; observe gets each message's
// Nats-Msg-Id (the DTO id).
func startNATSProbe(storeDir string, observe func(dtoID string)) (*natsProbe, error) {
	srv, err := testrig.NewNATS(testrig.NATSOptions{StoreDir: storeDir, MaxPayload: 8 << 20})
	if err != nil {
		return nil, err
	}
	p := &natsProbe{srv: srv, url: srv.URL()}
	if p.nc, err = nats.Connect(p.url); err != nil {
		srv.Stop()
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
	p.srv.Stop()
}
