package main

import "testing"

// TestCollectorPercent: the flag wins when given, a GOGC in the
// environment over the default, and the default otherwise.
func TestCollectorPercent(t *testing.T) {
	for _, tc := range []struct {
		name      string
		flagGiven bool
		flagValue int
		env       string
		want      int
		set       bool
	}{
		{"default", false, defaultGCPercent, "", defaultGCPercent, true},
		{"GOGC in the environment", false, defaultGCPercent, "50", 0, false},
		{"flag over GOGC", true, 100, "50", 100, true},
		{"flag off", true, -1, "", -1, true},
	} {
		got, set := collectorPercent(tc.flagGiven, tc.flagValue, tc.env)
		if got != tc.want || set != tc.set {
			t.Errorf("%s: got %d, %v; want %d, %v", tc.name, got, set, tc.want, tc.set)
		}
	}
}
