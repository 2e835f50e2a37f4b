package functions

import (
	"context"
	"time"
)

// The adapters' contracts, as the use cases need them. Each adapter package implements one or
// two of them with a concrete type; main wires them.

// Store keeps release state, the due schedule, leases and event dedupe (package state).
type Store interface {
	// Load returns ErrNotFound when Redis has no state for the canary.
	Load(ctx context.Context, k Key) (State, error)
	// Save writes next if the stored version still equals next.Version (0: nothing stored)
	// and, when lease is not nil, the lease is still held; it returns the saved state, whose
	// Version is next.Version+1. A stale writer gets ErrConflict, a lost lease ErrLeaseLost.
	// A save whose outcome is unknown (a timeout) is read back before it is reported failed.
	Save(ctx context.Context, k Key, next State, lease Lease) (State, error)
	// Delete forgets the canary's state and schedule.
	Delete(ctx context.Context, k Key) error
	// Claim takes the canary's lease for ttl; ErrBusy when another holder has it.
	Claim(ctx context.Context, k Key, ttl time.Duration) (Lease, error)
	// Seize takes the canary's lease for ttl whoever holds it: an abort pre-empts a step in
	// flight, which finds its lease lost at its next check and writes nothing more.
	Seize(ctx context.Context, k Key, ttl time.Duration) (Lease, error)
	// Schedule sets when the canary's next step is due. releasing marks a release in flight,
	// which keeps a tick working until its window closes.
	Schedule(ctx context.Context, k Key, at time.Time, releasing bool) error
	// Due lists up to limit canaries whose step is due at now, earliest first.
	Due(ctx context.Context, now time.Time, limit int) ([]Key, error)
	// NextDue is the earliest scheduled step (of releasing canaries only, if releasingOnly).
	NextDue(ctx context.Context, releasingOnly bool) (Key, time.Time, bool, error)
	// DueAt is when the canary's next step is scheduled.
	DueAt(ctx context.Context, k Key) (time.Time, bool, error)
	// SaveReplicated is Save that also waits, briefly, for a replica to have the write when
	// Redis has replicas, so that a failover right after does not lose it (aborts use it).
	SaveReplicated(ctx context.Context, k Key, next State, lease Lease) (State, error)
	// BeginDispatch starts a dispatcher for scope, dispatching until until, and returns its
	// generation; DispatchGeneration is the newest one's. An older dispatcher stops when it
	// sees a newer. EndDispatch says dispatcher gen stopped early. ReserveDispatch reports
	// whether no dispatcher runs past dueAt, and if so records one as running until until.
	BeginDispatch(ctx context.Context, scope string, until time.Time) (int64, error)
	DispatchGeneration(ctx context.Context, scope string) (int64, error)
	EndDispatch(ctx context.Context, scope string, gen int64) error
	ReserveDispatch(ctx context.Context, scope string, dueAt, until time.Time) (bool, error)
	// Postpone moves a scheduled canary's next step to at (releasing or not, as it was).
	Postpone(ctx context.Context, k Key, at time.Time) error
	// FirstSeen records an event id for ttl and reports whether this is its first sighting.
	FirstSeen(ctx context.Context, id string, ttl time.Duration) (bool, error)
	// Forget removes an event id recorded by FirstSeen, so a failed delivery can be retried.
	Forget(ctx context.Context, id string) error
	// Seen reports whether FirstSeen recorded id and its ttl has not run out.
	Seen(ctx context.Context, id string) (bool, error)
}

// Lease is a claim on one canary. Token grows with every claim; Save and Renew check that the
// lease still holds it, so a holder that stalled past its lease cannot write.
type Lease interface {
	Token() int64
	// Renew extends the lease to ttl from now if it is still held; ErrLeaseLost otherwise.
	Renew(ctx context.Context, ttl time.Duration) error
	Release(ctx context.Context) error
}

