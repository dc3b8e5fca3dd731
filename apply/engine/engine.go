// Package engine converges a node's kernel state to a NodeState: it plans
// (observe what we own, diff each kind against the document), prints the
// plan, and executes it item by item.
//
// Ordering: deletions first, in reverse dependency order (nftables, qdiscs,
// rules, routes, neighbours, addresses, links), then creations and updates in
// dependency order (links, sysctls, addresses, neighbours, routes, rules,
// qdiscs, nftables). One failing item does not stop the others; its error
// names the item. Because re-creating a link takes its addresses, routes and
// neighbours with it, Apply plans again after executing and repeats until the
// plan is empty (or a round limit is reached).
package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/terway-reconciler/terway/apply/links"
	"github.com/terway-reconciler/terway/apply/nft"
	"github.com/terway-reconciler/terway/apply/op"
	"github.com/terway-reconciler/terway/internal/chaos"
	"github.com/terway-reconciler/terway/spec"
)

// Kind names, in creation order.
var kindOrder = []string{"link", "sysctl", "address", "neighbor", "route", "rule", "qdisc", "nft"}

// Kinds returns every kind the engine plans, in creation order (for
// PlanOptions.Kinds).
func Kinds() []string { return slices.Clone(kindOrder) }

func kindRank(kind string) int {
	if i := slices.Index(kindOrder, kind); i >= 0 {
		return i
	}
	return len(kindOrder)
}

// Plan is an ordered list of operations.
type Plan struct {
	Ops []op.Op
	// taken are the pods whose interface name another sandbox holds, as
	// this plan observed them (PlanOptions.TakenFrom).
	taken []links.Taken
}

// Empty reports whether the plan changes nothing.
func (p *Plan) Empty() bool { return len(p.Ops) == 0 }

// Lines returns one human-readable line per operation.
func (p *Plan) Lines() []string {
	out := make([]string, len(p.Ops))
	for i, o := range p.Ops {
		out[i] = o.String()
	}
	return out
}

// String prints the plan, one operation per line.
func (p *Plan) String() string {
	if p.Empty() {
		return ""
	}
	return strings.Join(p.Lines(), "\n") + "\n"
}

// Counts returns the number of operations per kind.
func (p *Plan) Counts() map[string]int {
	c := map[string]int{}
	for _, o := range p.Ops {
		c[o.Kind]++
	}
	return c
}

// order sorts operations: deletions (reverse kind order), then the rest
// (kind order), keeping each kind's own order.
func order(ops []op.Op) []op.Op {
	out := slices.Clone(ops)
	slices.SortStableFunc(out, func(a, b op.Op) int {
		ad, bd := a.Action == op.Delete, b.Action == op.Delete
		switch {
		case ad && !bd:
			return -1
		case !ad && bd:
			return 1
		case ad:
			return kindRank(b.Kind) - kindRank(a.Kind)
		default:
			return kindRank(a.Kind) - kindRank(b.Kind)
		}
	})
	return out
}

// Result is the outcome of one operation.
type Result struct {
	Op  op.Op
	Err error
}

// Report summarises one Apply.
type Report struct {
	Rounds  int
	Results []Result
	// Writes counts kernel write requests sent.
	Writes   int
	Duration time.Duration
}

// Applied and Failed count results per kind.
func (r *Report) Applied() map[string]int { return r.count(false) }

// Failed counts failed operations per kind.
func (r *Report) Failed() map[string]int { return r.count(true) }

func (r *Report) count(failed bool) map[string]int {
	c := map[string]int{}
	for _, res := range r.Results {
		if (res.Err != nil) == failed {
			c[res.Op.Kind]++
		}
	}
	return c
}

// Err joins the errors of failed operations, each naming its item.
func (r *Report) Err() error {
	var errs []error
	for _, res := range r.Results {
		if res.Err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", res.Op.String(), res.Err))
		}
	}
	return errors.Join(errs...)
}

// validate refuses a document apply cannot act on safely.
func validate(desired *spec.NodeState) error {
	if desired == nil {
		return errors.New("no desired state")
	}
	if err := desired.Validate(); err != nil {
		return fmt.Errorf("desired state is invalid: %w", err)
	}
	return nil
}

