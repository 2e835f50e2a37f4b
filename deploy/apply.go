package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"

	"github.com/siskin-dev/siskin/functions"
)

// ApplyWorkloads does what a step asks of the workloads. The apex Service is reconciled
// concurrently with the rest; a promotion runs before a scale, as in Flagger's skip-analysis
// path (Promote, then ScaleToZero), so the primary never copies a replica count the same step
// is changing.
func (c *Cluster) ApplyWorkloads(ctx context.Context, cd functions.Canary, p functions.WorkloadPlan) error {
	if err := checkRefs(cd); err != nil {
		return err
	}
	if p.ScaleTarget != functions.ScaleNone && p.ScaleTarget != functions.ScaleUp && p.ScaleTarget != functions.ScaleToZero {
		return fmt.Errorf("%w: canary %s: unknown scale %d", functions.ErrInvalid, cd.Key, p.ScaleTarget)
	}
	if p.CreatePrimary || p.CreatePrimaryHPA {
		if err := c.createMissing(ctx, cd, p.CreatePrimary, p.CreatePrimaryHPA); err != nil {
			return err
		}
	}
	var g group
	if p.EnsureServices || p.EnsureApex {
		g.Go(func() error { return c.ensureServices(ctx, cd, p.EnsureServices, p.EnsureApex) })
	}
	if p.Promote || p.ScaleTarget != functions.ScaleNone {
		g.Go(func() error {
			if p.Promote {
				if err := c.promote(ctx, cd, p.PromoteRevision); err != nil {
					return err
				}
			}
			switch p.ScaleTarget {
			case functions.ScaleToZero:
				return c.scaleTarget(ctx, cd, 0)
			case functions.ScaleUp:
				return c.scaleUp(ctx, cd)
			}
			return nil
		})
	}
	return g.Wait()
}

// ensureServices reconciles, only where they differ, the Services <apex>-canary and
// <apex>-primary (pair) and the apex Service (apex), which selects the primary's pods. An apex
// Service Siskin did not create keeps its metadata: only its selector and ports change, and
// its first selector is remembered for revertOnDeletion.
func (c *Cluster) ensureServices(ctx context.Context, cd functions.Canary, pair, apex bool) error {
	n, ns := cd.Names(), cd.Namespace
	var target *appsv1.Deployment
	var canarySvc, primarySvc, apexSvc *corev1.Service
	var reads group
	// The target gives only the selector and the ports, which change with a spec edit at most:
	// the cache is fresh enough, and each Service's update carries its own resourceVersion.
	reads.Go(func() (err error) { target, err = c.getDeployment(ctx, ns, n.Target, fromCache); return })
	if pair {
		reads.Go(func() (err error) { canarySvc, err = optional(c.getService(ctx, ns, n.CanarySvc, fromCache)); return })
		reads.Go(func() (err error) { primarySvc, err = optional(c.getService(ctx, ns, n.PrimarySvc, fromCache)); return })
	}
	if apex {
		reads.Go(func() (err error) { apexSvc, err = optional(c.getService(ctx, ns, n.Apex, fromCache)); return })
	}
	if err := reads.Wait(); err != nil {
		return err
	}
	label, value, err := selectorLabel(target, c.opts.SelectorLabels)
	if err != nil {
		return err
	}
	ports, err := servicePorts(cd, target)
	if err != nil {
		return err
	}
	sel := selection{Label: label, Value: value}
	var writes group
	if pair {
		writes.Go(func() error {
			return c.assertService(ctx, cd, canarySvc, desiredService(cd, n.CanarySvc, sel.Label, sel.Value, cd.Spec.Service.Canary, ports), false)
		})
		writes.Go(func() error {
			return c.assertService(ctx, cd, primarySvc, desiredService(cd, n.PrimarySvc, sel.Label, sel.primaryValue(), cd.Spec.Service.Primary, ports), false)
		})
	}
	if apex {
		writes.Go(func() error {
			return c.assertService(ctx, cd, apexSvc, desiredService(cd, n.Apex, sel.Label, sel.primaryValue(), cd.Spec.Service.Apex, ports), true)
		})
	}
	return writes.Wait()
}

