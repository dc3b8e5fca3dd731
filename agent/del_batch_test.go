package agent

import (
	"errors"
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/apply/engine"
	"github.com/terway-reconciler/terway/apply/op"
	"github.com/terway-reconciler/terway/spec"
)

// A batch's failures go to their pod: by the op's pod when rendered, by
// the pod's host veth when only observed (a DEL's items); the rest fail
// every pod of the batch.
func TestPodFailures(t *testing.T) {
	boom := errors.New("boom")
	rep := &engine.Report{Results: []engine.Result{
		{Op: op.Op{Kind: "link", Action: op.Delete, Key: "link/" + spec.HostVethName("x/a"), Text: "link veth " + spec.HostVethName("x/a")}, Err: boom},
		{Op: op.Op{Kind: "route", Action: op.Create, Pod: "x/b", Text: "route 198.18.0.2/32"}, Err: boom},
		{Op: op.Op{Kind: "link", Action: op.Delete, Text: "link veth " + spec.HostVethName("x/c")}},
	}}
	failed, common := podFailures(rep, nil, []string{"x/a", "x/b", "x/c"})
	if common != nil || len(failed) != 2 || failed["x/a"] == nil || failed["x/b"] == nil {
		t.Fatalf("failed %v, common %v; want x/a and x/b alone", failed, common)
	}
	if !strings.Contains(failed["x/a"].Error(), spec.HostVethName("x/a")) || !errors.Is(failed["x/a"], boom) {
		t.Errorf("x/a's failure %v does not name its op or wrap the error", failed["x/a"])
	}

	rep.Results = append(rep.Results, engine.Result{Op: op.Op{Kind: "nft", Action: op.Update, Text: "nft commit table inet terway"}, Err: boom})
	if _, common := podFailures(rep, nil, []string{"x/a", "x/b", "x/c"}); common == nil || !strings.Contains(common.Error(), "nft commit") {
		t.Errorf("a node-level failure is not common: %v", common)
	}
	planErr := errors.New("plan failed")
	if _, common := podFailures(nil, planErr, []string{"x/a"}); common != planErr {
		t.Errorf("the apply's own error is not common: %v", common)
	}
}
