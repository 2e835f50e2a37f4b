package functions

import (
	"encoding/json"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Transition is one edge of the step machine: a phase it can move from, the phase it moves to,
// and what makes it do so, in the words of the events it records.
type Transition struct {
	From   Phase    `json:"from"`
	To     Phase    `json:"to"`
	Causes []string `json:"causes"`
}

// AnyPhase stands, in Transitions alone, for every phase: the edges that leave from any of
// them (a deletion) or keep it (a suspended canary, an invalid spec).
const AnyPhase Phase = "any phase"

// Transitions explores Decide, AbortRelease, the manual gates, the deletion flow (Finalize),
// Suspended and InvalidSpec over every phase and a grid of observations, and returns the
// edges they actually take. Diagrams and docs are drawn from it, so they cannot drift from
// the code. Only AnyPhase has edges to itself: the decisions that keep the phase.
func Transitions() []Transition {
	edges := map[[2]Phase]map[string]bool{}
	add := func(from, to Phase, cause string) {
		if from == to && from != AnyPhase {
			return
		}
		k := [2]Phase{from, to}
		if edges[k] == nil {
			edges[k] = map[string]bool{}
		}
		edges[k][cause] = true
	}
	for _, c := range explorationCanaries() {
		for _, st := range explorationStates(c) {
			for _, w := range explorationWorlds() {
				for _, answer := range []answers{allPass, gatesClosed, allFail} {
					out := decideAnswering(c, st, w, answer)
					add(normalPhase(st.Phase), out.State.Phase, causeOf(out))
				}
			}
			if out, verdict, _ := AbortRelease(c, st, "", "alert", &Trigger{Kind: "alert"}, explorationNow); verdict == Aborted {
				add(st.Phase, out.State.Phase, "Alertmanager alert or manual abort")
			}
			for _, g := range []struct {
				cause string
				gate  func(Key, State) (State, error)
			}{{"manual Promote", PromotionGate}, {"manual Resume", ResumeGate}} {
				opened, err := g.gate(c.Key, st)
				if err != nil {
					continue
				}
				// What the gate itself does: in a healthy world, with the revision unchanged.
				healthy := explorationWorlds()[0]
				add(normalPhase(st.Phase), decideAnswering(c, opened, healthy, allPass).State.Phase, g.cause)
			}
		}
	}
	addHeld := func(c Canary, cause string, held func(Canary, State) (Phase, bool)) {
		for _, st := range explorationStates(c) {
			if to, ok := held(c, st); !ok || to != normalPhase(st.Phase) {
				return // kept only for some phases: not an edge of every phase
			}
		}
		add(AnyPhase, AnyPhase, cause)
	}
	suspended := explorationCanaries()[0]
	suspended.Spec.Suspend = true
	addHeld(suspended, "spec.suspend: no step, the phase is kept", func(c Canary, st State) (Phase, bool) {
		return normalPhase(st.Phase), Suspended(c)
	})
	invalid := explorationCanaries()[0]
	invalid.Spec.TargetRef.Kind = "DaemonSet"
	addHeld(invalid, "invalid spec: reported on the status, the phase is kept", func(c Canary, st State) (Phase, bool) {
		problems := Validate(c, Routers{DefaultProvider: nil})
		return InvalidSpec(st, strings.Join(problems, "; "), explorationNow, time.Minute).State.Phase, len(problems) > 0
	})
	deleted := explorationCanaries()[0]
	deleted.Finalizers = []string{FinalizerName}
	everyPhaseTerminates := true
	for _, st := range explorationStates(deleted) {
		everyPhaseTerminates = everyPhaseTerminates && Finalize(deleted, st, Readiness{}, explorationNow).Action == FinalizeStart
	}
	if everyPhaseTerminates {
		add(AnyPhase, PhaseTerminating, "Canary deleted with revertOnDeletion: the target gets its replicas back")
	}
	terminating := State{Phase: PhaseTerminating, LastTransitionTime: explorationNow}
	if Finalize(deleted, terminating, Readiness{Ready: true}, explorationNow).Action == FinalizeRestore {
		add(PhaseTerminating, PhaseTerminated, "target ready (or a minute passed): the original routes restored, the finalizer removed")
	}
	var out []Transition
	for k, causes := range edges {
		t := Transition{From: k[0], To: k[1]}
		for c := range causes {
			t.Causes = append(t.Causes, c)
		}
		sort.Strings(t.Causes)
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].From != out[j].From {
			return phaseOrder(out[i].From) < phaseOrder(out[j].From)
		}
		return phaseOrder(out[i].To) < phaseOrder(out[j].To)
	})
	return out
}

var explorationNow = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func normalPhase(p Phase) Phase {
	if p == "" {
		return PhaseInitializing
	}
	return p
}

func phaseOrder(p Phase) int {
	for i, q := range Phases {
		if q == p {
			return i
		}
	}
	return len(Phases)
}

