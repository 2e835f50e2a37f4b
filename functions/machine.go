package functions

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// StepInput is everything one step of one canary may look at. The shell fills Canary, State,
// Work and Now, calls Decide, and answers any Need by filling Hooks or Metrics and calling
// Decide again: Decide is pure, so replaying it with more answers is safe and cheap.
type StepInput struct {
	Canary Canary
	State  State
	Work   WorkloadObservation
	Now    time.Time
	// MinInterval is the analysis-interval floor (Flagger's is 10 s; tests lower it).
	MinInterval time.Duration
	// Hooks holds the answers of the hook types asked for so far.
	Hooks map[HookType][]HookResult
	// Metrics holds the metric results once MetricsDone.
	Metrics     []MetricResult
	MetricsDone bool
	// NewCookieValue is fresh randomness for a session-affinity cookie, should one be needed.
	NewCookieValue, NewPrimaryCookieValue string
	// Reassert asks for the generated objects to be re-asserted (State.ReassertDue). A new
	// revision and the initialisation re-assert them anyway.
	Reassert bool
}

// Need is what Decide must know before it can decide.
type Need struct {
	Hooks   []HookType
	Metrics bool
}

func (n Need) Empty() bool { return len(n.Hooks) == 0 && !n.Metrics }

// Step is the outcome of one decision.
type Step struct {
	// Need, when not empty, means nothing else in Step is meaningful yet.
	Need Need

	State     State
	Workloads WorkloadPlan
	// Route: re-assert the VirtualService to State.Routing, and with Reassert the
	// DestinationRules too.
	Route bool
	// Reassert: the step re-asserts the generated objects that no weight depends on (the
	// Services through Workloads, the DestinationRules with Route).
	Reassert bool
	// PostRollout: call the post-rollout hooks after saving (their failure is only logged).
	PostRollout bool
	Events      []Event
	Alerts      []AlertMessage
	// Failure names a failure that does not move the phase to Failed (an invalid spec, a
	// primary that cannot become ready while initialising), said once per cause: it is
	// published as dev.siskin.canary.failed, beside its Event and alert. A release that fails
	// is published by its transition to Failed.
	Failure string
	// Next is when the next step is due, from now.
	Next time.Duration
}

// Decide is one step of Flagger's advanceCanary for one canary, without I/O. The order of the
// checks is Flagger's advanceCanary; where Siskin departs from it to fix a known
// gap, the code says so.
func Decide(in StepInput) Step {
	d := &decider{in: in, c: in.Canary, spec: in.Canary.Spec}
	d.out = Step{State: in.State, Next: d.spec.Interval(in.MinInterval)}
	d.out.State.Steps++
	d.out.State.LastStepAt = in.Now
	d.decide()
	if !d.out.Need.Empty() {
		return Step{Need: d.out.Need}
	}
	d.planReassert()
	d.keepCookies()
	d.out.State.NextStepAt = in.Now.Add(d.out.Next)
	return d.out
}

type decider struct {
	in   StepInput
	c    Canary
	spec Spec
	out  Step
}

func (d *decider) st() *State { return &d.out.State }

func (d *decider) id() string { return d.c.Name + "." + d.c.Namespace }

// targetID names the target Deployment as Flagger's messages do.
func (d *decider) targetID() string { return d.spec.TargetRef.Name + "." + d.c.Namespace }

func (d *decider) event(format string, args ...any) {
	d.out.Events = append(d.out.Events, Event{Message: fmt.Sprintf(format, args...)})
}

func (d *decider) warn(format string, args ...any) {
	d.out.Events = append(d.out.Events, Event{Warning: true, Message: fmt.Sprintf(format, args...)})
}

func (d *decider) alert(sev Severity, metadata bool, format string, args ...any) {
	d.out.Alerts = append(d.out.Alerts, AlertMessage{Severity: sev, Message: fmt.Sprintf(format, args...), Metadata: metadata})
}

// alerted says whether this step already has a warning or error alert, which names its cause.
func (d *decider) alerted() bool {
	for _, a := range d.out.Alerts {
		if a.Severity == SeverityError || a.Severity == SeverityWarn {
			return true
		}
	}
	return false
}

