package functions

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// CanaryView is a canary as the API and the CLI show it: `kubectl get canaries` plus what
// Siskin knows beyond it.
type CanaryView struct {
	Key
	Phase              Phase     `json:"phase"`
	Weight             int       `json:"weight"`
	PrimaryWeight      int       `json:"primaryWeight"`
	Mirrored           bool      `json:"mirrored,omitempty"`
	FailedChecks       int       `json:"failedChecks"`
	Threshold          int       `json:"threshold"`
	Iterations         int       `json:"iterations"`
	Interval           string    `json:"interval"`
	StepWeight         int       `json:"stepWeight,omitempty"`
	StepWeights        []int     `json:"stepWeights,omitempty"`
	MaxWeight          int       `json:"maxWeight"`
	Strategy           Strategy  `json:"strategy"`
	Suspended          bool      `json:"suspended,omitempty"`
	LastTransitionTime time.Time `json:"lastTransitionTime"`
	LastStepAt         time.Time `json:"lastStepAt"`
	NextStepAt         time.Time `json:"nextStepAt,omitempty"`
	Steps              int64     `json:"steps"`
	Message            string    `json:"message,omitempty"`
	Trigger            *Trigger  `json:"trigger,omitempty"`
	SpecError          string    `json:"specError,omitempty"`
}

func (s *Service) view(ctx context.Context, c Canary) (CanaryView, error) {
	st, err := s.d.Store.Load(ctx, c.Key)
	if errors.Is(err, ErrNotFound) {
		st = RebuildState(c.Status, Routing{}, false)
	} else if err != nil {
		return CanaryView{}, fmt.Errorf("load state of %s: %w", c.Key, err)
	}
	a := c.Spec.analysis()
	v := CanaryView{Key: c.Key, Phase: st.Phase, Weight: st.Routing.Canary, PrimaryWeight: st.Routing.Primary,
		Mirrored: st.Routing.Mirrored, FailedChecks: st.FailedChecks, Threshold: c.Spec.Threshold(),
		Iterations: st.Iterations, Interval: c.Spec.Interval(s.cfg.MinInterval).String(),
		StepWeight: a.StepWeight, StepWeights: a.StepWeights, MaxWeight: c.Spec.MaxWeight(),
		Strategy: c.Spec.Strategy(), Suspended: c.Spec.Suspend, LastTransitionTime: st.LastTransitionTime,
		LastStepAt: st.LastStepAt, Steps: st.Steps, Message: st.Message, Trigger: st.Trigger, SpecError: st.SpecError}
	if at, ok, err := s.d.Store.DueAt(ctx, c.Key); err == nil && ok {
		v.NextStepAt = at
	}
	return v, nil
}

// View is one canary's view.
func (s *Service) View(ctx context.Context, k Key) (CanaryView, error) {
	c, err := s.d.Workloads.GetCanary(ctx, k)
	if err != nil {
		return CanaryView{}, fmt.Errorf("get canary %s: %w", k, err)
	}
	return s.view(ctx, c)
}

// Views lists the canaries of a namespace ("" for all).
func (s *Service) Views(ctx context.Context, namespace string) ([]CanaryView, error) {
	if namespace == "" {
		namespace = s.cfg.Namespace
	}
	cs, err := s.d.Workloads.ListCanaries(ctx, namespace)
	if err != nil {
		return nil, fmt.Errorf("list canaries: %w", err)
	}
	views := make([]CanaryView, len(cs))
	errs := make([]error, len(cs))
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Go(func() { views[i], errs[i] = s.view(ctx, c) })
	}
	wg.Wait()
	return views, errors.Join(errs...)
}

// deploymentEventTTL is how long a Deployment change event's id is remembered: ApiServerSource
// retries within minutes.
const deploymentEventTTL = 10 * time.Minute

// DeploymentChanged reacts at once to a change of a Deployment (a Knative ApiServerSource
// event) for every canary that targets it: a new revision starts a release, or restarts the
// analysis, without waiting for the next tick. It never steps a canary early otherwise: the
// event only wakes the step, which runs if the canary is due or its target carries a revision
// the state has not seen. A repeated event id is acknowledged and ignored. A canary whose
// step is running is reported busy, so the sender retries and the change is not missed.
func (s *Service) DeploymentChanged(ctx context.Context, dep Key, eventID string) ([]StepReport, error) {
	if eventID != "" {
		first, err := s.d.Store.FirstSeen(ctx, "deployment:"+eventID, deploymentEventTTL)
		if err != nil {
			return nil, fmt.Errorf("dedupe event %s: %w", eventID, err)
		}
		if !first {
			return nil, nil
		}
	}
	reps, err := s.deploymentChanged(ctx, dep)
	if err != nil && eventID != "" {
		// Let the sender's retry through; the gate keeps it from stepping twice.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if ferr := s.d.Store.Forget(fctx, "deployment:"+eventID); ferr != nil {
			s.log.WarnContext(ctx, "forget event after a failure", "event", eventID, "err", ferr)
		}
	}
	return reps, err
}

func (s *Service) deploymentChanged(ctx context.Context, dep Key) ([]StepReport, error) {
	cs, err := s.d.Workloads.ListCanaries(ctx, dep.Namespace)
	if err != nil {
		return nil, fmt.Errorf("list canaries in %s: %w", dep.Namespace, err)
	}
	var (
		reps []StepReport
		errs []error
	)
	for _, c := range cs {
		if c.Spec.TargetRef.Name != dep.Name {
			continue
		}
		r, err := s.claimAndStep(ctx, c.Key, gateDueOrNewRevision, &c, nil)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		reps = append(reps, r)
	}
	return reps, errors.Join(errs...)
}

// EventRecord is one Kubernetes Event of a canary.
type EventRecord struct {
	Time    time.Time `json:"time"`
	Type    string    `json:"type"`
	Reason  string    `json:"reason"`
	Message string    `json:"message"`
	Count   int32     `json:"count"`
}

// EventLog lists a canary's Kubernetes Events (package deploy).
type EventLog interface {
	CanaryEvents(ctx context.Context, c Canary) ([]EventRecord, error)
}

// Events lists a canary's Kubernetes Events, oldest first.
func (s *Service) Events(ctx context.Context, k Key) ([]EventRecord, error) {
	if s.d.EventLog == nil {
		return nil, fmt.Errorf("%w: no event log configured", ErrUnavailable)
	}
	c, err := s.d.Workloads.GetCanary(ctx, k)
	if err != nil {
		return nil, fmt.Errorf("get canary %s: %w", k, err)
	}
	return s.d.EventLog.CanaryEvents(ctx, c)
}
