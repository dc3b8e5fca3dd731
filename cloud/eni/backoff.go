package eni

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"
)

// Backoff is an exponential backoff with jitter: attempt n waits
// Initial*Factor^n, at most Max, spread by ±Jitter so that many nodes
// throttled together do not retry together.
type Backoff struct {
	Initial  time.Duration
	Max      time.Duration
	Factor   float64
	Jitter   float64 // 0..1
	Attempts int     // calls in all, the first included
}

func (b Backoff) validate() error {
	switch {
	case b.Initial <= 0 || b.Max < b.Initial:
		return fmt.Errorf("need 0 < initial (%s) <= max (%s)", b.Initial, b.Max)
	case b.Factor < 1:
		return fmt.Errorf("factor: %g must be at least 1", b.Factor)
	case b.Jitter < 0 || b.Jitter > 1:
		return fmt.Errorf("jitter: %g is outside 0..1", b.Jitter)
	case b.Attempts < 1:
		return fmt.Errorf("attempts: %d must be at least 1", b.Attempts)
	}
	return nil
}

// Delay is the wait after the attempt-th failure (0 = the first), given a
// uniform random number in [0, 1) for the jitter.
func (b Backoff) Delay(attempt int, random float64) time.Duration {
	d := float64(b.Initial) * math.Pow(b.Factor, float64(attempt))
	d = min(d, float64(b.Max))
	d *= 1 - b.Jitter + 2*b.Jitter*random
	return time.Duration(d)
}

// pause holds every API call back after the cloud throttled one: the rate
// limit is the account's, so hammering it with other actions only prolongs
// it.
type pause struct {
	mu    sync.Mutex
	until time.Time
}

// hold extends the pause to at least now+d.
func (p *pause) hold(now time.Time, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if t := now.Add(d); t.After(p.until) {
		p.until = t
	}
}

// wait returns once the pause is over or ctx ends.
func (p *pause) wait(ctx context.Context) error {
	p.mu.Lock()
	d := time.Until(p.until)
	p.mu.Unlock()
	if d <= 0 {
		return nil
	}
	return sleep(ctx, d)
}

// blocklist remembers vswitches that ran out of IPs, each until a time.
// It is not safe for concurrent use; the reconciler's lock guards it.
type blocklist struct {
	until map[string]time.Time
	code  map[string]string
}

// block skips the vswitch until now+d; code is the cloud's reason.
func (b *blocklist) block(vswitch, code string, now time.Time, d time.Duration) {
	if b.until == nil {
		b.until, b.code = map[string]time.Time{}, map[string]string{}
	}
	b.until[vswitch], b.code[vswitch] = now.Add(d), code
}

// blocked reports whether the vswitch is skipped now.
func (b *blocklist) blocked(vswitch string, now time.Time) bool {
	return now.Before(b.until[vswitch])
}

// pick returns the first vswitch of ids that is not blocked, and the
// blocked ones before it.
func (b *blocklist) pick(ids []string, now time.Time) (string, []string) {
	var skipped []string
	for _, id := range ids {
		if !b.blocked(id, now) {
			return id, skipped
		}
		skipped = append(skipped, id)
	}
	return "", skipped
}

// active returns the vswitches blocked now with their end times, sorted.
func (b *blocklist) active(now time.Time) []BlockedVSwitch {
	var out []BlockedVSwitch
	for id, t := range b.until {
		if now.Before(t) {
			out = append(out, BlockedVSwitch{ID: id, Code: b.code[id], Until: t})
		}
	}
	slices.SortFunc(out, func(a, b BlockedVSwitch) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// BlockedVSwitch is a vswitch skipped for new IPs because the cloud said it
// has none left.
type BlockedVSwitch struct {
	ID    string
	Code  string
	Until time.Time
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