// setPhase moves to p, with Flagger's status side effects (setStatusPhase).
func (d *decider) setPhase(p Phase) {
	s := d.st()
	if s.Phase != p {
		s.LastTransitionTime = d.in.Now
	}
	s.Phase = p
	switch p {
	case PhaseProgressing, PhaseWaiting, PhasePromoting, PhaseWaitingPromotion:
	default:
		s.Iterations = 0
	}
	if p == PhaseWaitingPromotion && d.spec.analysis().Iterations > 0 {
		s.Iterations = d.spec.analysis().Iterations - 1
	}
	if p == PhaseInitialized || p == PhaseSucceeded {
		s.LastPromotedSpec = s.LastAppliedSpec
	}
	s.Message = phaseMessages[p]
}

// answered returns the results of a hook type, asking for them when they are not known yet.
// A type with no hooks is answered at once with no results.
func (d *decider) answered(t HookType) ([]HookResult, bool) {
	if len(d.spec.Hooks(t)) == 0 {
		return nil, true
	}
	if r, ok := d.in.Hooks[t]; ok {
		return r, true
	}
	d.out.Need.Hooks = append(d.out.Need.Hooks, t)
	return nil, false
}

func (d *decider) metrics() ([]MetricResult, bool) {
	if len(d.spec.analysis().Metrics) == 0 {
		return nil, true
	}
	if d.in.MetricsDone {
		return d.in.Metrics, true
	}
	d.out.Need.Metrics = true
	return nil, false
}

// gatePassed: every hook of a gate answered OK. The first failure is returned for messages.
func gatePassed(rs []HookResult) (bool, HookResult) {
	for _, r := range rs {
		if !r.OK {
			return false, r
		}
	}
	return true, HookResult{}
}

// rollbackHookFired consults the rollback hooks during an analysis: wait is true while their
// answer is awaited, and fired when one asked for a rollback, which is then started.
func (d *decider) rollbackHookFired() (fired, wait bool) {
	rb, ok := d.answered(HookRollback)
	switch {
	case !ok:
		return false, true
	case rollbackRequested(rb):
		d.manualRollback()
		return true, false
	}
	return false, false
}

// rollbackRequested: a rollback hook that answers OK asks for a rollback.
func rollbackRequested(rs []HookResult) bool {
	return slices.ContainsFunc(rs, func(r HookResult) bool { return r.OK })
}

func (d *decider) newRevision() bool { return d.in.State.SeesNewRevision(d.in.Work) }

// specChanged is Flagger's hasSpecChanged: a template equal to the promoted one is not a new
// revision (a manual rollback must not start a canary).
func specChanged(s State, hash string) bool {
	switch {
	case s.LastAppliedSpec == "":
		return true
	case hash == s.LastPromotedSpec:
		return false
	}
	return hash != s.LastAppliedSpec
}

func configsChanged(old, now map[string]string) bool {
	if len(old) == 0 && len(now) == 0 {
		return false
	}
	return !maps.Equal(old, now)
}

