package eni

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/terway-reconciler/terway/cloud/metadata"
)

// Config configures a Reconciler. Each default is in WithDefaults, with its
// reason. Printing a Config never shows a secret.
type Config struct {
	// RegionID is the instance's region (metadata region-id).
	RegionID string
	// ECSEndpoint and VPCEndpoint override the SDK's endpoint for the ECS
	// and VPC APIs: "host[:port]" or a URL "http(s)://host[:port]". Empty
	// means the environment (ECS_ENDPOINT / VPC_ENDPOINT), else the SDK's
	// regional endpoint. Without a scheme, loopback hosts (the emulator) are
	// spoken to over HTTP and every other host over HTTPS.
	ECSEndpoint string
	VPCEndpoint string
	// Credentials to sign API calls with; see Credentials for the order.
	Credentials Credentials
	// InstanceID is the node's ECS instance (metadata instance-id).
	InstanceID string
	// InstanceType gives the ENI limits (DescribeInstanceTypes); empty means
	// ask DescribeInstanceAttribute.
	InstanceType string
	// ZoneID is the instance's zone; when set, configured vswitches in
	// another zone are refused at Start (the cloud cannot attach them).
	ZoneID string
	// PrimaryENIID is the instance's primary ENI (metadata, MAC of eth0). It
	// is never touched even if someone tagged it as ours.
	PrimaryENIID string
	// VSwitchIDs are tried in order for new ENIs; one that has run out of
	// IPs is skipped for VSwitchCooldown.
	VSwitchIDs []string
	// SecurityGroupID is given to every ENI created.
	SecurityGroupID string
	// MinIdle and MaxIdle bound the pool of idle IPs: below MinIdle the pool
	// is refilled in one batch, above MaxIdle IPs are given back.
	MinIdle int
	MaxIdle int
	// Tags are added to every ENI created, besides the ownership tags
	// (TagOwner, TagInstance) that decide what is ours.
	Tags map[string]string
	// Limits overrides DescribeInstanceTypes when both fields are set.
	Limits Limits
	// ReservedShared, when set, is how many secondary ENI slots are kept
	// for shared ENIs (the agent's reservedENIsForMultiIP): shared ENIs
	// never number more, and exclusive ENIs never take those slots
	// (SplitSlots). 0 serves exclusive ENIs only (VPC mode). Nil: no
	// reservation, both kinds take free slots first come.
	ReservedShared *int
	// Metadata reads the gateway and vswitch CIDR of attached ENIs and, for
	// RAM role credentials, the role's STS credentials. Required.
	Metadata *metadata.Client
	// WaitLink waits until a link with the MAC exists in the node's network
	// namespace; after it returns nil an attached ENI serves pods. Nil means
	// do not wait (tests, or an agent that checks links itself).
	WaitLink func(ctx context.Context, mac string) error
	Logger   *slog.Logger

	// CallTimeout bounds one API call.
	CallTimeout time.Duration
	// Retry is the backoff of one API call on throttling, transient errors
	// and lost answers.
	Retry Backoff
	// AttachTimeout bounds waiting for an ENI to be InUse, in the metadata
	// and linked after AttachNetworkInterface; DetachTimeout the way back.
	AttachTimeout time.Duration
	DetachTimeout time.Duration
	// PollInterval is the first delay between status polls of an ENI; the
	// delay grows by half each poll up to four times this.
	PollInterval time.Duration
	// ResyncInterval is the period of the full re-read of our ENIs that
	// repairs drift (someone detached an ENI, an answer was lost).
	ResyncInterval time.Duration
	// VSwitchCooldown is how long an exhausted vswitch is skipped.
	VSwitchCooldown time.Duration
	// AssignBatch and UnassignBatch cap the IPs of one call; IPsAtCreate
	// caps the IPs (primary included) an ENI is created with.
	AssignBatch   int
	UnassignBatch int
	IPsAtCreate   int
}

// Credentials are the API credentials. The first source that is set wins:
// AccessKeyID/AccessKeySecret (plus SecurityToken for STS) from the
// configuration; then the environment (ALIBABA_CLOUD_ACCESS_KEY_ID,
// ALIBABA_CLOUD_ACCESS_KEY_SECRET, ALIBABA_CLOUD_SECURITY_TOKEN); then the
// instance's RAM role through Config.Metadata (RAMRole names it; empty
// discovers it).
type Credentials struct {
	AccessKeyID     string
	AccessKeySecret Secret
	SecurityToken   Secret
	RAMRole         string
}

