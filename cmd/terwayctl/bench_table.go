package main

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// benchRow is one figure of `terwayctl bench` beside its baseline, both
// measured in the same run.
type benchRow struct {
	Figure   string  `json:"figure"`
	Unit     string  `json:"unit"`
	Terway   float64 `json:"terway"`
	Baseline float64 `json:"baseline"`
	// Against says what the baseline is: the reference chain, 10 pods, 0
	// policies, the configured rate.
	Against string `json:"against"`
	// Ratio is Terway / Baseline; absent when the baseline is 0.
	Ratio *float64 `json:"ratio,omitempty"`
	// Absolute rows have no baseline (Baseline is 0, Ratio absent).
	Absolute bool `json:"absolute,omitempty"`
}

// absoluteRow is a figure the issue asks for on its own.
func absoluteRow(figure, unit string, terway float64) benchRow {
	return benchRow{Figure: figure, Unit: unit, Terway: terway, Against: "-", Absolute: true}
}

func newRow(figure, unit string, terway, baseline float64, against string) benchRow {
	r := benchRow{Figure: figure, Unit: unit, Terway: terway, Baseline: baseline, Against: against}
	if v, ok := ratio(terway, baseline); ok {
		r.Ratio = &v
	}
	return r
}

// ratio is a/b, undefined when b is 0 (a converged resync's kernel writes
// against another converged resync's, both 0) or either is not a number.
func ratio(a, b float64) (float64, bool) {
	if b == 0 || math.IsNaN(a) || math.IsNaN(b) || math.IsInf(a, 0) || math.IsInf(b, 0) {
		return 0, false
	}
	return a / b, true
}

// formatValue prints a figure with three significant digits or so: a
// benchmark's noise makes more digits lies.
func formatValue(v float64, unit string) string {
	var s string
	switch a := math.Abs(v); {
	case math.IsNaN(v):
		return "-"
	case a == 0 || a >= 100:
		s = fmt.Sprintf("%.0f", v)
	case a >= 10:
		s = fmt.Sprintf("%.1f", v)
	default:
		s = fmt.Sprintf("%.2f", v)
	}
	if unit == "" {
		return s
	}
	return s + " " + unit
}

func formatRatio(r *float64) string {
	if r == nil {
		return "-"
	}
	if *r >= 10 {
		return fmt.Sprintf("%.1f", *r)
	}
	return fmt.Sprintf("%.2f", *r)
}

// benchMachine is where the figures were measured: they mean little
// without it.
type benchMachine struct {
	CPUs    int    `json:"cpus"`
	CPU     string `json:"cpu,omitempty"`
	Kernel  string `json:"kernel"`
	Go      string `json:"go"`
	Date    string `json:"date"`
	Command string `json:"command"`
}

func thisMachine(args []string) benchMachine {
	m := benchMachine{CPUs: runtime.NumCPU(), Go: runtime.Version(), Date: time.Now().UTC().Format(time.RFC3339),
		Command: strings.Join(args, " ")}
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		var b strings.Builder
		for _, c := range u.Release {
			if c == 0 {
				break
			}
			b.WriteByte(byte(c))
		}
		m.Kernel = b.String()
	}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// benchReport is what -o json prints.
type benchReport struct {
	Machine benchMachine `json:"machine"`
	Rows    []benchRow   `json:"rows"`
	Errors  []string     `json:"errors,omitempty"`
}

// table prints the rows aligned: figures and descriptions to the left,
// numbers to the right; a row whose figure starts with spaces reads as a
// detail of the row above.
func (r *benchReport) table() string {
	cells := [][]string{{"FIGURE", "TERWAY", "BASELINE", "RATIO", "BASELINE IS"}}
	for _, row := range r.Rows {
		baseline := formatValue(row.Baseline, row.Unit)
		if row.Absolute {
			baseline = "-"
		}
		cells = append(cells, []string{row.Figure, formatValue(row.Terway, row.Unit),
			baseline, formatRatio(row.Ratio), row.Against})
	}
	width := make([]int, len(cells[0]))
	for _, line := range cells {
		for i, c := range line {
			width[i] = max(width[i], len(c))
		}
	}
	var b strings.Builder
	for _, line := range cells {
		fmt.Fprintf(&b, "%-*s  %*s  %*s  %*s  %s\n", width[0], line[0], width[1], line[1], width[2], line[2], width[3], line[3], line[4])
	}
	for _, e := range r.Errors {
		b.WriteString("error: " + e + "\n")
	}
	return b.String()
}