func (d *decider) decide() {
	s := d.st()
	w := d.in.Work
	if s.Phase == "" {
		s.Phase = PhaseInitializing
		s.LastTransitionTime = d.in.Now
		s.Message = phaseMessages[PhaseInitializing]
	}
	if !w.TargetFound {
		s.Message = fmt.Sprintf("target %s %s.%s not found", d.spec.TargetRef.kind(), d.spec.TargetRef.Name, d.c.Namespace)
		d.warn("%s", s.Message)
		return
	}
	d.planCreation()

	if s.Phase == PhaseInitializing {
		d.initialize()
		return
	}
	if s.Phase == PhaseTerminating || s.Phase == PhaseTerminated {
		// The deletion flow (revertOnDeletion) owns the canary now.
		return
	}
	// From here on every step checks the VirtualService, so that a hand edit of the weights is
	// corrected; the other generated objects are re-asserted as planReassert says (Flagger
	// reconciles them all at the start of every tick).
	d.out.Route = true

	newRev := d.newRevision()
	if !s.Phase.Releasing() && !newRev && !s.PromoteRequested {
		if s.Phase == PhaseFailed {
			// Flagger syncs lastAppliedSpec even when failed, so a manual rollback to the
			// promoted revision stays quiet.
			s.LastAppliedSpec = w.TemplateHash
			s.TrackedConfigs = w.TrackedConfigs
		}
		return
	}
	if s.Phase == PhaseInitialized || s.Phase == PhaseSucceeded || s.Phase == PhaseFailed {
		// A promote request on an idle canary means nothing.
		s.PromoteRequested = false
		if !newRev {
			return
		}
	}

	skip := d.spec.SkipsAnalysis()
	if !skip && !w.Primary.Ready {
		if w.Primary.Failed {
			if s.Phase == PhasePromoting || s.Phase == PhaseFinalising {
				d.failedPromotion(w.Primary.Reason)
			} else {
				d.rollback("primary " + w.Primary.Reason)
			}
			return
		}
		s.Message = fmt.Sprintf("waiting for %s to be ready: %s", d.c.Names().Primary, w.Primary.Reason)
		return
	}

	switch s.Phase {
	case PhaseInitialized, PhaseSucceeded, PhaseFailed, PhaseWaiting:
		d.startRelease()
		return
	}

	if (s.Phase == PhaseProgressing || s.Phase == PhaseWaitingPromotion) && newRev {
		d.event("New revision detected! Restarting analysis for %s", d.id())
		s.Routing = AllToPrimary
		s.FailedChecks = 0
		s.Iterations = 0
		s.LastAppliedSpec = w.TemplateHash
		s.TrackedConfigs = w.TrackedConfigs
		s.CanaryNotReadySince = time.Time{}
		d.setPhase(PhaseProgressing)
		return
	}

	if (s.Phase == PhaseProgressing || s.Phase == PhaseWaitingPromotion) && s.primaryRunsApplied(w.PrimaryRevision) {
		// A promotion was written and its step never saved (it crashed in between): the
		// primary already runs the analysed revision. Carry on from there rather than analyse
		// and promote again, and never report the release as anything else.
		d.event("%s already runs the analysed revision, resuming its promotion", d.c.Names().Primary+"."+d.c.Namespace)
		d.setPhase(PhasePromoting)
		return
	}

	// In Finalising all traffic is back on the primary: the canary's pods no longer matter, and
	// failing the release there (as Flagger would) would report a promoted revision as Failed.
	if !w.Canary.Ready && s.Phase != PhaseFinalising {
		d.canaryNotReady()
		return
	}
	s.CanaryNotReadySince = time.Time{}

	if skip {
		s.Routing = AllToPrimary
		d.out.Workloads.Promote = true
		d.out.Workloads.ScaleTarget = ScaleToZero
		d.setPhase(PhaseSucceeded)
		d.out.PostRollout = true
		d.event("Promotion completed! Canary analysis was skipped for %s", d.id())
		d.alert(SeverityInfo, false, "Canary analysis was skipped, promotion finished.")
		return
	}

	if s.Phase == PhaseProgressing || s.Phase == PhaseWaitingPromotion {
		if fired, wait := d.rollbackHookFired(); fired || wait {
			return
		}
		if s.PromoteRequested {
			s.PromoteRequested = false
			d.event("Manual promotion requested, copying %s template spec to %s", d.spec.TargetRef.Name, d.c.Names().Primary)
			d.promote()
			return
		}
	}

	switch s.Phase {
	case PhasePromoting:
		d.promotionTrafficShift()
		return
	case PhaseFinalising:
		d.out.Workloads.ScaleTarget = ScaleToZero
		s.Routing = AllToPrimary
		d.setPhase(PhaseSucceeded)
		d.out.PostRollout = true
		d.event("Promotion completed! Scaling down %s", d.targetID())
		d.alert(SeverityInfo, false, "Canary analysis completed successfully, promotion finished.")
		return
	}

	// Progressing or WaitingPromotion. Flagger checks the threshold here, before this step's
	// analysis; Siskin already rolled back in the step that reached it, so this only fires for
	// a state that was rebuilt or a threshold lowered in flight.
	if s.FailedChecks >= d.spec.Threshold() {
		d.rollback("")
		return
	}
	if !d.analyse() {
		return
	}
	switch d.spec.Strategy() {
	case StrategyABTesting:
		d.runAB()
	case StrategyBlueGreen:
		d.runBlueGreen()
	default:
		d.runCanary()
	}
}

func (k TargetRef) kind() string {
	if k.Kind == "" {
		return "Deployment"
	}
	return k.Kind
}

