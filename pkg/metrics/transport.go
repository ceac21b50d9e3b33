package metrics

import (
	"net/http"
	"strings"
	"time"
)

// InstrumentTransport counts and times requests to the homeserver.
func (m *Metrics) InstrumentTransport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		endpoint := req.Method + " " + EndpointTemplate(req.URL.Path)
		start := time.Now()
		resp, err := base.RoundTrip(req)
		m.HomeserverSeconds.WithLabelValues(endpoint).Observe(time.Since(start).Seconds())
		result := "error"
		if err == nil {
			switch {
			case resp.StatusCode < 300:
				result = "2xx"
			case resp.StatusCode < 400:
				result = "3xx"
			case resp.StatusCode < 500:
				result = "4xx"
			default:
				result = "5xx"
			}
		}
		m.HomeserverCalls.WithLabelValues(endpoint, result).Inc()
		return resp, err
	})
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// pathWords are the path segments kept in endpoint labels; anything else
// (room ids, user ids, event types, transaction ids) becomes "{}".
var pathWords = map[string]bool{}

func init() {
	for _, w := range strings.Fields(`_matrix _synapse client media app federation admin v1 v2 v3 r0 unstable
		rooms room send state join leave invite kick ban unban redact register profile displayname avatar_url
		directory messages versions upload download thumbnail appservice ping createRoom joined_rooms joined_members
		members account whoami login logout event context aliases typing receipt read_markers nonce sync
		presence status user filter devices keys pushrules capabilities config preview_url upgrade`) {
		pathWords[w] = true
	}
}

// EndpointTemplate replaces the variable segments of a homeserver path.
func EndpointTemplate(path string) string {
	parts := strings.Split(path, "/")
	for i, p := range parts {
		if p != "" && !pathWords[p] {
			parts[i] = "{}"
		}
	}
	return strings.Join(parts, "/")
}
