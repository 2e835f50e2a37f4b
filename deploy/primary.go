package deploy

import (
	"crypto/rand"
	"fmt"
	"maps"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/siskin-dev/siskin/functions"
)

// The primary Deployment follows Flagger's DeploymentController (canary/deployment_controller.go,
// canary/util.go).

// RevisionAnnotation on the primary Deployment records the functions.Revision it was given, so
// a step or an abort can tell whether a promotion was written even when its step never saved.
const RevisionAnnotation = "siskin.dev/revision"

func withRevision(annotations map[string]string, revision string) map[string]string {
	out := maps.Clone(annotations)
	if out == nil {
		out = map[string]string{}
	}
	out[RevisionAnnotation] = revision
	return out
}

// flaggerIDAnnotation on the primary's pod template changes on every promotion, forcing a
// rolling update even when only a tracked config changed.
const flaggerIDAnnotation = "flagger-id"

// newFlaggerID is a random UUID version 4.
func newFlaggerID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate flagger-id: %w", err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:]), nil
}

// withoutToolkit drops Flux's ownership keys (Flagger's canary filterMetadata).
func withoutToolkit(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := maps.Clone(m)
	maps.DeleteFunc(out, func(k, _ string) bool { return strings.Contains(k, toolkitMarker) })
	return out
}

// includeByPrefix is Flagger's includeLabelsByPrefix: the keys starting with one of the
// prefixes ("*" for all; "" matches nothing), never Flux's.
func includeByPrefix(m map[string]string, prefixes []string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		if strings.Contains(k, toolkitMarker) {
			continue
		}
		for _, p := range prefixes {
			if p == "*" || (p != "" && strings.HasPrefix(k, p)) {
				out[k] = v
				break
			}
		}
	}
	return out
}

// primaryLabels is Flagger's makePrimaryLabels: the labels with the selector label set to the
// primary's value.
func primaryLabels(labels map[string]string, label, primaryValue string) map[string]string {
	out := maps.Clone(labels)
	if out == nil {
		out = map[string]string{}
	}
	out[label] = primaryValue
	return out
}

// primaryPodAnnotations is Flagger's makeAnnotations: the template's annotations without Flux's
// keys, with a new flagger-id.
func primaryPodAnnotations(annotations map[string]string, id string) map[string]string {
	out := withoutToolkit(annotations)
	if out == nil {
		out = map[string]string{}
	}
	out[flaggerIDAnnotation] = id
	return out
}

// primaryPodSpec is the target's pod spec for the primary: tracked configs renamed to their
// -primary copies, and the podAntiAffinity and topologySpreadConstraints label selectors that
// select the target's pods (by a selector label whose value is the target's name or selector
// value) pointed at the primary's. The target is not modified.
func primaryPodSpec(target *appsv1.Deployment, tracked map[string]trackedConfig, selectorLabels []string, labelValue string) corev1.PodSpec {
	spec := *target.Spec.Template.Spec.DeepCopy()
	renameConfigRefs(&spec, tracked)
	suffix := func(sel *metav1.LabelSelector) {
		if sel == nil {
			return
		}
		selectsTarget := func(v string) bool { return v == target.Name || v == labelValue }
		for i := range sel.MatchExpressions {
			e := &sel.MatchExpressions[i]
			if !slices.Contains(selectorLabels, e.Key) {
				continue
			}
			for j := range e.Values {
				if selectsTarget(e.Values[j]) {
					e.Values[j] += primarySuffix
					break
				}
			}
		}
		for k, v := range sel.MatchLabels {
			if slices.Contains(selectorLabels, k) && selectsTarget(v) {
				sel.MatchLabels[k] = v + primarySuffix
			}
		}
	}
	for i := range spec.TopologySpreadConstraints {
		suffix(spec.TopologySpreadConstraints[i].LabelSelector)
	}
	if spec.Affinity != nil && spec.Affinity.PodAntiAffinity != nil {
		aa := spec.Affinity.PodAntiAffinity
		for i := range aa.PreferredDuringSchedulingIgnoredDuringExecution {
			suffix(aa.PreferredDuringSchedulingIgnoredDuringExecution[i].PodAffinityTerm.LabelSelector)
		}
		for i := range aa.RequiredDuringSchedulingIgnoredDuringExecution {
			suffix(aa.RequiredDuringSchedulingIgnoredDuringExecution[i].LabelSelector)
		}
	}
	return spec
}

