package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/siskin-dev/siskin/functions"
)

// onLog turns one of Siskin's log records into a line of the story and the timeline's marks.
func (d *demo) onLog(ctx context.Context, l logLine) {
	switch l.Msg {
	case "step":
		d.onStep(ctx, l)
	case "aborted":
		ns, _, _ := strings.Cut(l.str("canary"), "/")
		s := d.byNS[ns]
		if s == nil {
			return
		}
		took := time.Duration(l.num("took"))
		s.mu.Lock()
		s.abortedAt, s.abortTook = l.Time, took
		s.endAt = l.Time
		s.lastWeight = 0
		s.mu.Unlock()
		s.addMark(l.Time, "abort", "aborted")
		d.out.say("%-30s ABORTED by Siskin in %s: all traffic back on the primary, canary scaled to zero (%s)",
			s.label(), took.Round(time.Millisecond), withoutURL(l.str("reason")))
	case "alert":
		d.out.say("  Alertmanager -> Siskin: %d firing, %d resolved, %d canary aborted", l.num("firing"), l.num("resolved"), l.num("aborted"))
	case "push":
		d.out.say("  registry -> Siskin: %d tagged push, %d release started", l.num("pushes"), l.num("started"))
	default:
		// Stopping Siskin cancels the steps in flight: their errors are expected then.
		if lvl := l.str("level"); (lvl == "WARN" || lvl == "ERROR") && !d.stopping.Load() {
			first, _, _ := strings.Cut(l.str("err"), "\n")
			d.out.say("  siskin %s: %s %s", strings.ToLower(lvl), l.Msg, first)
		}
	}
}

func (d *demo) onStep(ctx context.Context, l logLine) {
	ns, _, _ := strings.Cut(l.str("canary"), "/")
	s := d.byNS[ns]
	if s == nil {
		return
	}
	from, to := functions.Phase(l.str("from")), functions.Phase(l.str("to"))
	weight, checks := l.num("weight"), l.num("failedChecks")
	if from == to && (from == functions.PhaseInitialized || from == functions.PhaseSucceeded || from == functions.PhaseFailed) {
		return // a canary at rest, stepped again: nothing to tell
	}
	s.mu.Lock()
	prevWeight, prevChecks := s.lastWeight, s.lastFailed
	s.lastWeight, s.lastFailed = weight, checks
	pushed := !s.pushedAt.IsZero()
	if pushed && (to == functions.PhaseSucceeded || to == functions.PhaseFailed) && s.endAt.IsZero() {
		s.endAt = l.Time
	}
	// The check that reaches the threshold rolls back in the same step, and the failed checks
	// are reset with it.
	rolledBack := from == functions.PhaseProgressing && to == functions.PhaseFailed && s.abortedAt.IsZero()
	if rolledBack {
		checks = prevChecks + 1
		s.checksAtEnd = checks
	}
	s.mu.Unlock()

	// Flagger runs the metric checks on a step that starts with traffic on the canary.
	verdict := ""
	if from == functions.PhaseProgressing && prevWeight > 0 {
		verdict = d.verdicts(ctx, s)
	}
	if checks > prevChecks {
		verdict += fmt.Sprintf("  FAILED CHECK %d/%d", checks, d.maxChecks)
		s.addMark(l.Time, "check", fmt.Sprintf("check failed %d/%d", checks, d.maxChecks))
	}
	if from != to {
		s.addMark(l.Time, "phase", string(to))
	}
	arrow := string(to)
	if from != to {
		arrow = string(from) + " -> " + string(to)
	}
	d.out.say("%-30s %-27s weight %3d%%  checks %d/%d%s  %q", s.label(), arrow, weight, checks, d.maxChecks, verdict, withoutURL(l.str("message")))
}

