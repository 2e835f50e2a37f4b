package functions

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"time"
)

// Phase is Flagger's CanaryPhase.
type Phase string

const (
	PhaseInitializing     Phase = "Initializing"
	PhaseInitialized      Phase = "Initialized"
	PhaseWaiting          Phase = "Waiting"
	PhaseProgressing      Phase = "Progressing"
	PhaseWaitingPromotion Phase = "WaitingPromotion"
	PhasePromoting        Phase = "Promoting"
	PhaseFinalising       Phase = "Finalising"
	PhaseSucceeded        Phase = "Succeeded"
	PhaseFailed           Phase = "Failed"
	PhaseTerminating      Phase = "Terminating"
	PhaseTerminated       Phase = "Terminated"
)

// Phases lists every phase the step machine can reach, in the order of a release.
var Phases = []Phase{PhaseInitializing, PhaseInitialized, PhaseWaiting, PhaseProgressing,
	PhaseWaitingPromotion, PhasePromoting, PhaseFinalising, PhaseSucceeded, PhaseFailed,
	PhaseTerminating, PhaseTerminated}

// Releasing reports whether a release is in flight: an alert can abort it, and ticks run it
// at its analysis interval.
func (p Phase) Releasing() bool {
	return slices.Contains([]Phase{PhaseWaiting, PhaseProgressing, PhaseWaitingPromotion,
		PhasePromoting, PhaseFinalising}, p)
}

// Abortable lists the phases an alert aborts: a release whose new revision runs only on the
// canary.
func (p Phase) Abortable() bool {
	return slices.Contains([]Phase{PhaseProgressing, PhaseWaiting, PhaseWaitingPromotion}, p)
}

// Promoted lists the phases in which the primary already runs the new revision.
func (p Phase) Promoted() bool { return p == PhasePromoting || p == PhaseFinalising }

// Revision names what a Deployment runs: its pod template hash, and the checksums of the
// ConfigMaps and Secrets it tracks. The primary is annotated with the Revision it was given.
func Revision(templateHash string, configs map[string]string) string {
	if len(configs) == 0 {
		return templateHash
	}
	keys := slices.Sorted(maps.Keys(configs))
	h := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%s=%s\n", k, configs[k])
	}
	return templateHash + "+" + hex.EncodeToString(h.Sum(nil)[:8])
}

// AppliedRevision is the Revision under analysis (or last analysed).
func (s State) AppliedRevision() string { return Revision(s.LastAppliedSpec, s.TrackedConfigs) }

// primaryRunsApplied reports whether the observed primary already carries the revision under
// analysis: a promotion was written, and its step did not save (a crash), or is being saved.
func (s State) primaryRunsApplied(primaryRevision string) bool {
	return primaryRevision != "" && s.LastAppliedSpec != "" && primaryRevision == s.AppliedRevision()
}

// Routing is what the VirtualService must say. Siskin's state is the truth for it; the live
// object is re-asserted to it on every step.
type Routing struct {
	Primary  int  `json:"primary"`
	Canary   int  `json:"canary"`
	Mirrored bool `json:"mirrored,omitempty"`
}

// AllToPrimary is the routing of a canary at rest.
var AllToPrimary = Routing{Primary: 100, Canary: 0}

