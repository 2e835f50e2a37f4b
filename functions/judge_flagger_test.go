package functions

import (
	"testing"
)

func TestJudgeMetric(t *testing.T) {
	rng := func(lo, hi *float64) *ThresholdRange { return &ThresholdRange{Min: lo, Max: hi} }
	successRate := func(tr *ThresholdRange, threshold *float64) Metric {
		return Metric{Name: MetricRequestSuccessRate, Interval: "1m", ThresholdRange: tr, Threshold: threshold}
	}
	duration := func(tr *ThresholdRange, threshold *float64) Metric {
		return Metric{Name: MetricRequestDuration, Interval: "30s", ThresholdRange: tr, Threshold: threshold}
	}
	custom := func(tr *ThresholdRange, threshold *float64) Metric {
		return Metric{Name: "error-rate", TemplateRef: &CrossRef{Name: "error-rate"}, ThresholdRange: tr, Threshold: threshold}
	}
	inline := func(tr *ThresholdRange, threshold *float64) Metric {
		return Metric{Name: "my-query", Query: "sum(up)", ThresholdRange: tr, Threshold: threshold}
	}
	val := func(v float64) MetricResult { return MetricResult{Value: v} }
	noData := MetricResult{NoData: true}
	failed := MetricResult{Err: "boom"}

	tests := []struct {
		name   string
		metric Metric
		result MetricResult
		wantOK bool
		want   string
	}{
		// request-success-rate
		{"success rate above min", successRate(rng(ptr(99.0), nil), nil), val(99.5), true, ""},
		{"success rate equal to min", successRate(rng(ptr(99.0), nil), nil), val(99), true, ""},
		{"success rate below min", successRate(rng(ptr(99.0), nil), nil), val(90),
			false, "Halt podinfo.default advancement success rate 90.00% < 99%"},
		{"success rate fractional min", successRate(rng(ptr(99.5), nil), nil), val(99.456),
			false, "Halt podinfo.default advancement success rate 99.46% < 99.5%"},
		{"success rate above max", successRate(rng(nil, ptr(99.9)), nil), val(100),
			false, "Halt podinfo.default advancement success rate 100.00% > 99.9%"},
		{"success rate inside min and max", successRate(rng(ptr(90.0), ptr(100.0)), nil), val(95), true, ""},
		{"success rate below min of min and max", successRate(rng(ptr(90.0), ptr(100.0)), nil), val(80),
			false, "Halt podinfo.default advancement success rate 80.00% < 90%"},
		{"success rate legacy threshold above value", successRate(nil, ptr(99.0)), val(98.5),
			false, "Halt podinfo.default advancement success rate 98.50% < 99%"},
		{"success rate legacy threshold equal", successRate(nil, ptr(99.0)), val(99), true, ""},
		{"success rate range wins over legacy threshold", successRate(rng(ptr(50.0), nil), ptr(99.0)), val(60), true, ""},
		{"success rate without thresholds", successRate(nil, nil), val(0), true, ""},
		{"success rate no data", successRate(rng(ptr(99.0), nil), nil), noData,
			false, "Halt advancement no values found for istio metric request-success-rate probably podinfo.default is not receiving traffic"},
		{"success rate query error", successRate(rng(ptr(99.0), nil), nil), failed, false, "Prometheus query failed: boom"},

		// request-duration
		{"duration below max", duration(rng(nil, ptr(500.0)), nil), val(123.4), true, ""},
		{"duration above max", duration(rng(nil, ptr(500.0)), nil), val(600),
			false, "Halt podinfo.default advancement request duration 600ms > 500ms"},
		{"duration fraction truncated like Flagger", duration(rng(nil, ptr(500.0)), nil), val(500.9), true, ""},
		{"duration in seconds", duration(rng(nil, ptr(500.0)), nil), val(1500),
			false, "Halt podinfo.default advancement request duration 1.5s > 500ms"},
		{"duration below min", duration(rng(ptr(10.0), nil), nil), val(5),
			false, "Halt podinfo.default advancement request duration 5ms < 10ms"},
		{"duration max fraction truncated", duration(rng(nil, ptr(500.7)), nil), val(500.95), true, ""},
		{"duration legacy threshold exceeded", duration(nil, ptr(500.0)), val(501),
			false, "Halt podinfo.default advancement request duration 501ms > 500ms"},
		{"duration legacy threshold equal", duration(nil, ptr(500.0)), val(500), true, ""},
		{"duration without thresholds fails above zero, as Flagger", duration(nil, nil), val(1),
			false, "Halt podinfo.default advancement request duration 1ms > 0s"},
		{"duration no data", duration(rng(nil, ptr(500.0)), nil), noData,
			false, "Halt advancement no values found for istio metric request-duration probably podinfo.default is not receiving traffic"},
		{"duration query error", duration(rng(nil, ptr(500.0)), nil), failed, false, "Prometheus query failed: boom"},

		// MetricTemplate
		{"custom below max", custom(rng(nil, ptr(5.0)), nil), val(4.99), true, ""},
		{"custom above max", custom(rng(nil, ptr(5.0)), nil), val(7.123),
			false, "Halt podinfo.default advancement error-rate 7.12 > 5"},
		{"custom below min", custom(rng(ptr(1.0), nil), nil), val(0.5),
			false, "Halt podinfo.default advancement error-rate 0.50 < 1"},
		{"custom legacy threshold exceeded", custom(nil, ptr(5.0)), val(6),
			false, "Halt podinfo.default advancement error-rate 6.00 > 5"},
		{"custom legacy threshold equal", custom(nil, ptr(5.0)), val(5), true, ""},
		{"custom no data", custom(rng(nil, ptr(5.0)), nil), noData,
			false, "Halt advancement no values found for custom metric: error-rate: no values found"},
		{"custom query error", custom(rng(nil, ptr(5.0)), nil), failed, false, "Metric query failed for error-rate: boom"},

		// inline query
		{"inline above max", inline(rng(nil, ptr(1.0)), nil), val(2),
			false, "Halt podinfo.default advancement my-query 2.00 > 1"},
		{"inline within range", inline(rng(ptr(0.0), ptr(1.0)), nil), val(0), true, ""},
		{"inline no data", inline(rng(nil, ptr(1.0)), nil), noData, false, "Halt advancement no values found for metric: my-query"},
		{"inline query error", inline(rng(nil, ptr(1.0)), nil), failed, false, "Prometheus query failed for my-query: boom"},
		{"built-in name with a query is judged as the query",
			Metric{Name: MetricRequestSuccessRate, Query: "sum(up)", ThresholdRange: rng(ptr(99.0), nil)}, val(90),
			false, "Halt podinfo.default advancement request-success-rate 90.00 < 99"},

		{"unusable metric", Metric{Name: "nothing"}, MetricResult{Err: "no usable metrics template and query were configured"},
			false, "Metric query failed for nothing: no usable metrics template and query were configured"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, msg := JudgeMetric(seedCanary(), tt.metric, tt.result)
			if ok != tt.wantOK || msg != tt.want {
				t.Errorf("JudgeMetric() = (%v, %q), want (%v, %q)", ok, msg, tt.wantOK, tt.want)
			}
		})
	}
}

func TestJudgeNamesCanaryAndTarget(t *testing.T) {
	c := seedCanary()
	c.Name, c.Namespace = "shop", "prod"
	c.Spec.TargetRef.Name = "checkout"
	m := Metric{Name: MetricRequestSuccessRate, ThresholdRange: &ThresholdRange{Min: ptr(99.0)}}

	_, msg := JudgeMetric(c, m, MetricResult{NoData: true})
	if want := "Halt advancement no values found for istio metric request-success-rate probably checkout.prod is not receiving traffic"; msg != want {
		t.Errorf("no data message = %q, want %q", msg, want)
	}
	_, msg = JudgeMetric(c, m, MetricResult{Value: 1})
	if want := "Halt shop.prod advancement success rate 1.00% < 99%"; msg != want {
		t.Errorf("threshold message = %q, want %q", msg, want)
	}
}
