package functions

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func ptr[T any](v T) *T { return &v }

// seedCanary is issue 3's seed Canary.
func seedCanary() Canary {
	return Canary{
		Key: Key{Namespace: "default", Name: "podinfo"},
		Spec: Spec{
			TargetRef: TargetRef{APIVersion: "apps/v1", Kind: "Deployment", Name: "podinfo"},
			Service: ServiceSpec{Port: 9898, TargetPort: json.RawMessage("9898"),
				Primary: &ServiceMeta{Host: "podinfo-primary.default.svc.cluster.local"},
				Canary:  &ServiceMeta{Host: "podinfo-canary.default.svc.cluster.local"}},
			Analysis: &Analysis{Interval: "1m", Threshold: 5, MaxWeight: 50, StepWeight: 5,
				Metrics: []Metric{
					{Name: "request-success-rate", ThresholdRange: &ThresholdRange{Min: ptr(99.0)}, Interval: "1m"},
					{Name: "request-duration", ThresholdRange: &ThresholdRange{Max: ptr(500.0)}, Interval: "30s"},
				}},
		},
	}
}

// world is what the cluster, the webhooks and Prometheus say to a canary in a scenario.
type world struct {
	work    WorkloadObservation
	hooks   map[HookType][]HookResult
	metrics []MetricResult
	asked   []Need
	// between is a step between two re-assertions (StepInput.Reassert false); the tables run
	// the re-asserting step, which is Flagger's every step.
	between bool
}

func readyWorld(hash string) *world {
	return &world{work: WorkloadObservation{TargetFound: true, TemplateHash: hash,
		Canary: Readiness{Ready: true}, PrimaryFound: true, Primary: Readiness{Ready: true}},
		metrics: []MetricResult{{Name: "request-success-rate", Value: 100}, {Name: "request-duration", Value: 20}}}
}

// step runs Decide, answering every Need from the world, as the shell does.
func (w *world) step(c Canary, s State, now time.Time) Step {
	in := StepInput{Canary: c, State: s, Work: w.work, Now: now, MinInterval: time.Second,
		NewCookieValue: "abcdefghij", NewPrimaryCookieValue: "klmnopqrst", Reassert: !w.between}
	for range 10 {
		out := Decide(in)
		if out.Need.Empty() {
			return out
		}
		w.asked = append(w.asked, out.Need)
		for _, h := range out.Need.Hooks {
			if in.Hooks == nil {
				in.Hooks = map[HookType][]HookResult{}
			}
			in.Hooks[h] = w.hooks[h]
		}
		if out.Need.Metrics {
			in.Metrics, in.MetricsDone = w.metrics, true
		}
	}
	panic("Decide kept asking")
}

type snap struct {
	Phase    Phase
	Routing  Routing
	Failed   int
	Iter     int
	Workload WorkloadPlan
}

// snapOf leaves out EnsureServices, which TestReassertion covers.
func snapOf(out Step) snap {
	w := out.Workloads
	w.EnsureServices = false
	return snap{out.State.Phase, out.State.Routing, out.State.FailedChecks, out.State.Iterations, w}
}

func TestSeedCanaryReleaseSucceeds(t *testing.T) {
	c := seedCanary()
	w := readyWorld("v1")
	w.work.PrimaryFound = false
	var s State
	now := t0
	run := func(want snap) Step {
		t.Helper()
		out := w.step(c, s, now)
		if diff := cmp.Diff(want, snapOf(out)); diff != "" {
			t.Fatalf("step %d (from %s): got/want diff (-want +got):\n%s", s.Steps+1, s.Phase, diff)
		}
		s = out.State
		now = now.Add(out.Next)
		return out
	}
	// Primary not created yet: the step creates it, stays Initializing, and polls again soon.
	out := run(snap{Phase: PhaseInitializing, Workload: WorkloadPlan{CreatePrimary: true}})
	if out.Next != 2*time.Second {
		t.Errorf("init retry: got next %v, want 2s", out.Next)
	}
	w.work.PrimaryFound = true
	run(snap{Phase: PhaseInitialized, Routing: AllToPrimary, Workload: WorkloadPlan{EnsureApex: true, ScaleTarget: ScaleToZero}})
	if s.LastAppliedSpec != "v1" || s.LastPromotedSpec != "v1" {
		t.Fatalf("after init: got applied %q promoted %q, want v1 v1", s.LastAppliedSpec, s.LastPromotedSpec)
	}
	// Nothing new: idle.
	run(snap{Phase: PhaseInitialized, Routing: AllToPrimary, Workload: WorkloadPlan{EnsureApex: true}})
	// New revision.
	w.work.TemplateHash = "v2"
	out = run(snap{Phase: PhaseProgressing, Routing: AllToPrimary, Workload: WorkloadPlan{EnsureApex: true, ScaleTarget: ScaleUp}})
	if got := out.Events[0].Message; got != "New revision detected! Scaling up podinfo.default" {
		t.Errorf("got event %q", got)
	}
	for wt := 5; wt <= 50; wt += 5 {
		run(snap{Phase: PhaseProgressing, Routing: Routing{Primary: 100 - wt, Canary: wt}, Workload: WorkloadPlan{EnsureApex: true}})
	}
	run(snap{Phase: PhasePromoting, Routing: Routing{Primary: 50, Canary: 50}, Workload: WorkloadPlan{EnsureApex: true, Promote: true}})
	// The primary is rolling out the promoted template: wait.
	w.work.Primary = Readiness{Reason: "waiting for rollout to finish: 1 of 2 updated replicas are available"}
	run(snap{Phase: PhasePromoting, Routing: Routing{Primary: 50, Canary: 50}, Workload: WorkloadPlan{EnsureApex: true}})
	w.work.Primary = Readiness{Ready: true}
	run(snap{Phase: PhaseFinalising, Routing: AllToPrimary, Workload: WorkloadPlan{EnsureApex: true}})
	out = run(snap{Phase: PhaseSucceeded, Routing: AllToPrimary, Workload: WorkloadPlan{EnsureApex: true, ScaleTarget: ScaleToZero}})
	if !out.PostRollout {
		t.Error("Succeeded: post-rollout hooks not called")
	}
	if s.LastPromotedSpec != "v2" {
		t.Errorf("got lastPromotedSpec %q, want v2", s.LastPromotedSpec)
	}
	if got := s.Status().Conditions[0]; got.Status != "True" || got.Reason != "Succeeded" {
		t.Errorf("got condition %+v, want Promoted True Succeeded", got)
	}
	// Idle again; no new release for the same template.
	run(snap{Phase: PhaseSucceeded, Routing: AllToPrimary, Workload: WorkloadPlan{EnsureApex: true}})
}

