package testrig

import (
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// FreePort returns a TCP port on 127.0.0.1 that is free now, chosen below
// the kernel's ephemeral range. A port the kernel hands out (listening on
// port 0) is from that range, so between this call and the server binding
// it any outgoing connection on the machine may take it as its local port;
// one below the range is only ever taken by someone who asks for it.
//
// A port is handed out once per process: a test that asks for three ports
// before it starts anything gets three different ones (a free port stays
// free until its server binds it, so without the record two calls could
// return the same one — CI once gave a Synapse and the bridge's appservice
// listener the same port).
func FreePort() (int, error) {
	low := ephemeralLow()
	handedOut.Lock()
	defer handedOut.Unlock()
	for range 200 {
		port := 10000 + rand.IntN(low-10000)
		if handedOut.ports[port] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err == nil {
			_ = l.Close()
			handedOut.ports[port] = true
			return port, nil
		}
	}
	return 0, errors.New("testrig: no free port below the ephemeral range")
}

// handedOut are the ports FreePort returned in this process.
var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// ephemeralLow is the lowest port of the kernel's ephemeral range (32768 by
// default on Linux).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 11000 {
				return n
			}
		}
	}
	return 32768
}

// FreeTestPort is FreePort for tests: it calls t.Fatal when there is none.
func FreeTestPort(t testing.TB) int {
	t.Helper()
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}