// Readiness of one Deployment, with Flagger's retriable / non-retriable distinction.
type Readiness struct {
	Ready bool `json:"ready"`
	// Failed: not ready and will not become ready (ProgressDeadlineExceeded, or unavailable
	// past the progress deadline).
	Failed bool   `json:"failed,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// WorkloadObservation is what the cluster says about a canary's Deployments.
type WorkloadObservation struct {
	TargetFound bool `json:"targetFound"`
	// TemplateHash is the hash of the target's pod template (Flagger's lastAppliedSpec).
	TemplateHash string `json:"templateHash"`
	// TrackedConfigs are the checksums of the ConfigMaps and Secrets the target references.
	TrackedConfigs map[string]string `json:"trackedConfigs,omitempty"`
	// TargetReplicas is the target's spec.replicas.
	TargetReplicas int32     `json:"targetReplicas"`
	Canary         Readiness `json:"canary"` // the target Deployment
	PrimaryFound   bool      `json:"primaryFound"`
	Primary        Readiness `json:"primary"`
	// PrimaryHPAMissing: the autoscalerRef HPA exists and its -primary copy does not.
	PrimaryHPAMissing bool `json:"primaryHPAMissing,omitempty"`
	// PrimaryRevision is the Revision the primary was last given (empty when unknown, as for
	// a primary Siskin did not create).
	PrimaryRevision string `json:"primaryRevision,omitempty"`
	// Images are the target's container images, name -> reference.
	Images map[string]string `json:"images,omitempty"`
}

// WorkloadPlan is what a step asks of the workloads, all idempotent.
type WorkloadPlan struct {
	// CreatePrimary creates the missing primary Deployment from the target (its tracked
	// configs copied to -primary first), as Flagger does at every tick; CreatePrimaryHPA the
	// missing primary copy of the autoscalerRef HPA. Both run before the rest of the plan.
	CreatePrimary    bool
	CreatePrimaryHPA bool
	// EnsureServices reconciles the canary and primary Services.
	EnsureServices bool
	// EnsureApex reconciles the apex Service (after the primary is ready).
	EnsureApex bool
	// ScaleTarget: ScaleNone, ScaleToZero (canary down), ScaleUp (canary up for analysis).
	ScaleTarget Scale
	// Promote copies the target's template (and tracked configs) to the primary.
	Promote bool
	// PromoteRevision is the Revision the analysis approved: the promotion happens only if
	// the target still carries it, else it fails with ErrRevisionChanged. The shell sets it
	// from the state.
	PromoteRevision string
}

type Scale int

const (
	ScaleNone Scale = iota
	ScaleUp
	ScaleToZero
)

// TokenIdentity is who a reviewed bearer token belongs to, and the audiences it was
// accepted for.
type TokenIdentity struct {
	User      string
	Audiences []string
}

// StepDispatcher sends one canary's due step as a request of its own (a step CloudEvent to
// the Service), so that Knative spreads the steps over pods (package analysis).
//
// WakeDispatcher starts a dispatcher (a tick of its own, through the same sink) when a release
// began or went on between pings with none running: the request lasts the dispatcher's window.
type StepDispatcher interface {
	DispatchStep(ctx context.Context, k Key, dueAt time.Time) error
	WakeDispatcher(ctx context.Context, id string) error
}

// PrimaryRevisions reads the Revision the primary Deployment runs, for an abort, which does
// not observe the workloads (package deploy).
type PrimaryRevisions interface {
	PrimaryRevision(ctx context.Context, c Canary) (string, error)
}

// Workloads is the Kubernetes side (package deploy).
type Workloads interface {
	ListCanaries(ctx context.Context, namespace string) ([]Canary, error)
	GetCanary(ctx context.Context, k Key) (Canary, error)
	// ObserveWorkloads reads the target and primary Deployments and their configs, and
	// reconciles the canary and primary Services and the primary Deployment (created if
	// missing) as Flagger does at the start of every tick.
	ObserveWorkloads(ctx context.Context, c Canary) (WorkloadObservation, error)
	ApplyWorkloads(ctx context.Context, c Canary, p WorkloadPlan) error
	WriteStatus(ctx context.Context, c Canary, st Status) error
	RecordEvent(ctx context.Context, c Canary, e Event) error
}

// RoutePlan is the routing a step wants, plus the session-affinity cookies that shape it.
type RoutePlan struct {
	// WeightsOnly reconciles the VirtualService alone: the DestinationRules were asserted by
	// an earlier step, and their hand edits arrive as events.
	WeightsOnly                   bool
	Routing                       Routing
	SessionAffinityCookie         string
	PrimarySessionAffinityCookie  string
	PreviousSessionAffinityCookie string
}

// Router is one traffic provider: the objects a canary's traffic goes through, chosen by
// spec.provider from Deps.Routers (package istio: a VirtualService and two DestinationRules).
// To add a provider, implement Router in a package of its own and register it in serve.go;
// docs/architecture.md has the steps.
type Router interface {
	// ApplyRoutes reconciles the routing objects to the plan; a hand edit is overwritten.
	ApplyRoutes(ctx context.Context, c Canary, p RoutePlan) error
	// ObserveRoutes reads the live weights; found is false when there is no route yet.
	ObserveRoutes(ctx context.Context, c Canary) (r Routing, found bool, err error)
	// Finalize restores the routing Siskin took over, or removes its own (revertOnDeletion).
	Finalize(ctx context.Context, c Canary) error
}

// RouteValidator is a Router with spec rules of its own: what it cannot express becomes the
// Canary's invalid-spec status instead of being ignored.
type RouteValidator interface {
	ValidateRoutes(c Canary) []string
}

// RoutesReader is a Router that can read the live routing objects ahead of the decision, so a
// step reads them alongside the workloads and the metrics, and the correction after the
// decision starts from that read instead of reading again.
type RoutesReader interface {
	// rules reads the DestinationRules too, for a step that will re-assert them. version is
	// State.RoutesVersion: a copy of the VirtualService at that version, if the Router keeps
	// one, needs no read.
	ReadRoutes(ctx context.Context, c Canary, rules bool, version string) LiveRoutes
}

// RouteVersions is a Router that can tell the resourceVersion of a canary's VirtualService as
// it last wrote or read it ("" if it does not know), to be saved in State.RoutesVersion.
type RouteVersions interface {
	RoutesVersion(c Canary) string
}

// ObjectFacts are what a step's gate reads from an object an event carried.
type ObjectFacts struct {
	Kind       string
	Generation int64
	Deleting   bool
	// TemplateHash is a Deployment's, as WorkloadObservation.TemplateHash.
	TemplateHash string
	// Ready is a Deployment's readiness, by the Canary's threshold for the primary or the
	// target, as WorkloadObservation's Primary and Canary say it.
	Ready bool
}

// EventObjectReader is a Workloads that can read the facts of a Canary or a Deployment that
// an event carried (ApiServerSource's Resource mode), so that the event's gate needs no read.
type EventObjectReader interface {
	// FactsOf decodes object, an object c depends on (or c itself); ok is false for an
	// object it cannot read or of another kind.
	FactsOf(c Canary, object []byte) (f ObjectFacts, ok bool)
}

// EventRoutesChecker is a Router that can tell from a routing object an event carried
// (ApiServerSource's Resource mode) whether it is already as planned, without reading it.
type EventRoutesChecker interface {
	AsPlanned(c Canary, p RoutePlan, object []byte) bool
	// WeightsAsPlanned judges the weights alone, for a VirtualService known only by its owner.
	WeightsAsPlanned(p RoutePlan, object []byte) bool
}

// LiveRoutes are routing objects read ahead; Apply is ApplyRoutes from them.
type LiveRoutes interface {
	Apply(ctx context.Context, p RoutePlan) error
}

// MetricResult is one metric's value for a step.
type MetricResult struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	// NoData: the query returned nothing or NaN.
	NoData bool `json:"noData,omitempty"`
	// Err is a query or template error (counts as a failed check).
	Err string `json:"err,omitempty"`
}

// Metrics queries a canary's metrics (package analysis). Results come back in the order of
// spec.analysis.metrics; queries run concurrently.
type Metrics interface {
	QueryMetrics(ctx context.Context, c Canary) []MetricResult
}

// HookCall is what a webhook is told.
type HookCall struct {
	Phase    Phase
	Checksum string
}

// HookResult is one webhook's answer. OK means HTTP status <= 202.
type HookResult struct {
	Name string `json:"name"`
	OK   bool   `json:"ok"`
	// Detail is the response body or the transport error when not OK.
	Detail string `json:"detail,omitempty"`
}

// Hooks calls webhooks with Flagger's payload (package analysis). Hooks of one call run in
// order and stop at the first failure when stopAtFailure.
type Hooks interface {
	CallHooks(ctx context.Context, c Canary, hooks []Webhook, call HookCall, stopAtFailure bool) []HookResult
}

// Event is a Kubernetes Event with Flagger's reason "Synced", also sent to event webhooks.
type Event struct {
	Warning bool
	Message string
}

// AlertMessage is a notification for the canary's AlertProviders.
type AlertMessage struct {
	Severity Severity
	Message  string
	// Metadata adds Flagger's target, threshold and routing fields.
	Metadata bool
}

// Alerter sends alerts through AlertProviders (package analysis).
type Alerter interface {
	SendAlerts(ctx context.Context, c Canary, msgs []AlertMessage)
}
