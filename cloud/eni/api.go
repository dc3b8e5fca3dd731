package eni

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/auth/credentials"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/vpc"

	"github.com/terway-reconciler/terway/cloud/metadata"
)

// clients is how many SDK clients of each service are kept. The SDK client
// rewrites its HTTP client's timeout and transport on every call, so one
// client must not serve two calls at once; a small pool gives that many
// calls in flight, which is also all a node should ask of the API at once.
const clients = 4

// api makes the SDK calls: one SDK client per call at a time, retries with
// backoff, a shared pause on throttling, counters by action, and errors
// reduced to APIError.
type api struct {
	ecs   chan *ecs.Client
	vpc   chan *vpc.Client
	retry Backoff
	log   *slog.Logger

	pause pause
	stats counters
}

func newAPI(cfg Config) (*api, error) {
	provider, err := credentialsProvider(cfg)
	if err != nil {
		return nil, err
	}
	a := &api{
		ecs:   make(chan *ecs.Client, clients),
		vpc:   make(chan *vpc.Client, clients),
		retry: cfg.Retry,
		log:   cfg.Logger,
	}
	ecsHost, ecsScheme, err := parseEndpoint(cfg.ECSEndpoint)
	if err != nil {
		return nil, fmt.Errorf("eni config: ecsEndpoint: %w", err)
	}
	vpcHost, vpcScheme, err := parseEndpoint(cfg.VPCEndpoint)
	if err != nil {
		return nil, fmt.Errorf("eni config: vpcEndpoint: %w", err)
	}
	for range clients {
		ec, err := ecs.NewClientWithOptions(cfg.RegionID, sdkConfig(ecsScheme, cfg.CallTimeout), provider)
		if err != nil {
			return nil, fmt.Errorf("ECS client for region %s: %w", cfg.RegionID, err)
		}
		setEndpoint(&ec.Client, ecsHost, cfg.CallTimeout)
		a.ecs <- ec
		vc, err := vpc.NewClientWithOptions(cfg.RegionID, sdkConfig(vpcScheme, cfg.CallTimeout), provider)
		if err != nil {
			return nil, fmt.Errorf("VPC client for region %s: %w", cfg.RegionID, err)
		}
		setEndpoint(&vc.Client, vpcHost, cfg.CallTimeout)
		a.vpc <- vc
	}
	return a, nil
}

func sdkConfig(scheme string, timeout time.Duration) *sdk.Config {
	c := sdk.NewConfig()
	c.Scheme = scheme
	// Retries are ours: they back off, count and pause on throttling.
	c.AutoRetry = false
	c.Timeout = timeout
	return c
}

func setEndpoint(c *sdk.Client, host string, timeout time.Duration) {
	c.SetReadTimeout(timeout)
	c.SetConnectTimeout(min(timeout, 5*time.Second))
	if host == "" {
		return
	}
	c.Domain = host
	if isLoopback(host) {
		// The emulator: never through a proxy from the environment.
		c.SetNoProxy("^" + regexp.QuoteMeta(host) + "$")
	}
}

// parseEndpoint splits "host[:port]" or "scheme://host[:port]" into the
// SDK's Domain and Scheme. Without a scheme, loopback means HTTP (the
// emulator) and anything else HTTPS. Empty means the SDK's default.
func parseEndpoint(s string) (host, scheme string, err error) {
	if s == "" {
		return "", "HTTPS", nil
	}
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return "", "", fmt.Errorf("%q is not host[:port] or scheme://host[:port]", s)
		}
		switch strings.ToLower(u.Scheme) {
		case "http":
			return u.Host, "HTTP", nil
		case "https":
			return u.Host, "HTTPS", nil
		}
		return "", "", fmt.Errorf("%q: scheme %q is not http or https", s, u.Scheme)
	}
	if strings.ContainsAny(s, "/?# ") {
		return "", "", fmt.Errorf("%q is not host[:port] or scheme://host[:port]", s)
	}
	if isLoopback(s) {
		return s, "HTTP", nil
	}
	return s, "HTTPS", nil
}

