package eni

import (
	"context"
	"testing"
	"time"
)

func TestBackoffDelay(t *testing.T) {
	b := Backoff{Initial: 100 * time.Millisecond, Max: time.Second, Factor: 2, Jitter: 0.5, Attempts: 5}
	tests := []struct {
		attempt int
		random  float64
		want    time.Duration
	}{
		{0, 0.5, 100 * time.Millisecond}, // no jitter at the middle
		{1, 0.5, 200 * time.Millisecond},
		{3, 0.5, 800 * time.Millisecond},
		{4, 0.5, time.Second}, // capped
		{20, 0.5, time.Second},
		{0, 0, 50 * time.Millisecond},          // -50 %
		{4, 0.999999, 1500 * time.Millisecond}, // +50 % of the cap
	}
	for _, tt := range tests {
		got := b.Delay(tt.attempt, tt.random)
		if d := got - tt.want; d > time.Millisecond || d < -time.Millisecond {
			t.Errorf("Delay(%d, %g) = %s, want %s", tt.attempt, tt.random, got, tt.want)
		}
	}
}

func TestBackoffValidate(t *testing.T) {
	if err := DefaultRetry.validate(); err != nil {
		t.Fatalf("DefaultRetry: %v", err)
	}
	for _, b := range []Backoff{
		{Initial: 0, Max: time.Second, Factor: 2, Attempts: 1},
		{Initial: time.Second, Max: time.Millisecond, Factor: 2, Attempts: 1},
		{Initial: time.Millisecond, Max: time.Second, Factor: 0.5, Attempts: 1},
		{Initial: time.Millisecond, Max: time.Second, Factor: 2, Jitter: 2, Attempts: 1},
		{Initial: time.Millisecond, Max: time.Second, Factor: 2, Attempts: 0},
	} {
		if b.validate() == nil {
			t.Errorf("%+v: accepted", b)
		}
	}
}

func TestBlocklist(t *testing.T) {
	var b blocklist
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ids := []string{"vsw-a", "vsw-b"}
	if got, skipped := b.pick(ids, t0); got != "vsw-a" || len(skipped) != 0 {
		t.Fatalf("pick with nothing blocked = %s %v", got, skipped)
	}
	b.block("vsw-a", codeIPNotEnough, t0, time.Minute)
	if got, skipped := b.pick(ids, t0.Add(time.Second)); got != "vsw-b" || len(skipped) != 1 {
		t.Fatalf("pick with vsw-a blocked = %s %v", got, skipped)
	}
	b.block("vsw-b", codeIPNotEnough, t0, 2*time.Minute)
	if got, _ := b.pick(ids, t0.Add(time.Second)); got != "" {
		t.Fatalf("pick with both blocked = %s", got)
	}
	active := b.active(t0.Add(90 * time.Second))
	if len(active) != 1 || active[0].ID != "vsw-b" || active[0].Code != codeIPNotEnough {
		t.Fatalf("active after vsw-a's cooldown = %+v", active)
	}
	if got, _ := b.pick(ids, t0.Add(90*time.Second)); got != "vsw-a" {
		t.Fatalf("pick after vsw-a's cooldown = %s", got)
	}
}

func TestPause(t *testing.T) {
	var p pause
	p.hold(time.Now(), 50*time.Millisecond)
	p.hold(time.Now(), time.Millisecond) // never shortens
	start := time.Now()
	if err := p.wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 40*time.Millisecond {
		t.Fatalf("waited %s, want about 50ms", d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p.hold(time.Now(), time.Hour)
	if err := p.wait(ctx); err == nil {
		t.Fatal("wait with a cancelled context returned nil")
	}
}
