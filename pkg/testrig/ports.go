package testrig

import (
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// FreePort returns a TCP port on 127.0.0.1 that is free now, chosen below
// the kernel's ephemeral range. A port the kernel hands out (listening on
// port 0) is from that range, so between this call and the server binding
// it any outgoing connection on the machine may take it as its local port;
// one below the range is only ever taken by someone who asks for it.
func FreePort() (int, error) {
	low := ephemeralLow()
	for range 200 {
		port := 10000 + rand.IntN(low-10000)
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err == nil {
			_ = l.Close()
			return port, nil
		}
	}
	return 0, errors.New("testrig: no free port below the ephemeral range")
}

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
