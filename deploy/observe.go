package deploy

import (
	"context"
	"errors"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/siskin-dev/siskin/functions"
)

// ObserveWorkloads reads what Flagger reads of the workloads at the start of a tick, and writes
// nothing:
//
//   - reads, concurrently, the target and primary Deployments, the autoscalerRef HPA and its
//     primary copy, and the target's tracked ConfigMaps and Secrets;
//   - computes the target's TemplateHash, TrackedConfigs, Images and replicas, and the readiness
//     of the target (canaryReadyThreshold) and of the primary (primaryReadyThreshold);
//   - says what is missing (PrimaryFound, PrimaryHPAMissing), for the machine to plan its
//     creation (WorkloadPlan.CreatePrimary, CreatePrimaryHPA).
//
// A missing target is not an error: TargetFound is false. A target whose
// selector has none of the selector labels, or an unsupported targetRef or autoscalerRef kind,
// is ErrInvalid; an autoscalerRef naming a missing HPA is ErrNotFound.
func (c *Cluster) ObserveWorkloads(ctx context.Context, cd functions.Canary) (functions.WorkloadObservation, error) {
	var obs functions.WorkloadObservation
	if err := checkRefs(cd); err != nil {
		return obs, err
	}
	n, ns := cd.Names(), cd.Namespace
	var (
		target, primary *appsv1.Deployment
		tracked         map[string]trackedConfig
		hpa, hpaPrimary *autoscalingv2.HorizontalPodAutoscaler
		hpaErr          error
	)
	var reads group
	reads.Go(func() (err error) {
		if target, err = optional(c.getDeployment(ctx, ns, n.Target, fresh)); err != nil || target == nil {
			return err
		}
		tracked, err = c.fetchConfigs(ctx, cd, configRefs(target.Spec.Template.Spec))
		return err
	})
	reads.Go(func() (err error) { primary, err = optional(c.getDeployment(ctx, ns, n.Primary, fresh)); return })
	if ref := cd.Spec.AutoscalerRef; ref != nil {
		reads.Go(func() (err error) {
			hpa, hpaErr = c.getHPA(ctx, ns, ref.Name) // a missing HPA matters only with a target
			if errors.Is(hpaErr, functions.ErrNotFound) {
				return nil
			}
			return hpaErr
		})
		reads.Go(func() (err error) { hpaPrimary, err = optional(c.getHPA(ctx, ns, ref.Name+primarySuffix)); return })
	}
	if err := reads.Wait(); err != nil {
		return obs, err
	}
	if target == nil {
		if primary != nil {
			obs.PrimaryFound = true
			obs.Primary = DeploymentReadiness(primary, cd.Spec.ProgressDeadline(), cd.Spec.PrimaryReadyThreshold(), c.now())
		}
		return obs, nil
	}
	if hpaErr != nil {
		return obs, fmt.Errorf("autoscalerRef of canary %s: %w", cd.Key, hpaErr)
	}
	if _, _, err := selectorLabel(target, c.opts.SelectorLabels); err != nil {
		return obs, err
	}
	if _, err := servicePorts(cd, target); err != nil {
		return obs, err
	}

	now := c.now()
	obs.PrimaryHPAMissing = hpa != nil && hpaPrimary == nil
	obs.TargetFound = true
	obs.TemplateHash = TemplateHash(target.Spec.Template)
	obs.TrackedConfigs = checksums(tracked)
	obs.TargetReplicas = replicasOf(target)
	obs.Canary = DeploymentReadiness(target, cd.Spec.ProgressDeadline(), cd.Spec.CanaryReadyThreshold(), now)
	obs.PrimaryFound = primary != nil
	if primary != nil {
		obs.Primary = DeploymentReadiness(primary, cd.Spec.ProgressDeadline(), cd.Spec.PrimaryReadyThreshold(), now)
		obs.PrimaryRevision = primary.Annotations[RevisionAnnotation]
	}
	obs.Images = map[string]string{}
	for _, ctr := range target.Spec.Template.Spec.Containers {
		obs.Images[ctr.Name] = ctr.Image
	}
	return obs, nil
}

// checkRefs rejects what Siskin cannot manage: a target other than a Deployment, an autoscaler
// other than an HPA.
func checkRefs(cd functions.Canary) error {
	t := cd.Spec.TargetRef
	if t.Name == "" {
		return fmt.Errorf("%w: canary %s: spec.targetRef.name is empty", functions.ErrInvalid, cd.Key)
	}
	if t.Kind != "" && t.Kind != "Deployment" {
		return fmt.Errorf("%w: canary %s: spec.targetRef.kind %s is not supported (Deployment only)", functions.ErrInvalid, cd.Key, t.Kind)
	}
	if a := cd.Spec.AutoscalerRef; a != nil {
		if a.Name == "" {
			return fmt.Errorf("%w: canary %s: spec.autoscalerRef.name is empty", functions.ErrInvalid, cd.Key)
		}
		if a.Kind != "" && a.Kind != "HorizontalPodAutoscaler" {
			return fmt.Errorf("%w: canary %s: spec.autoscalerRef.kind %s is not supported (HorizontalPodAutoscaler only)",
				functions.ErrInvalid, cd.Key, a.Kind)
		}
	}
	return nil
}

// replicasOf is spec.replicas with the apiserver's default of 1.
func replicasOf(d *appsv1.Deployment) int32 {
	if d.Spec.Replicas == nil {
		return 1
	}
	return *d.Spec.Replicas
}