// State is one canary's release state, kept in Redis and mirrored to the Canary's status.
type State struct {
	// Version is bumped by every save; a save that does not start from the stored version
	// loses (compare-and-set).
	Version int64 `json:"version"`

	Phase              Phase             `json:"phase"`
	Routing            Routing           `json:"routing"`
	FailedChecks       int               `json:"failedChecks"`
	Iterations         int               `json:"iterations"`
	LastAppliedSpec    string            `json:"lastAppliedSpec,omitempty"`
	LastPromotedSpec   string            `json:"lastPromotedSpec,omitempty"`
	TrackedConfigs     map[string]string `json:"trackedConfigs,omitempty"`
	LastTransitionTime time.Time         `json:"lastTransitionTime"`

	SessionAffinityCookie         string `json:"sessionAffinityCookie,omitempty"`
	PrimarySessionAffinityCookie  string `json:"primarySessionAffinityCookie,omitempty"`
	PreviousSessionAffinityCookie string `json:"previousSessionAffinityCookie,omitempty"`

	// Message is the last thing that happened, as a user should read it.
	Message string `json:"message,omitempty"`
	// Trigger is the event that started the current release, or that aborted it.
	Trigger *Trigger `json:"trigger,omitempty"`
	// PendingTrigger is the event that changed the target; the step that starts the release
	// makes it the Trigger.
	PendingTrigger *Trigger `json:"pendingTrigger,omitempty"`
	// ReportedFailure is the failure that keeps the phase (a primary that cannot become ready
	// while initialising) as last reported, so that it is reported once per cause.
	ReportedFailure string `json:"reportedFailure,omitempty"`
	// CanaryNotReadySince starts the progress deadline for a canary that never becomes ready,
	// independently of the Deployment's own conditions (a departure from Flagger: the README's
	// "Progress deadline enforced by Siskin itself").
	CanaryNotReadySince time.Time `json:"canaryNotReadySince,omitempty"`
	// PromoteRequested is set by a manual promote: the next step skips the remaining analysis.
	PromoteRequested bool `json:"promoteRequested,omitempty"`
	// Approved is set by a manual resume of a Waiting canary: the confirm-rollout gate is
	// passed once.
	Approved bool `json:"approved,omitempty"`
	// Steps counts the steps taken, for tests and for the CLI.
	Steps int64 `json:"steps"`
	// LastStepAt is when the last step ran.
	LastStepAt time.Time `json:"lastStepAt"`
	// NextStepAt is when the next step is due. It is saved with the step that decided it, so
	// it is the truth; the schedule in Redis is an index of it that can lag or be rebuilt.
	NextStepAt time.Time `json:"nextStepAt,omitempty"`
	// SpecError is why the Canary's spec cannot be honoured, if it cannot.
	SpecError string `json:"specError,omitempty"`
	// Release names the release the history files this state's steps under.
	Release string `json:"release,omitempty"`
	// AssertedAt is when a step last re-asserted the generated objects no weight depends on
	// (the Services and the DestinationRules), for the Canary's AssertedGeneration.
	AssertedAt         time.Time `json:"assertedAt,omitempty"`
	AssertedGeneration int64     `json:"assertedGeneration,omitempty"`
	// RoutesVersion is the resourceVersion of the VirtualService as the step that saved this
	// state left it: the next step, on whichever process, knows whether a copy it kept is
	// still the live one.
	RoutesVersion string `json:"routesVersion,omitempty"`
}

// ReassertDue reports whether a step at now re-asserts the generated objects that no weight
// depends on: the canary, primary and apex Services and the DestinationRules. Between two
// re-assertions their hand edits arrive as events and are put back at once (restore), so a
// step re-asserts them only every resync (0: every step, as Flagger does), after a change of
// the Canary's spec, and when it never did. The VirtualService is checked at every step.
func (s State) ReassertDue(c Canary, now time.Time, resync time.Duration) bool {
	return resync <= 0 || s.AssertedAt.IsZero() || s.AssertedGeneration != c.Generation ||
		now.Sub(s.AssertedAt) >= resync || now.Before(s.AssertedAt)
}

// Due reports whether the next step may run at now. A state that never saved a due time (a
// new canary, or one rebuilt after Redis lost it) is due.
func (s State) Due(now time.Time) bool { return !s.NextStepAt.After(now) }

// SeesNewRevision reports whether the target, as observed, carries a revision the state has
// not taken into account: a template or tracked config that differs from the last applied
// one. At rest, the promoted template coming back is not one (Flagger's hasSpecChanged: a
// manual rollback must not start a release); during an analysis it is, since the revision
// under analysis is no longer the one that would be promoted.
func (s State) SeesNewRevision(w WorkloadObservation) bool {
	if !w.TargetFound {
		return false
	}
	if configsChanged(s.TrackedConfigs, w.TrackedConfigs) {
		return true
	}
	if s.Phase == PhaseProgressing || s.Phase == PhaseWaitingPromotion {
		return w.TemplateHash != s.LastAppliedSpec
	}
	return specChanged(s, w.TemplateHash)
}

// CanaryWeight is the canary weight Flagger shows in status.
func (s State) CanaryWeight() int { return s.Routing.Canary }