func isLoopback(hostport string) bool {
	h := hostport
	if host, _, err := net.SplitHostPort(hostport); err == nil {
		h = host
	}
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// credentialsProvider picks the credentials in the documented order.
func credentialsProvider(cfg Config) (credentials.CredentialsProvider, error) {
	c := cfg.Credentials
	switch {
	case c.AccessKeyID != "" && c.SecurityToken != "":
		return credentials.NewStaticSTSCredentialsProvider(c.AccessKeyID, c.AccessKeySecret.Reveal(), c.SecurityToken.Reveal()), nil
	case c.AccessKeyID != "":
		return credentials.NewStaticAKCredentialsProvider(c.AccessKeyID, c.AccessKeySecret.Reveal()), nil
	case cfg.Metadata != nil:
		return metadata.NewRoleCredentials(cfg.Metadata, c.RAMRole), nil
	}
	return nil, fmt.Errorf("eni config: credentials: no access key in the configuration or the environment (%s, %s) and no metadata client for a RAM role",
		EnvAccessKeyID, EnvAccessKeySecret)
}

// callECS runs one ECS action with retries. fn builds and sends the request
// with the client it is given; it must be safe to repeat.
func (a *api) callECS(ctx context.Context, action string, fn func(*ecs.Client) error) error {
	return a.call(ctx, action, func() error {
		c := <-a.ecs
		defer func() { a.ecs <- c }()
		return fn(c)
	})
}

// callVPC is callECS for the VPC API.
func (a *api) callVPC(ctx context.Context, action string, fn func(*vpc.Client) error) error {
	return a.call(ctx, action, func() error {
		c := <-a.vpc
		defer func() { a.vpc <- c }()
		return fn(c)
	})
}

func (a *api) call(ctx context.Context, action string, send func() error) error {
	var last error
	for attempt := 0; attempt < a.retry.Attempts; attempt++ {
		if err := a.pause.wait(ctx); err != nil {
			return errors.Join(last, fmt.Errorf("%s: %w", action, err))
		}
		if err := ctx.Err(); err != nil {
			return errors.Join(last, fmt.Errorf("%s: %w", action, err))
		}
		a.stats.call(action)
		err := send()
		if err == nil {
			return nil
		}
		e := toAPIError(action, err)
		a.stats.fail(action, e)
		last = e
		if !retryable(e) {
			return e
		}
		delay := a.retry.Delay(attempt, rand.Float64())
		if isThrottled(e.Code) {
			a.pause.hold(time.Now(), delay)
		}
		a.log.Debug("API call failed; retrying", "action", action, "code", e.Code, "noAnswer", e.NoAnswer, "attempt", attempt+1, "delay", delay)
		if err := sleep(ctx, delay); err != nil {
			return errors.Join(last, fmt.Errorf("%s: %w", action, err))
		}
	}
	return fmt.Errorf("%s: gave up after %d attempts: %w", action, a.retry.Attempts, last)
}

// Counters are the API calls the reconciler made, for metrics: every
// attempt counts, retries included, since each one costs the account's
// rate limit.
type Counters struct {
	// Calls by action ("CreateNetworkInterface").
	Calls map[string]uint64
	// Errors by action and code ("AssignPrivateIpAddresses/Throttling";
	// "NoAnswer" for a lost answer).
	Errors map[string]uint64
}

// Total is the number of calls of every action.
func (c Counters) Total() uint64 {
	var n uint64
	for _, v := range c.Calls {
		n += v
	}
	return n
}

// Writes is the number of calls of every action that is not a read
// (Describe*).
func (c Counters) Writes() uint64 {
	var n uint64
	for k, v := range c.Calls {
		if !strings.HasPrefix(k, "Describe") {
			n += v
		}
	}
	return n
}

type counters struct {
	mu     sync.Mutex
	calls  map[string]uint64
	errors map[string]uint64
	// lost counts answers lost on create: an ENI may exist that we do not
	// know of until the tagged ENIs are described again.
	lostCreates uint64
}

func (c *counters) call(action string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.calls == nil {
		c.calls = map[string]uint64{}
	}
	c.calls[action]++
}

func (c *counters) fail(action string, e *APIError) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.errors == nil {
		c.errors = map[string]uint64{}
	}
	code := e.Code
	if e.NoAnswer {
		code = "NoAnswer"
		if action == actionCreate {
			c.lostCreates++
		}
	}
	c.errors[action+"/"+code]++
}

func (c *counters) lost() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lostCreates
}

func (c *counters) snapshot() Counters {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := Counters{Calls: map[string]uint64{}, Errors: map[string]uint64{}}
	for k, v := range c.calls {
		out.Calls[k] = v
	}
	for k, v := range c.errors {
		out.Errors[k] = v
	}
	return out
}
