package functions

import (
	"fmt"
	"slices"
	"time"
)

// The decisions outside a release step, pure like Decide: the manual gates, an invalid spec,
// the repair after a lost save, and the deletion flow. The shell (service.go, abort.go,
// finalize.go) reads, calls one of these, and writes what it returns.

// PromotionGate is the manual Promote: the next step promotes at once. Only a release in
// analysis can be promoted.
func PromotionGate(k Key, st State) (State, error) {
	if st.Phase != PhaseProgressing && st.Phase != PhaseWaitingPromotion {
		return st, fmt.Errorf("%w: %s is %s; only a release in analysis can be promoted", ErrRejected, k, st.Phase)
	}
	st.PromoteRequested = true
	return st, nil
}

// ResumeGate is the manual Resume: a failed release is retried with the same revision
// (Flagger needs a template change for that), a canary waiting for approval goes on.
func ResumeGate(k Key, st State) (State, error) {
	switch st.Phase {
	case PhaseFailed:
		st.LastAppliedSpec = ""
	case PhaseWaiting:
		st.Approved = true
	case PhaseWaitingPromotion:
		st.PromoteRequested = true
	default:
		return st, fmt.Errorf("%w: %s is %s; only a failed or waiting canary can be resumed", ErrRejected, k, st.Phase)
	}
	return st, nil
}

// InvalidSpec is a step of a canary whose spec cannot be honoured: the phase is kept, the
// problem is recorded and said once (an Event when it changes), and the canary is checked
// again after its interval.
func InvalidSpec(st State, problem string, now time.Time, interval time.Duration) Step {
	changed := st.SpecError != problem
	st.SpecError = problem
	st.LastStepAt = now
	st.NextStepAt = now.Add(interval)
	if st.Phase == "" {
		st.Phase = PhaseInitializing
	}
	out := Step{State: st, Next: interval}
	if changed {
		out.Events = []Event{{Warning: true, Message: "Invalid canary spec: " + problem}}
		out.Alerts = []AlertMessage{{Severity: SeverityError, Message: "Invalid canary spec: " + problem}}
		out.Failure = "invalid spec: " + problem
	}
	return out
}

// RepairStep is what a step that lost its save (or its lease) re-asserts from the state that
// won: its routing, and the target scaled down when the release is over. An initialising
// canary has nothing to re-assert.
func RepairStep(st State) (Step, bool) {
	if st.Phase == "" || st.Phase == PhaseInitializing {
		return Step{}, false
	}
	out := Step{State: st, Route: true}
	if st.Phase == PhaseFailed || st.Phase == PhaseSucceeded {
		out.Workloads.ScaleTarget = ScaleToZero
	}
	return out, true
}

// FinalizeAction is what one step of a deleted canary does.
type FinalizeAction int

const (
	// FinalizeForget: nothing to revert (no finalizer); the state is forgotten.
	FinalizeForget FinalizeAction = iota
	// FinalizeStart: the target gets its replicas back; the canary is Terminating.
	FinalizeStart
	// FinalizeWait: the target is not ready yet; look again in a second.
	FinalizeWait
	// FinalizeRestore: the routes go back to what they were before Siskin, the finalizer is
	// removed and the state forgotten.
	FinalizeRestore
)

// finalizeWait bounds how long a deleted canary waits for its target to be ready before the
// routes go back to it anyway (Flagger waits a few backoff steps).
const finalizeWait = time.Minute

// FinalizeDecision is one step of the deletion flow (revertOnDeletion).
type FinalizeDecision struct {
	Action FinalizeAction
	// Step is the state to save and its events, for FinalizeStart.
	Step Step
	// Reason says what FinalizeWait waits for.
	Reason string
}

// Finalize decides one step of a deleted canary. target is the target's readiness, which
// matters (and is read) only once the canary is Terminating.
func Finalize(c Canary, st State, target Readiness, now time.Time) FinalizeDecision {
	switch {
	case !slices.Contains(c.Finalizers, FinalizerName):
		return FinalizeDecision{Action: FinalizeForget}
	case st.Phase != PhaseTerminating:
		st.Phase, st.LastTransitionTime = PhaseTerminating, now
		st.Message = "Canary deleted: restoring the target and the original routes (revertOnDeletion)"
		st.Steps++
		st.LastStepAt = now
		st.NextStepAt = now.Add(time.Second)
		return FinalizeDecision{Action: FinalizeStart, Step: Step{State: st, Next: time.Second,
			Events: []Event{{Message: "Terminating canary " + c.Name + "." + c.Namespace}}}}
	case !target.Ready && now.Sub(st.LastTransitionTime) < finalizeWait:
		return FinalizeDecision{Action: FinalizeWait, Reason: target.Reason}
	}
	return FinalizeDecision{Action: FinalizeRestore}
}

// Suspended is Flagger's spec.suspend: the canary takes no step, whatever its phase.
func Suspended(c Canary) bool { return c.Spec.Suspend }