// planReassert re-asserts the Services (canary, primary and, past the initialisation, apex)
// and the DestinationRules when the shell asks for it, for a new revision (its ports or
// selector may differ) and while initialising, and records when.
func (d *decider) planReassert() {
	s := d.st()
	switch {
	case !d.in.Work.TargetFound, s.Phase == PhaseTerminating, s.Phase == PhaseTerminated:
		return
	case d.in.Reassert, d.in.State.Phase == "", d.in.State.Phase == PhaseInitializing, d.newRevision():
	default:
		return
	}
	d.out.Reassert = true
	d.out.Workloads.EnsureServices = true
	if s.Phase != PhaseInitializing {
		d.out.Workloads.EnsureApex = true
	}
	s.AssertedAt, s.AssertedGeneration = d.in.Now, d.c.Generation
}

// planCreation creates what Flagger creates at every tick when it is missing: the primary
// Deployment and its HPA, in any phase but the deletion flow's.
func (d *decider) planCreation() {
	if s := d.st(); s.Phase == PhaseTerminating || s.Phase == PhaseTerminated {
		return
	}
	d.out.Workloads.CreatePrimary = !d.in.Work.PrimaryFound
	d.out.Workloads.CreatePrimaryHPA = d.in.Work.PrimaryHPAMissing
}

func (d *decider) initialize() {
	s, w := d.st(), d.in.Work
	if !w.PrimaryFound || !w.Primary.Ready {
		reason := "not created yet"
		if w.PrimaryFound {
			reason = w.Primary.Reason
		}
		s.Message = fmt.Sprintf("waiting for %s to be ready: %s", d.c.Names().Primary, reason)
		if w.Primary.Failed {
			// Flagger waits silently for ever (#1663): say it, once per cause.
			d.reportFailure(d.c.Names().Primary+" cannot become ready", reason)
		}
		// Initialisation is not analysis: poll the primary's rollout briskly.
		d.out.Next = min(d.out.Next, 2*time.Second)
		return
	}
	d.out.Workloads.EnsureApex = true
	d.out.Workloads.ScaleTarget = ScaleToZero
	d.out.Route = true
	s.ReportedFailure = ""
	s.Routing = AllToPrimary
	s.FailedChecks = 0
	s.LastAppliedSpec = w.TemplateHash
	s.TrackedConfigs = w.TrackedConfigs
	d.setPhase(PhaseInitialized)
	d.event("Initialization done! %s", d.id())
	d.alert(SeverityInfo, true, "New Deployment detected, initialization completed.")
}

// startRelease is Flagger's checkCanaryStatus for a new revision: the confirm-rollout gate,
// then the canary is scaled up and the phase becomes Progressing. Siskin also consults the
// rollback hooks while Waiting, which Flagger's docs promise and its code does not.
func (d *decider) startRelease() {
	s, w := d.st(), d.in.Work
	// While Waiting, the rollback hooks and the confirm-rollout gate are both asked before
	// either decides, so that each step tells both webhooks where the canary stands.
	var rb []HookResult
	if s.Phase == PhaseWaiting {
		var ok bool
		if rb, ok = d.answered(HookRollback); !ok {
			return
		}
	}
	confirm, ok := d.answered(HookConfirmRollout)
	if !ok {
		return
	}
	if rollbackRequested(rb) {
		d.manualRollback()
		return
	}
	if passed, failed := gatePassed(confirm); !passed && !s.Approved {
		if s.Phase != PhaseWaiting {
			d.event("Halt %s advancement waiting for approval %s", d.id(), failed.Name)
			if !d.muted(HookConfirmRollout, failed.Name) {
				d.alert(SeverityWarn, false, "Canary is waiting for approval.")
			}
		}
		d.setPhase(PhaseWaiting)
		return
	}
	d.event("New revision detected! Scaling up %s", d.targetID())
	if t := s.PendingTrigger; t != nil {
		s.Trigger = t
		d.event("Release started by %s event %s: %s", t.Kind, t.EventID, t.Detail)
	} else {
		s.Trigger = &Trigger{Kind: "change", Detail: "target template changed", At: d.in.Now}
	}
	s.PendingTrigger = nil
	d.alert(SeverityInfo, true, "New revision detected, progressing canary analysis.")
	d.out.Workloads.ScaleTarget = ScaleUp
	s.Routing = AllToPrimary
	s.FailedChecks = 0
	s.Iterations = 0
	s.LastAppliedSpec = w.TemplateHash
	s.TrackedConfigs = w.TrackedConfigs
	s.CanaryNotReadySince = time.Time{}
	s.PromoteRequested = false
	s.Approved = false
	d.setPhase(PhaseProgressing)
}

