package functions

import (
	"fmt"
	"time"
)

// The built-in metrics, measured with Flagger's Istio queries.
const (
	MetricRequestSuccessRate = "request-success-rate"
	MetricRequestDuration    = "request-duration"
)

// JudgeMetric decides whether one metric result passes its thresholds, with Flagger's rules and
// event messages (pkg/controller/scheduler_metrics.go). A query error or no data fails the
// check. message is empty when ok.
//
//   - thresholdRange: fail if value < min or value > max (request-duration in milliseconds);
//   - legacy threshold: request-success-rate fails if threshold > value, every other metric if
//     value > threshold. As in Flagger, a metric with neither has threshold 0.
func JudgeMetric(c Canary, m Metric, r MetricResult) (ok bool, message string) {
	kind := m.Kind()
	if r.Err != "" {
		switch kind {
		case MetricBuiltin:
			return false, fmt.Sprintf("Prometheus query failed: %s", r.Err)
		case MetricInline:
			return false, fmt.Sprintf("Prometheus query failed for %s: %s", m.Name, r.Err)
		default:
			return false, fmt.Sprintf("Metric query failed for %s: %s", m.Name, r.Err)
		}
	}
	if r.NoData {
		switch kind {
		case MetricBuiltin:
			return false, fmt.Sprintf("Halt advancement no values found for istio metric %s probably %s.%s is not receiving traffic",
				m.Name, c.Spec.TargetRef.Name, c.Namespace)
		case MetricInline:
			return false, fmt.Sprintf("Halt advancement no values found for metric: %s", m.Name)
		default:
			return false, fmt.Sprintf("Halt advancement no values found for custom metric: %s: no values found", m.Name)
		}
	}

	var threshold float64
	if m.Threshold != nil {
		threshold = *m.Threshold
	}
	var lo, hi *float64
	if tr := m.ThresholdRange; tr != nil {
		lo, hi = tr.Min, tr.Max
	}
	halt := fmt.Sprintf("Halt %s.%s advancement", c.Name, c.Namespace)

	switch {
	case kind == MetricBuiltin && m.Name == MetricRequestSuccessRate:
		v := r.Value
		switch {
		case m.ThresholdRange == nil && threshold > v:
			return false, fmt.Sprintf("%s success rate %.2f%% < %v%%", halt, v, threshold)
		case lo != nil && v < *lo:
			return false, fmt.Sprintf("%s success rate %.2f%% < %v%%", halt, v, *lo)
		case hi != nil && v > *hi:
			return false, fmt.Sprintf("%s success rate %.2f%% > %v%%", halt, v, *hi)
		}
	case kind == MetricBuiltin && m.Name == MetricRequestDuration:
		// Flagger truncates the P99 to whole milliseconds before comparing, and prints both
		// sides as durations ("600ms", "1.5s").
		v := time.Duration(int64(r.Value)) * time.Millisecond
		switch {
		case m.ThresholdRange == nil && v > ms(threshold):
			return false, fmt.Sprintf("%s request duration %v > %v", halt, v, ms(threshold))
		case lo != nil && v < ms(*lo):
			return false, fmt.Sprintf("%s request duration %v < %v", halt, v, ms(*lo))
		case hi != nil && v > ms(*hi):
			return false, fmt.Sprintf("%s request duration %v > %v", halt, v, ms(*hi))
		}
	default:
		v := r.Value
		switch {
		case m.ThresholdRange == nil && v > threshold:
			return false, fmt.Sprintf("%s %s %.2f > %v", halt, m.Name, v, threshold)
		case lo != nil && v < *lo:
			return false, fmt.Sprintf("%s %s %.2f < %v", halt, m.Name, v, *lo)
		case hi != nil && v > *hi:
			return false, fmt.Sprintf("%s %s %.2f > %v", halt, m.Name, v, *hi)
		}
	}
	return true, ""
}

// ms converts a threshold in milliseconds as Flagger does: time.Duration(x) truncates the
// fraction.
func ms(x float64) time.Duration { return time.Duration(x) * time.Millisecond }
