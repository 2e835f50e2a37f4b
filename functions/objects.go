package functions

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ObjectRef names an object an ApiServerSource event is about.
type ObjectRef struct {
	Group     string `json:"group,omitempty"`
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Deleted: the event says the object is gone.
	Deleted bool `json:"deleted,omitempty"`
	// Object is the object as the event carried it (ApiServerSource's Resource mode), for the
	// kinds whose events a step can judge without reading the object again; nil otherwise.
	Object []byte `json:"-"`
	// Owner is the Canary that controls the object, when the event carried it.
	Owner string `json:"owner,omitempty"`
}

func (o ObjectRef) String() string {
	kind := o.Kind
	if o.Group != "" {
		kind += "." + o.Group
	}
	return kind + " " + o.Namespace + "/" + o.Name
}

// objectEventTTL is how long an object event's id is remembered: ApiServerSource retries
// within minutes.
const objectEventTTL = 10 * time.Minute

// ObjectChanged reacts at once to a change of an object a canary depends on (a Knative
// ApiServerSource event), instead of waiting for a tick:
//
//   - a Canary created or changed is stepped if it is not initialised yet, being deleted, due,
//     or its target carries a new revision; a Canary deleted is forgotten;
//   - a target Deployment with a new revision starts a release or restarts the analysis;
//   - a primary Deployment matters while the canary initialises (it waits for it);
//   - a ConfigMap or Secret the target references (config tracking) with new data is a new
//     revision, as a template change is;
//   - a generated VirtualService, DestinationRule or Service edited by hand is put back to what
//     the saved state says, without a step.
//
// It never steps a canary early otherwise: a duplicated event, Siskin's own writes coming
// back, or a status change of a rollout does nothing. A repeated event id is acknowledged and
// ignored. A canary whose step is running is reported busy, so the sender retries and the
// change is not missed.
func (s *Service) ObjectChanged(ctx context.Context, obj ObjectRef, eventID string) ([]StepReport, error) {
	if s.cfg.Namespace != "" && obj.Namespace != s.cfg.Namespace {
		return nil, nil
	}
	if eventID != "" {
		first, err := s.d.Store.FirstSeen(ctx, "object:"+eventID, objectEventTTL)
		if err != nil {
			return nil, fmt.Errorf("dedupe event %s: %w", eventID, err)
		}
		if !first {
			return nil, nil
		}
	}
	reps, err := s.objectChanged(ctx, obj)
	if err != nil && eventID != "" {
		// Let the sender's retry through; the gates keep it from stepping twice.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if ferr := s.d.Store.Forget(fctx, "object:"+eventID); ferr != nil {
			s.log.WarnContext(ctx, "forget event after a failure", "event", eventID, "err", ferr)
		}
	}
	return reps, err
}

func (s *Service) objectChanged(ctx context.Context, obj ObjectRef) ([]StepReport, error) {
	if obj.Group == "flagger.app" && obj.Kind == "Canary" {
		r, settled, err := s.settleOrStep(ctx, Canary{Key: Key{Namespace: obj.Namespace, Name: obj.Name}}, causeCanary, obj.Object)
		if !settled {
			// Created, changed or deleted: what it depends on may have changed with it. Its
			// own status writes, the most frequent Canary events, settle and keep the index.
			s.invalidateDependents(ctx, obj.Namespace)
		}
		return []StepReport{r}, err
	}
	if cause, ok := ownedCause(obj); ok {
		// An object Siskin created (its VirtualService, most often its own weight change coming
		// back, or its primary Deployment rolling out): its Canary is known without listing them.
		r, _, err := s.settleOrStep(ctx, Canary{Key: Key{Namespace: obj.Namespace, Name: obj.Owner}}, cause, obj.Object)
		return []StepReport{r}, err
	}
	if config := trackedConfigKey(obj); config != "" {
		return s.configChanged(ctx, obj, config)
	}
	deps, err := s.dependentsOf(ctx, obj)
	if err != nil {
		return nil, err
	}
	var (
		reps []StepReport
		errs []error
	)
	for _, d := range deps {
		r, settled, err := s.settleOrStep(ctx, d.canary, d.cause, obj.Object)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !settled {
			reps = append(reps, r)
		}
	}
	return reps, errors.Join(errs...)
}

