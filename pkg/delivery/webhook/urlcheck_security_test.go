package webhook

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The webhook URL policy, checked when a subscription is made. Host names
// (including what other parsers read as numeric IPv4: 2852039166,
// 0xa9fea9fe, 0251.0376.0251.0376) are not addresses to net/netip: they
// pass here and are checked at dial time, against the address actually
// dialled (TestSecurityDialChecksResolvedAddresses).
func TestSecurityCheckURLTable(t *testing.T) {
	const (
		ok        = ""
		linkLocal = "link-local or metadata address"
		never     = "cannot receive webhooks"
		scheme    = "http:// or https://"
		creds     = "credentials"
		noHost    = "must have a host"
		fragment  = "fragment"
		invalid   = "not a valid URL"
		tooLong   = "at most 2048"
	)
	for _, tc := range []struct {
		url  string
		want string // substring of the error; "" = accepted
		// withLinkLocal is the verdict with AllowLinkLocal, when it differs.
		withLinkLocal *string
	}{
		// Schemes.
		{"http://127.0.0.1/hook", ok, nil},
		{"https://receiver.example.org/hook", ok, nil},
		{"HTTP://127.0.0.1/hook", ok, nil}, // schemes are case-insensitive
		{"ftp://127.0.0.1/x", scheme, nil},
		{"file:///etc/passwd", scheme, nil},
		{"gopher://127.0.0.1:70/_x", scheme, nil},
		{"ws://127.0.0.1/x", scheme, nil},
		{"javascript:alert(1)", scheme, nil},
		{"data:text/plain,x", scheme, nil},
		{"//127.0.0.1/x", scheme, nil},
		{"127.0.0.1:8080/x", invalid, nil},
		// Hosts, credentials, fragments, length.
		{"http:///x", noHost, nil},
		{"http://:80/x", noHost, nil},
		{"http://user:pw@127.0.0.1/x", creds, nil},
		{"http://user@127.0.0.1/x", creds, nil},
		{"http://:pw@127.0.0.1/x", creds, nil},
		{"http://127.0.0.1/x#frag", fragment, nil},
		{"http://%31%36%39.254.169.254/", invalid, nil},
		{"http://169.254.169.254%2f/", invalid, nil},
		{"http://127.0.0.1/" + strings.Repeat("a", 2048), tooLong, nil},
		// Link-local and metadata, IPv4.
		{"http://169.254.169.254/latest/meta-data", linkLocal, ptr(ok)},
		{"http://169.254.169.254:80/", linkLocal, ptr(ok)},
		{"http://169.254.0.1/", linkLocal, ptr(ok)},
		{"http://169.254.255.255/", linkLocal, ptr(ok)},
		{"http://169.253.255.255/", ok, nil}, // just outside 169.254.0.0/16
		{"http://169.255.0.0/", ok, nil},
		// IPv6 link-local and metadata.
		{"http://[fe80::1]/", linkLocal, ptr(ok)},
		{"http://[FE80::A9FE:A9FE]/", linkLocal, ptr(ok)},
		{"http://[febf:ffff::1]/", linkLocal, ptr(ok)}, // the top of fe80::/10
		{"http://[fec0::1]/", ok, nil},                 // just outside it
		{"http://[fd00:ec2::254]/", linkLocal, ptr(ok)},
		{"http://[fd00:ec2::253]/", ok, nil},
		// Zoned addresses: netip.Prefix.Contains is false for any address
		// with a zone; the policy must drop the zone first (regression).
		{"http://[fe80::1%25eth0]/", linkLocal, ptr(ok)},
		{"http://[fe80::1%25lo]:8080/", linkLocal, ptr(ok)},
		{"http://[fe80::a9fe:a9fe%251]/", linkLocal, ptr(ok)},
		{"http://[ff02::1%25eth0]/", never, nil},
		// IPv4-mapped IPv6 forms of forbidden IPv4 addresses.
		{"http://[::ffff:169.254.169.254]/", linkLocal, ptr(ok)},
		{"http://[::ffff:a9fe:a9fe]/", linkLocal, ptr(ok)},
		{"http://[0:0:0:0:0:ffff:a9fe:a9fe]/", linkLocal, ptr(ok)},
		{"http://[0000:0000:0000:0000:0000:ffff:169.254.169.254]/", linkLocal, ptr(ok)},
		{"http://[::ffff:0.0.0.0]/", never, nil},
		{"http://[::ffff:224.0.0.1]/", never, nil},
		// Never a receiver, whatever the setting.
		{"http://0.0.0.0/", never, nil},
		{"http://0.1.2.3/", never, nil},
		{"http://[::]/", never, nil},
		{"http://224.0.0.1/", never, nil},
		{"http://239.255.255.250:1900/", never, nil},
		{"http://255.255.255.255/", never, nil},
		{"http://[ff02::1]/", never, nil},
		// Ordinary receivers: loopback and private networks are allowed (the
		// receivers are DAARION services); see docs/security.md.
		{"http://localhost:8080/hook", ok, nil},
		{"http://[::1]:8080/hook", ok, nil},
		{"http://10.0.0.5/hook", ok, nil},
		{"http://192.168.1.10/hook", ok, nil},
		{"http://[fd12:3456::1]/hook", ok, nil},
		// Numeric forms that are not addresses to net/netip: host names here,
		// checked again when dialled.
		{"http://2852039166/", ok, nil},
		{"http://0xa9fea9fe/", ok, nil},
		{"http://0251.0376.0251.0376/", ok, nil},
		{"http://169.254.43518/", ok, nil},
		{"http://169.254.169.254./", ok, nil},
		// IPv4-compatible and NAT64 forms are different IPv6 addresses; the
		// kernel does not route them to the IPv4 address (NAT64 would
		// translate on a gateway, where link-local is not routed).
		{"http://[::169.254.169.254]/", ok, nil},
		{"http://[64:ff9b::169.254.169.254]/", ok, nil},
	} {
		check := func(p Policy, want string) {
			t.Helper()
			err := p.CheckURL(tc.url)
			switch {
			case want == ok && err != nil:
				t.Errorf("CheckURL(%q) with %+v: %v, want accepted", tc.url, p, err)
			case want != ok && err == nil:
				t.Errorf("CheckURL(%q) with %+v: accepted, want an error with %q", tc.url, p, want)
			case want != ok && !strings.Contains(err.Error(), want):
				t.Errorf("CheckURL(%q) with %+v: %v, want an error with %q", tc.url, p, err, want)
			}
		}
		check(Policy{}, tc.want)
		withLinkLocal := tc.want
		if tc.withLinkLocal != nil {
			withLinkLocal = *tc.withLinkLocal
		}
		check(Policy{AllowLinkLocal: true}, withLinkLocal)
	}
}

