package main

import (
	"encoding/json"
	"fmt"
	"slices"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/terway-reconciler/terway/apply/engine"
	"github.com/terway-reconciler/terway/explain"
	"github.com/terway-reconciler/terway/load"
)

func whatIfCommand() *cobra.Command {
	var (
		in                      inputFlags
		applyFiles, deleteFiles []string
		output                  string
	)
	cmd := &cobra.Command{
		Use:   "what-if (-f INPUTS... | --agent ADDR) --apply FILE... [--delete FILE...]",
		Short: "What a change of policies, pods or labels would do to reachability, before it is made",
		Long: "Renders the inputs (files, or a running agent's live inputs with --agent), and again with the --apply objects added or replacing\n" +
			"the ones of the same kind, namespace and name, and the --delete objects\n" +
			"removed. Prints every pod pair, protocol and port whose verdict flips, grouped\n" +
			"by the policies that cause it (from explain's reports before and after), then the kernel plan the change would\n" +
			"cause: the engine's plan of the new document against the current one, as\n" +
			"`terwayctl plan` prints it (planned offline: no kernel is read). It changes nothing.",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "text" && output != "json" {
				return fmt.Errorf("what-if: -o %q: want text or json", output)
			}
			if !in.given() || len(applyFiles)+len(deleteFiles) == 0 {
				return fmt.Errorf("what-if: give -f INPUTS (or --agent ADDR) and --apply or --delete")
			}
			base, err := in.objects(cmd.Context())
			if err != nil {
				return err
			}
			before, err := in.model(base)
			if err != nil {
				return err
			}
			next := *base
			if len(applyFiles) > 0 {
				add, err := load.Paths(applyFiles...)
				if err != nil {
					return err
				}
				next.Pods = upsert(next.Pods, add.Pods, podKey)
				next.Namespaces = upsert(next.Namespaces, add.Namespaces, nsKey)
				next.Policies = upsert(next.Policies, add.Policies, policyKey)
			}
			if len(deleteFiles) > 0 {
				del, err := load.Paths(deleteFiles...)
				if err != nil {
					return err
				}
				next.Pods = remove(next.Pods, del.Pods, podKey)
				next.Namespaces = remove(next.Namespaces, del.Namespaces, nsKey)
				next.Policies = remove(next.Policies, del.Policies, policyKey)
			}
			after, err := in.model(&next)
			if err != nil {
				return err
			}
			flips, err := explain.Flips(before, after)
			if err != nil {
				return err
			}
			// The engine's own plan, as `terwayctl plan` prints it, of the
			// new document on a node that realised the current one.
			plan, err := engine.PlanOffline(before.Doc, after.Doc)
			if err != nil {
				return fmt.Errorf("what-if: kernel plan: %w", err)
			}
			out := cmd.OutOrStdout()
			if output == "json" {
				b, err := json.MarshalIndent(struct {
					Flips []explain.Flip `json:"flips"`
					Plan  []string       `json:"plan"`
				}{Flips: flips, Plan: plan.Lines()}, "", "  ")
				if err != nil {
					return err
				}
				_, err = fmt.Fprintln(out, string(b))
				return err
			}
			if len(flips) == 0 {
				fmt.Fprintln(out, "reachability: no change")
			}
			groups := map[string][]explain.Flip{}
			for _, f := range flips {
				groups[f.Cause()] = append(groups[f.Cause()], f)
			}
			causes := make([]string, 0, len(groups))
			for c := range groups {
				causes = append(causes, c)
			}
			slices.Sort(causes)
			for _, c := range causes {
				fmt.Fprintf(out, "%s:\n", c)
				for _, f := range groups[c] {
					fmt.Fprintln(out, "  "+f.String())
				}
			}
			fmt.Fprintln(out, "kernel plan (the engine's, against a node that realised the current inputs; nothing is applied):")
			if plan.Empty() {
				fmt.Fprintln(out, "  none")
			}
			for _, l := range plan.Lines() {
				fmt.Fprintln(out, "  "+l)
			}
			if !plan.Empty() {
				fmt.Fprintf(out, "%d changes: %s\n", len(plan.Ops), formatCounts(plan.Counts()))
			}
			return nil
		},
	}
	in.register(cmd, "the current inputs")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	cmd.Flags().StringArrayVar(&applyFiles, "apply", nil, "file or folder of objects to add or replace (repeatable)")
	cmd.Flags().StringArrayVar(&deleteFiles, "delete", nil, "file or folder of objects to delete (repeatable)")
	return cmd
}

func podKey(p *corev1.Pod) string                    { return p.Namespace + "/" + p.Name }
func nsKey(n *corev1.Namespace) string               { return n.Name }
func policyKey(p *networkingv1.NetworkPolicy) string { return p.Namespace + "/" + p.Name }

// upsert returns list with each of add replacing the item of the same key,
// or appended.
func upsert[T any](list, add []*T, key func(*T) string) []*T {
	out := slices.Clone(list)
	for _, a := range add {
		i := slices.IndexFunc(out, func(x *T) bool { return key(x) == key(a) })
		if i >= 0 {
			out[i] = a
		} else {
			out = append(out, a)
		}
	}
	return out
}

// remove returns list without the items whose key one of del has.
func remove[T any](list, del []*T, key func(*T) string) []*T {
	return slices.DeleteFunc(slices.Clone(list), func(x *T) bool {
		return slices.ContainsFunc(del, func(d *T) bool { return key(d) == key(x) })
	})
}