func explorationCanaries() []Canary {
	base := Canary{Key: Key{Namespace: "ns", Name: "app"}, Spec: Spec{
		TargetRef: TargetRef{Name: "app"}, Service: ServiceSpec{Port: 80},
	}}
	hooks := []Webhook{
		{Name: "gate", Type: HookConfirmRollout, URL: "http://x"},
		{Name: "pre", Type: HookPreRollout, URL: "http://x"},
		{Name: "load", Type: HookRollout, URL: "http://x"},
		{Name: "traffic", Type: HookConfirmTrafficIncrease, URL: "http://x"},
		{Name: "promote", Type: HookConfirmPromotion, URL: "http://x"},
		{Name: "rollback", Type: HookRollback, URL: "http://x"},
	}
	metric := []Metric{{Name: MetricRequestSuccessRate, ThresholdRange: &ThresholdRange{Min: ptrTo(99.0)}}}
	analyses := []*Analysis{
		{Interval: "1m", Threshold: 2, MaxWeight: 50, StepWeight: 25, Metrics: metric, Webhooks: hooks},
		{Interval: "1m", Threshold: 2, MaxWeight: 50, StepWeight: 25, StepWeightPromotion: 50, Metrics: metric},
		{Interval: "1m", Threshold: 2, Iterations: 2, Metrics: metric, Webhooks: hooks},
		{Interval: "1m", Threshold: 2, Iterations: 2, Metrics: metric, Match: json.RawMessage(`[{"headers":{"x":{"exact":"y"}}}]`)},
	}
	var out []Canary
	for _, a := range analyses {
		c := base
		c.Spec.Analysis = a
		out = append(out, c)
	}
	skip := base
	skip.Spec.SkipAnalysis = true
	skip.Spec.Analysis = &Analysis{Interval: "1m", StepWeight: 10}
	return append(out, skip)
}

func ptrTo[T any](v T) *T { return &v }

func explorationStates(c Canary) []State {
	var out []State
	for _, p := range append([]Phase{""}, Phases[:len(Phases)-2]...) { // not the deletion phases
		for _, r := range []Routing{AllToPrimary, {Primary: 75, Canary: 25}, {Primary: 50, Canary: 50}, {Primary: 0, Canary: 100}} {
			for _, it := range []int{0, 1, 2, 3} {
				for _, failed := range []int{0, 1} {
					out = append(out, State{Phase: p, Routing: r, Iterations: it, FailedChecks: failed,
						LastAppliedSpec: "v1", LastPromotedSpec: "v0"})
				}
			}
		}
	}
	return out
}

func explorationWorlds() []WorkloadObservation {
	ready := Readiness{Ready: true}
	var out []WorkloadObservation
	for _, hash := range []string{"v1", "v2"} {
		for _, primary := range []Readiness{ready, {Reason: "rolling"}, {Failed: true, Reason: "deadline"}} {
			for _, canary := range []Readiness{ready, {Reason: "rolling"}, {Failed: true, Reason: "deadline"}} {
				out = append(out, WorkloadObservation{TargetFound: true, TemplateHash: hash, PrimaryFound: true,
					Primary: primary, Canary: canary})
			}
		}
	}
	return out
}

type answers int

const (
	allPass     answers = iota // every gate open, every metric passing, no rollback asked
	gatesClosed                // metrics passing, every gate closed, no rollback asked
	allFail                    // gates closed, metrics failing, rollback hooks asking for one
)

// decideAnswering runs Decide, answering hooks and metrics as `a` says, the way the shell would.
func decideAnswering(c Canary, st State, w WorkloadObservation, a answers) Step {
	in := StepInput{Canary: c, State: st, Work: w, Now: explorationNow, MinInterval: time.Second,
		NewCookieValue: "x", NewPrimaryCookieValue: "y"}
	for range 8 {
		out := Decide(in)
		if out.Need.Empty() {
			return out
		}
		if in.Hooks == nil {
			in.Hooks = map[HookType][]HookResult{}
		}
		for _, t := range out.Need.Hooks {
			ok := a == allPass
			switch t {
			case HookRollback:
				// A rollback hook answering OK asks for a rollback.
				ok = a == allFail
			case HookPreRollout, HookRollout:
				ok = a != allFail
			}
			in.Hooks[t] = []HookResult{{Name: string(t), OK: ok}}
		}
		if out.Need.Metrics {
			v := 100.0
			if a == allFail {
				v = 0
			}
			in.Metrics, in.MetricsDone = []MetricResult{{Name: MetricRequestSuccessRate, Value: v}}, true
		}
	}
	return Decide(in)
}

var (
	numbers    = regexp.MustCompile(`\b\d+(\.\d+)?(%|ms|s)?\b`)
	canaryIDs  = regexp.MustCompile(`\bapp(-primary)?(\.ns)?\b`)
	namedIDs   = strings.NewReplacer("app-primary.ns", "NAME-primary", "app.ns", "NAME")
	spaces     = regexp.MustCompile(`\s+`)
	hookNames  = regexp.MustCompile(`\b(gate|pre|load|traffic|promote|rollback|confirm-rollout|confirm-promotion|confirm-traffic-increase|pre-rollout)\s*$`)
	reasonTail = regexp.MustCompile(`:.*$`)
)

// causeOf names what a step did, from its first event (or its message), with the canary's
// names and the numbers taken out.
func causeOf(out Step) string {
	msg := out.State.Message
	if len(out.Events) > 0 {
		msg = out.Events[0].Message
	}
	msg = namedIDs.Replace(msg)
	msg = canaryIDs.ReplaceAllString(msg, "NAME")
	msg = reasonTail.ReplaceAllString(msg, "")
	msg = numbers.ReplaceAllString(msg, "N")
	msg = hookNames.ReplaceAllString(msg, "")
	msg = strings.ReplaceAll(msg, " N/N", "")
	return strings.TrimSpace(spaces.ReplaceAllString(msg, " "))
}