func TestFailingSuccessRateRollsBackAtThreshold(t *testing.T) {
	c := seedCanary()
	w := readyWorld("v2")
	s := State{Phase: PhaseProgressing, LastAppliedSpec: "v2", LastPromotedSpec: "v1", Routing: Routing{Primary: 90, Canary: 10}}
	w.metrics[0].Value = 80
	for i := 1; i <= 5; i++ {
		out := w.step(c, s, t0)
		s = out.State
		if i < 5 {
			want := snap{Phase: PhaseProgressing, Routing: Routing{Primary: 90, Canary: 10}, Failed: i, Workload: WorkloadPlan{EnsureApex: true}}
			if diff := cmp.Diff(want, snapOf(out)); diff != "" {
				t.Fatalf("check %d: (-want +got)\n%s", i, diff)
			}
			if got, want := out.Events[0].Message, "Halt podinfo.default advancement success rate 80.00% < 99%"; got != want {
				t.Errorf("got event %q, want %q", got, want)
			}
			continue
		}
		want := snap{Phase: PhaseFailed, Routing: AllToPrimary, Workload: WorkloadPlan{EnsureApex: true, ScaleTarget: ScaleToZero}}
		if diff := cmp.Diff(want, snapOf(out)); diff != "" {
			t.Fatalf("check 5 rolls back in the same step: (-want +got)\n%s", diff)
		}
		if !hasEvent(out, "Rolling back podinfo.default failed checks threshold reached 5") {
			t.Errorf("no threshold event in %v", out.Events)
		}
		if len(out.Alerts) != 1 || out.Alerts[0].Severity != SeverityError {
			t.Errorf("got alerts %v, want one error alert", out.Alerts)
		}
	}
}

func hasEvent(out Step, msg string) bool {
	for _, e := range out.Events {
		if e.Message == msg {
			return true
		}
	}
	return false
}

func TestNewRevisionDuringAnalysisRestartsAtZero(t *testing.T) {
	c := seedCanary()
	w := readyWorld("v3")
	s := State{Phase: PhaseProgressing, LastAppliedSpec: "v2", LastPromotedSpec: "v1", Routing: Routing{Primary: 70, Canary: 30}, FailedChecks: 2}
	out := w.step(c, s, t0)
	want := snap{Phase: PhaseProgressing, Routing: AllToPrimary, Workload: WorkloadPlan{EnsureApex: true}}
	if diff := cmp.Diff(want, snapOf(out)); diff != "" {
		t.Fatalf("(-want +got)\n%s", diff)
	}
	if out.State.LastAppliedSpec != "v3" {
		t.Errorf("got lastAppliedSpec %q, want v3", out.State.LastAppliedSpec)
	}
	// The next step starts the analysis over: pre-rollout, then weight 5.
	out = w.step(c, out.State, t0.Add(time.Minute))
	if got := out.State.Routing; got != (Routing{Primary: 95, Canary: 5}) {
		t.Errorf("got %v, want 95/5", got)
	}
}