// configChanged steps the canaries whose targets use a ConfigMap or Secret that changed. Which
// configs a target uses is in each canary's saved state, so this one lists the Canaries.
func (s *Service) configChanged(ctx context.Context, obj ObjectRef, config string) ([]StepReport, error) {
	cs, err := s.d.Workloads.ListCanaries(ctx, obj.Namespace)
	if err != nil {
		return nil, fmt.Errorf("list canaries in %s: %w", obj.Namespace, err)
	}
	var (
		reps []StepReport
		errs []error
	)
	for _, c := range cs {
		cause, ok, err := s.tracks(ctx, c.Key, config)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !ok {
			continue
		}
		r, settled, err := s.settleOrStep(ctx, c, cause, obj.Object)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !settled {
			reps = append(reps, r)
		}
	}
	return reps, errors.Join(errs...)
}

// ownedCause is how a canary depends on obj when the event named the Canary that controls it:
// Siskin controls one route (a VirtualService, or an HTTPRoute with the Gateway API) and one
// Deployment of each canary, its apex route and its primary.
func ownedCause(obj ObjectRef) (changeCause, bool) {
	switch {
	case obj.Owner == "" || obj.Deleted:
		return 0, false
	case obj.Group == "networking.istio.io" && obj.Kind == "VirtualService",
		obj.Group == "gateway.networking.k8s.io" && obj.Kind == "HTTPRoute":
		return causeRoutes, true
	case obj.Group == "apps" && obj.Kind == "Deployment":
		return causePrimary, true
	}
	return 0, false
}

// trackedConfigKey is the key under which a canary's state tracks obj when obj is a ConfigMap
// or a Secret ("configmap/<name>", "secret/<name>"), or "" for other objects.
func trackedConfigKey(obj ObjectRef) string {
	if obj.Group != "" || (obj.Kind != "ConfigMap" && obj.Kind != "Secret") {
		return ""
	}
	return strings.ToLower(obj.Kind) + "/" + obj.Name
}

// tracks reports whether the canary's target referenced the config when it was last observed:
// only then can the config's change be a new revision. A config the target starts to use comes
// with a template change, which has an event of its own. ConfigMaps that change all the time
// (leader elections, caches) thus cost a Redis read per canary in their namespace, and no
// Kubernetes request.
func (s *Service) tracks(ctx context.Context, k Key, config string) (changeCause, bool, error) {
	st, err := s.d.Store.Load(ctx, k)
	if errors.Is(err, ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("load state of %s: %w", k, err)
	}
	_, ok := st.TrackedConfigs[config]
	return causeTarget, ok, nil
}

// changeCause is what changed, for the gate of a step an object event woke.
type changeCause int

const (
	causeCanary changeCause = iota
	causeTarget
	causePrimary
	causeRoutes
	causeServices
)

// dependsOn reports whether c depends on obj, and how.
func dependsOn(c Canary, obj ObjectRef) (changeCause, bool) {
	cause, ok := dependencies(c)[objectIndexKey(obj.Group, obj.Kind, obj.Name)]
	return cause, ok
}

// StepEventType is the CloudEvent type of one due step, from the dispatcher to the Service.
const StepEventType = "dev.siskin.canary.step"

// WakeEventType is the CloudEvent type that starts a dispatcher, as a ping does, sent when a
// release goes on between pings with no dispatcher running.
const WakeEventType = "dev.siskin.dispatcher.wake"

// StepDue runs one canary's step if it is due (a step event): a duplicate, late or early
// event, or one for a canary another instance is stepping, does nothing.
func (s *Service) StepDue(ctx context.Context, k Key) (StepReport, error) {
	r, err := s.claimAndStep(ctx, k, stepGate{kind: gateDue}, nil, nil)
	if errors.Is(err, ErrBusy) {
		// Another instance holds it: it saves the next due time itself.
		return StepReport{Key: k, Skipped: "busy"}, nil
	}
	return r, err
}