// Secret is a credential string that never prints: fmt (every verb), JSON
// and slog show "[redacted]". Reveal gives the value to the SDK.
type Secret string

const redacted = "[redacted]"

// Reveal returns the secret's value; only the SDK's credentials get it.
func (s Secret) Reveal() string { return string(s) }

// String hides the value.
func (s Secret) String() string { return redacted }

// GoString hides the value from %#v.
func (s Secret) GoString() string { return redacted }

// Format hides the value from every fmt verb.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, redacted) }

// LogValue hides the value from slog.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON hides the value from JSON dumps of a configuration.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// Limits are the instance type's ENI quotas.
type Limits struct {
	// MaxENIs counts ENIs including the primary one (EniQuantity).
	MaxENIs int
	// IPsPerENI counts IPv4 addresses per ENI including the ENI's primary
	// address (EniPrivateIpAddressQuantity).
	IPsPerENI int
}

// Ownership tags: an ENI is ours when it carries TagOwner=OwnerValue and
// TagInstance=<our instance id>. They are set at creation and never change.
const (
	TagOwner    = "terway-reconciler.io/owner"
	OwnerValue  = "terway-reconciler"
	TagInstance = "terway-reconciler.io/instance"
	// TagExclusive marks an ENI made for one pod, so that a restart knows.
	TagExclusive = "terway-reconciler.io/exclusive"
)

// Environment variables read when the configuration leaves a field empty.
const (
	EnvECSEndpoint     = "ECS_ENDPOINT"
	EnvVPCEndpoint     = "VPC_ENDPOINT"
	EnvAccessKeyID     = "ALIBABA_CLOUD_ACCESS_KEY_ID"
	EnvAccessKeySecret = "ALIBABA_CLOUD_ACCESS_KEY_SECRET"
	EnvSecurityToken   = "ALIBABA_CLOUD_SECURITY_TOKEN"
)

// Defaults.
const (
	// The SDK's own read timeouts are 10-16 s; 10 s covers a slow call and
	// bounds a lost answer.
	DefaultCallTimeout = 10 * time.Second
	// The cloud attaches an ENI in seconds; Terway gives it about a minute.
	DefaultAttachTimeout = 2 * time.Minute
	DefaultDetachTimeout = 2 * time.Minute
	// Terway polls ENI status every few seconds after a 2-3 s wait; 1 s
	// first catches the usual 1-3 s attachment in two or three polls.
	DefaultPollInterval = time.Second
	// A resync costs one DescribeNetworkInterfaces call; every 5 minutes
	// bounds drift at a negligible API cost.
	DefaultResyncInterval = 5 * time.Minute
	// A vswitch runs out of IPs for longer than a burst; Terway also parks
	// it for minutes before trying again.
	DefaultVSwitchCooldown = 5 * time.Minute
	// The 2021 API documentation allows 10 addresses per Assign/Unassign
	// call and 10 at creation; newer limits are higher, 10 is safe for both.
	DefaultAssignBatch   = 10
	DefaultUnassignBatch = 10
	DefaultIPsAtCreate   = 10
)

// DefaultRetry backs off from 200 ms to 10 s over ten attempts (about 40 s
// in all): long enough to ride out a throttling burst, short enough that a
// pod's ADD fails while the kubelet still waits.
var DefaultRetry = Backoff{Initial: 200 * time.Millisecond, Max: 10 * time.Second, Factor: 2, Jitter: 0.3, Attempts: 10}

