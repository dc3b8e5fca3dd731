// Package sysctl converges the sysctls a NodeState names, under /proc/sys
// of each namespace. Only the keys the document names are ever read or
// written; removing a key from the document changes nothing, because the
// value it had before we set it is not known (DESIGN.md §4).
package sysctl

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/terway-reconciler/terway/apply/links"
	"github.com/terway-reconciler/terway/apply/op"
	"github.com/terway-reconciler/terway/spec"
)

// Kind is the Op.Kind of every sysctl operation.
const Kind = "sysctl"

// Root is where sysctl keys live.
const Root = "/proc/sys/"

// validPath is what the document may name: a key under net/, so that no
// document can make us read or write another part of /proc/sys.
var validPath = regexp.MustCompile(`^net/[A-Za-z0-9_./-]+$`)

func checkPath(p string) error {
	if !validPath.MatchString(p) || strings.Contains(p, "..") || strings.Contains(p, "//") {
		return fmt.Errorf("path: %q is not a key under net/", p)
	}
	return nil
}

// Observe reads the keys the desired document names, in the host namespace
// and each listed namespace that still exists, each namespace on a locked
// thread inside it. A key whose file does not exist (its link is not there
// yet) is left out: it observes as absent. It only reads.
func Observe(ns op.Namespaces, namespaces []string, desired *spec.NodeState) ([]spec.Sysctl, error) {
	if desired == nil {
		return nil, nil
	}
	byNS := map[string][]spec.Sysctl{}
	for _, c := range desired.Sysctls {
		if checkPath(c.Path) == nil {
			byNS[c.Netns] = append(byNS[c.Netns], c)
		}
	}
	var out []spec.Sysctl
	for _, n := range links.Namespaces(ns, namespaces) {
		items := byNS[n]
		if len(items) == 0 {
			continue
		}
		err := ns.Do(n, func() error {
			for _, c := range items {
				v, err := read(c.Path)
				if errors.Is(err, fs.ErrNotExist) {
					continue
				}
				if err != nil {
					return fmt.Errorf("sysctl %s: %w", c.Key(), err)
				}
				out = append(out, spec.Sysctl{Netns: n, Path: c.Path, Value: v})
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("observe sysctls in %s: %w", links.NetnsName(n), err)
		}
	}
	slices.SortStableFunc(out, order)
	return out, nil
}

// order is the document's canonical order: host first, then each
// namespace by path; key.
func order(a, b spec.Sysctl) int {
	return cmp.Or(cmp.Compare(a.Netns, b.Netns), cmp.Compare(a.Path, b.Path))
}

// Normal is a value as the comparison sees it: fields separated by one
// space, so that "1024 65000" equals the kernel's "1024\t65000\n".
func Normal(v string) string { return strings.Join(strings.Fields(v), " ") }

func read(path string) (string, error) {
	b, err := os.ReadFile(Root + path)
	if err != nil {
		return "", err
	}
	return Normal(string(b)), nil
}

// Diff returns a write for each named key that is absent or has another
// value, in the document's order. A key the document no longer names is left as it is.
func Diff(desired, observed []spec.Sysctl) []op.Op {
	have := map[string]spec.Sysctl{}
	for _, o := range observed {
		have[o.Key()] = o
	}
	ds := slices.Clone(desired)
	slices.SortStableFunc(ds, order)
	var out []op.Op
	for _, d := range ds {
		o, ok := have[d.Key()]
		switch {
		case !ok:
			out = append(out, writeOp(op.Create, d, ""))
		case Normal(o.Value) != Normal(d.Value):
			out = append(out, writeOp(op.Update, d, o.Value))
		}
	}
	return out
}

// Describe prints a key and its value, with the namespace when it is not
// the host.
func Describe(c spec.Sysctl) string {
	return "sysctl " + c.Path + " = " + Normal(c.Value) + links.NetnsSuffix(c.Netns)
}

func writeOp(a op.Action, d spec.Sysctl, was string) op.Op {
	text := Describe(d)
	if a == op.Update {
		text += " (was " + was + ")"
	}
	return op.Op{
		Kind: Kind, Action: a, Key: d.Key(), Netns: d.Netns, Pod: d.Pod, Text: text, Writes: 1,
		Exec: func(_ context.Context, ns op.Namespaces) error { return write(ns, d) },
	}
}

// write sets the key inside its namespace unless it already has the value.
func write(ns op.Namespaces, d spec.Sysctl) error {
	if err := checkPath(d.Path); err != nil {
		return fmt.Errorf("sysctl %s: %w", d.Key(), err)
	}
	want := Normal(d.Value)
	if want == "" {
		return fmt.Errorf("sysctl %s: value: must not be empty", d.Key())
	}
	err := ns.Do(d.Netns, func() error {
		v, err := read(d.Path)
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("path: no such key (is its link there yet?): %w", err)
		}
		if err != nil {
			return err
		}
		if v == want {
			return nil
		}
		f, err := os.OpenFile(Root+d.Path, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		_, werr := f.WriteString(want)
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		return werr
	})
	if err != nil {
		return fmt.Errorf("sysctl %s: write %q: %w", d.Key(), want, err)
	}
	return nil
}
