package realnode

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// E2EOptions select the upstream specs e2e.test runs against the node.
type E2EOptions struct {
	Focus, Skip string
	// ReportDir receives e2e.test's junit report and log.
	ReportDir string
	Timeout   time.Duration
}

// E2EResult counts the specs e2e.test ran.
type E2EResult struct {
	Passed, Failed []string
	Wall           time.Duration
	Log            string
	// Usage is what the agent and the runtime spent during the run and
	// the kubelet's pod start latency; also in <ReportDir>/usage.json.
	Usage *RunUsage
}

// UsageFile is the name of the usage report RunE2E writes in ReportDir.
const UsageFile = "usage.json"

// RunE2E runs Kubernetes' own e2e.test inside the node's namespaces (the
// API server and the Services are only reachable there) with the images
// imported before, so nothing is pulled.
func RunE2E(ctx context.Context, c *Config, o E2EOptions) (*E2EResult, error) {
	dir, err := filepath.Abs(o.ReportDir)
	if err != nil {
		return nil, err
	}
	o.ReportDir = dir
	if err := os.MkdirAll(o.ReportDir, 0o755); err != nil {
		return nil, err
	}
	if o.Timeout == 0 {
		o.Timeout = 60 * time.Minute
	}
	logPath := filepath.Join(o.ReportDir, "e2e.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	args := []string{c.K8sBin("e2e.test"), "--kubeconfig=" + c.Kubeconfig(), "--provider=local",
		"--kubectl-path=" + c.K8sBin("kubectl"), "--ginkgo.focus=" + o.Focus, "--ginkgo.v", "--ginkgo.no-color",
		"--ginkgo.timeout=" + o.Timeout.String(), "--report-dir=" + o.ReportDir, "--e2e-output-dir=" + o.ReportDir,
		"--dump-logs-on-failure=false", "--node-schedulable-timeout=2m", "--system-pods-startup-timeout=2m"}
	if o.Skip != "" {
		args = append(args, "--ginkgo.skip="+o.Skip)
	}
	cmd, err := c.Command(ctx, args...)
	if err != nil {
		return nil, err
	}
	// e2e.test's kubectl specs make temporary folders (kuberc files) and
	// leave them: they go to the report folder, which its caller removes,
	// not to the machine's /tmp.
	tmp := filepath.Join(o.ReportDir, "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return nil, err
	}
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	cmd.Stdout, cmd.Stderr = logf, logf
	sctx, stopSampling := context.WithCancel(ctx)
	smp, sampled := startSampling(sctx, c, o.ReportDir)
	t0 := time.Now()
	runErr := cmd.Run()
	res := &E2EResult{Wall: time.Since(t0), Log: logPath}
	stopSampling()
	<-sampled
	res.Usage = smp.finish(ctx)
	b, err := json.MarshalIndent(res.Usage, "", "  ")
	if err == nil {
		err = os.WriteFile(filepath.Join(o.ReportDir, UsageFile), append(b, '\n'), 0o644)
	}
	if err != nil {
		return res, fmt.Errorf("realnode: usage report: %w", err)
	}
	if err := res.readJUnit(filepath.Join(o.ReportDir, "junit_01.xml")); err != nil {
		return res, fmt.Errorf("realnode: e2e.test (%v) left no report: %w; see %s", runErr, err, logPath)
	}
	return res, nil
}

type junitSuites struct {
	Suites []struct {
		Cases []struct {
			Name    string    `xml:"name,attr"`
			Skipped *struct{} `xml:"skipped"`
			Failure *struct{} `xml:"failure"`
			Error   *struct{} `xml:"error"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

// readJUnit counts the specs that ran; the ones focus or skip left out are
// in the report as skipped and are not counted.
func (r *E2EResult) readJUnit(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var s junitSuites
	if err := xml.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	for _, suite := range s.Suites {
		for _, tc := range suite.Cases {
			switch {
			case tc.Skipped != nil, strings.HasPrefix(tc.Name, "[") && strings.Contains(tc.Name, "Suite]"):
				// Specs left out by focus or skip, and the suite's setup.
			case tc.Failure != nil || tc.Error != nil:
				r.Failed = append(r.Failed, tc.Name)
			default:
				r.Passed = append(r.Passed, tc.Name)
			}
		}
	}
	sort.Strings(r.Passed)
	sort.Strings(r.Failed)
	return nil
}

// Summary is one line: counts and wall time.
func (r *E2EResult) Summary() string {
	return fmt.Sprintf("%d passed, %d failed in %s", len(r.Passed), len(r.Failed), r.Wall.Round(time.Second))
}

// String lists the failed specs after the summary.
func (r *E2EResult) String() string {
	var b strings.Builder
	b.WriteString(r.Summary())
	for _, f := range r.Failed {
		b.WriteString("\n  FAILED " + f)
	}
	if r.Usage != nil {
		b.WriteString("\n" + r.Usage.String())
	}
	return b.String()
}
