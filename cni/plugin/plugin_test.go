package plugin

import (
	"errors"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/terway-reconciler/terway/cni/wire"
)

func TestGuardTurnsPanicIntoCNIError(t *testing.T) {
	f := guard(wire.CmdAdd, func(*skel.CmdArgs) error { panic("nil map") })
	err := f(&skel.CmdArgs{})
	var ce *types.Error
	if !errors.As(err, &ce) || ce.Code != types.ErrInternal || ce.Details != "nil map" {
		t.Fatalf("got %v, want code 999 with the panic in details", err)
	}
}

func TestAddRefusesThePluginsOwnNetns(t *testing.T) {
	args := &skel.CmdArgs{
		ContainerID: "c1", Netns: "/proc/self/ns/net", IfName: "eth0",
		Args:      "K8S_POD_NAMESPACE=default;K8S_POD_NAME=p",
		StdinData: []byte(`{"cniVersion":"1.1.0","name":"n","type":"terway","socket":"/nonexistent/t.sock"}`),
	}
	err := (&Plugin{}).Funcs().Add(args)
	var ce *types.Error
	if !errors.As(err, &ce) || ce.Code != types.ErrInvalidNetNS {
		t.Fatalf("got %v, want code 8 before any call to the agent", err)
	}
}