func TestDecideTable(t *testing.T) {
	base := func() (Canary, *world, State) {
		return seedCanary(), readyWorld("v2"), State{Phase: PhaseProgressing, LastAppliedSpec: "v2", LastPromotedSpec: "v1", Routing: Routing{Primary: 80, Canary: 20}}
	}
	tests := []struct {
		name   string
		mutate func(c *Canary, w *world, s *State)
		want   snap
		msg    string // a substring of the state's message, when set
	}{
		{"target missing", func(c *Canary, w *world, s *State) { w.work.TargetFound = false },
			snap{Phase: PhaseProgressing, Routing: Routing{80, 20, false}}, "not found"},
		{"canary not ready halts", func(c *Canary, w *world, s *State) { w.work.Canary = Readiness{Reason: "0 of 1 available"} },
			snap{Phase: PhaseProgressing, Routing: Routing{80, 20, false}, Workload: WorkloadPlan{EnsureApex: true}}, "0 of 1 available"},
		{"canary failed rolls back", func(c *Canary, w *world, s *State) {
			w.work.Canary = Readiness{Failed: true, Reason: "ProgressDeadlineExceeded"}
		}, snap{Phase: PhaseFailed, Routing: AllToPrimary, Workload: WorkloadPlan{EnsureApex: true, ScaleTarget: ScaleToZero}}, ""},
		{"canary not ready past the deadline rolls back", func(c *Canary, w *world, s *State) {
			w.work.Canary = Readiness{Reason: "0 of 1 available"}
			s.CanaryNotReadySince = t0.Add(-11 * time.Minute)
		}, snap{Phase: PhaseFailed, Routing: AllToPrimary, Workload: WorkloadPlan{EnsureApex: true, ScaleTarget: ScaleToZero}}, ""},
		{"primary not ready waits", func(c *Canary, w *world, s *State) { w.work.Primary = Readiness{Reason: "rolling"} },
			snap{Phase: PhaseProgressing, Routing: Routing{80, 20, false}, Workload: WorkloadPlan{EnsureApex: true}}, "rolling"},
		{"primary broken rolls back", func(c *Canary, w *world, s *State) { w.work.Primary = Readiness{Failed: true, Reason: "deadline"} },
			snap{Phase: PhaseFailed, Routing: AllToPrimary, Workload: WorkloadPlan{EnsureApex: true, ScaleTarget: ScaleToZero}}, ""},
		{"primary broken while promoting keeps traffic on canary", func(c *Canary, w *world, s *State) {
			s.Phase = PhasePromoting
			w.work.Primary = Readiness{Failed: true, Reason: "deadline"}
		}, snap{Phase: PhaseFailed, Routing: Routing{0, 100, false}, Workload: WorkloadPlan{EnsureApex: true}}, "Promotion failed"},
		{"no data fails a check", func(c *Canary, w *world, s *State) {
			w.metrics[0] = MetricResult{Name: "request-success-rate", NoData: true}
		},
			snap{Phase: PhaseProgressing, Routing: Routing{80, 20, false}, Failed: 1, Workload: WorkloadPlan{EnsureApex: true}}, "no values found"},
		{"latency over max fails a check", func(c *Canary, w *world, s *State) { w.metrics[1].Value = 612.7 },
			snap{Phase: PhaseProgressing, Routing: Routing{80, 20, false}, Failed: 1, Workload: WorkloadPlan{EnsureApex: true}}, "request duration 612ms > 500ms"},
		{"threshold 0 means 1", func(c *Canary, w *world, s *State) {
			c.Spec.Analysis.Threshold = 0
			w.metrics[1].Value = 900
		}, snap{Phase: PhaseFailed, Routing: AllToPrimary, Workload: WorkloadPlan{EnsureApex: true, ScaleTarget: ScaleToZero}}, ""},
		{"rollout hook failure fails a check", func(c *Canary, w *world, s *State) {
			c.Spec.Analysis.Webhooks = []Webhook{{Name: "load", URL: "http://x"}}
			w.hooks = map[HookType][]HookResult{HookRollout: {{Name: "load", Detail: "boom"}}}
		}, snap{Phase: PhaseProgressing, Routing: Routing{80, 20, false}, Failed: 1, Workload: WorkloadPlan{EnsureApex: true}}, "external check load failed boom"},
		{"rollback hook rolls back", func(c *Canary, w *world, s *State) {
			c.Spec.Analysis.Webhooks = []Webhook{{Name: "rb", Type: HookRollback, URL: "http://x"}}
			w.hooks = map[HookType][]HookResult{HookRollback: {{Name: "rb", OK: true}}}
		}, snap{Phase: PhaseFailed, Routing: AllToPrimary, Workload: WorkloadPlan{EnsureApex: true, ScaleTarget: ScaleToZero}}, ""},
		{"rollback hook also consulted while canary not ready", func(c *Canary, w *world, s *State) {
			c.Spec.Analysis.Webhooks = []Webhook{{Name: "rb", Type: HookRollback, URL: "http://x"}}
			w.hooks = map[HookType][]HookResult{HookRollback: {{Name: "rb", OK: true}}}
			w.work.Canary = Readiness{Reason: "0 of 1"}
		}, snap{Phase: PhaseFailed, Routing: AllToPrimary, Workload: WorkloadPlan{EnsureApex: true, ScaleTarget: ScaleToZero}}, ""},
		{"rollback hook also consulted while waiting", func(c *Canary, w *world, s *State) {
			c.Spec.Analysis.Webhooks = []Webhook{{Name: "rb", Type: HookRollback, URL: "http://x"}, {Name: "gate", Type: HookConfirmRollout, URL: "http://x"}}
			w.hooks = map[HookType][]HookResult{HookRollback: {{Name: "rb", OK: true}}, HookConfirmRollout: {{Name: "gate"}}}
			s.Phase, s.Routing = PhaseWaiting, AllToPrimary
			s.LastAppliedSpec = "v1"
		}, snap{Phase: PhaseFailed, Routing: AllToPrimary, Workload: WorkloadPlan{EnsureApex: true, ScaleTarget: ScaleToZero}}, ""},
		{"confirm-rollout closed waits", func(c *Canary, w *world, s *State) {
			c.Spec.Analysis.Webhooks = []Webhook{{Name: "gate", Type: HookConfirmRollout, URL: "http://x"}}
			w.hooks = map[HookType][]HookResult{HookConfirmRollout: {{Name: "gate"}}}
			s.Phase, s.Routing, s.LastAppliedSpec = PhaseSucceeded, AllToPrimary, "v1"
		}, snap{Phase: PhaseWaiting, Routing: AllToPrimary, Workload: WorkloadPlan{EnsureApex: true}}, "Waiting for approval"},
		{"confirm-traffic-increase closed holds weight", func(c *Canary, w *world, s *State) {
			c.Spec.Analysis.Webhooks = []Webhook{{Name: "gate", Type: HookConfirmTrafficIncrease, URL: "http://x"}}
			w.hooks = map[HookType][]HookResult{HookConfirmTrafficIncrease: {{Name: "gate"}}}
		}, snap{Phase: PhaseProgressing, Routing: Routing{80, 20, false}, Workload: WorkloadPlan{EnsureApex: true}}, "traffic increase approval"},
		{"confirm-promotion closed waits for promotion", func(c *Canary, w *world, s *State) {
			c.Spec.Analysis.Webhooks = []Webhook{{Name: "gate", Type: HookConfirmPromotion, URL: "http://x"}}
			w.hooks = map[HookType][]HookResult{HookConfirmPromotion: {{Name: "gate"}}}
			s.Routing = Routing{50, 50, false}
		}, snap{Phase: PhaseWaitingPromotion, Routing: Routing{50, 50, false}, Workload: WorkloadPlan{EnsureApex: true}}, ""},
		{"stepWeights ladder", func(c *Canary, w *world, s *State) {
			c.Spec.Analysis.StepWeight, c.Spec.Analysis.StepWeights = 0, []int{1, 2, 10, 80}
			s.Routing = Routing{98, 2, false}
		}, snap{Phase: PhaseProgressing, Routing: Routing{90, 10, false}, Workload: WorkloadPlan{EnsureApex: true}}, ""},
		{"stepWeights top rung is maxWeight", func(c *Canary, w *world, s *State) {
			c.Spec.Analysis.StepWeight, c.Spec.Analysis.StepWeights = 0, []int{1, 2, 10, 80}
			s.Routing = Routing{20, 80, false}
		}, snap{Phase: PhasePromoting, Routing: Routing{20, 80, false}, Workload: WorkloadPlan{EnsureApex: true, Promote: true}}, ""},
		{"weight overshoots maxWeight like Flagger", func(c *Canary, w *world, s *State) {
			c.Spec.Analysis.StepWeight = 20
			s.Routing = Routing{60, 40, false}
		}, snap{Phase: PhaseProgressing, Routing: Routing{40, 60, false}, Workload: WorkloadPlan{EnsureApex: true}}, ""},
		{"progressive promotion", func(c *Canary, w *world, s *State) {
			c.Spec.Analysis.StepWeightPromotion = 30
			s.Phase, s.Routing = PhasePromoting, Routing{50, 50, false}
		}, snap{Phase: PhasePromoting, Routing: Routing{80, 20, false}, Workload: WorkloadPlan{EnsureApex: true}}, ""},
		{"progressive promotion ends in Finalising", func(c *Canary, w *world, s *State) {
			c.Spec.Analysis.StepWeightPromotion = 30
			s.Phase, s.Routing = PhasePromoting, Routing{80, 20, false}
		}, snap{Phase: PhaseFinalising, Routing: AllToPrimary, Workload: WorkloadPlan{EnsureApex: true}}, ""},
		{"skipAnalysis promotes at once", func(c *Canary, w *world, s *State) {
			c.Spec.SkipAnalysis = true
			s.Phase, s.Routing, s.LastAppliedSpec = PhaseSucceeded, AllToPrimary, "v1"
		}, snap{Phase: PhaseProgressing, Routing: AllToPrimary, Workload: WorkloadPlan{EnsureApex: true, ScaleTarget: ScaleUp}}, ""},
		{"skipAnalysis once progressing", func(c *Canary, w *world, s *State) { c.Spec.SkipAnalysis = true },
			snap{Phase: PhaseSucceeded, Routing: AllToPrimary, Workload: WorkloadPlan{EnsureApex: true, ScaleTarget: ScaleToZero, Promote: true}}, ""},
		{"manual rollback to the promoted template starts nothing", func(c *Canary, w *world, s *State) {
			s.Phase, s.Routing, s.LastAppliedSpec = PhaseFailed, AllToPrimary, "v2"
			w.work.TemplateHash = "v1"
		}, snap{Phase: PhaseFailed, Routing: AllToPrimary, Workload: WorkloadPlan{EnsureApex: true}}, ""},
		{"failed canary with a fixed template starts again", func(c *Canary, w *world, s *State) {
			s.Phase, s.Routing, s.LastAppliedSpec = PhaseFailed, AllToPrimary, "v2"
			w.work.TemplateHash = "v3"
		}, snap{Phase: PhaseProgressing, Routing: AllToPrimary, Workload: WorkloadPlan{EnsureApex: true, ScaleTarget: ScaleUp}}, ""},
		{"config change is a new revision", func(c *Canary, w *world, s *State) {
			s.Phase, s.Routing = PhaseSucceeded, AllToPrimary
			s.TrackedConfigs = map[string]string{"configmap/cfg": "aaa"}
			w.work.TrackedConfigs = map[string]string{"configmap/cfg": "bbb"}
		}, snap{Phase: PhaseProgressing, Routing: AllToPrimary, Workload: WorkloadPlan{EnsureApex: true, ScaleTarget: ScaleUp}}, ""},
		{"manual promote skips the rest of the analysis", func(c *Canary, w *world, s *State) { s.PromoteRequested = true },
			snap{Phase: PhasePromoting, Routing: Routing{80, 20, false}, Workload: WorkloadPlan{EnsureApex: true, Promote: true}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, w, s := base()
			tt.mutate(&c, w, &s)
			out := w.step(c, s, t0)
			if diff := cmp.Diff(tt.want, snapOf(out)); diff != "" {
				t.Errorf("(-want +got)\n%s\nevents: %v", diff, out.Events)
			}
			if tt.msg != "" && !strings.Contains(out.State.Message, tt.msg) {
				t.Errorf("got message %q, want it to contain %q", out.State.Message, tt.msg)
			}
		})
	}
}

