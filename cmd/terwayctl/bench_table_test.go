package main

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/internal/cnibench"
)

func TestBenchRatio(t *testing.T) {
	for _, c := range []struct {
		a, b  float64
		want  float64
		valid bool
	}{
		{2, 4, 0.5, true},
		{4, 2, 2, true},
		{0, 3, 0, true},
		{0, 0, 0, false}, // converged writes against converged writes
		{3, 0, 0, false},
		{math.NaN(), 1, 0, false},
		{1, math.Inf(1), 0, false},
	} {
		got, ok := ratio(c.a, c.b)
		if ok != c.valid || got != c.want {
			t.Errorf("ratio(%v, %v) = %v, %v; want %v, %v", c.a, c.b, got, ok, c.want, c.valid)
		}
	}
}

func TestBenchFormatValue(t *testing.T) {
	for _, c := range []struct {
		v    float64
		unit string
		want string
	}{
		{0, "", "0"},
		{0.123, "ms", "0.12 ms"},
		{4.567, "ms", "4.57 ms"},
		{45.67, "MiB", "45.7 MiB"},
		{4567.4, "/s", "4567 /s"},
		{math.NaN(), "ms", "-"},
	} {
		if got := formatValue(c.v, c.unit); got != c.want {
			t.Errorf("formatValue(%v, %q) = %q, want %q", c.v, c.unit, got, c.want)
		}
	}
}

func TestBenchTable(t *testing.T) {
	rep := &benchReport{Rows: []benchRow{
		newRow("CNI ADD p50, 1 worker", "ms", 2, 8, "ptp + host-local + bandwidth"),
		newRow("  kernel writes per resync", "", 0, 0, "10 pods"),
		newRow("agent RSS, 250 pods", "MiB", 45.5, 30.3, "10 pods"),
	}, Errors: []string{"sims: boom"}}
	got := rep.table()
	want := `FIGURE                        TERWAY  BASELINE  RATIO  BASELINE IS
CNI ADD p50, 1 worker        2.00 ms   8.00 ms   0.25  ptp + host-local + bandwidth
  kernel writes per resync         0         0      -  10 pods
agent RSS, 250 pods         45.5 MiB  30.3 MiB   1.50  10 pods
error: sims: boom
`
	if got != want {
		t.Errorf("table:\n%s\nwant:\n%s", got, want)
	}
	// Every line of the table but the errors is equally wide up to the
	// description, so the columns line up in a Markdown code block.
	lines := strings.Split(got, "\n")
	col := strings.Index(lines[0], "BASELINE IS")
	for _, l := range lines[1:4] {
		if len(l) < col || l[col-2:col] != "  " {
			t.Errorf("line %q: description does not start at column %d", l, col)
		}
	}
	// -o json: no ratio where it is undefined, and no NaN (which JSON
	// cannot carry).
	data, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"ratio":0.25`) || strings.Count(string(data), `"ratio"`) != 2 {
		t.Errorf("json: %s", data)
	}
}

func TestBenchCNIRows(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var d []time.Duration
		for _, x := range v {
			d = append(d, time.Duration(x)*time.Millisecond)
		}
		return d
	}
	rounds := []*cnibench.Round{
		{Chain: cnibench.ChainTerway, Concurrency: 1, Add: ms(1, 2, 3, 4), Del: ms(1, 1, 1, 1)},
		{Chain: cnibench.ChainTerway, Concurrency: 8, Add: ms(5, 5, 5, 9), Del: ms(2, 2, 2, 2)},
		{Chain: cnibench.ChainRef, Concurrency: 1, Add: ms(4, 4, 4, 8), Del: ms(2, 2, 2, 2)},
		{Chain: cnibench.ChainRef, Concurrency: 8, Add: ms(10, 10, 10, 10), Del: ms(4, 4, 4, 4)},
	}
	rows := cniRows(rounds)
	if len(rows) != 8 {
		t.Fatalf("%d rows, want 8 (ADD/DEL x p50/p99 x 2 concurrencies)", len(rows))
	}
	check := func(i int, figure string, terway, ref, r float64) {
		t.Helper()
		got := rows[i]
		if got.Figure != figure || got.Terway != terway || got.Baseline != ref || got.Ratio == nil || *got.Ratio != r {
			t.Errorf("row %d = %+v (ratio %v), want %s %v/%v = %v", i, got, got.Ratio, figure, terway, ref, r)
		}
	}
	check(0, "CNI ADD p50, 1 worker", 2, 4, 0.5)
	check(1, "CNI ADD p99, 1 worker", 4, 8, 0.5)
	check(2, "CNI DEL p50, 1 worker", 1, 2, 0.5)
	check(5, "CNI ADD p99, 8 workers", 9, 10, 0.9)
}

func TestBenchSimRowsSkipUnmeasured(t *testing.T) {
	base, large := newSimFigures(10), newSimFigures(250)
	base.converge, large.converge = 2, 50
	base.rssMiB, large.rssMiB = 20, 40
	rows := simRows(base, large, 1000)
	var figures []string
	for _, r := range rows {
		figures = append(figures, r.Figure)
	}
	want := []string{"time to converge 250 pods", "  per pod", "agent RSS, 250 pods"}
	if strings.Join(figures, "|") != strings.Join(want, "|") {
		t.Errorf("rows %q, want %q", figures, want)
	}
	if r := rows[1]; r.Terway != 200 || r.Baseline != 200 || *r.Ratio != 1 {
		t.Errorf("per pod: %+v", r)
	}
}
