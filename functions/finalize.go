package functions

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// FinalizerName is Flagger's finalizer for revertOnDeletion.
const FinalizerName = "finalizer.flagger.app"

// TargetFinalizer reverts the workloads for revertOnDeletion (package deploy).
type TargetFinalizer interface {
	EnsureFinalizer(ctx context.Context, c Canary, present bool) error
	// Finalize gives the target its replicas back and reverts an apex Service Siskin took
	// over.
	Finalize(ctx context.Context, c Canary) error
	TargetReadiness(ctx context.Context, c Canary) (Readiness, error)
}

// syncFinalizer adds Flagger's finalizer when revertOnDeletion is on, and removes it when off.
func (s *Service) syncFinalizer(ctx context.Context, c Canary) error {
	has := slices.Contains(c.Finalizers, FinalizerName)
	if has == c.Spec.RevertOnDeletion || s.d.TargetFinalizer == nil {
		return nil
	}
	if err := s.d.TargetFinalizer.EnsureFinalizer(ctx, c, c.Spec.RevertOnDeletion); err != nil {
		return fmt.Errorf("finalizer of %s: %w", c.Key, err)
	}
	return nil
}

// finalize is the deletion of a canary with revertOnDeletion, one bounded step per call, as
// Finalize decides: the target is scaled back up, and once it is ready (or after
// finalizeWait) the routes go back to what they were before Siskin, the finalizer is removed
// and the state forgotten.
func (s *Service) finalize(ctx context.Context, c Canary, st State, lease Lease) (StepReport, error) {
	rep := StepReport{Key: c.Key, From: st.Phase}
	if s.d.TargetFinalizer == nil {
		rep.Skipped = "being deleted"
		return rep, s.d.Store.Delete(ctx, c.Key)
	}
	now := s.cfg.Now()
	var target Readiness
	if st.Phase == PhaseTerminating {
		var err error
		if target, err = s.d.TargetFinalizer.TargetReadiness(ctx, c); err != nil {
			return rep, fmt.Errorf("target readiness of %s: %w", c.Key, err)
		}
	}
	d := Finalize(c, st, target, now)
	switch d.Action {
	case FinalizeForget:
		rep.Skipped = "being deleted"
		return rep, s.d.Store.Delete(ctx, c.Key)
	case FinalizeStart:
		if err := s.d.TargetFinalizer.Finalize(ctx, c); err != nil {
			return rep, fmt.Errorf("finalize workloads of %s: %w", c.Key, err)
		}
		saved, err := s.d.Store.Save(ctx, c.Key, d.Step.State, lease)
		if err != nil {
			return rep, fmt.Errorf("save state of %s: %w", c.Key, err)
		}
		rep.To = saved.Phase
		d.Step.State = saved
		return rep, s.after(ctx, c, st, saved, d.Step)
	case FinalizeWait:
		rep.To, rep.Message = st.Phase, "waiting for the target: "+d.Reason
		return rep, s.d.Store.Schedule(ctx, c.Key, now.Add(time.Second), true)
	}
	if err := s.routerOf(c).Finalize(ctx, c); err != nil {
		return rep, fmt.Errorf("restore routes of %s: %w", c.Key, err)
	}
	if err := s.d.TargetFinalizer.EnsureFinalizer(ctx, c, false); err != nil {
		return rep, fmt.Errorf("remove finalizer of %s: %w", c.Key, err)
	}
	s.log.InfoContext(ctx, "canary finalized", "canary", c.Key.String())
	rep.To = PhaseTerminated
	return rep, s.d.Store.Delete(ctx, c.Key)
}
