package functions

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// memHistory is History in memory, uncapped.
type memHistory struct {
	mu       sync.Mutex
	releases map[Key][]Release
}

func (m *memHistory) AppendStep(_ context.Context, k Key, release string, r StepRecord) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.releases == nil {
		m.releases = map[Key][]Release{}
	}
	rs := m.releases[k]
	if len(rs) == 0 || rs[len(rs)-1].ID != release {
		rs = append(rs, Release{ID: release})
	}
	rs[len(rs)-1].Steps = append(rs[len(rs)-1].Steps, r)
	m.releases[k] = rs
	return nil
}

func (m *memHistory) Releases(_ context.Context, k Key) ([]Release, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Release
	for i := len(m.releases[k]) - 1; i >= 0; i-- {
		out = append(out, m.releases[k][i])
	}
	return out, nil
}

func TestHistoryRecordsEachReleaseAndAbort(t *testing.T) {
	c := seedCanary()
	f := newFixture(t, c)
	h := &memHistory{}
	f.svc.d.History = h
	ctx := context.Background()
	f.tickUntil(t, func() bool { return f.state(t, c.Key).Phase == PhaseInitialized })
	f.cluster.work[c.Key] = readyWorld("v2").work
	f.tickUntil(t, func() bool { return f.state(t, c.Key).Phase == PhaseSucceeded })
	f.advanceClock(time.Minute)
	f.tickUntil(t, func() bool { return f.state(t, c.Key).Phase == PhaseSucceeded }) // at rest: not history
	f.cluster.work[c.Key] = readyWorld("v3").work
	f.tickUntil(t, func() bool { return f.state(t, c.Key).Routing.Canary == 10 })
	if _, aborted, err := f.svc.Abort(ctx, c.Key, "looks <b>bad</b>"); err != nil || !aborted {
		t.Fatalf("Abort: %v, %v", aborted, err)
	}
	if _, err := f.svc.Resume(ctx, c.Key); err != nil {
		t.Fatalf("Resume: %v", err)
	}

	rs, err := f.svc.History(ctx, c.Key)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 4 {
		for _, r := range rs {
			t.Logf("release %s: %d steps, %s", r.ID, len(r.Steps), r.Outcome)
		}
		t.Fatalf("got %d releases, want 4 (initialisation, v2, v3 aborted, v3 resumed)", len(rs))
	}
	resumed, aborted, released, initial := rs[0], rs[1], rs[2], rs[3]
	t.Run("initialisation", func(t *testing.T) {
		if got, want := initial.Outcome, PhaseInitialized; got != want {
			t.Errorf("outcome: got %s, want %s", got, want)
		}
	})
	t.Run("release", func(t *testing.T) {
		if got, want := released.Outcome, PhaseSucceeded; got != want {
			t.Errorf("outcome: got %s, want %s", got, want)
		}
		if released.Trigger == nil || released.Trigger.Kind != "change" {
			t.Errorf("trigger: got %+v, want a change", released.Trigger)
		}
		var weights []int
		for _, s := range released.Steps {
			weights = append(weights, s.Weight)
		}
		want := []int{0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 50, 0, 0}
		if diff := cmp.Diff(want, weights); diff != "" {
			t.Errorf("weights (-want +got):\n%s", diff)
		}
		progressing := released.Steps[2]
		if len(progressing.Metrics) != 2 || !progressing.Metrics[0].OK || progressing.Metrics[0].Min == nil || *progressing.Metrics[0].Min != 99 {
			t.Errorf("metrics of a progressing step: got %+v, want both judged against their ranges", progressing.Metrics)
		}
		if released.Duration <= 0 || released.End.IsZero() {
			t.Errorf("duration %s, end %s: want both set", released.Duration, released.End)
		}
	})
	t.Run("gate", func(t *testing.T) {
		if first := resumed.Steps[0]; first.Kind != "gate" || first.From != PhaseFailed || first.To != PhaseProgressing {
			t.Errorf("the resumed release starts with %+v, want the gate's step from Failed to Progressing", first)
		}
	})
	t.Run("abort", func(t *testing.T) {
		last := aborted.Steps[len(aborted.Steps)-1]
		if last.Kind != "abort" || last.To != PhaseFailed || last.Weight != 0 {
			t.Errorf("last step: got %+v, want an abort to Failed at weight 0", last)
		}
		if !strings.Contains(last.Reason, "looks <b>bad</b>") || len(last.Alerts) != 1 {
			t.Errorf("reason %q, alerts %+v: want the reason, as given, and one alert", last.Reason, last.Alerts)
		}
		if aborted.Outcome != PhaseFailed {
			t.Errorf("outcome: got %s, want Failed", aborted.Outcome)
		}
	})
}