// promote is Flagger's Promote: sync the tracked configs to -primary, then update the primary
// from the target (see promotedPrimary), against fresh reads on conflict; then sync the primary
// HPA. Unlike Flagger, it promotes only the revision the analysis approved: a target that
// changed since (a second `kubectl set image` during the last step) is ErrRevisionChanged, and
// the primary is not touched. The primary is updated from the target as read here, so what
// it gets is exactly the approved revision even if the target changes again meanwhile.
func (c *Cluster) promote(ctx context.Context, cd functions.Canary, approved string) error {
	n, ns := cd.Names(), cd.Namespace
	err := retry.OnError(retry.DefaultRetry, isConflict, func() error {
		var target, primary *appsv1.Deployment
		var tracked map[string]trackedConfig
		var g group
		g.Go(func() (err error) {
			if target, err = c.getDeployment(ctx, ns, n.Target, fresh); err != nil {
				return err
			}
			tracked, err = c.fetchConfigs(ctx, cd, configRefs(target.Spec.Template.Spec))
			return err
		})
		g.Go(func() (err error) { primary, err = c.getDeployment(ctx, ns, n.Primary, fresh); return })
		if err := g.Wait(); err != nil {
			return err
		}
		if got := revisionOf(target, tracked); approved != "" && got != approved {
			return fmt.Errorf("%w: target %s now runs revision %s, the analysis approved %s", functions.ErrRevisionChanged, n.Target, got, approved)
		}
		label, value, err := selectorLabel(target, c.opts.SelectorLabels)
		if err != nil {
			return err
		}
		if err := c.syncPrimaryConfigs(ctx, cd, tracked); err != nil {
			return err
		}
		id, err := c.newID()
		if err != nil {
			return err
		}
		next := promotedPrimary(cd, primary, target, tracked, selection{Label: label, Value: value}, id,
			c.opts.SelectorLabels, c.opts.IncludeLabelPrefixes)
		cctx, cancel := c.call(ctx)
		defer cancel()
		_, err = c.kube.AppsV1().Deployments(ns).Update(cctx, next, metav1.UpdateOptions{FieldManager: fieldManager})
		return apiError(err, "update", "Deployment", ns, n.Primary)
	})
	if err != nil {
		return fmt.Errorf("promote %s to %s: %w", n.Target, n.Primary, err)
	}
	c.log.InfoContext(ctx, "primary promoted", "canary", cd.Key.String(), "deployment", n.Primary)
	if cd.Spec.AutoscalerRef != nil {
		return c.syncPrimaryHPA(ctx, cd)
	}
	return nil
}

// syncPrimaryHPA creates the primary HPA or updates it to the target HPA, only if it differs.
func (c *Cluster) syncPrimaryHPA(ctx context.Context, cd functions.Canary) error {
	ns, ref := cd.Namespace, cd.Spec.AutoscalerRef
	return retry.OnError(retry.DefaultRetry, isConflict, func() error {
		var g group
		var hpa, live *autoscalingv2.HorizontalPodAutoscaler
		g.Go(func() (err error) { hpa, err = c.getHPA(ctx, ns, ref.Name); return })
		g.Go(func() (err error) { live, err = optional(c.getHPA(ctx, ns, ref.Name+primarySuffix)); return })
		if err := g.Wait(); err != nil {
			return err
		}
		if live == nil {
			return c.createPrimaryHPA(ctx, cd, hpa)
		}
		next := updatedPrimaryHPA(live, primaryHPA(cd, hpa, c.opts.IncludeLabelPrefixes))
		if next == nil {
			return nil
		}
		cctx, cancel := c.call(ctx)
		defer cancel()
		_, err := c.kube.AutoscalingV2().HorizontalPodAutoscalers(ns).Update(cctx, next, metav1.UpdateOptions{FieldManager: fieldManager})
		return apiError(err, "update", "HorizontalPodAutoscaler", ns, next.Name)
	})
}