// verdicts shows what the last metric checks measured, as Siskin exports them
// (flagger_canary_metric_analysis), against the Canary's thresholds.
func (d *demo) verdicts(ctx context.Context, s *scenario) string {
	values, err := d.siskin.analysisValues(ctx)
	if err != nil {
		return ""
	}
	var b strings.Builder
	for _, metric := range []string{"request-success-rate", "request-duration"} {
		v, ok := values[s.namespace+"/"+s.name][metric]
		if !ok {
			continue
		}
		th := d.thresholds[metric]
		pass := (th.min == nil || v >= *th.min) && (th.max == nil || v <= *th.max)
		mark := "ok"
		if !pass {
			mark = "FAIL"
		}
		switch {
		case metric == "request-success-rate" && th.min != nil:
			fmt.Fprintf(&b, "  success %.1f%% (>= %g %s)", v, *th.min, mark)
		case metric == "request-duration" && th.max != nil:
			fmt.Fprintf(&b, "  p99 %.0f ms (<= %g %s)", v, *th.max, mark)
		}
	}
	return b.String()
}

// sample records every scenario's routes and traffic twice a second, and keeps Siskin's view
// of each canary current.
func (d *demo) sample(ctx context.Context) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, s := range d.scenarios {
			v, err := d.siskin.view(ctx, s.namespace, s.name)
			s.mu.Lock()
			if err == nil {
				s.view = v
			}
			arrived := err == nil && v.Trigger != nil && v.Trigger.Kind == "alert" && s.alertArrived.IsZero()
			if arrived {
				s.alertArrived = v.Trigger.At
			}
			s.mu.Unlock()
			if arrived {
				s.addMark(v.Trigger.At, "alert", "alert -> Siskin")
			}
			s.record(d.sim.Take(s.namespace))
		}
	}
}

// statusBlocks prints a compact status of every canary every period.
func (d *demo) statusBlocks(ctx context.Context, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		lines := []string{fmt.Sprintf("%s  -- status -----------------------------------------------------------------", d.out.since())}
		for _, s := range d.scenarios {
			s.mu.Lock()
			v := s.view
			s.mu.Unlock()
			done, failed := progress(v)
			smp, _ := s.latest()
			traffic := ""
			if !math.IsNaN(smp.canaryRate) {
				traffic = fmt.Sprintf("  canary %s: %.1f%% ok, p99 %.0f ms", s.toTag, smp.canaryRate, smp.canaryP99)
			}
			lines = append(lines, fmt.Sprintf("          %-30s %-16s %s  weight %2d/%d  checks %d/%d%s",
				s.label(), v.Phase, progressBar(done, 24, failed), v.Weight, v.MaxWeight, v.FailedChecks, v.Threshold, traffic))
		}
		d.out.block(lines)
	}
}

// watchAlerts notes when Prometheus starts firing the demo's alert.
func (d *demo) watchAlerts(ctx context.Context) {
	s := d.byNS["demo-alert"]
	for {
		if at, ok := d.alertActiveAt(ctx); ok {
			s.mu.Lock()
			s.alertFiring = at
			s.mu.Unlock()
			s.addMark(at, "alert", "alert fires")
			d.out.say("%-30s Prometheus fires %s (active since %s)", s.label(), d.alertName, at.Format("15:04:05.000"))
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (d *demo) alertActiveAt(ctx context.Context) (time.Time, bool) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.lab.PrometheusURL()+"/api/v1/alerts", nil)
	if err != nil {
		return time.Time{}, false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return time.Time{}, false
	}
	defer resp.Body.Close()
	var body struct {
		Data struct {
			Alerts []struct {
				Labels   map[string]string `json:"labels"`
				State    string            `json:"state"`
				ActiveAt time.Time         `json:"activeAt"`
			} `json:"alerts"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return time.Time{}, false
	}
	for _, a := range body.Data.Alerts {
		if a.Labels["alertname"] == d.alertName && a.State == "firing" {
			return a.ActiveAt, true
		}
	}
	return time.Time{}, false
}

// withoutURL drops the generator URL Siskin appends to an alert's reason: long, and of no use
// on screen.
func withoutURL(s string) string {
	if i := strings.Index(s, " http://"); i >= 0 {
		return s[:i]
	}
	if i := strings.Index(s, " https://"); i >= 0 {
		return s[:i]
	}
	return s
}