// revisionOf is the functions.Revision a target runs.
func revisionOf(target *appsv1.Deployment, tracked map[string]trackedConfig) string {
	return functions.Revision(TemplateHash(target.Spec.Template), checksums(tracked))
}

// selection is the target's selector label and value.
type selection struct {
	Label, Value string
}

func (s selection) primaryValue() string { return s.Value + primarySuffix }

// newPrimaryDeployment is Flagger's createPrimaryDeployment: named <target>-primary, owned by
// the Canary, with the target's annotations minus Flux's, its labels by the include prefixes,
// its progressDeadlineSeconds, minReadySeconds, revisionHistoryLimit and strategy, the target's
// replicas (1 when 0 or unset), the selector and template labels with the primary's selector
// value, a new flagger-id, and the primary pod spec.
func newPrimaryDeployment(cd functions.Canary, target *appsv1.Deployment, tracked map[string]trackedConfig,
	sel selection, id string, selectorLabels, prefixes []string) *appsv1.Deployment {
	replicas := int32(1)
	if target.Spec.Replicas != nil && *target.Spec.Replicas > 0 {
		replicas = *target.Spec.Replicas
	}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{
			Name:            cd.Names().Primary,
			Namespace:       cd.Namespace,
			Labels:          primaryLabels(includeByPrefix(target.Labels, prefixes), sel.Label, sel.primaryValue()),
			Annotations:     withRevision(withoutToolkit(target.Annotations), revisionOf(target, tracked)),
			OwnerReferences: []metav1.OwnerReference{canaryOwnerRef(cd)},
		},
		Spec: appsv1.DeploymentSpec{
			ProgressDeadlineSeconds: target.Spec.ProgressDeadlineSeconds,
			MinReadySeconds:         target.Spec.MinReadySeconds,
			RevisionHistoryLimit:    target.Spec.RevisionHistoryLimit,
			Replicas:                &replicas,
			Strategy:                *target.Spec.Strategy.DeepCopy(),
			Selector:                &metav1.LabelSelector{MatchLabels: map[string]string{sel.Label: sel.primaryValue()}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{
					Labels:      primaryLabels(target.Spec.Template.Labels, sel.Label, sel.primaryValue()),
					Annotations: primaryPodAnnotations(target.Spec.Template.Annotations, id),
				},
				Spec: primaryPodSpec(target, tracked, selectorLabels, sel.Value),
			},
		},
	}
}

// promotedPrimary is Flagger's Promote applied to a copy of the live primary: the target's
// progressDeadlineSeconds, minReadySeconds, revisionHistoryLimit and strategy; its replicas
// only without an autoscalerRef; the primary pod spec; the template labels and annotations with
// a new flagger-id; the Deployment's labels and annotations by the include prefixes.
//
// Unlike Flagger, a target at 0 replicas never scales the primary to 0: the primary keeps its
// replicas (a promotion of a scaled-down canary would otherwise take the service down).
func promotedPrimary(cd functions.Canary, primary, target *appsv1.Deployment, tracked map[string]trackedConfig,
	sel selection, id string, selectorLabels, prefixes []string) *appsv1.Deployment {
	next := primary.DeepCopy()
	next.Spec.ProgressDeadlineSeconds = target.Spec.ProgressDeadlineSeconds
	next.Spec.MinReadySeconds = target.Spec.MinReadySeconds
	next.Spec.RevisionHistoryLimit = target.Spec.RevisionHistoryLimit
	next.Spec.Strategy = *target.Spec.Strategy.DeepCopy()
	if cd.Spec.AutoscalerRef == nil && target.Spec.Replicas != nil && *target.Spec.Replicas > 0 {
		r := *target.Spec.Replicas
		next.Spec.Replicas = &r
	}
	next.Spec.Template.Spec = primaryPodSpec(target, tracked, selectorLabels, sel.Value)
	next.Spec.Template.Annotations = primaryPodAnnotations(target.Spec.Template.Annotations, id)
	next.Spec.Template.Labels = primaryLabels(target.Spec.Template.Labels, sel.Label, sel.primaryValue())
	next.Annotations = withRevision(includeByPrefix(target.Annotations, prefixes), revisionOf(target, tracked))
	next.Labels = primaryLabels(includeByPrefix(target.Labels, prefixes), sel.Label, sel.primaryValue())
	return next
}