func TestBlueGreenPhases(t *testing.T) {
	c := seedCanary()
	c.Spec.Analysis = &Analysis{Interval: "1m", Threshold: 2, Iterations: 3, Mirror: true}
	w := readyWorld("v2")
	s := State{Phase: PhaseProgressing, LastAppliedSpec: "v2", LastPromotedSpec: "v1", Routing: AllToPrimary}
	mirrored := Routing{100, 0, true}
	want := []snap{
		{Phase: PhaseProgressing, Routing: mirrored, Iter: 1},
		{Phase: PhaseProgressing, Routing: mirrored, Iter: 2},
		{Phase: PhaseProgressing, Routing: mirrored, Iter: 3},
		{Phase: PhaseProgressing, Routing: Routing{0, 100, false}, Iter: 4},
		{Phase: PhasePromoting, Routing: Routing{0, 100, false}, Iter: 4, Workload: WorkloadPlan{Promote: true}},
		{Phase: PhaseFinalising, Routing: AllToPrimary},
		{Phase: PhaseSucceeded, Routing: AllToPrimary, Workload: WorkloadPlan{ScaleTarget: ScaleToZero}},
	}
	for i, wt := range want {
		wt.Workload.EnsureApex = true
		out := w.step(c, s, t0)
		if diff := cmp.Diff(wt, snapOf(out)); diff != "" {
			t.Fatalf("step %d: (-want +got)\n%s", i+1, diff)
		}
		s = out.State
	}
}