func ptr(s string) *string { return &s }

// dialer returns the delivery client's own dial function.
func dialer(t *testing.T, p Policy) func(ctx context.Context, network, addr string) (net.Conn, error) {
	t.Helper()
	transport, ok := p.Client(2 * time.Second).Transport.(*http.Transport)
	if !ok || transport.DialContext == nil {
		t.Fatal("the delivery client has no transport with a dial function")
	}
	if transport.Proxy != nil {
		t.Error("the delivery client uses a proxy: the dial-time check would see the proxy, not the receiver")
	}
	return transport.DialContext
}

// The dial-time check refuses forbidden addresses before connecting (the
// Control function runs before connect(2): no packet leaves). The zoned
// link-local forms are a regression test: they used to pass.
func TestSecurityDialRefusesForbiddenAddresses(t *testing.T) {
	dial := dialer(t, Policy{})
	for _, addr := range []string{
		"169.254.169.254:80",
		"169.254.0.1:443",
		"[::ffff:169.254.169.254]:80",
		"[fd00:ec2::254]:80",
		"[fe80::1]:80",
		"[fe80::1%lo]:80",
		"[fe80::1%1]:80",
		"0.0.0.0:80",
		"[::]:80",
		"224.0.0.1:80",
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		conn, err := dial(ctx, "tcp", addr)
		cancel()
		if err == nil {
			conn.Close()
			t.Errorf("dialled %s", addr)
			continue
		}
		if !strings.Contains(err.Error(), "link-local") && !strings.Contains(err.Error(), "cannot receive webhooks") {
			t.Errorf("dialling %s failed, but not by the policy: %v", addr, err)
		}
	}
	// With link-local allowed, the always-forbidden ranges stay refused.
	allowing := dialer(t, Policy{AllowLinkLocal: true})
	for _, addr := range []string{"0.0.0.0:80", "[::]:80", "[ff02::1%lo]:80"} {
		if conn, err := allowing(context.Background(), "tcp", addr); err == nil {
			conn.Close()
			t.Errorf("dialled %s with link-local allowed", addr)
		} else if !strings.Contains(err.Error(), "cannot receive webhooks") {
			t.Errorf("dialling %s with link-local allowed failed, but not by the policy: %v", addr, err)
		}
	}
	// Loopback is allowed: the check does not refuse everything.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	conn, err := dial(context.Background(), "tcp", l.Addr().String())
	if err != nil {
		t.Fatalf("dialling a loopback receiver: %v", err)
	}
	conn.Close()
}