func (d *decider) muted(t HookType, name string) bool {
	for _, h := range d.spec.Hooks(t) {
		if h.Name == name {
			return h.MuteAlert
		}
	}
	return false
}

// canaryNotReady halts the analysis while the canary rolls out. Siskin consults the rollback
// hooks here too (as Flagger's docs promise) and enforces the progress deadline itself, since a
// Deployment whose pods never start may never report ProgressDeadlineExceeded.
func (d *decider) canaryNotReady() {
	s, w := d.st(), d.in.Work
	if s.Phase == PhaseProgressing || s.Phase == PhaseWaitingPromotion {
		if fired, wait := d.rollbackHookFired(); fired || wait {
			return
		}
	}
	if w.Canary.Failed {
		d.rollback("progress deadline exceeded " + w.Canary.Reason)
		return
	}
	if s.CanaryNotReadySince.IsZero() {
		s.CanaryNotReadySince = d.in.Now
	} else if d.in.Now.Sub(s.CanaryNotReadySince) > d.spec.ProgressDeadline() {
		d.rollback(fmt.Sprintf("progress deadline exceeded canary deployment %s.%s not ready for %s: %s",
			d.spec.TargetRef.Name, d.c.Namespace, d.spec.ProgressDeadline(), w.Canary.Reason))
		return
	}
	s.Message = fmt.Sprintf("waiting for %s to be ready: %s", d.spec.TargetRef.Name, w.Canary.Reason)
	d.event("Halt advancement %s waiting for rollout to finish: %s", d.targetID(), w.Canary.Reason)
}

// analyse runs the pre-rollout hooks on the first step, else the rollout hooks and the
// metrics. A failure counts one failed check; unlike Flagger, reaching the threshold rolls
// back in the step of the threshold-th failure, not the next one as Flagger does. It reports whether the step may go on.
func (d *decider) analyse() bool {
	s := d.st()
	a := d.spec.analysis()
	if !s.analysing(d.spec) {
		pre, ok := d.answered(HookPreRollout)
		if !ok {
			return false
		}
		d.event("Starting canary analysis for %s", d.targetID())
		if passed, failed := gatePassed(pre); !passed {
			d.failCheck("Pre-rollout check %s failed %s", failed.Name, failed.Detail)
			return false
		}
		return true
	}
	hooks, hooksOK := d.answered(HookRollout)
	results, metricsOK := d.metrics()
	if !hooksOK || !metricsOK {
		return false
	}
	if passed, failed := gatePassed(hooks); !passed {
		d.failCheck("Halt %s advancement external check %s failed %s", d.id(), failed.Name, failed.Detail)
		return false
	}
	for i, m := range a.Metrics {
		var r MetricResult
		if i < len(results) {
			r = results[i]
		} else {
			r = MetricResult{Name: m.Name, Err: "no result"}
		}
		if ok, msg := JudgeMetric(d.c, m, r); !ok {
			d.failCheck("%s", msg)
			return false
		}
	}
	return true
}

func (d *decider) failCheck(format string, args ...any) {
	s := d.st()
	s.FailedChecks++
	s.Message = fmt.Sprintf(format, args...)
	d.warn("%s", s.Message)
	if s.FailedChecks >= d.spec.Threshold() {
		d.rollback("")
	}
}

// analysing reports whether a step of a release in analysis runs the rollout hooks and the
// metrics (rather than the pre-rollout hooks of its first step).
func (s State) analysing(spec Spec) bool {
	a := spec.analysis()
	return s.Routing.Canary != 0 || s.Iterations != 0 || (a.Mirror && s.Routing.Mirrored)
}

// WillRoute reports whether a step from this state re-asserts the routes whatever it observes
// (every step past initialisation, until deletion), so the shell can read the routing objects
// alongside the workloads.
func (s State) WillRoute() bool {
	switch s.Phase {
	case "", PhaseInitializing, PhaseTerminating, PhaseTerminated:
		return false
	}
	return true
}

// WillQueryMetrics reports whether a step from this state is likely to ask for metrics, so the
// shell can query them alongside the workload reads instead of after them.
func (s State) WillQueryMetrics(spec Spec) bool {
	return (s.Phase == PhaseProgressing || s.Phase == PhaseWaitingPromotion) && !spec.SkipsAnalysis() &&
		len(spec.analysis().Metrics) > 0 && s.analysing(spec)
}