// settleOrStep settles an event that changes nothing and steps the canary otherwise. The step
// reads the Canary again: c is at most as listed, from the watch cache.
func (s *Service) settleOrStep(ctx context.Context, c Canary, cause changeCause, object []byte) (StepReport, bool, error) {
	if settled, err := s.settled(ctx, c, cause, object); settled || err != nil {
		return StepReport{Key: c.Key, Skipped: "not due; unchanged"}, settled, err
	}
	r, err := s.claimAndStep(ctx, c.Key, stepGate{kind: gateChanged, cause: cause}, nil, nil)
	return r, false, err
}

// settled reports, from the saved state and the object the event carried (Resource mode), that
// the event can change nothing now, so that it costs no lease and no Kubernetes request: most
// object events are Siskin's own writes coming back, or rollouts reporting their progress. c is
// the Canary as listed (from the watch cache), or only its key for a Canary's own event.
func (s *Service) settled(ctx context.Context, c Canary, cause changeCause, object []byte) (bool, error) {
	st, err := s.d.Store.Load(ctx, c.Key)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("load state of %s: %w", c.Key, err)
	}
	now := s.cfg.Now()
	if cause == causeRoutes && st.Phase != PhaseInitializing {
		// Most route events are Siskin's own writes coming back: a VirtualService as the
		// saved state plans it needs nothing. Known by its owner alone (no spec), the
		// Canary's VirtualService is judged by its weights; anything else in it that was
		// edited is put back by the next re-assertion, or by the next weight change, which
		// finds it changed.
		routes, ok := s.routerOf(c).(EventRoutesChecker)
		if !ok || len(object) == 0 || st.Due(now) || !st.WillRoute() {
			return false, nil
		}
		if c.Spec.TargetRef.Name == "" {
			return routes.WeightsAsPlanned(routePlan(st), object), nil
		}
		return routes.AsPlanned(c, routePlan(st), object), nil
	}
	var (
		facts ObjectFacts
		known bool
	)
	if r, ok := s.d.Workloads.(EventObjectReader); ok && len(object) > 0 && (cause == causeCanary || cause == causeTarget || cause == causePrimary) {
		facts, known = r.FactsOf(c, object)
	}
	return changesNothing(st, cause, facts, known, now), nil
}

// changesNothing is the gate of an object event decided before the step. A canary that is not
// due and past its initialisation is left alone by a primary Deployment's event, by a Canary
// event of the generation its last re-assertion saw (its status, Siskin's own write, changed),
// and by a target Deployment event that carries no new revision. An initialising canary is left
// alone by its primary's rollout until the primary is ready, by its own status writes, and by
// the events of the objects it creates (the end of the initialisation asserts them all); the
// initialisation polls its primary too. Anything else, or an object the event did not carry,
// goes to the step's own gate.
func changesNothing(st State, cause changeCause, f ObjectFacts, known bool, now time.Time) bool {
	if st.SpecError != "" || (known && f.Deleting) {
		return false
	}
	sameCanary := cause == causeCanary && known && f.Kind == "Canary" && f.Generation == st.AssertedGeneration
	if st.Phase == PhaseInitializing {
		switch cause {
		case causePrimary:
			return known && f.Kind == "Deployment" && !f.Ready
		case causeRoutes, causeServices:
			return true
		}
		return sameCanary
	}
	if st.Due(now) || st.Phase == "" {
		return false
	}
	switch cause {
	case causePrimary:
		return true
	case causeCanary:
		return sameCanary
	case causeTarget:
		return known && f.Kind == "Deployment" &&
			!st.SeesNewRevision(WorkloadObservation{TargetFound: true, TemplateHash: f.TemplateHash, TrackedConfigs: st.TrackedConfigs})
	}
	return false
}