func TestABTestingPhases(t *testing.T) {
	c := seedCanary()
	c.Spec.Analysis = &Analysis{Interval: "1m", Threshold: 2, Iterations: 2,
		Match: json.RawMessage(`[{"headers":{"x-canary":{"exact":"insider"}}}]`)}
	w := readyWorld("v2")
	s := State{Phase: PhaseProgressing, LastAppliedSpec: "v2", LastPromotedSpec: "v1", Routing: AllToPrimary}
	ab := Routing{0, 100, false}
	want := []snap{
		{Phase: PhaseProgressing, Routing: ab, Iter: 1},
		{Phase: PhaseProgressing, Routing: ab, Iter: 2},
		{Phase: PhasePromoting, Routing: ab, Iter: 2, Workload: WorkloadPlan{Promote: true}},
		{Phase: PhaseFinalising, Routing: AllToPrimary},
		{Phase: PhaseSucceeded, Routing: AllToPrimary, Workload: WorkloadPlan{ScaleTarget: ScaleToZero}},
	}
	for i, wt := range want {
		wt.Workload.EnsureApex = true
		out := w.step(c, s, t0)
		if diff := cmp.Diff(wt, snapOf(out)); diff != "" {
			t.Fatalf("step %d: (-want +got)\n%s", i+1, diff)
		}
		s = out.State
	}
}

func TestMirrorCanaryStepsThroughMirroring(t *testing.T) {
	c := seedCanary()
	c.Spec.Analysis.Mirror = true
	w := readyWorld("v2")
	s := State{Phase: PhaseProgressing, LastAppliedSpec: "v2", LastPromotedSpec: "v1", Routing: AllToPrimary}
	for i, want := range []Routing{{100, 0, true}, {95, 5, false}, {90, 10, false}} {
		out := w.step(c, s, t0)
		if out.State.Routing != want {
			t.Fatalf("step %d: got %v, want %v", i+1, out.State.Routing, want)
		}
		s = out.State
	}
}

func TestSessionAffinityCookies(t *testing.T) {
	c := seedCanary()
	c.Spec.Analysis.SessionAffinity = &SessionAffinity{CookieName: "canary-cookie", PrimaryCookieName: "primary-cookie"}
	w := readyWorld("v2")
	s := State{Phase: PhaseProgressing, LastAppliedSpec: "v2", LastPromotedSpec: "v1", Routing: Routing{100, 0, false}, Iterations: 0}
	out := w.step(c, s, t0) // pre-rollout + weight 5
	if got := out.State.SessionAffinityCookie; got != "canary-cookie=abcdefghij" {
		t.Fatalf("got cookie %q", got)
	}
	if got := out.State.PrimarySessionAffinityCookie; got != "primary-cookie=klmnopqrst" {
		t.Fatalf("got primary cookie %q", got)
	}
	// Keeps its cookie across steps.
	out = w.step(c, out.State, t0)
	if got := out.State.SessionAffinityCookie; got != "canary-cookie=abcdefghij" {
		t.Fatalf("got cookie %q after a second step", got)
	}
	// Rollback expires it.
	w.metrics[0].Value = 1
	c.Spec.Analysis.Threshold = 1
	out = w.step(c, out.State, t0)
	if out.State.Phase != PhaseFailed || out.State.SessionAffinityCookie != "" || out.State.PreviousSessionAffinityCookie != "canary-cookie=abcdefghij" {
		t.Fatalf("after rollback: got phase %s cookie %q previous %q", out.State.Phase, out.State.SessionAffinityCookie, out.State.PreviousSessionAffinityCookie)
	}
}

func TestHooksAskedInRoundsAndOnlyWhenNeeded(t *testing.T) {
	c := seedCanary()
	c.Spec.Analysis.Webhooks = []Webhook{
		{Name: "pre", Type: HookPreRollout, URL: "http://x"},
		{Name: "rb", Type: HookRollback, URL: "http://x"},
		{Name: "load", URL: "http://x"},
	}
	w := readyWorld("v2")
	w.hooks = map[HookType][]HookResult{HookPreRollout: {{Name: "pre", OK: true}}, HookRollback: {{Name: "rb"}}, HookRollout: {{Name: "load", OK: true}}}
	s := State{Phase: PhaseProgressing, LastAppliedSpec: "v2", LastPromotedSpec: "v1", Routing: AllToPrimary}
	w.step(c, s, t0)
	want := []Need{{Hooks: []HookType{HookRollback}}, {Hooks: []HookType{HookPreRollout}}}
	if diff := cmp.Diff(want, w.asked); diff != "" {
		t.Errorf("first step asked (-want +got)\n%s", diff)
	}
	w.asked = nil
	s.Routing = Routing{95, 5, false}
	w.step(c, s, t0)
	want = []Need{{Hooks: []HookType{HookRollback}}, {Hooks: []HookType{HookRollout}, Metrics: true}}
	if diff := cmp.Diff(want, w.asked); diff != "" {
		t.Errorf("analysis step asked (-want +got)\n%s", diff)
	}
}