// execute runs the operations in order; a failure is recorded and the rest
// go on.
//
// A pod whose link could not be created or fixed gets none of its later
// operations: they would land on whatever link holds the name (another
// sandbox's eth0 that appeared since the plan) or fail anyway.
//
// A plan that deletes nothing sends its nftables transaction beside the
// other kinds' writes rather than after them (concurrently): its rules
// name interfaces by name and addresses by value, so they need none of
// the links, addresses or routes to exist, and a CNI ADD then waits for
// the longer of the two rather than their sum. At 1,000 policies the
// transaction is about half a millisecond of kernel time (the kernel
// checks the table's jumps when a dispatch element is added), beside
// about a millisecond of veth, address and route writes. A plan that
// deletes keeps the order of the package comment throughout. The
// transaction is one for all of a plan's nftables operations
// (nft.Reconciler), so the pod whose link failed has its nftables objects
// written either way, in the same transaction as the other pods'.
func execute(ctx context.Context, ns op.Namespaces, ops []op.Op, rep *Report) {
	results := make([]Result, len(ops))
	var nftDone chan struct{}
	if beside := nftBeside(ops); len(beside) > 0 {
		nftDone = make(chan struct{})
		go func() {
			defer close(nftDone)
			for _, i := range beside {
				results[i] = Result{Op: ops[i], Err: runOp(ctx, ns, ops[i])}
			}
		}()
	}
	var linkFailed map[string]error
	ranTogether := 0 // ops before this index ran in a concurrent run
	for i, o := range ops {
		if i > 0 && i == len(ops)/2 {
			chaos.Point(chaos.ApplyMidway)
		}
		if nftDone != nil && o.Kind == nft.Kind {
			continue // sent beside
		}
		if i < ranTogether {
			continue
		}
		if end := concurrentRun(ops, i, len(ops)/2); end-i > 1 {
			runTogether(ctx, ns, ops[i:end], results[i:end])
			ranTogether = end
			continue
		}
		if err := ctx.Err(); err != nil {
			results[i] = Result{Op: o, Err: err}
			continue
		}
		if lerr := linkFailed[o.Pod]; lerr != nil && o.Action != op.Delete {
			results[i] = Result{Op: o, Err: fmt.Errorf("not attempted: the pod's link failed: %w", lerr)}
			continue
		}
		err := runOp(ctx, ns, o)
		if err != nil && o.Kind == links.Kind && o.Pod != "" && o.Action != op.Delete {
			if linkFailed == nil {
				linkFailed = map[string]error{}
			}
			linkFailed[o.Pod] = err
		}
		results[i] = Result{Op: o, Err: err}
	}
	if nftDone != nil {
		<-nftDone
	}
	for _, r := range results {
		if r.Err == nil {
			rep.Writes += r.Op.Writes
		}
	}
	rep.Results = append(rep.Results, results...)
}

// concurrentRun returns the end of the run of Concurrent operations that
// starts at ops[i] (i itself when ops[i] is not one). A run that starts
// before mid ends there, so that the plan's midway chaos point still
// falls between operations.
func concurrentRun(ops []op.Op, i, mid int) int {
	end := i
	for end < len(ops) && ops[end].Concurrent && (i >= mid || end < mid) {
		end++
	}
	return end
}

// maxTogether bounds the goroutines of one concurrent run.
const maxTogether = 16

// runTogether runs ops, a run of Concurrent operations, side by side, each
// result in its place.
func runTogether(ctx context.Context, ns op.Namespaces, ops []op.Op, results []Result) {
	var wg sync.WaitGroup
	slots := make(chan struct{}, maxTogether)
	for i, o := range ops {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			// A panic here would end the agent: no handler above this
			// goroutine recovers it. It fails its operation instead.
			defer func() {
				if r := recover(); r != nil {
					results[i] = Result{Op: o, Err: fmt.Errorf("panic: %v", r)}
				}
			}()
			results[i] = Result{Op: o, Err: runOp(ctx, ns, o)}
		})
	}
	wg.Wait()
}

// runOp executes one operation, unless ctx is done.
func runOp(ctx context.Context, ns op.Namespaces, o op.Op) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if o.Exec == nil {
		return nil
	}
	return o.Exec(ctx, ns)
}

// nftBeside returns the indexes of ops' nftables operations when they may
// run beside the others (see execute): when the plan deletes nothing and
// has other operations to run beside.
func nftBeside(ops []op.Op) []int {
	var beside []int
	for i, o := range ops {
		if o.Action == op.Delete {
			return nil
		}
		if o.Kind == nft.Kind {
			beside = append(beside, i)
		}
	}
	if len(beside) == len(ops) {
		return nil
	}
	return beside
}
