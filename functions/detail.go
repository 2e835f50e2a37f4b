package functions

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// CanaryDetail is everything the dashboard shows about one canary.
type CanaryDetail struct {
	CanaryView
	// Description is the spec in words.
	Description string        `json:"description"`
	Metrics     []MetricSpec  `json:"metrics"`
	Webhooks    []HookSpec    `json:"webhooks"`
	Alerts      []string      `json:"alerts"`
	Target      string        `json:"target"`
	Releases    []Release     `json:"releases"`
	Events      []EventRecord `json:"events"`
	// EventsError says why the Events could not be read (the rest still shows).
	EventsError string `json:"eventsError,omitempty"`
	// HistoryError says why the history could not be read.
	HistoryError string `json:"historyError,omitempty"`
}

// MetricSpec is one metric of the analysis and its thresholds.
type MetricSpec struct {
	Name      string   `json:"name"`
	Interval  string   `json:"interval,omitempty"`
	Threshold *float64 `json:"threshold,omitempty"`
	Min       *float64 `json:"min,omitempty"`
	Max       *float64 `json:"max,omitempty"`
	// Pass is the passing condition in words ("≥ 99", "≤ 500 ms").
	Pass string `json:"pass"`
}

// HookSpec is one webhook of the analysis (its URL is not shown: it may carry credentials).
type HookSpec struct {
	Type HookType `json:"type"`
	Name string   `json:"name"`
}

// Detail is one canary's view, its spec in words, its history and its Events.
func (s *Service) Detail(ctx context.Context, k Key) (CanaryDetail, error) {
	c, err := s.d.Workloads.GetCanary(ctx, k)
	if err != nil {
		return CanaryDetail{}, fmt.Errorf("get canary %s: %w", k, err)
	}
	d := CanaryDetail{Description: DescribeSpec(c.Spec, s.cfg.MinInterval), Metrics: MetricSpecs(c.Spec),
		Webhooks: []HookSpec{}, Alerts: []string{}, Target: c.Spec.TargetRef.kind() + " " + c.Spec.TargetRef.Name,
		Releases: []Release{}, Events: []EventRecord{}}
	for _, w := range c.Spec.analysis().Webhooks {
		d.Webhooks = append(d.Webhooks, HookSpec{Type: w.EffectiveType(), Name: w.Name})
	}
	for _, a := range c.Spec.analysis().Alerts {
		d.Alerts = append(d.Alerts, a.Name)
	}
	var (
		wg      sync.WaitGroup
		viewErr error
	)
	wg.Go(func() { d.CanaryView, viewErr = s.view(ctx, c) })
	wg.Go(func() {
		rs, err := s.History(ctx, k)
		if err != nil {
			d.HistoryError = err.Error()
			return
		}
		d.Releases = rs
	})
	wg.Go(func() {
		if s.d.EventLog == nil {
			d.EventsError = "no event log configured"
			return
		}
		evs, err := s.d.EventLog.CanaryEvents(ctx, c)
		if err != nil {
			d.EventsError = err.Error()
			return
		}
		if evs != nil {
			d.Events = evs
		}
	})
	wg.Wait()
	if viewErr != nil {
		return CanaryDetail{}, viewErr
	}
	return d, nil
}

// MetricSpecs lists the analysis' metrics with their passing conditions.
func MetricSpecs(spec Spec) []MetricSpec {
	out := []MetricSpec{}
	for _, m := range spec.analysis().Metrics {
		ms := MetricSpec{Name: m.Name, Interval: m.Interval, Threshold: m.Threshold}
		unit := ""
		if m.Name == MetricRequestDuration {
			unit = " ms"
		} else if m.Name == MetricRequestSuccessRate {
			unit = " %"
		}
		var conds []string
		switch {
		case m.ThresholdRange != nil:
			ms.Min, ms.Max = m.ThresholdRange.Min, m.ThresholdRange.Max
			if ms.Min != nil {
				conds = append(conds, "≥ "+num(*ms.Min)+unit)
			}
			if ms.Max != nil {
				conds = append(conds, "≤ "+num(*ms.Max)+unit)
			}
		case m.Name == MetricRequestSuccessRate:
			conds = append(conds, "≥ "+num(deref(m.Threshold))+unit)
		default:
			conds = append(conds, "≤ "+num(deref(m.Threshold))+unit)
		}
		ms.Pass = strings.Join(conds, " and ")
		out = append(out, ms)
	}
	return out
}

func deref(p *float64) float64 {
	if p == nil {
		return 0
	}
	return *p
}

func num(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// DescribeSpec says what a release of this spec does, in words: "5 % steps to 50 % every 10s;
// rollback after 5 failed checks".
func DescribeSpec(spec Spec, floor time.Duration) string {
	a := spec.analysis()
	every := "every " + shortDuration(spec.Interval(floor))
	var parts []string
	switch spec.Strategy() {
	case StrategyBlueGreen:
		parts = append(parts, fmt.Sprintf("blue/green: %d iterations %s, then all traffic at once", a.Iterations, every))
	case StrategyABTesting:
		parts = append(parts, fmt.Sprintf("A/B test: matching requests to the canary for %d iterations %s, then promotion", a.Iterations, every))
	default:
		switch {
		case len(a.StepWeights) > 0 && a.StepWeight <= 0:
			ws := make([]string, len(a.StepWeights))
			for i, w := range a.StepWeights {
				ws[i] = strconv.Itoa(w)
			}
			parts = append(parts, fmt.Sprintf("steps of %s %% %s", strings.Join(ws, ", "), every))
		default:
			step := a.StepWeight
			if step <= 0 {
				step = spec.MaxWeight()
			}
			parts = append(parts, fmt.Sprintf("%d %% steps to %d %% %s", step, spec.MaxWeight(), every))
		}
		if a.StepWeightPromotion > 0 {
			parts = append(parts, fmt.Sprintf("promotion in %d %% steps", a.StepWeightPromotion))
		}
	}
	if a.Mirror {
		parts = append(parts, "traffic mirrored")
	}
	if spec.SkipsAnalysis() {
		parts = append(parts, "analysis skipped")
	} else {
		checks := "checks"
		if spec.Threshold() == 1 {
			checks = "check"
		}
		parts = append(parts, fmt.Sprintf("rollback after %d failed %s", spec.Threshold(), checks))
	}
	if spec.Suspend {
		parts = append(parts, "suspended")
	}
	return strings.Join(parts, "; ")
}

// shortDuration prints 10s, 1m, 1m30s, 2h rather than 1m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	s = strings.Replace(s, "m0s", "m", 1)
	s = strings.Replace(s, "h0m", "h", 1)
	return s
}