func TestAbortRelease(t *testing.T) {
	c := seedCanary()
	analysed := Revision("v2", nil)
	wantVerdict := map[Phase]AbortVerdict{
		PhaseWaiting: Aborted, PhaseProgressing: Aborted, PhaseWaitingPromotion: Aborted,
		PhasePromoting: AbortRefused, PhaseFinalising: AbortRefused,
	}
	for _, p := range Phases {
		for _, primary := range []struct {
			name     string
			revision string
		}{{"primary on the old revision", Revision("v1", nil)}, {"primary on the analysed revision", analysed}, {"primary revision unknown", ""}} {
			t.Run(string(p)+"/"+primary.name, func(t *testing.T) {
				s := State{Phase: p, Routing: Routing{70, 30, false}, LastAppliedSpec: "v2", LastPromotedSpec: "v1"}
				want := wantVerdict[p]
				if want == Aborted && p != PhaseWaiting && primary.revision == analysed {
					// A crash after the promotion was written and before it was saved.
					want = AbortRefused
				}
				out, verdict, why := AbortRelease(c, s, primary.revision, "alert HighErrorRate", &Trigger{Kind: "alert"}, t0)
				if verdict != want {
					t.Fatalf("got verdict %d (%s), want %d", verdict, why, want)
				}
				if verdict != Aborted {
					if out.State.Phase != p || out.State.Routing != s.Routing {
						t.Errorf("a phase that was not aborted changed: %+v", out.State)
					}
					if why == "" {
						t.Error("got no reason for not aborting")
					}
					if verdict == AbortRefused && !strings.Contains(why, "podinfo-primary already runs the new revision") {
						t.Errorf("refusal: got %q, want it to say the primary runs the new revision", why)
					}
					return
				}
				wantSnap := snap{Phase: PhaseFailed, Routing: AllToPrimary, Workload: WorkloadPlan{ScaleTarget: ScaleToZero}}
				if diff := cmp.Diff(wantSnap, snapOf(out)); diff != "" {
					t.Errorf("(-want +got)\n%s", diff)
				}
				if !out.Route || !strings.Contains(out.State.Message, "HighErrorRate") {
					t.Errorf("got route %v message %q", out.Route, out.State.Message)
				}
			})
		}
	}
}

