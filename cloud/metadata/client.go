// Package metadata reads the ECS instance metadata service (IMDS): who the
// node is (instance, region, zone, vswitch, primary ENI), what each attached
// ENI looks like (gateway, vswitch CIDR, IPs), and the STS credentials of the
// instance's RAM role. The base URL is configurable so that the same code
// talks to the cloud's 100.100.100.200 and to the emulator on loopback.
package metadata

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultBaseURL is the cloud's metadata service, reachable from every ECS
// instance and from nowhere else.
const DefaultBaseURL = "http://100.100.100.200"

// Header names of the IMDSv2 ("security hardening mode") token protocol.
const (
	tokenHeader    = "X-aliyun-ecs-metadata-token"
	tokenTTLHeader = "X-aliyun-ecs-metadata-token-ttl-seconds"
)

// Defaults, each with its reason.
const (
	// The cloud's maximum token lifetime; one token serves the agent for
	// hours, so the token costs one PUT per six hours.
	defaultTokenTTL = 6 * time.Hour
	// Renew a token this long before it expires, so that no request races
	// the expiry.
	tokenRenewMargin = time.Minute
	// The service answers on the local hypervisor in milliseconds; a few
	// seconds covers a loaded host without hanging the agent.
	defaultTimeout = 5 * time.Second
	// 429 and 5xx are retried this many times with a doubling delay from
	// retryDelay (Terway retries them too); other 4xx fail at once.
	retries    = 3
	retryDelay = 100 * time.Millisecond
)

// ErrNotFound is returned for a path the service does not have (HTTP 404),
// e.g. the MAC of an ENI that is not attached yet.
var ErrNotFound = errors.New("not found in instance metadata")

// Client reads the instance metadata service. It uses an IMDSv2 token when
// the service offers one and falls back to plain GETs when it does not. It
// is safe for concurrent use.
type Client struct {
	base string
	hc   *http.Client
	ttl  time.Duration
	now  func() time.Time

	mu       sync.Mutex
	token    string
	tokenExp time.Time
	// v1Only is set when the token endpoint does not exist (404/405): the
	// service then only speaks IMDSv1.
	v1Only bool
}

// Option changes a Client.
type Option func(*Client)

// WithHTTPClient replaces the HTTP client (timeouts, transport).
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// WithTokenTTL sets the lifetime of the IMDSv2 tokens the client asks for.
func WithTokenTTL(ttl time.Duration) Option { return func(c *Client) { c.ttl = ttl } }

// New returns a client for the metadata service at base (scheme://host[:port],
// no path); empty base means DefaultBaseURL.
func New(base string, opts ...Option) *Client {
	if base == "" {
		base = DefaultBaseURL
	}
	c := &Client{
		base: strings.TrimRight(base, "/"),
		// No proxy: the metadata service is link-local and a proxy from
		// the environment would answer for the proxy's own host.
		hc:  &http.Client{Timeout: defaultTimeout, Transport: &http.Transport{Proxy: nil}},
		ttl: defaultTokenTTL,
		now: time.Now,
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

// BaseURL is the service's address, for messages.
func (c *Client) BaseURL() string { return c.base }

// Get returns the body of /latest/meta-data/<path>, trimmed of surrounding
// white space. A path the service does not know gives an error wrapping
// ErrNotFound.
func (c *Client) Get(ctx context.Context, path string) (string, error) {
	body, err := c.get(ctx, "/latest/meta-data/"+strings.TrimLeft(path, "/"))
	return strings.TrimSpace(body), err
}

// List returns the entries of a directory listing (one per line), without
// empty lines and without the trailing "/" of sub-directories.
func (c *Client) List(ctx context.Context, path string) ([]string, error) {
	body, err := c.Get(ctx, path)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, line := range strings.Split(body, "\n") {
		if line = strings.TrimSuffix(strings.TrimSpace(line), "/"); line != "" {
			out = append(out, line)
		}
	}
	return out, nil
}

func (c *Client) get(ctx context.Context, path string) (string, error) {
	renewed := false
	delay := retryDelay
	for attempt := 0; ; attempt++ {
		token, err := c.currentToken(ctx)
		if err != nil {
			return "", err
		}
		status, body, err := c.do(ctx, http.MethodGet, path, token, nil)
		switch {
		case err != nil:
			return "", fmt.Errorf("instance metadata %s%s: %w", c.base, path, err)
		case status == http.StatusOK:
			return body, nil
		case status == http.StatusNotFound:
			return "", fmt.Errorf("instance metadata %s%s: %w", c.base, path, ErrNotFound)
		case status == http.StatusUnauthorized && !renewed:
			// The token expired or the service restarted: one new token.
			c.dropToken()
			renewed = true
			continue
		case (status == http.StatusTooManyRequests || status >= 500) && attempt < retries:
			if err := sleep(ctx, delay); err != nil {
				return "", fmt.Errorf("instance metadata %s%s: %w", c.base, path, err)
			}
			delay *= 2
			continue
		}
		return "", fmt.Errorf("instance metadata %s%s: HTTP %d: %s", c.base, path, status, firstLine(body))
	}
}

// currentToken returns a valid IMDSv2 token, or "" when the service has
// no token endpoint.
func (c *Client) currentToken(ctx context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.v1Only {
		return "", nil
	}
	if c.token != "" && c.now().Before(c.tokenExp.Add(-tokenRenewMargin)) {
		return c.token, nil
	}
	ttl := int(c.ttl / time.Second)
	status, body, err := c.do(ctx, http.MethodPut, "/latest/api/token", "", map[string]string{tokenTTLHeader: strconv.Itoa(ttl)})
	switch {
	case err != nil:
		return "", fmt.Errorf("instance metadata %s: get an IMDSv2 token: %w", c.base, err)
	case status == http.StatusNotFound || status == http.StatusMethodNotAllowed:
		c.v1Only = true
		return "", nil
	case status != http.StatusOK:
		return "", fmt.Errorf("instance metadata %s: get an IMDSv2 token: HTTP %d: %s", c.base, status, firstLine(body))
	}
	c.token = strings.TrimSpace(body)
	c.tokenExp = c.now().Add(c.ttl)
	return c.token, nil
}

func (c *Client) dropToken() {
	c.mu.Lock()
	c.token = ""
	c.mu.Unlock()
}

// maxBody bounds what the client reads: metadata values are short.
const maxBody = 1 << 20

func (c *Client) do(ctx context.Context, method, path, token string, headers map[string]string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, nil)
	if err != nil {
		return 0, "", err
	}
	if token != "" {
		req.Header.Set(tokenHeader, token)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return 0, "", fmt.Errorf("read the answer: %w", err)
	}
	return resp.StatusCode, string(body), nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