// scaleTarget sets the target's replicas with a merge patch.
func (c *Cluster) scaleTarget(ctx context.Context, cd functions.Canary, replicas int32) error {
	name := cd.Spec.TargetRef.Name
	patch := fmt.Appendf(nil, `{"spec":{"replicas":%d}}`, replicas)
	cctx, cancel := c.call(ctx)
	defer cancel()
	_, err := c.kube.AppsV1().Deployments(cd.Namespace).Patch(cctx, name, types.MergePatchType, patch,
		metav1.PatchOptions{FieldManager: fieldManager})
	return apiError(err, "scale", "Deployment", cd.Namespace, name)
}

// scaleUp is Flagger's ScaleFromZero (see scaleFromZeroReplicas). A target that already has
// replicas is left alone.
// The target and what gives its replicas are read together.
func (c *Cluster) scaleUp(ctx context.Context, cd functions.Canary) error {
	var (
		target *appsv1.Deployment
		from   replicaSource
		g      group
	)
	g.Go(func() (err error) {
		target, err = c.getDeployment(ctx, cd.Namespace, cd.Spec.TargetRef.Name, fresh)
		return
	})
	g.Go(func() (err error) { from, err = c.replicaSource(ctx, cd); return })
	if err := g.Wait(); err != nil {
		return err
	}
	return c.scaleUpWith(ctx, cd, target, from)
}

func (c *Cluster) scaleUpFrom(ctx context.Context, cd functions.Canary, target *appsv1.Deployment) error {
	if target.Spec.Replicas != nil && *target.Spec.Replicas > 0 {
		return nil
	}
	from, err := c.replicaSource(ctx, cd)
	if err != nil {
		return err
	}
	return c.scaleUpWith(ctx, cd, target, from)
}

// replicaSource is what a target scaled up from zero copies: the primary's replicas, or the
// HPA's minimum.
type replicaSource struct{ primaryReplicas, hpaMin *int32 }

func (c *Cluster) replicaSource(ctx context.Context, cd functions.Canary) (replicaSource, error) {
	var from replicaSource
	if ref := cd.Spec.AutoscalerRef; ref == nil {
		primary, err := optional(c.getDeployment(ctx, cd.Namespace, cd.Names().Primary, fresh))
		if err != nil {
			return from, err
		}
		if primary != nil {
			from.primaryReplicas = primary.Spec.Replicas
		}
	} else {
		hpa, err := optional(c.getHPA(ctx, cd.Namespace, ref.Name))
		if err != nil {
			return from, err
		}
		if hpa != nil {
			from.hpaMin = hpa.Spec.MinReplicas
		}
	}
	return from, nil
}

func (c *Cluster) scaleUpWith(ctx context.Context, cd functions.Canary, target *appsv1.Deployment, from replicaSource) error {
	if target.Spec.Replicas != nil && *target.Spec.Replicas > 0 {
		return nil
	}
	replicas := scaleFromZeroReplicas(target.Spec.Replicas, cd.Spec.AutoscalerRef != nil, from.primaryReplicas, from.hpaMin)
	return c.scaleTarget(ctx, cd, replicas)
}

