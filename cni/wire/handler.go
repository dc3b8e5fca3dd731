package wire

import (
	"context"

	types100 "github.com/containernetworking/cni/pkg/types/100"
)

// Handler is what the agent implements to serve the plugin. Each method gets
// a request that has passed Request.Validate for its command.
//
// Errors: return a *types.Error (possibly wrapped) to choose the code, msg
// and details the runtime sees; any other error becomes code 999 with the
// error's text. Useful codes: 3 (container unknown: the runtime need not
// DEL), 7 (invalid config, e.g. a bad pod annotation), 11 (try again later:
// inputs not synced yet, IPs exhausted but being refilled), 50/51 (STATUS:
// not ready / not ready and running pods may suffer).
//
// The context is cancelled when the plugin goes away (its timeout expired
// or the runtime killed it). ADD should still finish persisting what it
// allocated, or roll it back, because the runtime will DEL or retry with the
// same container id; every method must be idempotent for that reason.
type Handler interface {
	// Add gives the attachment (ContainerID, IfName) its network and returns
	// the result. A repeated ADD for an attachment that already exists
	// returns the existing allocation rather than a second IP.
	Add(ctx context.Context, req *Request) (*types100.Result, error)
	// Del releases the attachment. It succeeds when there is nothing to
	// release, and works without the Pod object and without Netns.
	Del(ctx context.Context, req *Request) error
	// Check reports an error when the attachment in req.PrevResult is not
	// realised as the agent's document says it should be.
	Check(ctx context.Context, req *Request) error
	// GC releases every attachment on req.NetConf.Name that is not in
	// req.ValidAttachments.
	GC(ctx context.Context, req *Request) error
	// Status returns nil when the agent can serve ADD now, or an error with
	// code 50 or 51 saying why not.
	Status(ctx context.Context, req *Request) error
}

// ToResultVersion converts a 1.0.0 or 1.1.0 result to ResultVersion; an
// empty version is taken to be ResultVersion.
func ToResultVersion(res *types100.Result) (*types100.Result, error) {
	if res.CNIVersion == "" {
		c := *res
		c.CNIVersion = ResultVersion
		return &c, nil
	}
	return types100.NewResultFromResult(res)
}
