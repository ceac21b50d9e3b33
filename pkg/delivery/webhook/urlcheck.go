package webhook

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"syscall"
	"time"
)

// forbidden are the address ranges a webhook may not reach unless allowed:
// link-local (which holds the cloud metadata service, 169.254.169.254) and
// the AWS IPv6 metadata address.
var forbidden = []netip.Prefix{
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("fd00:ec2::254/128"),
}

// alwaysForbidden cannot be a webhook receiver at all.
var alwaysForbidden = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("::/128"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("ff00::/8"),
	netip.MustParsePrefix("255.255.255.255/32"),
}

// Policy decides which webhook URLs are acceptable.
type Policy struct {
	AllowLinkLocal bool
	// MaxPerService caps one service's subscriptions (0: no cap): each
	// "*" subscription is a queue per room and a share of the workers.
	MaxPerService int
}

// CheckURL validates a webhook URL: http or https, a host, no credentials,
// and, when the host is an IP literal, not a forbidden address. Host names
// are checked again at every connection (see Dial).
func (p Policy) CheckURL(raw string) error {
	if len(raw) > 2048 {
		return errors.New("must be at most 2048 characters")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("is not a valid URL")
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return errors.New("must be an http:// or https:// URL")
	case u.Host == "" || u.Hostname() == "":
		return errors.New("must have a host")
	case u.User != nil:
		return errors.New("must not contain credentials")
	case u.Fragment != "":
		return errors.New("must not have a fragment")
	}
	if addr, err := netip.ParseAddr(u.Hostname()); err == nil {
		return p.checkAddr(addr)
	}
	return nil
}

func (p Policy) checkAddr(addr netip.Addr) error {
	// Without the zone: netip.Prefix.Contains is false for any zoned
	// address, so fe80::1%eth0 would otherwise pass as not link-local.
	addr = addr.WithZone("").Unmap()
	for _, prefix := range alwaysForbidden {
		if prefix.Contains(addr) {
			return fmt.Errorf("points at %s, which cannot receive webhooks", addr)
		}
	}
	if !p.AllowLinkLocal {
		for _, prefix := range forbidden {
			if prefix.Contains(addr) {
				return fmt.Errorf("points at %s, a link-local or metadata address (allow with delivery.webhook_allow_link_local)", addr)
			}
		}
	}
	return nil
}

// Client returns the HTTP client deliveries use: it checks every address it
// connects to (so DNS cannot smuggle a forbidden one in), never follows a
// redirect (a 3xx is a failed delivery), and times out.
func (p Policy) Client(timeout time.Duration) *http.Client {
	dialer := &net.Dialer{
		Timeout: timeout,
		Control: func(network, address string, _ syscall.RawConn) error {
			host, _, err := net.SplitHostPort(address)
			if err != nil {
				return err
			}
			addr, err := netip.ParseAddr(host)
			if err != nil {
				return err
			}
			return p.checkAddr(addr)
		},
	}
	transport := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, addr)
		},
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: timeout,
		// Never through a proxy from the environment: the checks above
		// would then see the proxy, not the receiver.
		Proxy: nil,
	}
	return &http.Client{
		Transport:     transport,
		Timeout:       timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
