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
