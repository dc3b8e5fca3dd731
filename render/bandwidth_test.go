package render

import (
	"strings"
	"testing"
)

func TestParseAliyunBandwidth(t *testing.T) {
	for _, tc := range []struct {
		in   string
		bits uint64
		err  string
	}{
		{"1m", 8 << 20, ""},
		{"1M", 8 << 20, ""},
		{"512k", 512 * 8 << 10, ""},
		{"1G", 8 << 30, ""},
		{"1.5m", 12 << 20, ""},
		{"125000", 1_000_000, ""},
		{" 2m ", 16 << 20, ""},
		{"10x", 0, "is not a rate"},
		{"-1m", 0, "is not a rate"},
		{"0", 0, "must be a positive rate"},
		{"0m", 0, "must be a positive rate"},
		{"", 0, "is not a rate"},
		{"100", 0, "below the minimum"},
		{"1m1", 0, "is not a rate"},
		{"200000G", 0, "above the maximum"},
	} {
		got, err := ParseAliyunBandwidth(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "\""+tc.in+"\"") {
				t.Errorf("ParseAliyunBandwidth(%q) = %d, %v; want an error naming the value and saying %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.bits {
			t.Errorf("ParseAliyunBandwidth(%q) = %d, %v; want %d", tc.in, got, err, tc.bits)
		}
	}
}

// TestLongRateIsRefusedByLength: a value of any length is refused before
// arithmetic, and the error quotes only its start.
func TestLongRateIsRefusedByLength(t *testing.T) {
	long := "1" + strings.Repeat("0", 10000) + "k"
	for name, parse := range map[string]func(string) (uint64, error){"aliyun": ParseAliyunBandwidth, "kube": ParseKubeBandwidth} {
		_, err := parse(long)
		if err == nil || !strings.Contains(err.Error(), "longer than 64 characters") || len(err.Error()) > 200 {
			t.Errorf("%s: %d-character value: error %.300v; want a short one saying it is too long", name, len(long), err)
		}
	}
}

func TestParseKubeBandwidth(t *testing.T) {
	for _, tc := range []struct {
		in   string
		bits uint64
		err  string
	}{
		{"10M", 10_000_000, ""},
		{"1Gi", 1 << 30, ""},
		{"100k", 100_000, ""},
		{"1k", 1000, ""},
		{"2.5M", 2_500_000, ""},
		{"0", 0, "must be a positive rate"},
		{"-10M", 0, "must be a positive rate"},
		{"10", 0, "below the minimum"},
		{"2P", 0, "above the maximum"},
		{"10x", 0, "is not a Kubernetes quantity"},
		{"", 0, "is not a Kubernetes quantity"},
		{"1e15", 1_000_000_000_000_000, ""},
		{"1e-30", 0, "below the minimum"},
		// An exponent is bounded before the resource package expands it:
		// 1e1000000000 made it compute a billion-digit number and hung
		// render (the fuzz corpus keeps that value).
		{"1e31", 0, "exponent 31 is outside ±30"},
		{"1e1000000000", 0, "exponent 1000000000 is outside ±30"},
		{"1e-1000000", 0, "exponent -1000000 is outside ±30"},
		{strings.Repeat("1", 65), 0, "longer than 64 characters"},
	} {
		got, err := ParseKubeBandwidth(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseKubeBandwidth(%q) = %d, %v; want error %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.bits {
			t.Errorf("ParseKubeBandwidth(%q) = %d, %v; want %d", tc.in, got, err, tc.bits)
		}
	}
}

func TestTBFSizing(t *testing.T) {
	for _, rate := range []uint64{1000, 8 << 20, 100_000_000, 1 << 40} {
		burst, limit := tbfFor(rate)
		if burst < 16*1024 || limit <= burst {
			t.Errorf("tbfFor(%d) = burst %d limit %d; want burst >= 16 KiB and limit > burst", rate, burst, limit)
		}
	}
}
