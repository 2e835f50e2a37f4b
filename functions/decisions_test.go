package functions

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestManualGates(t *testing.T) {
	k := Key{Namespace: "default", Name: "podinfo"}
	type gate func(Key, State) (State, error)
	tests := []struct {
		name    string
		gate    gate
		phase   Phase
		wantErr bool
		want    func(s *State)
	}{
		{"promote in analysis", PromotionGate, PhaseProgressing, false, func(s *State) { s.PromoteRequested = true }},
		{"promote waiting for promotion", PromotionGate, PhaseWaitingPromotion, false, func(s *State) { s.PromoteRequested = true }},
		{"promote an idle canary", PromotionGate, PhaseSucceeded, true, nil},
		{"promote a failed canary", PromotionGate, PhaseFailed, true, nil},
		{"promote while initializing", PromotionGate, PhaseInitializing, true, nil},
		{"resume a failed release retries its revision", ResumeGate, PhaseFailed, false, func(s *State) { s.LastAppliedSpec = "" }},
		{"resume a waiting canary approves it", ResumeGate, PhaseWaiting, false, func(s *State) { s.Approved = true }},
		{"resume waiting for promotion promotes", ResumeGate, PhaseWaitingPromotion, false, func(s *State) { s.PromoteRequested = true }},
		{"resume in analysis", ResumeGate, PhaseProgressing, true, nil},
		{"resume a succeeded canary", ResumeGate, PhaseSucceeded, true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := State{Phase: tt.phase, LastAppliedSpec: "v2", LastPromotedSpec: "v1"}
			got, err := tt.gate(k, before)
			if tt.wantErr {
				if !errors.Is(err, ErrRejected) {
					t.Errorf("got %v, want ErrRejected", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("got %v, want no error", err)
			}
			want := before
			tt.want(&want)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("state (-want +got):\n%s", diff)
			}
		})
	}
}

func TestInvalidSpec(t *testing.T) {
	now := t0
	tests := []struct {
		name       string
		state      State
		problem    string
		wantPhase  Phase
		wantEvents int
	}{
		{"a first step is Initializing", State{}, "bad", PhaseInitializing, 1},
		{"the phase is kept", State{Phase: PhaseProgressing}, "bad", PhaseProgressing, 1},
		{"said once", State{Phase: PhaseSucceeded, SpecError: "bad"}, "bad", PhaseSucceeded, 0},
		{"a new problem is said", State{Phase: PhaseSucceeded, SpecError: "bad"}, "worse", PhaseSucceeded, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := InvalidSpec(tt.state, tt.problem, now, time.Minute)
			if out.State.Phase != tt.wantPhase || out.State.SpecError != tt.problem || len(out.Events) != tt.wantEvents {
				t.Errorf("got phase %s, spec error %q, %d events; want %s, %q, %d",
					out.State.Phase, out.State.SpecError, len(out.Events), tt.wantPhase, tt.problem, tt.wantEvents)
			}
			if !out.State.NextStepAt.Equal(now.Add(time.Minute)) || out.Route || out.Workloads != (WorkloadPlan{}) {
				t.Errorf("got next %v, route %v, workloads %+v; want a check in one interval and nothing acted", out.State.NextStepAt, out.Route, out.Workloads)
			}
		})
	}
}

func TestRepairStep(t *testing.T) {
	tests := []struct {
		phase     Phase
		wantOK    bool
		wantScale Scale
	}{
		{"", false, ScaleNone},
		{PhaseInitializing, false, ScaleNone},
		{PhaseInitialized, true, ScaleNone},
		{PhaseProgressing, true, ScaleNone},
		{PhaseSucceeded, true, ScaleToZero},
		{PhaseFailed, true, ScaleToZero},
	}
	for _, tt := range tests {
		t.Run(string(tt.phase), func(t *testing.T) {
			st := State{Phase: tt.phase, Routing: Routing{Primary: 80, Canary: 20}}
			out, ok := RepairStep(st)
			if ok != tt.wantOK {
				t.Fatalf("got ok %v, want %v", ok, tt.wantOK)
			}
			if ok && (!out.Route || out.State.Routing != st.Routing || out.Workloads.ScaleTarget != tt.wantScale) {
				t.Errorf("got route %v to %+v, scale %v; want the winning state's routing and scale %v", out.Route, out.State.Routing, out.Workloads.ScaleTarget, tt.wantScale)
			}
		})
	}
}

