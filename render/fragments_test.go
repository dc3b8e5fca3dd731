package render_test

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	"github.com/terway-reconciler/terway/golden"
	"github.com/terway-reconciler/terway/render"
	"github.com/terway-reconciler/terway/spec"
)

// TestCachedPodDatapathFollowsItsInputs walks every golden case (VPC, ENI
// multi-IP, exclusive ENI, bandwidth) through changes of what a pod's
// datapath depends on besides its object: each ENI, each allocation's
// sandbox, the node's configuration. After each one, and after going back,
// the cached render must be a render from scratch, byte for byte.
func TestCachedPodDatapathFollowsItsInputs(t *testing.T) {
	cases, err := golden.Cases(filepath.Join("..", "golden"))
	if err != nil {
		t.Fatal(err)
	}
	compared := 0
	for _, dir := range cases {
		in, err := golden.Inputs(dir)
		if err != nil {
			t.Fatal(err)
		}
		k := render.NewCache()
		check := func(what string, in render.Inputs) {
			t.Helper()
			got, err := k.Render(in)
			want, werr := render.Render(in)
			if (err == nil) != (werr == nil) {
				t.Fatalf("%s, %s: cache error %v, render error %v", filepath.Base(dir), what, err, werr)
			}
			if err != nil {
				return
			}
			compared++
			g, gerr := json.Marshal(got)
			w, werr := json.Marshal(want)
			if gerr != nil || werr != nil {
				t.Fatal(gerr, werr)
			}
			if string(g) != string(w) {
				t.Fatalf("%s, %s: the cached render differs from a render from scratch\ncached:\n%s\nfrom scratch:\n%s", filepath.Base(dir), what, g, w)
			}
		}
		check("first render", in)
		for i := range in.ENIs {
			for _, change := range []struct {
				what string
				do   func(*spec.ENI)
			}{
				{"secondary IPs dropped", func(e *spec.ENI) { e.Spec.SecondaryIPs = nil }},
				{"gateway", func(e *spec.ENI) { e.Spec.Gateway = "198.18.255.254" }},
				{"device index", func(e *spec.ENI) { e.Spec.DeviceIndex += 7 }},
				{"exclusive flipped", func(e *spec.ENI) { e.Spec.Exclusive = !e.Spec.Exclusive }},
				{"primary IP", func(e *spec.ENI) { e.Spec.PrimaryIP = "198.18.255.1" }},
			} {
				mut := in
				mut.ENIs = slices.Clone(in.ENIs)
				mut.ENIs[i].Spec.SecondaryIPs = slices.Clone(in.ENIs[i].Spec.SecondaryIPs)
				change.do(&mut.ENIs[i])
				check(fmt.Sprintf("ENI %s: %s", in.ENIs[i].Metadata.Name, change.what), mut)
				check("back", in)
			}
		}
		for i := range in.Allocations {
			mut := in
			mut.Allocations = slices.Clone(in.Allocations)
			a := *in.Allocations[i] // a new allocation: the inputs' are not changed
			a.Spec.Netns += "-again"
			a.Spec.ContainerID += "-again"
			mut.Allocations[i] = &a
			check(fmt.Sprintf("allocation %s: sandbox replaced", in.Allocations[i].Metadata.Name), mut)
			check("back", in)
		}
		for _, change := range []struct {
			what string
			do   func(*render.Config)
		}{
			{"MTU", func(c *render.Config) { c.MTU = 9000 }},
			{"service CIDR", func(c *render.Config) { c.ServiceCIDR = "10.100.0.0/16" }},
		} {
			mut := in
			cfg := in.Config
			change.do(&cfg)
			mut.Config = cfg
			check("config "+change.what, mut)
			check("back", in)
		}
	}
	t.Logf("%d renders compared", compared)
}
