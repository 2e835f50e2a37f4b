package functions

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestDescribeSpec(t *testing.T) {
	tests := []struct {
		name string
		a    *Analysis
		want string
	}{
		{"canary", &Analysis{Interval: "10s", Threshold: 5, StepWeight: 5, MaxWeight: 50},
			"5 % steps to 50 % every 10s; rollback after 5 failed checks"},
		{"minutes", &Analysis{Interval: "1m", Threshold: 1, StepWeight: 10},
			"10 % steps to 100 % every 1m; rollback after 1 failed check"},
		{"below the floor", &Analysis{Interval: "1s", Threshold: 2, StepWeight: 20, MaxWeight: 60},
			"20 % steps to 60 % every 10s; rollback after 2 failed checks"},
		{"step weights", &Analysis{Interval: "30s", Threshold: 3, StepWeights: []int{1, 5, 25, 50}},
			"steps of 1, 5, 25, 50 % every 30s; rollback after 3 failed checks"},
		{"promotion steps", &Analysis{Interval: "1m30s", Threshold: 3, StepWeight: 10, MaxWeight: 50, StepWeightPromotion: 25},
			"10 % steps to 50 % every 1m30s; promotion in 25 % steps; rollback after 3 failed checks"},
		{"blue/green", &Analysis{Interval: "1m", Threshold: 2, Iterations: 10},
			"blue/green: 10 iterations every 1m, then all traffic at once; rollback after 2 failed checks"},
		{"a/b", &Analysis{Interval: "1m", Threshold: 2, Iterations: 10, Match: []byte(`[{"headers":{}}]`)},
			"A/B test: matching requests to the canary for 10 iterations every 1m, then promotion; rollback after 2 failed checks"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := DescribeSpec(Spec{Analysis: tc.a}, MinAnalysisInterval); got != tc.want {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestMetricSpecs(t *testing.T) {
	got := MetricSpecs(seedCanary().Spec)
	want := []MetricSpec{
		{Name: "request-success-rate", Interval: "1m", Min: ptr(99.0), Pass: "≥ 99 %"},
		{Name: "request-duration", Interval: "30s", Max: ptr(500.0), Pass: "≤ 500 ms"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	legacy := MetricSpecs(Spec{Analysis: &Analysis{Metrics: []Metric{{Name: "error-rate", Threshold: ptr(1.5), Query: "q"}}}})
	if got, want := legacy[0].Pass, "≤ 1.5"; got != want {
		t.Errorf("legacy threshold: got %q, want %q", got, want)
	}
}
