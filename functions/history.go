package functions

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// History keeps what each step of a release did (package state): the records of the last
// releases of every canary, removed with its state.
type History interface {
	// AppendStep adds r to release of canary k, starting the release if it is new (and
	// dropping the oldest past the cap).
	AppendStep(ctx context.Context, k Key, release string, r StepRecord) error
	// Releases returns the kept releases of k, newest first, each with its steps oldest first.
	Releases(ctx context.Context, k Key) ([]Release, error)
}

// StepRecord is what one step, abort or gate of a canary did.
type StepRecord struct {
	At            time.Time     `json:"at"`
	Kind          string        `json:"kind"` // step, gate (a manual promote or resume), abort
	From          Phase         `json:"from"`
	To            Phase         `json:"to"`
	Weight        int           `json:"weight"`
	PrimaryWeight int           `json:"primaryWeight"`
	FailedChecks  int           `json:"failedChecks"`
	Threshold     int           `json:"threshold"`
	Iterations    int           `json:"iterations,omitempty"`
	Metrics       []MetricCheck `json:"metrics,omitempty"`
	Hooks         []HookCheck   `json:"hooks,omitempty"`
	Alerts        []AlertNote   `json:"alerts,omitempty"`
	Events        []EventNote   `json:"events,omitempty"`
	// Decision is what the step did, in words ("weight 10 → 20", "Progressing → Failed").
	Decision string `json:"decision"`
	// Reason is why: the failed checks' messages, or the state's message.
	Reason  string   `json:"reason,omitempty"`
	Trigger *Trigger `json:"trigger,omitempty"`
}

// MetricCheck is one metric's value at a step against its thresholds.
type MetricCheck struct {
	Name      string   `json:"name"`
	Value     float64  `json:"value"`
	NoData    bool     `json:"noData,omitempty"`
	Err       string   `json:"err,omitempty"`
	Threshold *float64 `json:"threshold,omitempty"`
	Min       *float64 `json:"min,omitempty"`
	Max       *float64 `json:"max,omitempty"`
	OK        bool     `json:"ok"`
	Message   string   `json:"message,omitempty"`
}

// HookCheck is one webhook's answer at a step.
type HookCheck struct {
	Type   HookType `json:"type"`
	Name   string   `json:"name"`
	OK     bool     `json:"ok"`
	Detail string   `json:"detail,omitempty"`
}

// AlertNote is an alert a step sent.
type AlertNote struct {
	Severity Severity `json:"severity"`
	Message  string   `json:"message"`
}

// EventNote is a Kubernetes Event a step recorded.
type EventNote struct {
	Warning bool   `json:"warning,omitempty"`
	Message string `json:"message"`
}

// Release is one release of a canary as its history tells it.
type Release struct {
	ID    string       `json:"id"`
	Steps []StepRecord `json:"steps"`
	// Filled by Summarize.
	Start    time.Time     `json:"start"`
	End      time.Time     `json:"end,omitzero"`
	Outcome  Phase         `json:"outcome"`
	Duration time.Duration `json:"duration"`
	Trigger  *Trigger      `json:"trigger,omitempty"`
}

// Summarize fills the release's start, end, outcome, duration and trigger from its steps.
func (r *Release) Summarize() {
	if len(r.Steps) == 0 {
		return
	}
	first, last := r.Steps[0], r.Steps[len(r.Steps)-1]
	r.Start, r.Outcome = first.At, last.To
	if !last.To.Releasing() {
		r.End = last.At
	}
	end := r.End
	if end.IsZero() {
		end = last.At
	}
	r.Duration = end.Sub(r.Start)
	for _, s := range r.Steps {
		if s.Trigger != nil {
			r.Trigger = s.Trigger
			break
		}
	}
}

// MaxHistorySteps caps the steps kept per release (the newest are kept).
const MaxHistorySteps = 500

// MaxHistoryReleases caps the releases kept per canary.
const MaxHistoryReleases = 20

// newReleaseID names a release by when it started: ids grow with time.
func newReleaseID(now time.Time) string { return strconv.FormatInt(now.UnixMilli(), 10) }

// assignRelease gives the state its release: a new one when a release starts (or restarts on a
// new revision: a new template, or new data in a tracked ConfigMap or Secret), or when there is
// none yet.
func assignRelease(before State, after *State, now time.Time) {
	starts := after.Phase.Releasing() &&
		(!before.Phase.Releasing() || before.LastAppliedSpec != after.LastAppliedSpec ||
			configsChanged(before.TrackedConfigs, after.TrackedConfigs))
	if after.Release == "" || starts {
		after.Release = newReleaseID(now)
	}
}