// primaryHPA is the HPA Flagger makes for the primary from the target's (hpa_reconciler.go):
// <hpa>-primary scaling <target>-primary, with the target HPA's min, max, metrics and behavior,
// primaryScalerReplicas overriding min and max, its labels and annotations (Flux's keys dropped;
// annotations by the include prefixes), owned by the Canary.
func primaryHPA(cd functions.Canary, hpa *autoscalingv2.HorizontalPodAutoscaler, prefixes []string) *autoscalingv2.HorizontalPodAutoscaler {
	spec := autoscalingv2.HorizontalPodAutoscalerSpec{
		ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{
			Kind:       hpa.Spec.ScaleTargetRef.Kind,
			APIVersion: hpa.Spec.ScaleTargetRef.APIVersion,
			Name:       cd.Names().Primary,
		},
		MinReplicas: hpa.Spec.MinReplicas,
		MaxReplicas: hpa.Spec.MaxReplicas,
		Metrics:     hpa.Spec.Metrics,
		Behavior:    hpa.Spec.Behavior,
	}
	if r := cd.Spec.AutoscalerRef.PrimaryScalerReplicas; r != nil {
		if r.MinReplicas != nil {
			spec.MinReplicas = r.MinReplicas
		}
		if r.MaxReplicas != nil {
			spec.MaxReplicas = *r.MaxReplicas
		}
	}
	out := &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{
			Name:            hpa.Name + primarySuffix,
			Namespace:       cd.Namespace,
			Labels:          withoutToolkit(hpa.Labels),
			OwnerReferences: []metav1.OwnerReference{canaryOwnerRef(cd)},
		},
		Spec: *spec.DeepCopy(),
	}
	if a := includeByPrefix(hpa.Annotations, prefixes); len(a) > 0 {
		out.Annotations = a
	}
	return out
}

// updatedPrimaryHPA returns the live primary HPA updated to desired, or nil when the fields
// Flagger syncs (scale target, min, max, metrics, behavior, labels, annotations) already agree.
func updatedPrimaryHPA(live, desired *autoscalingv2.HorizontalPodAutoscaler) *autoscalingv2.HorizontalPodAutoscaler {
	minOf := func(p *int32) int32 {
		if p == nil {
			return 1 // the apiserver's default
		}
		return *p
	}
	same := minOf(live.Spec.MinReplicas) == minOf(desired.Spec.MinReplicas) &&
		live.Spec.MaxReplicas == desired.Spec.MaxReplicas &&
		live.Spec.ScaleTargetRef == desired.Spec.ScaleTargetRef &&
		apiequality.Semantic.DeepEqual(live.Spec.Metrics, desired.Spec.Metrics) &&
		apiequality.Semantic.DeepEqual(live.Spec.Behavior, desired.Spec.Behavior) &&
		maps.Equal(live.Labels, desired.Labels) && maps.Equal(live.Annotations, desired.Annotations)
	if same {
		return nil
	}
	next := live.DeepCopy()
	next.Spec = *desired.Spec.DeepCopy()
	next.Labels = maps.Clone(desired.Labels)
	next.Annotations = maps.Clone(desired.Annotations)
	return next
}

// scaleFromZeroReplicas is Flagger's ScaleFromZero: the target's own replicas when > 0; without
// an autoscaler, the primary's replicas when > 0; with an HPA, its minReplicas when > 1; else 1.
func scaleFromZeroReplicas(target *int32, hasAutoscaler bool, primary, hpaMin *int32) int32 {
	switch {
	case target != nil && *target > 0:
		return *target
	case !hasAutoscaler && primary != nil && *primary > 0:
		return *primary
	case hasAutoscaler && hpaMin != nil && *hpaMin > 1:
		return *hpaMin
	}
	return 1
}