// Finalize reverts what Siskin changed, for revertOnDeletion (Flagger's finalize, less the
// VirtualService, which the istio package restores): the target gets the primary's replicas
// back (or is scaled up as from zero when there is no primary), and an apex Service Siskin did
// not create gets its original selector back. Flagger then waits for the target to be ready;
// Siskin does not block: ObserveWorkloads reports the target's readiness to the caller, which
// removes the finalizer when it sees fit.
func (c *Cluster) Finalize(ctx context.Context, cd functions.Canary) error {
	if err := checkRefs(cd); err != nil {
		// Siskin never managed workloads for such a spec: there is nothing to revert, and
		// failing would keep the Canary from ever being deleted.
		c.log.WarnContext(ctx, "finalize: nothing to revert", "canary", cd.Key.String(), "err", err)
		return nil
	}
	n, ns := cd.Names(), cd.Namespace
	var target, primary *appsv1.Deployment
	var apex *corev1.Service
	var reads group
	reads.Go(func() (err error) { target, err = optional(c.getDeployment(ctx, ns, n.Target, fresh)); return })
	reads.Go(func() (err error) { primary, err = optional(c.getDeployment(ctx, ns, n.Primary, fresh)); return })
	reads.Go(func() (err error) { apex, err = optional(c.getService(ctx, ns, n.Apex, fresh)); return })
	if err := reads.Wait(); err != nil {
		return err
	}
	if target == nil {
		c.log.WarnContext(ctx, "finalize: target deployment not found, nothing to restore", "canary", cd.Key.String())
		return nil
	}
	var writes group
	writes.Go(func() error {
		if primary == nil {
			return c.scaleUpFrom(ctx, cd, target)
		}
		if want := replicasOf(primary); replicasOf(target) != want {
			return c.scaleTarget(ctx, cd, want)
		}
		return nil
	})
	if apex != nil {
		writes.Go(func() error { return c.revertApex(ctx, cd, apex, target) })
	}
	return writes.Wait()
}

// revertApex restores the selector of an apex Service that no Canary controls.
func (c *Cluster) revertApex(ctx context.Context, cd functions.Canary, apex *corev1.Service, target *appsv1.Deployment) error {
	if byACanary, _ := ownedByCanary(apex, cd.Name); byACanary {
		return nil // garbage-collected with its Canary
	}
	label, value, err := selectorLabel(target, c.opts.SelectorLabels)
	if err != nil {
		return err
	}
	want := originalSelector(apex, label, value)
	_, remembered := apex.Annotations[OriginalSelectorAnnotation]
	if maps.Equal(apex.Spec.Selector, want) && !remembered {
		return nil
	}
	next := apex.DeepCopy()
	next.Spec.Selector = want
	delete(next.Annotations, OriginalSelectorAnnotation)
	cctx, cancel := c.call(ctx)
	defer cancel()
	_, err = c.kube.CoreV1().Services(cd.Namespace).Update(cctx, next, metav1.UpdateOptions{FieldManager: fieldManager})
	return apiError(err, "update", "Service", cd.Namespace, apex.Name)
}

// SetImage sets the image of one container of a Deployment with a strategic merge patch. The
// container must exist (a strategic merge patch would otherwise add one); setting the image it
// already has writes nothing.
func (c *Cluster) SetImage(ctx context.Context, deployment functions.Key, container, image string) error {
	d, err := c.getDeployment(ctx, deployment.Namespace, deployment.Name, fresh)
	if err != nil {
		return err
	}
	found := false
	for _, ctr := range d.Spec.Template.Spec.Containers {
		if ctr.Name == container {
			if ctr.Image == image {
				return nil
			}
			found = true
		}
	}
	if !found {
		return fmt.Errorf("%w: deployment %s has no container %q", functions.ErrInvalid, deployment, container)
	}
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{"template": map[string]any{"spec": map[string]any{
		"containers": []map[string]string{{"name": container, "image": image}}}}}})
	if err != nil {
		return errors.Join(functions.ErrInvalid, err)
	}
	cctx, cancel := c.call(ctx)
	defer cancel()
	_, err = c.kube.AppsV1().Deployments(deployment.Namespace).Patch(cctx, deployment.Name, types.StrategicMergePatchType,
		patch, metav1.PatchOptions{FieldManager: fieldManager})
	if err != nil {
		return apiError(err, "patch", "Deployment", deployment.Namespace, deployment.Name)
	}
	c.log.InfoContext(ctx, "image set", "deployment", deployment.String(), "container", container, "image", image)
	return nil
}