// createMissing creates the primary Deployment (after copying the tracked configs to -primary)
// and the primary HPA, as the plan asks when the observation found them missing.
func (c *Cluster) createMissing(ctx context.Context, cd functions.Canary, primary, hpa bool) error {
	n, ns := cd.Names(), cd.Namespace
	var g group
	if primary {
		g.Go(func() error {
			target, err := c.getDeployment(ctx, ns, n.Target, fresh)
			if err != nil {
				return err
			}
			label, value, err := selectorLabel(target, c.opts.SelectorLabels)
			if err != nil {
				return err
			}
			tracked, err := c.fetchConfigs(ctx, cd, configRefs(target.Spec.Template.Spec))
			if err != nil {
				return err
			}
			_, err = c.createPrimary(ctx, cd, target, tracked, selection{Label: label, Value: value})
			return err
		})
	}
	if ref := cd.Spec.AutoscalerRef; hpa && ref != nil {
		g.Go(func() error {
			h, err := c.getHPA(ctx, ns, ref.Name)
			if err != nil {
				return fmt.Errorf("autoscalerRef of canary %s: %w", cd.Key, err)
			}
			return c.createPrimaryHPA(ctx, cd, h)
		})
	}
	return g.Wait()
}

// createPrimary copies the tracked configs to -primary, then creates the primary Deployment.
// Another invocation creating it first is fine: the existing one is returned.
func (c *Cluster) createPrimary(ctx context.Context, cd functions.Canary, target *appsv1.Deployment,
	tracked map[string]trackedConfig, sel selection) (*appsv1.Deployment, error) {
	if err := c.syncPrimaryConfigs(ctx, cd, tracked); err != nil {
		return nil, err
	}
	id, err := c.newID()
	if err != nil {
		return nil, err
	}
	want := newPrimaryDeployment(cd, target, tracked, sel, id, c.opts.SelectorLabels, c.opts.IncludeLabelPrefixes)
	cctx, cancel := c.call(ctx)
	defer cancel()
	created, err := c.kube.AppsV1().Deployments(cd.Namespace).Create(cctx, want, metav1.CreateOptions{FieldManager: fieldManager})
	if err = apiError(err, "create", "Deployment", cd.Namespace, want.Name); errors.Is(err, functions.ErrConflict) {
		return c.getDeployment(ctx, cd.Namespace, want.Name, fresh)
	}
	if err != nil {
		return nil, err
	}
	c.log.InfoContext(ctx, "primary deployment created", "canary", cd.Key.String(), "deployment", want.Name)
	return created, nil
}

func (c *Cluster) createPrimaryHPA(ctx context.Context, cd functions.Canary, hpa *autoscalingv2.HorizontalPodAutoscaler) error {
	want := primaryHPA(cd, hpa, c.opts.IncludeLabelPrefixes)
	cctx, cancel := c.call(ctx)
	defer cancel()
	_, err := c.kube.AutoscalingV2().HorizontalPodAutoscalers(cd.Namespace).Create(cctx, want, metav1.CreateOptions{FieldManager: fieldManager})
	if err = apiError(err, "create", "HorizontalPodAutoscaler", cd.Namespace, want.Name); errors.Is(err, functions.ErrConflict) {
		return nil
	}
	if err == nil {
		c.log.InfoContext(ctx, "primary HPA created", "canary", cd.Key.String(), "hpa", want.Name)
	}
	return err
}

// optional turns a NotFound into a nil object.
func optional[T any](obj *T, err error) (*T, error) {
	if errors.Is(err, functions.ErrNotFound) {
		return nil, nil
	}
	return obj, err
}

func (c *Cluster) getDeployment(ctx context.Context, ns, name string, opts metav1.GetOptions) (*appsv1.Deployment, error) {
	cctx, cancel := c.call(ctx)
	defer cancel()
	d, err := c.kube.AppsV1().Deployments(ns).Get(cctx, name, opts)
	if err != nil {
		return nil, apiError(err, "get", "Deployment", ns, name)
	}
	return d, nil
}

// Reads of what Siskin re-asserts on every step (its Services, DestinationRules and the
// VirtualService) come from the apiserver's watch cache (resourceVersion "0"): half the cost
// of a quorum read, and nothing for etcd. Such a read may be milliseconds old, and that is
// safe: the write that follows carries the read's resourceVersion, so a stale read ends in a
// conflict and a fresh read, never in a lost update. What Siskin decides on (the target, the
// primary, the Canary) is read fresh.
var (
	fromCache = metav1.GetOptions{ResourceVersion: "0"}
	fresh     = metav1.GetOptions{}
)

func (c *Cluster) getService(ctx context.Context, ns, name string, opts metav1.GetOptions) (*corev1.Service, error) {
	cctx, cancel := c.call(ctx)
	defer cancel()
	s, err := c.kube.CoreV1().Services(ns).Get(cctx, name, opts)
	if err != nil {
		return nil, apiError(err, "get", "Service", ns, name)
	}
	return s, nil
}

func (c *Cluster) getHPA(ctx context.Context, ns, name string) (*autoscalingv2.HorizontalPodAutoscaler, error) {
	cctx, cancel := c.call(ctx)
	defer cancel()
	h, err := c.kube.AutoscalingV2().HorizontalPodAutoscalers(ns).Get(cctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, apiError(err, "get", "HorizontalPodAutoscaler", ns, name)
	}
	return h, nil
}