func TestFinalize(t *testing.T) {
	with := seedCanary()
	with.Finalizers = []string{FinalizerName}
	without := seedCanary()
	ready, rolling := Readiness{Ready: true}, Readiness{Reason: "rolling"}
	terminating := State{Phase: PhaseTerminating, LastTransitionTime: t0}
	tests := []struct {
		name   string
		c      Canary
		st     State
		target Readiness
		now    time.Time
		want   FinalizeAction
	}{
		{"no finalizer: forget", without, State{Phase: PhaseProgressing}, ready, t0, FinalizeForget},
		{"first step: terminate", with, State{Phase: PhaseProgressing}, ready, t0, FinalizeStart},
		{"target not ready: wait", with, terminating, rolling, t0.Add(10 * time.Second), FinalizeWait},
		{"target ready: restore", with, terminating, ready, t0.Add(time.Second), FinalizeRestore},
		{"waited long enough: restore anyway", with, terminating, rolling, t0.Add(finalizeWait), FinalizeRestore},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Finalize(tt.c, tt.st, tt.target, tt.now)
			if d.Action != tt.want {
				t.Fatalf("got action %v, want %v", d.Action, tt.want)
			}
			if d.Action == FinalizeStart && (d.Step.State.Phase != PhaseTerminating || len(d.Step.Events) != 1) {
				t.Errorf("got %s with %d events, want Terminating with one event", d.Step.State.Phase, len(d.Step.Events))
			}
			if d.Action == FinalizeWait && d.Reason != "rolling" {
				t.Errorf("got reason %q, want the target's", d.Reason)
			}
		})
	}
}

// Every way a canary can fail says so once, naming the cause: an error (or, for a rollback
// webhook, warning) alert, a Warning Event, and a transition to Failed or Step.Failure, which
// the shell publishes as dev.siskin.canary.failed. The step after it says nothing more.
func TestEveryFailureAlertsOncePerCause(t *testing.T) {
	progressing := State{Phase: PhaseProgressing, LastAppliedSpec: "v2", LastPromotedSpec: "v1",
		Routing: Routing{Primary: 90, Canary: 10}, FailedChecks: 4, LastTransitionTime: t0.Add(-time.Minute)}
	tests := []struct {
		name      string
		state     State
		world     func(w *world)
		decide    func(w *world, st State) Step // nil: the machine's step
		wantCause string
	}{
		{name: "failed checks threshold", state: progressing,
			world:     func(w *world) { w.metrics[0].Value = 10 },
			wantCause: "Failed checks threshold reached 5"},
		{name: "canary past its progress deadline", state: progressing,
			world: func(w *world) {
				w.work.Canary = Readiness{Failed: true, Reason: "deployment \"podinfo\" exceeded its progress deadline"}
			},
			wantCause: "Progress deadline exceeded"},
		{name: "primary broken outside the analysis", state: progressing,
			world: func(w *world) {
				w.work.Primary = Readiness{Failed: true, Reason: "deployment \"podinfo-primary\" exceeded its progress deadline"}
			},
			wantCause: "Canary failed: primary deployment \"podinfo-primary\" exceeded its progress deadline"},
		{name: "primary never ready while initialising", state: State{Phase: PhaseInitializing},
			world: func(w *world) {
				w.work.Primary = Readiness{Failed: true, Reason: "0 of 2 updated replicas are available"}
			},
			wantCause: "podinfo-primary cannot become ready"},
		{name: "aborted by an alert", state: progressing,
			decide: func(_ *world, st State) Step {
				out, _, _ := AbortRelease(seedCanary(), st, "", "HighErrorRate", &Trigger{Kind: "alert"}, t0)
				return out
			},
			wantCause: "Canary aborted: HighErrorRate"},
		{name: "invalid spec", state: State{Phase: PhaseSucceeded},
			decide: func(_ *world, st State) Step {
				return InvalidSpec(st, "spec.service.port is required", t0, time.Minute)
			},
			wantCause: "Invalid canary spec: spec.service.port is required"},
		{name: "rollback webhook", state: progressing,
			world: func(w *world) {
				w.hooks = map[HookType][]HookResult{HookRollback: {{Name: "rollback", OK: true}}}
			},
			wantCause: "Rolling back manual webhook invoked"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := seedCanary()
			if tt.name == "rollback webhook" {
				c.Spec.Analysis.Webhooks = []Webhook{{Name: "rollback", Type: HookRollback, URL: "http://rollback"}}
			}
			w := readyWorld("v2")
			if tt.world != nil {
				tt.world(w)
			}
			decide := tt.decide
			if decide == nil {
				decide = func(w *world, st State) Step { return w.step(c, st, t0) }
			}
			out := decide(w, tt.state)
			var alerts []string
			for _, a := range out.Alerts {
				if a.Severity == SeverityError || a.Severity == SeverityWarn {
					alerts = append(alerts, a.Message)
				}
			}
			if len(alerts) != 1 || !strings.Contains(alerts[0], tt.wantCause) {
				t.Errorf("alerts: got %q, want one naming %q", alerts, tt.wantCause)
			}
			warned := false
			for _, e := range out.Events {
				warned = warned || e.Warning
			}
			if !warned {
				t.Errorf("events: got %+v, want a Warning", out.Events)
			}
			if out.State.Phase != PhaseFailed && out.Failure == "" {
				t.Errorf("got phase %s and no Failure, want Failed or a Failure to publish", out.State.Phase)
			}
			again := decide(w, out.State)
			for _, a := range again.Alerts {
				if a.Severity == SeverityError || a.Severity == SeverityWarn {
					t.Errorf("the step after: got alert %q, want none (once per cause)", a.Message)
				}
			}
			if again.Failure != "" {
				t.Errorf("the step after: got Failure %q, want none", again.Failure)
			}
		})
	}
}
