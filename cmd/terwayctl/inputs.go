package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"

	"github.com/terway-reconciler/terway/explain"
	"github.com/terway-reconciler/terway/load"
	"github.com/terway-reconciler/terway/render"
	"github.com/terway-reconciler/terway/spec"
)

// inputFlags are where explain, matrix and what-if read the node's inputs
// from: files and folders (-f), as render does, or a running agent's live
// inputs (--agent), read-only.
type inputFlags struct {
	files            []string
	agent            string
	configPath, node string
	placedSaid       bool // the note on placed pods was printed
	// stderr is the command's, for notes and the document's problems.
	stderr func() io.Writer
}

func (f *inputFlags) register(cmd *cobra.Command, what string) {
	f.stderr = cmd.ErrOrStderr
	cmd.Flags().StringArrayVarP(&f.files, "filename", "f", nil, "file or folder of "+what+" (repeatable)")
	cmd.Flags().StringVar(&f.agent, "agent", "", "read "+what+" from the running agent at this health address (host:port, e.g. "+
		"127.0.0.1:9482) instead of -f: its live inputs, read-only")
	cmd.Flags().StringVar(&f.configPath, "config", "", "agent configuration file (terway/v1 Config); overrides the inputs' own")
	cmd.Flags().StringVar(&f.node, "node", "", "node to render for, when the inputs hold several Nodes")
}

// given reports whether -f or --agent was given.
func (f *inputFlags) given() bool { return len(f.files) > 0 || f.agent != "" }

// objects reads the inputs from exactly one of -f and --agent.
func (f *inputFlags) objects(ctx context.Context) (*load.Objects, error) {
	switch {
	case len(f.files) > 0 && f.agent != "":
		return nil, fmt.Errorf("give -f or --agent, not both")
	case f.agent != "":
		return load.FromAgent(ctx, &http.Client{Timeout: 30 * time.Second}, f.agent)
	case len(f.files) > 0:
		return load.Paths(f.files...)
	}
	return nil, fmt.Errorf("give -f PATH or --agent ADDR")
}

// inputs builds render inputs from objs, with --config and --node.
func (f *inputFlags) inputs(objs *load.Objects) (render.Inputs, error) {
	var cfg *render.Config
	if f.configPath != "" {
		var err error
		if cfg, err = load.ConfigFile(f.configPath); err != nil {
			return render.Inputs{}, err
		}
	}
	in, err := objs.Inputs(f.node, cfg)
	if err != nil || f.agent != "" || len(in.Allocations) > 0 {
		return in, err
	}
	if placed := placeLocalPods(&in); placed > 0 && !f.placedSaid {
		f.placedSaid = true
		fmt.Fprintf(f.stderr(), "note: the inputs hold no allocations; %d pods of node %s placed as the CNI would set them up, "+
			"addresses from the podCIDR in pod name order (give -f with the node's allocations, or --agent, for the real ones)\n",
			placed, in.Node.Name)
	}
	return in, nil
}

// placeLocalPods gives each pod of the node that the CNI would set up an
// allocation, as a cluster folder without the agent's records (sim's,
// the demo's) would get once its pods start: VPC mode only, addresses from
// the node's podCIDR from its third on, in pod name order. It returns how
// many it placed.
func placeLocalPods(in *render.Inputs) int {
	if in.Node == nil || in.Config.WithDefaults().Mode != spec.PodModeVPC {
		return 0
	}
	cidr, err := spec.NodePodCIDR(in.Node.Spec.PodCIDR, in.Node.Spec.PodCIDRs)
	if err != nil || !cidr.IsValid() {
		return 0
	}
	pods := slices.Clone(in.Pods)
	slices.SortFunc(pods, func(a, b *corev1.Pod) int {
		return cmp.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	ip := cidr.Masked().Addr().Next().Next()
	placed := 0
	for _, p := range pods {
		if p.Spec.NodeName != in.Node.Name || p.Spec.HostNetwork || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		if !cidr.Contains(ip) {
			break
		}
		placed++
		in.Allocations = append(in.Allocations, &spec.Allocation{APIVersion: spec.APIVersion, Kind: spec.KindAllocation,
			Metadata: spec.ObjectMeta{Namespace: p.Namespace, Name: p.Name},
			Spec: spec.AllocationSpec{IP: ip.String(), Netns: "/var/run/netns/placed-" + p.Namespace + "-" + p.Name,
				ContainerID: fmt.Sprintf("placed-%d", placed), UID: string(p.UID), Seq: uint64(placed)}})
		ip = ip.Next()
	}
	return placed
}

// model renders objs and prepares explain's model of the result; the
// document's problems go to stderr.
func (f *inputFlags) model(objs *load.Objects) (*explain.Model, error) {
	in, err := f.inputs(objs)
	if err != nil {
		return nil, err
	}
	state, err := render.Render(in)
	if err != nil {
		return nil, err
	}
	for _, p := range state.Problems {
		fmt.Fprintln(f.stderr(), "problem:", p.String())
	}
	return explain.New(in, state)
}

// load reads the inputs and prepares the model.
func (f *inputFlags) load(ctx context.Context) (*explain.Model, error) {
	objs, err := f.objects(ctx)
	if err != nil {
		return nil, err
	}
	return f.model(objs)
}