// worthRecording: steps of a canary at rest that change nothing are not history.
func worthRecording(before, after State) bool {
	return before.Phase != after.Phase || before.Phase.Releasing() || after.Phase.Releasing() ||
		before.Routing != after.Routing || before.FailedChecks != after.FailedChecks
}

// NewStepRecord describes a step from before to after: the metrics it judged, the hooks it
// called, the alerts and events it sent.
func NewStepRecord(kind string, c Canary, before, after State, out Step, metrics []MetricResult, hooks map[HookType][]HookResult, now time.Time) StepRecord {
	r := StepRecord{At: now, Kind: kind, From: before.Phase, To: after.Phase, Weight: after.Routing.Canary,
		PrimaryWeight: after.Routing.Primary, FailedChecks: after.FailedChecks, Threshold: c.Spec.Threshold(),
		Iterations: after.Iterations, Trigger: after.Trigger}
	for i, m := range c.Spec.analysis().Metrics {
		if i >= len(metrics) {
			break
		}
		res := metrics[i]
		ok, msg := JudgeMetric(c, m, res)
		mc := MetricCheck{Name: m.Name, Value: res.Value, NoData: res.NoData, Err: res.Err, Threshold: m.Threshold, OK: ok, Message: msg}
		if m.ThresholdRange != nil {
			mc.Min, mc.Max = m.ThresholdRange.Min, m.ThresholdRange.Max
		}
		r.Metrics = append(r.Metrics, mc)
	}
	for _, t := range hookTypes {
		for _, h := range hooks[t] {
			r.Hooks = append(r.Hooks, HookCheck{Type: t, Name: h.Name, OK: h.OK, Detail: truncate(h.Detail, 512)})
		}
	}
	for _, a := range out.Alerts {
		r.Alerts = append(r.Alerts, AlertNote{Severity: a.Severity, Message: a.Message})
	}
	var warnings []string
	for _, e := range out.Events {
		r.Events = append(r.Events, EventNote{Warning: e.Warning, Message: e.Message})
		if e.Warning {
			warnings = append(warnings, e.Message)
		}
	}
	r.Decision = decision(before, after)
	r.Reason = after.Message
	if len(warnings) > 0 {
		r.Reason = strings.Join(warnings, "; ")
	}
	return r
}

// decision says in words what a step changed.
func decision(before, after State) string {
	var parts []string
	if before.Phase != after.Phase {
		from := before.Phase
		if from == "" {
			from = "new"
		}
		parts = append(parts, fmt.Sprintf("%s → %s", from, after.Phase))
	}
	if before.Routing.Canary != after.Routing.Canary {
		parts = append(parts, fmt.Sprintf("weight %d → %d", before.Routing.Canary, after.Routing.Canary))
	}
	if after.FailedChecks > before.FailedChecks {
		parts = append(parts, fmt.Sprintf("failed check %d", after.FailedChecks))
	}
	if after.Phase == PhaseSucceeded && before.Phase != PhaseSucceeded {
		parts = append(parts, "promoted")
	}
	if len(parts) == 0 {
		return "hold"
	}
	return strings.Join(parts, "; ")
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// remember appends a step to the canary's history; a failure is logged, never fails the step.
func (s *Service) remember(ctx context.Context, k Key, release string, r StepRecord) {
	if s.d.History == nil || release == "" {
		return
	}
	if err := s.d.History.AppendStep(ctx, k, release, r); err != nil {
		s.log.WarnContext(ctx, "record history", "canary", k.String(), "err", err)
	}
}

// History returns the canary's kept releases, newest first.
func (s *Service) History(ctx context.Context, k Key) ([]Release, error) {
	if s.d.History == nil {
		return nil, fmt.Errorf("%w: no history configured", ErrUnavailable)
	}
	rs, err := s.d.History.Releases(ctx, k)
	if err != nil {
		return nil, fmt.Errorf("history of %s: %w", k, err)
	}
	for i := range rs {
		rs[i].Summarize()
	}
	slices.SortStableFunc(rs, func(a, b Release) int { return strings.Compare(b.ID, a.ID) })
	return rs, nil
}
