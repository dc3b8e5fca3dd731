package metadata

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/auth/credentials"
)

// RoleCredentials hands the SDK the STS credentials of the instance's RAM
// role, read from this client's metadata service. It exists because the
// SDK's own ECS RAM role provider always asks 100.100.100.200, which the
// emulator cannot be. It implements credentials.CredentialsProvider and is
// safe for concurrent use. Credentials are cached and renewed before they
// expire; they never appear in an error or a log line.
type RoleCredentials struct {
	c    *Client
	role string
	now  func() time.Time

	mu      sync.Mutex
	cur     *credentials.Credentials
	expires time.Time
	renewAt time.Time
}

var _ credentials.CredentialsProvider = (*RoleCredentials)(nil)

// Defaults of RoleCredentials, each with its reason.
const (
	// The service publishes new credentials 30 minutes before the old ones
	// expire; renewing 15 minutes before expiry always finds the new ones
	// and leaves room for a slow or failing metadata service.
	roleRenewMargin = 15 * time.Minute
	// GetCredentials has no context; this bounds one refresh.
	roleFetchTimeout = 10 * time.Second
)

// NewRoleCredentials returns a provider for the RAM role named role; an
// empty role is discovered from ram/security-credentials/ at first use.
func NewRoleCredentials(c *Client, role string) *RoleCredentials {
	return &RoleCredentials{c: c, role: role, now: time.Now}
}

// GetProviderName names the provider as the SDK's own ECS RAM role provider
// does, so the cloud sees the same credential kind.
func (p *RoleCredentials) GetProviderName() string { return "ecs_ram_role" }

// GetCredentials returns the role's current STS credentials, refreshing them
// when they are about to expire.
func (p *RoleCredentials) GetCredentials() (*credentials.Credentials, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur != nil && p.now().Before(p.renewAt) {
		c := *p.cur
		return &c, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), roleFetchTimeout)
	defer cancel()
	cur, expires, err := p.fetch(ctx)
	if err != nil {
		if p.cur != nil && p.now().Before(p.expires) {
			// Still valid: use it and try again on the next call.
			c := *p.cur
			return &c, nil
		}
		return nil, err
	}
	// Renew roleRenewMargin before expiry, or half-way for short-lived
	// credentials, so that a short lifetime does not mean a fetch per call.
	now := p.now()
	p.cur, p.expires = cur, expires
	p.renewAt = expires.Add(-min(roleRenewMargin, expires.Sub(now)/2))
	c := *cur
	return &c, nil
}

// roleDocument is the service's answer for one role. Its fields are
// secrets: never print it.
type roleDocument struct {
	Code            string `json:"Code"`
	AccessKeyID     string `json:"AccessKeyId"`
	AccessKeySecret string `json:"AccessKeySecret"`
	SecurityToken   string `json:"SecurityToken"`
	Expiration      string `json:"Expiration"`
}

func (p *RoleCredentials) fetch(ctx context.Context) (*credentials.Credentials, time.Time, error) {
	role := p.role
	if role == "" {
		roles, err := p.c.List(ctx, "ram/security-credentials/")
		if err != nil {
			return nil, time.Time{}, fmt.Errorf("RAM role credentials: discover the instance's role: %w", err)
		}
		if len(roles) == 0 {
			return nil, time.Time{}, fmt.Errorf("RAM role credentials: the instance has no RAM role attached")
		}
		role = roles[0]
	}
	raw, err := p.c.Get(ctx, "ram/security-credentials/"+role)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("RAM role credentials: role %s: %w", role, err)
	}
	var doc roleDocument
	if err := json.Unmarshal([]byte(raw), &doc); err != nil {
		// The JSON error names a position and a type, never the content.
		return nil, time.Time{}, fmt.Errorf("RAM role credentials: role %s: the answer is not a credentials document: %w", role, err)
	}
	switch {
	case doc.Code != "Success":
		return nil, time.Time{}, fmt.Errorf("RAM role credentials: role %s: Code: %q, want \"Success\"", role, doc.Code)
	case doc.AccessKeyID == "" || doc.AccessKeySecret == "" || doc.SecurityToken == "":
		return nil, time.Time{}, fmt.Errorf("RAM role credentials: role %s: AccessKeyId, AccessKeySecret or SecurityToken is empty", role)
	}
	expires, err := time.Parse("2006-01-02T15:04:05Z", doc.Expiration)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("RAM role credentials: role %s: Expiration: %q is not a UTC time like 2006-01-02T15:04:05Z", role, doc.Expiration)
	}
	p.role = role
	return &credentials.Credentials{
		AccessKeyId:     doc.AccessKeyID,
		AccessKeySecret: doc.AccessKeySecret,
		SecurityToken:   doc.SecurityToken,
		ProviderName:    p.GetProviderName(),
	}, expires, nil
}
