package testrig

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// ServiceTokenHeader carries the service secret to the bridge's internal API.
const ServiceTokenHeader = "X-Internal-Service-Token"

// APIClient calls the bridge's internal API with the service secret, as a
// DAARION service does (benchmarks, soak tests).
type APIClient struct {
	// Base is the API's base URL, http://host:port.
	Base string
	// Token is the service secret; empty, none is sent (a call to the
	// bridge's appservice endpoint, which takes the homeserver's token).
	Token string
	// HTTP is the client used; its transport keeps up to conns idle
	// connections to the bridge.
	HTTP *http.Client

	transport *http.Transport
}

// NewAPIClient returns a client keeping up to conns idle connections, each
// call limited to timeout.
func NewAPIClient(base, token string, conns int, timeout time.Duration) *APIClient {
	tr := &http.Transport{
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &APIClient{Base: base, Token: token, transport: tr, HTTP: &http.Client{Transport: tr, Timeout: timeout}}
}

// Close closes the idle connections.
func (c *APIClient) Close() { c.transport.CloseIdleConnections() }

// Call sends body as JSON (nil: none) with the extra header fields, and
// decodes a 200 answer into out (nil: not decoded). It returns the status
// and the answer's body; err is a transport error (no answer) or an answer
// that out cannot hold.
func (c *APIClient) Call(ctx context.Context, method, path string, header map[string]string, body, out any) (int, []byte, error) {
	var reader io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		reader = bytes.NewReader(data)
	}
	return c.Raw(ctx, method, path, header, reader, out)
}

// Raw is Call with a body already encoded as JSON.
func (c *APIClient) Raw(ctx context.Context, method, path string, header map[string]string, body io.Reader, out any) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, body)
	if err != nil {
		return 0, nil, err
	}
	if c.Token != "" {
		req.Header.Set(ServiceTokenHeader, c.Token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, nil, err
	}
	if out != nil && resp.StatusCode == http.StatusOK {
		if err = json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, data, fmt.Errorf("decoding the %s answer: %w", path, err)
		}
	}
	return resp.StatusCode, data, nil
}
