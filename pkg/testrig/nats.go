package testrig

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// NATSOptions configures an in-process NATS server with JetStream.
type NATSOptions struct {
	// Port is the port on 127.0.0.1; 0 picks a free one. It stays the same
	// across Stop and Start.
	Port int
	// StoreDir is JetStream's storage; StartNATS defaults it to t.TempDir().
	// It survives Stop for Start.
	StoreDir string
	// Username and Password, when set, are required of clients.
	Username, Password string
	// MaxPayload is the largest message; 0: the server's default (1 MiB).
	MaxPayload int32
}

// NATSServer is a NATS server with JetStream in this process, on a fixed
// loopback port and store directory, so that it can be stopped and started
// again in place. Its methods are safe for concurrent use.
type NATSServer struct {
	opts NATSOptions

	mu  sync.Mutex
	srv *server.Server
}

// NewNATS starts a NATS server with JetStream and waits until it accepts
// connections. Stop it when done.
func NewNATS(opts NATSOptions) (*NATSServer, error) {
	if opts.StoreDir == "" {
		return nil, errors.New("testrig: NATSOptions.StoreDir is required")
	}
	n := &NATSServer{opts: opts}
	return n, n.Start()
}

// StartNATS is NewNATS for tests: StoreDir defaults to t.TempDir(), and the
// server is stopped at the end of the test (harmlessly again, if the test
// already did). It calls t.Fatal if the server does not start.
func StartNATS(t testing.TB, opts NATSOptions) *NATSServer {
	t.Helper()
	if opts.StoreDir == "" {
		opts.StoreDir = t.TempDir()
	}
	n, err := NewNATS(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Stop)
	return n
}

// Port is the server's port on 127.0.0.1.
func (n *NATSServer) Port() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.opts.Port
}

// URL is nats://127.0.0.1:<Port>, without credentials.
func (n *NATSServer) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.Port()) }

// NumClients is how many clients are connected now (0 when stopped).
func (n *NATSServer) NumClients() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.srv == nil {
		return 0
	}
	return n.srv.NumClients()
}

// Start starts the server again after Stop, on the same port and store
// directory. It is a no-op when the server is running.
func (n *NATSServer) Start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.srv != nil {
		return nil
	}
	port := n.opts.Port
	if port == 0 {
		port = -1 // the server picks one; kept for restarts below
	}
	var lastErr error
	// A port just freed by our own Stop may not be let go of by the kernel
	// yet: retry briefly.
	for range 20 {
		srv, err := server.NewServer(&server.Options{
			ServerName: "testrig", Host: "127.0.0.1", Port: port,
			JetStream: true, StoreDir: n.opts.StoreDir,
			JetStreamMaxMemory: 64 << 20, JetStreamMaxStore: 1 << 30,
			Username: n.opts.Username, Password: n.opts.Password, MaxPayload: n.opts.MaxPayload,
			NoLog: true, NoSigs: true,
		})
		if err != nil {
			return fmt.Errorf("testrig: configuring NATS: %w", err)
		}
		srv.Start()
		if srv.ReadyForConnections(10 * time.Second) {
			if addr, ok := srv.Addr().(*net.TCPAddr); ok {
				n.opts.Port = addr.Port
			}
			n.srv = srv
			return nil
		}
		srv.Shutdown()
		srv.WaitForShutdown()
		lastErr = fmt.Errorf("testrig: NATS on port %d did not become ready", port)
		time.Sleep(250 * time.Millisecond)
	}
	return lastErr
}

// Stop shuts the server down (clients see their connection close) and
// waits until it is down. It is a no-op when the server is not running.
func (n *NATSServer) Stop() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.srv == nil {
		return
	}
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
	n.srv = nil
}