func TestNewStepRecordJudgesMetrics(t *testing.T) {
	c := seedCanary()
	before := State{Phase: PhaseProgressing, Routing: Routing{Primary: 90, Canary: 10}, FailedChecks: 1}
	after := State{Phase: PhaseProgressing, Routing: Routing{Primary: 90, Canary: 10}, FailedChecks: 2, Message: "m"}
	out := Step{Events: []Event{{Warning: true, Message: "Halt podinfo.default advancement success rate 90.00% < 99%"}}}
	r := NewStepRecord("step", c, before, after, out,
		[]MetricResult{{Name: "request-success-rate", Value: 90}, {Name: "request-duration", NoData: true}},
		map[HookType][]HookResult{HookRollout: {{Name: "load", OK: false, Detail: "503"}}}, t0)
	tests := []struct {
		name      string
		got, want any
	}{
		{"success rate judged", r.Metrics[0].OK, false},
		{"no data fails", r.Metrics[1].OK, false},
		{"decision", r.Decision, "failed check 2"},
		{"reason is the warning", r.Reason, out.Events[0].Message},
		{"hooks", r.Hooks, []HookCheck{{Type: HookRollout, Name: "load", OK: false, Detail: "503"}}},
		{"threshold", r.Threshold, 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, tc.got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecisionInWords(t *testing.T) {
	tests := []struct {
		name          string
		before, after State
		want          string
	}{
		{"hold", State{Phase: PhaseProgressing}, State{Phase: PhaseProgressing}, "hold"},
		{"advance", State{Phase: PhaseProgressing, Routing: Routing{90, 10, false}}, State{Phase: PhaseProgressing, Routing: Routing{80, 20, false}}, "weight 10 → 20"},
		{"new", State{}, State{Phase: PhaseInitializing}, "new → Initializing"},
		{"rollback", State{Phase: PhaseProgressing, Routing: Routing{90, 10, false}, FailedChecks: 4}, State{Phase: PhaseFailed, Routing: AllToPrimary, FailedChecks: 5},
			"Progressing → Failed; weight 10 → 0; failed check 5"},
		{"promoted", State{Phase: PhaseFinalising}, State{Phase: PhaseSucceeded}, "Finalising → Succeeded; promoted"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := decision(tc.before, tc.after); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// Steps that arrive as step events (StepDue, from a dispatcher) and as object events
// (ObjectChanged: a target Deployment's new revision) are history as ticked steps are.
func TestHistoryRecordsStepsFromStepAndObjectEvents(t *testing.T) {
	c := seedCanary()
	f := newFixture(t, c)
	h := &memHistory{}
	f.svc.d.History = h
	ctx := context.Background()
	f.tickUntil(t, func() bool { return f.state(t, c.Key).Phase == PhaseInitialized })
	f.advanceClock(time.Minute)

	f.cluster.mu.Lock()
	f.cluster.work[c.Key] = readyWorld("v2").work
	f.cluster.mu.Unlock()
	dep := ObjectRef{Group: "apps", Kind: "Deployment", Namespace: c.Namespace, Name: c.Spec.TargetRef.Name}
	if _, err := f.svc.ObjectChanged(ctx, dep, "ev-1"); err != nil {
		t.Fatal(err)
	}
	if got := f.state(t, c.Key).Phase; got != PhaseProgressing {
		t.Fatalf("after the Deployment event: phase %s, want Progressing", got)
	}
	for range 3 {
		f.advanceClock(time.Minute)
		if _, err := f.svc.StepDue(ctx, c.Key); err != nil {
			t.Fatal(err)
		}
	}
	if got := f.state(t, c.Key).Routing.Canary; got != 15 {
		t.Fatalf("after three step events: weight %d, want 15", got)
	}

	rs, err := f.svc.History(ctx, c.Key)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 {
		for _, r := range rs {
			for _, s := range r.Steps {
				t.Logf("release %s: %s %s→%s %d at %s", r.ID, s.Kind, s.From, s.To, s.Weight, s.At)
			}
		}
		t.Fatalf("got %d releases, want 2 (initialisation, v2)", len(rs))
	}
	var got []string
	for _, s := range rs[0].Steps {
		got = append(got, fmt.Sprintf("%s %s→%s %d", s.Kind, s.From, s.To, s.Weight))
	}
	want := []string{"step Initialized→Progressing 0", "step Progressing→Progressing 5",
		"step Progressing→Progressing 10", "step Progressing→Progressing 15"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("steps of the release (-want +got):\n%s", diff)
	}
	if len(rs[0].Steps) > 2 && len(rs[0].Steps[2].Metrics) != 2 {
		t.Errorf("a step event's step: got metrics %+v, want both judged", rs[0].Steps[2].Metrics)
	}
}

// A tracked ConfigMap's new data in the middle of a release is a new revision (a ConfigMap
// event): the restarted analysis is a release of its own, as a template change's is.
func TestHistoryStartsAReleaseOnAConfigChangeMidRelease(t *testing.T) {
	c := seedCanary()
	f := newFixture(t, c)
	h := &memHistory{}
	f.svc.d.History = h
	ctx := context.Background()
	setWork := func(hash, config string) {
		f.cluster.mu.Lock()
		defer f.cluster.mu.Unlock()
		w := readyWorld(hash).work
		w.TrackedConfigs = map[string]string{"configmap/app-config": config}
		f.cluster.work[c.Key] = w
	}
	setWork("v1", "c1")
	f.tickUntil(t, func() bool { return f.state(t, c.Key).Phase == PhaseInitialized })
	setWork("v2", "c1")
	f.tickUntil(t, func() bool { return f.state(t, c.Key).Routing.Canary == 10 })
	first := f.state(t, c.Key).Release

	f.advanceClock(time.Second)
	setWork("v2", "c2")
	if _, err := f.svc.ObjectChanged(ctx, ObjectRef{Kind: "ConfigMap", Namespace: c.Namespace, Name: "app-config"}, "ev-1"); err != nil {
		t.Fatal(err)
	}
	st := f.state(t, c.Key)
	if st.Phase != PhaseProgressing || st.Routing.Canary != 0 || st.TrackedConfigs["configmap/app-config"] != "c2" {
		t.Fatalf("after the ConfigMap event: %s at weight %d tracking %v, want the analysis restarted on c2", st.Phase, st.Routing.Canary, st.TrackedConfigs)
	}
	if st.Release == first {
		t.Errorf("the restart on the config's new data kept release %s, want a new one", first)
	}
	rs, err := f.svc.History(ctx, c.Key)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 3 {
		t.Fatalf("got %d releases, want 3 (initialisation, v2 with c1, v2 with c2)", len(rs))
	}
	if s := rs[0].Steps; len(s) != 1 || s[0].From != PhaseProgressing || s[0].To != PhaseProgressing || s[0].Weight != 0 {
		t.Errorf("the new release's steps: got %+v, want the restart alone", s)
	}
	if got := rs[1].Steps[len(rs[1].Steps)-1].Weight; got != 10 {
		t.Errorf("the interrupted release ends at weight %d, want 10", got)
	}
}