// Status renders the state with Flagger's status fields.
func (s State) Status() Status {
	st := Status{
		Phase:                         s.Phase,
		FailedChecks:                  s.FailedChecks,
		CanaryWeight:                  s.Routing.Canary,
		Iterations:                    s.Iterations,
		TrackedConfigs:                s.TrackedConfigs,
		LastAppliedSpec:               s.LastAppliedSpec,
		LastPromotedSpec:              s.LastPromotedSpec,
		LastTransitionTime:            s.LastTransitionTime,
		SessionAffinityCookie:         s.SessionAffinityCookie,
		PrimarySessionAffinityCookie:  s.PrimarySessionAffinityCookie,
		PreviousSessionAffinityCookie: s.PreviousSessionAffinityCookie,
		Message:                       s.Message,
		Trigger:                       s.Trigger,
		SpecError:                     s.SpecError,
	}
	st.Conditions = []Condition{promotedCondition(s.Phase, s.Message, s.LastTransitionTime)}
	if s.SpecError != "" {
		st.Conditions = append(st.Conditions, Condition{Type: "Valid", Status: "False", Reason: "InvalidSpec",
			Message: s.SpecError, LastUpdateTime: s.LastStepAt, LastTransitionTime: s.LastStepAt})
	}
	return st
}

// promotedCondition is Flagger's single "Promoted" condition (MakeStatusConditions).
func promotedCondition(p Phase, msg string, at time.Time) Condition {
	status := "Unknown"
	switch p {
	case PhaseInitialized, PhaseSucceeded:
		status = "True"
	case PhaseFailed:
		status = "False"
	}
	if msg == "" {
		msg = phaseMessages[p]
	}
	return Condition{Type: "Promoted", Status: status, Reason: string(p), Message: msg,
		LastUpdateTime: at, LastTransitionTime: at}
}

// Flagger's condition messages per phase.
var phaseMessages = map[Phase]string{
	PhaseInitializing:     "New Deployment detected, starting initialization.",
	PhaseInitialized:      "Deployment initialization completed.",
	PhaseWaiting:          "Waiting for approval.",
	PhaseProgressing:      "New revision detected, progressing canary analysis.",
	PhasePromoting:        "Canary analysis completed, starting primary rolling update.",
	PhaseFinalising:       "Canary analysis completed, routing all traffic to primary.",
	PhaseSucceeded:        "Canary analysis completed successfully, promotion finished.",
	PhaseFailed:           "Canary analysis failed, Deployment scaled to zero.",
	PhaseWaitingPromotion: "Waiting for approval.",
}

// AbortLostByRedis reports whether the Canary's status records an abort that the state read
// from Redis does not: Redis failed over to a replica that had not yet received the abort's
// save (replication is asynchronous). The status, written before the abort was acknowledged,
// then wins, and the state is rebuilt from it; otherwise the release would carry on from the
// replica's older state.
func AbortLostByRedis(st State, status Status) bool {
	t := status.Trigger
	return status.Phase == PhaseFailed && t != nil && (t.Kind == "alert" || t.Kind == "manual") &&
		st.Phase.Abortable() && status.LastAppliedSpec == st.LastAppliedSpec && t.At.After(st.LastTransitionTime)
}

// RebuildState recovers the state of a canary whose Redis state was lost, from what the cluster
// still says: the Canary's status and the live VirtualService routing (if found).
func RebuildState(st Status, live Routing, liveFound bool) State {
	s := State{
		Phase:                         st.Phase,
		FailedChecks:                  st.FailedChecks,
		Iterations:                    st.Iterations,
		LastAppliedSpec:               st.LastAppliedSpec,
		LastPromotedSpec:              st.LastPromotedSpec,
		TrackedConfigs:                st.TrackedConfigs,
		LastTransitionTime:            st.LastTransitionTime,
		SessionAffinityCookie:         st.SessionAffinityCookie,
		PrimarySessionAffinityCookie:  st.PrimarySessionAffinityCookie,
		PreviousSessionAffinityCookie: st.PreviousSessionAffinityCookie,
		Message:                       st.Message,
		Trigger:                       st.Trigger,
		Routing:                       Routing{Primary: 100 - st.CanaryWeight, Canary: st.CanaryWeight},
	}
	if s.Phase == "" {
		s.Phase = PhaseInitializing
	}
	// The live VirtualService is Flagger's own source of truth for weights; prefer it while a
	// release is in flight so a step that acted but did not save is not repeated.
	if liveFound && s.Phase.Releasing() {
		s.Routing = live
	}
	return s
}