// fakeDNS is an in-memory DNS server (no socket at all): every A query is
// answered with a, every AAAA query with aaaa (when valid). It counts
// queries so a test can tell the resolver really asked it.
type fakeDNS struct {
	a, aaaa netip.Addr
	queries atomic.Int64
}

// useFakeDNS makes net.DefaultResolver, which the delivery dialer uses,
// the pure-Go resolver talking to d over a pipe, until the test ends.
func useFakeDNS(t *testing.T, d *fakeDNS) {
	t.Helper()
	saved := net.DefaultResolver
	net.DefaultResolver = &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			client, server := net.Pipe()
			go d.serve(server)
			return client, nil
		},
	}
	t.Cleanup(func() { net.DefaultResolver = saved })
}

// serve answers queries in DNS-over-TCP framing (a net.Pipe is not a
// PacketConn, so the Go resolver frames its messages with a length).
func (d *fakeDNS) serve(conn net.Conn) {
	defer conn.Close()
	for {
		var length [2]byte
		if _, err := io.ReadFull(conn, length[:]); err != nil {
			return
		}
		msg := make([]byte, binary.BigEndian.Uint16(length[:]))
		if _, err := io.ReadFull(conn, msg); err != nil {
			return
		}
		resp, ok := d.answer(msg)
		if !ok {
			return
		}
		out := binary.BigEndian.AppendUint16(nil, uint16(len(resp)))
		if _, err := conn.Write(append(out, resp...)); err != nil {
			return
		}
	}
}

func (d *fakeDNS) answer(q []byte) ([]byte, bool) {
	if len(q) < 12 || binary.BigEndian.Uint16(q[4:6]) != 1 {
		return nil, false
	}
	d.queries.Add(1)
	// The question: labels up to the root, then type and class.
	end := 12
	for end < len(q) && q[end] != 0 {
		end += int(q[end]) + 1
	}
	end += 5
	if end > len(q) {
		return nil, false
	}
	question := q[12:end]
	qtype := binary.BigEndian.Uint16(q[end-4 : end-2])
	var rdata []byte
	var rtype uint16
	switch {
	case qtype == 1 && d.a.Is4():
		rtype, rdata = 1, d.a.AsSlice()
	case qtype == 28 && d.aaaa.Is6():
		rtype, rdata = 28, d.aaaa.AsSlice()
	}
	resp := make([]byte, 12, 12+len(question)+16+len(rdata))
	copy(resp[0:2], q[0:2])                                         // id
	binary.BigEndian.PutUint16(resp[2:4], 0x8180|uint16(q[2]&1)<<8) // response, RD copied, RA, NOERROR
	binary.BigEndian.PutUint16(resp[4:6], 1)                        // one question
	if rdata != nil {
		binary.BigEndian.PutUint16(resp[6:8], 1) // one answer
	}
	resp = append(resp, question...)
	if rdata != nil {
		resp = append(resp, 0xc0, 12) // the question's name
		resp = binary.BigEndian.AppendUint16(resp, rtype)
		resp = binary.BigEndian.AppendUint16(resp, 1) // IN
		resp = binary.BigEndian.AppendUint32(resp, 60)
		resp = binary.BigEndian.AppendUint16(resp, uint16(len(rdata)))
		resp = append(resp, rdata...)
	}
	return resp, true
}