// nextStepWeight is Flagger's: stepWeight, or the distance to the next rung of stepWeights.
func (d *decider) nextStepWeight(current int) int {
	a := d.spec.analysis()
	if a.StepWeight > 0 || len(a.StepWeights) == 0 {
		return a.StepWeight
	}
	if current == 100 {
		return 1
	}
	for _, rung := range a.StepWeights {
		if rung > current {
			return min(rung-current, 100-current)
		}
	}
	return 0
}

func (d *decider) runCanary() {
	s := d.st()
	a := d.spec.analysis()
	if s.Routing.Canary < d.spec.MaxWeight() {
		if !s.Routing.Mirrored && s.Phase == PhaseProgressing {
			gate, ok := d.answered(HookConfirmTrafficIncrease)
			if !ok {
				return
			}
			if passed, failed := gatePassed(gate); !passed {
				s.Message = fmt.Sprintf("Halt %s advancement waiting for traffic increase approval %s", d.id(), failed.Name)
				d.event("%s", s.Message)
				if !d.muted(HookConfirmTrafficIncrease, failed.Name) {
					d.alert(SeverityWarn, false, "Canary traffic increase is waiting for approval.")
				}
				return
			}
		}
		step := d.nextStepWeight(s.Routing.Canary)
		if a.Mirror && s.Routing.Canary == 0 {
			if !s.Routing.Mirrored {
				s.Routing = Routing{Primary: 100, Canary: 0, Mirrored: true}
				d.event("Start traffic mirroring for %s", d.id())
				s.Message = "mirroring traffic to the canary"
				return
			}
			s.Routing = Routing{Primary: 100 - step, Canary: step}
		} else {
			s.Routing = Routing{Primary: max(s.Routing.Primary-step, 0), Canary: min(s.Routing.Canary+step, 100)}
		}
		d.event("Advance %s canary weight %d", d.id(), s.Routing.Canary)
		s.Message = fmt.Sprintf("canary weight %d", s.Routing.Canary)
		return
	}
	d.promoteOnceConfirmed()
}

func (d *decider) runAB() {
	s := d.st()
	n := d.spec.analysis().Iterations
	if n > s.Iterations {
		s.Routing = Routing{Primary: 0, Canary: 100}
		s.Iterations++
		d.event("Advance %s canary iteration %d/%d", d.id(), s.Iterations, n)
		s.Message = fmt.Sprintf("iteration %d/%d", s.Iterations, n)
		return
	}
	d.promoteOnceConfirmed()
}

func (d *decider) runBlueGreen() {
	s := d.st()
	a := d.spec.analysis()
	n := a.Iterations
	if n > s.Iterations {
		if a.Mirror && !s.Routing.Mirrored {
			s.Routing = Routing{Primary: 100, Canary: 0, Mirrored: true}
			d.event("Start traffic mirroring for %s", d.id())
		}
		s.Iterations++
		d.event("Advance %s canary iteration %d/%d", d.id(), s.Iterations, n)
		s.Message = fmt.Sprintf("iteration %d/%d", s.Iterations, n)
		return
	}
	if !d.confirmPromotion() {
		return
	}
	if n == s.Iterations {
		if a.Mirror {
			d.event("Stop traffic mirroring and route all traffic to canary %s", d.id())
		} else {
			d.event("Routing all traffic to canary %s", d.id())
		}
		s.Routing = Routing{Primary: 0, Canary: 100}
		s.Iterations++
		s.Message = "all traffic on the canary"
		return
	}
	d.copyToPrimary()
}

func (d *decider) confirmPromotion() bool {
	s := d.st()
	gate, ok := d.answered(HookConfirmPromotion)
	if !ok {
		return false
	}
	if passed, failed := gatePassed(gate); !passed {
		if s.Phase != PhaseWaitingPromotion {
			d.event("Halt %s advancement waiting for promotion approval %s", d.id(), failed.Name)
			if !d.muted(HookConfirmPromotion, failed.Name) {
				d.alert(SeverityWarn, false, "Canary promotion is waiting for approval.")
			}
		}
		d.setPhase(PhaseWaitingPromotion)
		return false
	}
	return true
}

// promoteOnceConfirmed promotes when the confirm-promotion gate is open.
func (d *decider) promoteOnceConfirmed() {
	if d.confirmPromotion() {
		d.copyToPrimary()
	}
}

