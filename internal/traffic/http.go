package traffic

import (
	"context"
	"io"
	"net"
	"net/http"
	"time"
)

// HTTPClient is an HTTP client whose connections start inside the
// namespace: the agent's health endpoint and the emulator listen on a
// node namespace's loopback.
func HTTPClient(nsPath string, timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return Dial(ctx, nsPath, network, addr)
		},
		DisableKeepAlives: true,
	}}
}

// Get fetches url from inside the namespace and returns the status code
// and the body.
func Get(ctx context.Context, nsPath, url string, timeout time.Duration) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := HTTPClient(nsPath, timeout).Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}