// A host name that resolves to a forbidden address is refused when dialled,
// whatever CheckURL said about it: the check runs on the address the dialer
// is about to connect to, so DNS (or DNS rebinding after the subscription
// was made) cannot smuggle one in. Numeric host forms that some resolvers
// (glibc's inet_aton) read as IPv4 are covered by the same check: here the
// fake resolver plays that part.
func TestSecurityDialChecksResolvedAddresses(t *testing.T) {
	for _, tc := range []struct {
		name    string
		a, aaaa string
	}{
		{"metadata IPv4", "169.254.169.254", ""},
		{"metadata IPv6", "", "fd00:ec2::254"},
		{"link-local IPv6", "", "fe80::1"},
		{"IPv4-mapped metadata", "", "::ffff:169.254.169.254"},
		{"unspecified", "0.0.0.0", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &fakeDNS{}
			d.a, _ = netip.ParseAddr(tc.a)
			d.aaaa, _ = netip.ParseAddr(tc.aaaa)
			useFakeDNS(t, d)
			p := Policy{}
			if err := p.CheckURL("http://metadata.sectest.invalid/hook"); err != nil {
				t.Fatalf("CheckURL of a host name: %v", err)
			}
			dial := dialer(t, p)
			client := p.Client(2 * time.Second)
			for _, host := range []string{"metadata.sectest.invalid", "2852039166", "0xa9fea9fe", "0251.0376.0251.0376", "169.254.169.254."} {
				before := d.queries.Load()
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				conn, err := dial(ctx, "tcp", net.JoinHostPort(host, "80"))
				cancel()
				if err == nil {
					conn.Close()
					t.Errorf("dialled %s, which resolves to %s%s", host, tc.a, tc.aaaa)
					continue
				}
				var dnsErr *net.DNSError
				switch {
				case d.queries.Load() > before:
					// Resolved: the dial-time check must be what refused it.
					if !strings.Contains(err.Error(), "link-local") && !strings.Contains(err.Error(), "cannot receive webhooks") {
						t.Errorf("dialling %s failed, but not by the policy: %v", host, err)
					}
				case host == "metadata.sectest.invalid":
					t.Fatalf("dialling %s did not ask the fake resolver: %v", host, err)
				case !errors.As(err, &dnsErr) || !dnsErr.IsNotFound:
					// Go's own resolver refuses all-numeric names without a
					// query ("no such host"); anything else is unexpected.
					t.Errorf("dialling %s: %v, want the policy's refusal or no such host", host, err)
				}
				resp, err := client.Post("http://"+host+"/hook", "application/json", strings.NewReader("{}"))
				if err == nil {
					resp.Body.Close()
					t.Errorf("delivered to %s", host)
				}
			}
		})
	}

	// The control: a name resolving to loopback is dialled (the fake
	// resolver is really the one in use, and the check lets it through).
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	useFakeDNS(t, &fakeDNS{a: netip.MustParseAddr("127.0.0.1")})
	_, port, _ := net.SplitHostPort(l.Addr().String())
	conn, err := dialer(t, Policy{})(context.Background(), "tcp", net.JoinHostPort("receiver.sectest.invalid", port))
	if err != nil {
		t.Fatalf("dialling a name that resolves to loopback: %v", err)
	}
	conn.Close()
}

// countingServer is a loopback HTTP server that counts its requests.
func countingServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		if h != nil {
			h(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

// Redirects are never followed: a delivery to a receiver that answers 3xx
// ends with that status (a failed delivery), and the redirect target gets
// no request, whether it is the metadata address or another loopback server.
func TestSecurityRedirectsAreNotFollowed(t *testing.T) {
	target, targetHits := countingServer(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	d := &Deliverer{client: Policy{}.Client(2 * time.Second), opts: DelivererOptions{UserAgent: "sectest"}, now: time.Now}
	sub := &Subscription{ID: "sub_sectest", Secret: NewSecret()}
	for _, status := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		for _, location := range []string{"http://169.254.169.254/latest/meta-data/", target.URL + "/stolen"} {
			receiver, receiverHits := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, location, status)
			})
			sub.URL = receiver.URL + "/hook"
			got, _, err := d.post(context.Background(), sub, &Delivery{EventID: "$e", Body: []byte(`{"x":1}`)})
			if err != nil || got != status {
				t.Errorf("%d to %s: post answered %d, %v; want the %d itself", status, location, got, err, status)
			}
			if receiverHits.Load() != 1 {
				t.Errorf("%d to %s: the receiver got %d requests", status, location, receiverHits.Load())
			}
		}
	}
	if n := targetHits.Load(); n != 0 {
		t.Errorf("the redirect target got %d requests", n)
	}
	// And the client as such does not follow either.
	receiver, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL, http.StatusFound)
	})
	resp, err := Policy{}.Client(2 * time.Second).Get(receiver.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || targetHits.Load() != 0 {
		t.Errorf("GET answered %d; the target got %d requests", resp.StatusCode, targetHits.Load())
	}
}