func TestRebuildStatePrefersLiveWeightsWhileReleasing(t *testing.T) {
	st := Status{Phase: PhaseProgressing, CanaryWeight: 10, FailedChecks: 1, LastAppliedSpec: "v2"}
	got := RebuildState(st, Routing{85, 15, false}, true)
	if got.Routing != (Routing{85, 15, false}) || got.FailedChecks != 1 || got.Phase != PhaseProgressing {
		t.Errorf("got %+v", got)
	}
	got = RebuildState(Status{}, Routing{}, false)
	if got.Phase != PhaseInitializing {
		t.Errorf("empty status: got phase %s, want Initializing", got.Phase)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(c *Canary)
		want   string
	}{
		{"seed is valid", func(c *Canary) {}, ""},
		{"primary host mismatch", func(c *Canary) { c.Spec.Service.Primary.Host = "podinfo-main.default.svc.cluster.local" }, "spec.service.primary.host"},
		{"canary host short form ok", func(c *Canary) { c.Spec.Service.Canary.Host = "podinfo-canary" }, ""},
		{"canary host other namespace", func(c *Canary) { c.Spec.Service.Canary.Host = "podinfo-canary.prod.svc.cluster.local" }, "spec.service.canary.host"},
		{"no step", func(c *Canary) { c.Spec.Analysis.StepWeight = 0 }, "needs stepWeight"},
		{"daemonset", func(c *Canary) { c.Spec.TargetRef.Kind = "DaemonSet" }, "not supported"},
		{"bad metric", func(c *Canary) { c.Spec.Analysis.Metrics = append(c.Spec.Analysis.Metrics, Metric{Name: "x"}) }, "no usable metrics template"},
		{"same cookies", func(c *Canary) {
			c.Spec.Analysis.SessionAffinity = &SessionAffinity{CookieName: "a", PrimaryCookieName: "a"}
		}, "must differ"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := seedCanary()
			tt.mutate(&c)
			got := strings.Join(Validate(c, Routers{DefaultProvider: nil}), "; ")
			if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSpecDefaults(t *testing.T) {
	var s Spec
	if got := s.Interval(MinAnalysisInterval); got != time.Minute {
		t.Errorf("default interval: got %v", got)
	}
	s.Analysis = &Analysis{Interval: "2s", Threshold: -1}
	if got := s.Interval(MinAnalysisInterval); got != 10*time.Second {
		t.Errorf("floor: got %v", got)
	}
	if got := s.Threshold(); got != 1 {
		t.Errorf("threshold: got %d", got)
	}
	if got := s.MaxWeight(); got != 100 {
		t.Errorf("maxWeight: got %d", got)
	}
	if got := s.ProgressDeadline(); got != 600*time.Second {
		t.Errorf("deadline: got %v", got)
	}
	if got, want := s.PrimaryReadyThreshold(), 100; got != want {
		t.Errorf("ready threshold: got %d", got)
	}
	if !s.SkipsAnalysis() == (s.Analysis == nil) {
		t.Error("SkipsAnalysis")
	}
}

func TestBlueGreenWaitsForPromotionWithoutFlapping(t *testing.T) {
	c := seedCanary()
	c.Spec.Analysis = &Analysis{Interval: "1m", Threshold: 2, Iterations: 2,
		Webhooks: []Webhook{{Name: "gate", Type: HookConfirmPromotion, URL: "http://x"}}}
	w := readyWorld("v2")
	w.hooks = map[HookType][]HookResult{HookConfirmPromotion: {{Name: "gate"}}}
	s := State{Phase: PhaseProgressing, LastAppliedSpec: "v2", LastPromotedSpec: "v1", Routing: AllToPrimary, Iterations: 2}
	var halts int
	for i := 0; i < 6; i++ {
		out := w.step(c, s, t0)
		if i > 0 && out.State.Phase != PhaseWaitingPromotion {
			t.Fatalf("step %d: got %s, want WaitingPromotion while the gate is closed", i+1, out.State.Phase)
		}
		for _, e := range out.Events {
			if strings.Contains(e.Message, "waiting for promotion approval") {
				halts++
			}
		}
		s = out.State
	}
	if halts != 1 {
		t.Errorf("got %d 'waiting for promotion approval' events in 6 steps, want 1", halts)
	}
	// The gate opens: the release goes on to all traffic on the canary, then promotion.
	w.hooks[HookConfirmPromotion] = []HookResult{{Name: "gate", OK: true}}
	for _, want := range []Phase{PhaseWaitingPromotion, PhaseWaitingPromotion, PhasePromoting} {
		out := w.step(c, s, t0)
		s = out.State
		if s.Phase != want && !(want == PhaseWaitingPromotion && s.Phase == PhasePromoting) {
			t.Fatalf("got %s, want %s (routing %v)", s.Phase, want, s.Routing)
		}
		if s.Phase == PhasePromoting {
			break
		}
	}
	if s.Phase != PhasePromoting {
		t.Errorf("never promoted: %s", s.Phase)
	}
}

// Regression: a canary rolled back while Waiting had never recorded the waiting revision, so the
// next step took it for a new one and started it again (Waiting or Progressing, then rolled back
// again, and so on).
func TestRollbackWhileWaitingDoesNotRestartTheRevision(t *testing.T) {
	c := seedCanary()
	c.Spec.Analysis.Webhooks = []Webhook{
		{Name: "gate", Type: HookConfirmRollout, URL: "http://gate"},
		{Name: "rollback", Type: HookRollback, URL: "http://rollback"},
	}
	w := readyWorld("v2")
	w.hooks = map[HookType][]HookResult{
		HookConfirmRollout: {{Name: "gate", Detail: "closed"}},
		HookRollback:       {{Name: "rollback", OK: true}},
	}
	s := State{Phase: PhaseWaiting, LastAppliedSpec: "v1", LastPromotedSpec: "v1", Routing: AllToPrimary}
	out := w.step(c, s, t0)
	if out.State.Phase != PhaseFailed || out.State.LastAppliedSpec != "v2" {
		t.Fatalf("got %s lastAppliedSpec %q, want Failed with the rejected revision v2 recorded", out.State.Phase, out.State.LastAppliedSpec)
	}
	for name, hooks := range map[string]map[HookType][]HookResult{
		"gate still closed": w.hooks,
		"gate opened":       {HookConfirmRollout: {{Name: "gate", OK: true}}, HookRollback: {{Name: "rollback", Detail: "no"}}},
	} {
		t.Run(name, func(t *testing.T) {
			w.hooks = hooks
			next := w.step(c, out.State, t0.Add(time.Minute))
			if next.State.Phase != PhaseFailed || next.State.Routing != AllToPrimary || next.Workloads.ScaleTarget != ScaleNone {
				t.Errorf("got %s %+v scale %v, want the rolled-back revision left alone", next.State.Phase, next.State.Routing, next.Workloads.ScaleTarget)
			}
		})
	}
	w.work.TemplateHash = "v3"
	w.hooks = map[HookType][]HookResult{HookConfirmRollout: {{Name: "gate", OK: true}}}
	if next := w.step(c, out.State, t0.Add(time.Minute)); next.State.Phase != PhaseProgressing {
		t.Errorf("a newer revision after the rollback: got %s, want Progressing", next.State.Phase)
	}
}

// Regression: a rollback for a reason (a rollback hook, the progress deadline, a broken
// primary) left the status message saying what the step before was doing ("canary weight 50",
// "waiting for ... to be ready"), and the rollback hook's event was Normal where Flagger records
// a Warning.
func TestRollbackSaysWhy(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(c *Canary, w *world, s *State)
		message string
		warning string
	}{
		{"rollback hook", func(c *Canary, w *world, s *State) {
			c.Spec.Analysis.Webhooks = []Webhook{{Name: "rb", Type: HookRollback, URL: "http://rb"}}
			w.hooks = map[HookType][]HookResult{HookRollback: {{Name: "rb", OK: true}}}
		}, "manual webhook invoked", "Rolling back podinfo.default manual webhook invoked"},
		{"progress deadline", func(c *Canary, w *world, s *State) {
			w.work.Canary = Readiness{Failed: true, Reason: "deployment \"podinfo\" exceeded its progress deadline"}
		}, "progress deadline exceeded", "Rolling back podinfo.default progress deadline exceeded"},
		{"primary broken", func(c *Canary, w *world, s *State) { w.work.Primary = Readiness{Failed: true, Reason: "deadline"} },
			"primary deadline", "Rolling back podinfo.default primary deadline"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, w := seedCanary(), readyWorld("v2")
			s := State{Phase: PhaseProgressing, LastAppliedSpec: "v2", LastPromotedSpec: "v1", Routing: Routing{Primary: 50, Canary: 50}, Message: "canary weight 50"}
			tt.mutate(&c, w, &s)
			out := w.step(c, s, t0)
			if out.State.Phase != PhaseFailed {
				t.Fatalf("got %s, want Failed", out.State.Phase)
			}
			if !strings.Contains(out.State.Message, tt.message) || strings.Contains(out.State.Message, "canary weight 50") {
				t.Errorf("message %q, want it to say %q", out.State.Message, tt.message)
			}
			var warned bool
			for _, e := range out.Events {
				if strings.HasPrefix(e.Message, tt.warning) {
					if !e.Warning {
						t.Errorf("event %q is Normal, want Warning", e.Message)
					}
					warned = true
				}
			}
			if !warned {
				t.Errorf("no event %q in %+v", tt.warning, out.Events)
			}
		})
	}
}

// WillRoute is the shell's cue to read the routing objects ahead: from every phase it names,
// a step re-asserts the routes whatever it observes, also for a new revision or a failing
// canary.
func TestWillRouteHoldsForEveryStepFromThePhase(t *testing.T) {
	c := seedCanary()
	worlds := map[string]*world{"ready, same revision": readyWorld("v1"), "ready, new revision": readyWorld("v2")}
	failing := readyWorld("v1")
	failing.metrics = []MetricResult{{Name: "request-success-rate", Value: 50}, {Name: "request-duration", Value: 20}}
	worlds["failing checks"] = failing
	notReady := readyWorld("v2")
	notReady.work.Canary = Readiness{Reason: "rolling out"}
	worlds["canary not ready"] = notReady
	for _, phase := range append([]Phase{""}, Phases...) {
		st := State{Phase: phase, LastAppliedSpec: "v1", LastPromotedSpec: "v0", Routing: Routing{80, 20, false}}
		if !st.WillRoute() {
			continue
		}
		for name, w := range worlds {
			if out := w.step(c, st, t0); !out.Route {
				t.Errorf("from %s (%s): the step does not route, but WillRoute says it will", phase, name)
			}
		}
	}
	for _, phase := range []Phase{"", PhaseInitializing, PhaseTerminating, PhaseTerminated} {
		if (State{Phase: phase}).WillRoute() {
			t.Errorf("WillRoute(%q) = true, want false: such a step may not route", phase)
		}
	}
}

func TestReassertDue(t *testing.T) {
	c := seedCanary()
	c.Generation = 3
	asserted := State{AssertedAt: t0, AssertedGeneration: 3}
	tests := []struct {
		name   string
		st     State
		now    time.Time
		resync time.Duration
		want   bool
	}{
		{"never asserted", State{}, t0, 5 * time.Minute, true},
		{"asserted a step ago", asserted, t0.Add(10 * time.Second), 5 * time.Minute, false},
		{"a resync later", asserted, t0.Add(5 * time.Minute), 5 * time.Minute, true},
		{"the Canary's spec changed since", State{AssertedAt: t0, AssertedGeneration: 2}, t0.Add(time.Second), 5 * time.Minute, true},
		{"resync 0 is every step", asserted, t0.Add(time.Second), 0, true},
		{"a clock behind the assertion", asserted, t0.Add(-time.Minute), 5 * time.Minute, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.st.ReassertDue(c, tt.now, tt.resync); got != tt.want {
				t.Errorf("ReassertDue = %v, want %v", got, tt.want)
			}
		})
	}
}

