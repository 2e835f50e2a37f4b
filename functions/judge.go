package functions

import (
	"fmt"
	"math"
	"time"
)

const (
	MetricRequestSuccessRate = "request-success-rate"
	MetricRequestDuration    = "request-duration"
)

// JudgeMetric decides one metric check with Flagger's semantics (scheduler_metrics.go): a
// thresholdRange fails below min or above max; the legacy threshold is a floor for the success
// rate and a ceiling for anything else; no data and NaN fail, saying so.
func JudgeMetric(c Canary, m Metric, r MetricResult) (bool, string) {
	id := c.Name + "." + c.Namespace
	switch {
	case r.Err != "":
		return false, fmt.Sprintf("Metric query failed for %s: %s", m.Name, r.Err)
	case r.NoData || math.IsNaN(r.Value):
		return false, fmt.Sprintf("Halt advancement no values found for istio metric %s probably %s.%s is not receiving traffic",
			m.Name, c.Spec.TargetRef.Name, c.Namespace)
	}
	v := r.Value
	show := func(x float64) string { return fmt.Sprintf("%.2f", x) }
	limit := func(x float64) string { return fmt.Sprintf("%v", x) }
	what := m.Name
	switch m.Name {
	case MetricRequestSuccessRate:
		what = "success rate"
		show = func(x float64) string { return fmt.Sprintf("%.2f%%", x) }
		limit = func(x float64) string { return fmt.Sprintf("%v%%", x) }
	case MetricRequestDuration:
		what = "request duration"
		// Flagger truncates the P99 to whole milliseconds before comparing.
		v = float64(int64(v))
		show = func(x float64) string { return (time.Duration(int64(x)) * time.Millisecond).String() }
		limit = show
	}
	if tr := m.ThresholdRange; tr != nil {
		if tr.Min != nil && v < *tr.Min {
			return false, fmt.Sprintf("Halt %s advancement %s %s < %s", id, what, show(v), limit(*tr.Min))
		}
		if tr.Max != nil && v > *tr.Max {
			return false, fmt.Sprintf("Halt %s advancement %s %s > %s", id, what, show(v), limit(*tr.Max))
		}
		return true, ""
	}
	if t := m.Threshold; t != nil {
		if m.Name == MetricRequestSuccessRate {
			if *t > v {
				return false, fmt.Sprintf("Halt %s advancement %s %s < %s", id, what, show(v), limit(*t))
			}
		} else if v > *t {
			return false, fmt.Sprintf("Halt %s advancement %s %s > %s", id, what, show(v), limit(*t))
		}
	}
	return true, ""
}
