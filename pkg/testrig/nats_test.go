package testrig

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"
)

// The server comes back in place after Stop: same port, same JetStream
// store, so a stream and its messages survive.
func TestNATSRestartsInPlace(t *testing.T) {
	srv := StartNATS(t, NATSOptions{})
	port, url := srv.Port(), srv.URL()
	if port <= 0 {
		t.Fatalf("port %d", port)
	}
	publish := func() uint64 {
		t.Helper()
		nc, err := nats.Connect(url)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, err := natsjs.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		ctx := t.Context()
		if _, err = js.CreateOrUpdateStream(ctx, natsjs.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
			t.Fatal(err)
		}
		if _, err = js.Publish(ctx, "t.x", []byte("hi")); err != nil {
			t.Fatal(err)
		}
		info, err := js.Stream(ctx, "T")
		if err != nil {
			t.Fatal(err)
		}
		return info.CachedInfo().State.Msgs
	}
	if n := publish(); n != 1 {
		t.Fatalf("stream holds %d messages, want 1", n)
	}
	srv.Stop()
	if _, err := nats.Connect(url, nats.Timeout(time.Second)); err == nil {
		t.Fatal("connected to a stopped server")
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	if srv.Port() != port {
		t.Errorf("port after restart %d, want %d", srv.Port(), port)
	}
	if n := publish(); n != 2 {
		t.Errorf("stream holds %d messages after the restart, want 2 (the store was kept)", n)
	}
}

// Credentials, when set, are required.
func TestNATSCredentials(t *testing.T) {
	srv := StartNATS(t, NATSOptions{Username: "u", Password: "p"})
	if nc, err := nats.Connect(srv.URL(), nats.Timeout(2*time.Second)); err == nil {
		nc.Close()
		t.Error("connected without credentials")
	}
	nc, err := nats.Connect(srv.URL(), nats.UserInfo("u", "p"))
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
}