// Between two re-assertions a step checks the VirtualService alone; the Services and the
// DestinationRules are re-asserted when asked, for a new revision and while initialising.
func TestReassertion(t *testing.T) {
	c := seedCanary()
	c.Generation = 7
	earlier := t0.Add(-time.Minute)
	progressing := State{Phase: PhaseProgressing, LastAppliedSpec: "v1", LastPromotedSpec: "v0", Routing: Routing{90, 10, false},
		AssertedAt: earlier, AssertedGeneration: 7}
	type want struct {
		Reassert, Services, Apex, Route bool
		AssertedAt                      time.Time
	}
	tests := []struct {
		name    string
		st      State
		world   func() *world
		between bool
		want    want
	}{
		{"a weight step between re-assertions checks the VirtualService alone", progressing, func() *world { return readyWorld("v1") }, true,
			want{Route: true, AssertedAt: earlier}},
		{"a step asked to re-assert does", progressing, func() *world { return readyWorld("v1") }, false,
			want{Reassert: true, Services: true, Apex: true, Route: true, AssertedAt: t0}},
		{"a new revision re-asserts (its ports or selector may differ)", State{Phase: PhaseSucceeded, LastAppliedSpec: "v1", LastPromotedSpec: "v1", Routing: AllToPrimary, AssertedAt: earlier, AssertedGeneration: 7},
			func() *world { return readyWorld("v2") }, true, want{Reassert: true, Services: true, Apex: true, Route: true, AssertedAt: t0}},
		{"a first step creates the Services, not yet the apex", State{}, func() *world {
			w := readyWorld("v1")
			w.work.Primary = Readiness{Reason: "rolling out"}
			return w
		}, true, want{Reassert: true, Services: true, AssertedAt: t0}},
		{"the end of the initialisation re-asserts the apex too", State{Phase: PhaseInitializing}, func() *world { return readyWorld("v1") }, true,
			want{Reassert: true, Services: true, Apex: true, Route: true, AssertedAt: t0}},
		{"no target, nothing to assert", progressing, func() *world { return &world{} }, false, want{AssertedAt: earlier}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := tt.world()
			w.between = tt.between
			out := w.step(c, tt.st, t0)
			got := want{out.Reassert, out.Workloads.EnsureServices, out.Workloads.EnsureApex, out.Route, out.State.AssertedAt}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
			if out.Reassert && out.State.AssertedGeneration != c.Generation {
				t.Errorf("asserted generation %d, want the Canary's %d", out.State.AssertedGeneration, c.Generation)
			}
		})
	}
}

// The step creates what the observation found missing, as Flagger does at every tick, except
// in the deletion flow; observing itself never writes.
func TestCreationIsPlanned(t *testing.T) {
	tests := []struct {
		name         string
		phase        Phase
		primaryFound bool
		hpaMissing   bool
		targetFound  bool
		wantPrimary  bool
		wantHPA      bool
	}{
		{name: "first step creates the primary", phase: "", targetFound: true, wantPrimary: true},
		{name: "initializing with the primary there creates nothing", phase: PhaseInitializing, targetFound: true, primaryFound: true},
		{name: "a deleted primary is recreated while idle", phase: PhaseSucceeded, targetFound: true, wantPrimary: true},
		{name: "a deleted primary is recreated mid-release", phase: PhaseProgressing, targetFound: true, wantPrimary: true},
		{name: "the primary HPA alone", phase: PhaseInitialized, targetFound: true, primaryFound: true, hpaMissing: true, wantHPA: true},
		{name: "no target, nothing to copy", phase: "", targetFound: false},
		{name: "the deletion flow creates nothing", phase: PhaseTerminating, targetFound: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := readyWorld("v1")
			w.work.TargetFound, w.work.PrimaryFound, w.work.PrimaryHPAMissing = tt.targetFound, tt.primaryFound, tt.hpaMissing
			st := State{Phase: tt.phase, LastAppliedSpec: "v1", LastPromotedSpec: "v1", Routing: AllToPrimary}
			out := w.step(seedCanary(), st, t0)
			got := [2]bool{out.Workloads.CreatePrimary, out.Workloads.CreatePrimaryHPA}
			if want := [2]bool{tt.wantPrimary, tt.wantHPA}; got != want {
				t.Errorf("got CreatePrimary, CreatePrimaryHPA = %v, want %v", got, want)
			}
		})
	}
}