func (d *decider) copyToPrimary() {
	d.event("Copying %s template spec to %s", d.targetID(), d.c.Names().Primary+"."+d.c.Namespace)
	d.promote()
}

func (d *decider) promote() {
	d.out.Workloads.Promote = true
	d.setPhase(PhasePromoting)
}

// promotionTrafficShift runs once the primary has rolled out the promoted template.
func (d *decider) promotionTrafficShift() {
	s := d.st()
	step := d.spec.analysis().StepWeightPromotion
	if step <= 0 {
		d.event("Routing all traffic to primary")
		s.Routing = AllToPrimary
		d.setPhase(PhaseFinalising)
		return
	}
	primary := min(s.Routing.Primary+step, 100)
	s.Routing = Routing{Primary: primary, Canary: 100 - primary}
	if primary == 100 {
		d.setPhase(PhaseFinalising)
		return
	}
	d.event("Advance %s primary weight %d", d.id(), primary)
	s.Message = fmt.Sprintf("promoting: primary weight %d", primary)
}

// manualRollback is Flagger's answer to a rollback hook: a Warning event "Rolling back <canary>
// manual webhook invoked", a warn alert, and the rollback.
func (d *decider) manualRollback() {
	d.alert(SeverityWarn, false, "Rolling back manual webhook invoked")
	d.rollback("manual webhook invoked")
}

// rollback is Flagger's: all traffic to the primary, the canary scaled to zero, phase Failed.
// The primary is not touched: it still runs the last promoted revision.
func (d *decider) rollback(reason string) {
	s := d.st()
	if s.FailedChecks >= d.spec.Threshold() {
		d.warn("Rolling back %s failed checks threshold reached %d", d.id(), s.FailedChecks)
		d.alert(SeverityError, false, "Failed checks threshold reached %d", s.FailedChecks)
	}
	if strings.HasPrefix(reason, "progress deadline exceeded") {
		d.warn("Rolling back %s %s", d.id(), reason)
		d.alert(SeverityError, false, "Progress deadline exceeded %s", strings.TrimSpace(strings.TrimPrefix(reason, "progress deadline exceeded")))
	} else if reason != "" {
		d.warn("Rolling back %s %s", d.id(), reason)
	}
	if reason != "" {
		// The status says why, not what the step before was doing.
		d.st().Message = reason
	}
	d.failRelease()
}

// reportFailure says a failure that keeps the phase, once per cause (whatever its changing
// detail, such as replica counts): a Warning Event, an error alert and Step.Failure.
func (d *decider) reportFailure(cause, detail string) {
	s := d.st()
	if s.ReportedFailure == cause {
		return
	}
	s.ReportedFailure = cause
	msg := cause + ": " + detail
	d.warn("Canary %s failed: %s", d.id(), msg)
	d.alert(SeverityError, false, "Canary failed: %s", msg)
	d.out.Failure = msg
}

func (d *decider) failRelease() {
	s := d.st()
	if !d.alerted() {
		// Every failure alerts, naming its cause, including those outside the analysis.
		cause := s.Message
		if cause == "" || cause == phaseMessages[s.Phase] {
			cause = "release failed while " + string(s.Phase)
		}
		d.alert(SeverityError, false, "Canary failed: %s", cause)
	}
	if s.Phase == PhaseWaiting {
		recordRejectedRevision(s, d.in.Work)
	}
	s.Routing = AllToPrimary
	d.out.Route = true
	d.out.Workloads.ScaleTarget = ScaleToZero
	d.out.Workloads.Promote = false
	d.warn("Canary failed! Scaling down %s", d.targetID())
	msg := s.Message
	d.setPhase(PhaseFailed)
	if msg != "" && msg != phaseMessages[PhaseProgressing] {
		s.Message = phaseMessages[PhaseFailed] + " " + msg
	}
	s.FailedChecks = 0
	s.CanaryNotReadySince = time.Time{}
	s.PromoteRequested = false
	d.out.PostRollout = true
}

// recordRejectedRevision records, for a release failed while Waiting, the revision that was
// waiting as the last applied one. A Waiting release has not recorded it yet (Flagger never
// fails a Waiting canary), and without it the next step would take the revision just rolled
// back or aborted for a new one and start it again. Only a newer revision, or a resume,
// starts another release. An observation without the target changes nothing.
func recordRejectedRevision(s *State, w WorkloadObservation) {
	if !w.TargetFound {
		return
	}
	s.LastAppliedSpec, s.TrackedConfigs = w.TemplateHash, w.TrackedConfigs
}