// WithDefaults fills unset fields, reading the environment for endpoints and
// credentials.
func (c Config) WithDefaults() Config {
	if c.ECSEndpoint == "" {
		c.ECSEndpoint = os.Getenv(EnvECSEndpoint)
	}
	if c.VPCEndpoint == "" {
		c.VPCEndpoint = os.Getenv(EnvVPCEndpoint)
	}
	if c.Credentials.AccessKeyID == "" && c.Credentials.AccessKeySecret == "" {
		if id, secret := os.Getenv(EnvAccessKeyID), os.Getenv(EnvAccessKeySecret); id != "" && secret != "" {
			c.Credentials.AccessKeyID, c.Credentials.AccessKeySecret = id, Secret(secret)
			c.Credentials.SecurityToken = Secret(os.Getenv(EnvSecurityToken))
		}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.CallTimeout == 0 {
		c.CallTimeout = DefaultCallTimeout
	}
	if c.Retry == (Backoff{}) {
		c.Retry = DefaultRetry
	}
	if c.AttachTimeout == 0 {
		c.AttachTimeout = DefaultAttachTimeout
	}
	if c.DetachTimeout == 0 {
		c.DetachTimeout = DefaultDetachTimeout
	}
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.ResyncInterval == 0 {
		c.ResyncInterval = DefaultResyncInterval
	}
	if c.VSwitchCooldown == 0 {
		c.VSwitchCooldown = DefaultVSwitchCooldown
	}
	if c.AssignBatch == 0 {
		c.AssignBatch = DefaultAssignBatch
	}
	if c.UnassignBatch == 0 {
		c.UnassignBatch = DefaultUnassignBatch
	}
	if c.IPsAtCreate == 0 {
		c.IPsAtCreate = DefaultIPsAtCreate
	}
	return c
}

// Validate reports a configuration the reconciler cannot run with, naming
// the field.
func (c Config) Validate() error {
	switch {
	case c.RegionID == "":
		return fmt.Errorf("eni config: regionID: empty (metadata region-id)")
	case c.InstanceID == "":
		return fmt.Errorf("eni config: instanceID: empty (metadata instance-id)")
	case len(c.VSwitchIDs) == 0:
		return fmt.Errorf("eni config: vswitchIDs: at least one vswitch is needed for new ENIs")
	case c.SecurityGroupID == "":
		return fmt.Errorf("eni config: securityGroupID: empty; new ENIs need a security group")
	case c.MinIdle < 0 || c.MaxIdle < c.MinIdle:
		return fmt.Errorf("eni config: minIdle/maxIdle: need 0 <= minIdle (%d) <= maxIdle (%d)", c.MinIdle, c.MaxIdle)
	case c.Metadata == nil:
		return fmt.Errorf("eni config: metadata: a metadata client is needed for ENI gateways")
	case (c.Limits.MaxENIs == 0) != (c.Limits.IPsPerENI == 0):
		return fmt.Errorf("eni config: limits: set both maxENIs (%d) and ipsPerENI (%d) or neither", c.Limits.MaxENIs, c.Limits.IPsPerENI)
	case c.Limits.MaxENIs < 0 || c.Limits.IPsPerENI < 0:
		return fmt.Errorf("eni config: limits: maxENIs (%d) and ipsPerENI (%d) must not be negative", c.Limits.MaxENIs, c.Limits.IPsPerENI)
	case c.Credentials.AccessKeyID == "" && c.Credentials.AccessKeySecret != "",
		c.Credentials.AccessKeyID != "" && c.Credentials.AccessKeySecret == "":
		return fmt.Errorf("eni config: credentials: accessKeyID and accessKeySecret go together")
	case c.ReservedShared != nil && *c.ReservedShared < 0:
		return fmt.Errorf("eni config: reservedShared: %d is negative", *c.ReservedShared)
	case c.AssignBatch < 1 || c.UnassignBatch < 1 || c.IPsAtCreate < 1:
		return fmt.Errorf("eni config: assignBatch (%d), unassignBatch (%d), ipsAtCreate (%d): must be at least 1", c.AssignBatch, c.UnassignBatch, c.IPsAtCreate)
	}
	if err := c.Retry.validate(); err != nil {
		return fmt.Errorf("eni config: retry: %w", err)
	}
	for k := range c.Tags {
		if k == TagOwner || k == TagInstance || k == TagExclusive || strings.TrimSpace(k) == "" {
			return fmt.Errorf("eni config: tags: key %q is empty or reserved for ownership", k)
		}
	}
	seen := map[string]bool{}
	for i, v := range c.VSwitchIDs {
		if v == "" || seen[v] {
			return fmt.Errorf("eni config: vswitchIDs[%d]: %q is empty or a duplicate", i, v)
		}
		seen[v] = true
	}
	for _, e := range []struct{ field, v string }{{"ecsEndpoint", c.ECSEndpoint}, {"vpcEndpoint", c.VPCEndpoint}} {
		if _, _, err := parseEndpoint(e.v); err != nil {
			return fmt.Errorf("eni config: %s: %w", e.field, err)
		}
	}
	return nil
}

// credentialSource names where the credentials come from, for the log.
func (c Config) credentialSource() string {
	switch {
	case c.Credentials.AccessKeyID != "" && c.Credentials.SecurityToken != "":
		return "sts token"
	case c.Credentials.AccessKeyID != "":
		return "access key"
	case c.Credentials.RAMRole != "":
		return "ram role " + c.Credentials.RAMRole + " via metadata"
	default:
		return "ram role (discovered) via metadata"
	}
}