// failedPromotion is Flagger's handleFailedPromotion: the primary broke while taking the new
// revision, so the healthy canary keeps all the traffic and is not scaled down.
func (d *decider) failedPromotion(reason string) {
	s := d.st()
	s.Routing = Routing{Primary: 0, Canary: 100}
	d.setPhase(PhaseFailed)
	s.Message = "Promotion failed, primary not ready: " + reason
	d.warn("%s", s.Message)
	d.alert(SeverityError, false, "Promotion failed, primary not ready: %s", reason)
	d.out.PostRollout = true
}

// keepCookies maintains the session-affinity cookies from the decided routing: a cookie while
// the canary takes traffic; when it stops, the cookie becomes the previous one, to be expired.
func (d *decider) keepCookies() {
	sa := d.spec.analysis().SessionAffinity
	s := d.st()
	if sa == nil {
		return
	}
	if s.Routing.Canary > 0 && s.Routing.Primary > 0 {
		if s.SessionAffinityCookie == "" {
			s.SessionAffinityCookie = sa.CookieName + "=" + d.in.NewCookieValue
		}
		if sa.PrimaryCookieName != "" && s.PrimarySessionAffinityCookie == "" {
			s.PrimarySessionAffinityCookie = sa.PrimaryCookieName + "=" + d.in.NewPrimaryCookieValue
		}
		return
	}
	if s.Routing.Canary == 0 && s.SessionAffinityCookie != "" {
		s.PreviousSessionAffinityCookie = s.SessionAffinityCookie
		s.SessionAffinityCookie = ""
		s.PrimarySessionAffinityCookie = ""
	}
}

// AbortVerdict is what an abort does to a canary.
type AbortVerdict int

const (
	// AbortIgnored: no release is in flight; repeated notifications land here.
	AbortIgnored AbortVerdict = iota
	// Aborted: the release is failed at once.
	Aborted
	// AbortRefused: the primary already runs the new revision (Promoting, Finalising, or a
	// promotion written by a step that crashed before saving). Routing traffic "back to the
	// primary" would keep serving the revision being aborted while the status said Failed,
	// so the abort is refused with a reason; rolling back means deploying the previous
	// revision, which starts a release of its own.
	AbortRefused
)

// AbortRelease is the alert (or manual abort) path: a release in flight whose new revision
// runs only on the canary is failed at once, whatever step it is at. primaryRevision is the
// Revision the primary runs, as just read. Anything else is left alone, so repeated
// notifications are no-ops. The message says why when the verdict is not Aborted.
func AbortRelease(c Canary, s State, primaryRevision, reason string, trigger *Trigger, now time.Time) (Step, AbortVerdict, string) {
	switch {
	case s.Phase.Promoted() || (s.Phase.Abortable() && s.Phase != PhaseWaiting && s.primaryRunsApplied(primaryRevision)):
		return Step{State: s}, AbortRefused, fmt.Sprintf("%s.%s is %s: %s already runs the new revision, and an abort cannot take it back; deploy the previous revision to roll back",
			c.Name, c.Namespace, promotedPhase(s), c.Names().Primary)
	case !s.Phase.Abortable():
		return Step{State: s}, AbortIgnored, fmt.Sprintf("%s.%s is %s: no release to abort", c.Name, c.Namespace, s.Phase)
	}
	d := &decider{in: StepInput{Canary: c, State: s, Now: now}, c: c, spec: c.Spec}
	d.out = Step{State: s, Next: c.Spec.Interval(0)}
	d.out.State.Steps++
	d.out.State.LastStepAt = now
	d.warn("Rolling back %s: %s", d.id(), reason)
	d.alert(SeverityError, false, "Canary aborted: %s", reason)
	d.failRelease()
	d.out.State.Message = "Canary aborted: " + reason
	d.out.State.Trigger = trigger
	d.keepCookies()
	d.out.State.NextStepAt = now.Add(d.out.Next)
	return d.out, Aborted, ""
}

func promotedPhase(s State) Phase {
	if s.Phase.Promoted() {
		return s.Phase
	}
	return PhasePromoting // the step that wrote the promotion did not save it
}
