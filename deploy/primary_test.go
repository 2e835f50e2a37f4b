package deploy

import (
	"regexp"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/siskin-dev/siskin/functions"
)

var podinfoTracked = map[string]trackedConfig{"configmap/podinfo-env": {}, "secret/podinfo-secret": {}}

func podinfoPrimaryPodSpec() corev1.PodSpec {
	spec := *podinfo().Spec.Template.Spec.DeepCopy()
	spec.Containers[0].Env[0].ValueFrom.ConfigMapKeyRef.Name = "podinfo-env-primary"
	spec.Volumes[0].Secret.SecretName = "podinfo-secret-primary"
	return spec
}

func TestNewPrimaryDeployment(t *testing.T) {
	cd := seedDomain(t)
	target := podinfo()
	before := target.DeepCopy()
	got := newPrimaryDeployment(cd, target, podinfoTracked, selection{Label: "app", Value: "podinfo"}, "id-1",
		DefaultSelectorLabels, []string{"app.kubernetes.io"})
	want := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{
			Name: "podinfo-primary", Namespace: "default",
			Labels:          map[string]string{"app": "podinfo-primary", "app.kubernetes.io/part-of": "shop"},
			Annotations:     map[string]string{"owner": "team-a", RevisionAnnotation: revisionOf(podinfo(), podinfoTracked)},
			OwnerReferences: podinfoOwner,
		},
		Spec: appsv1.DeploymentSpec{
			Replicas:                int32p(2),
			ProgressDeadlineSeconds: int32p(60),
			MinReadySeconds:         5,
			RevisionHistoryLimit:    int32p(4),
			Strategy:                appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType},
			Selector:                &metav1.LabelSelector{MatchLabels: map[string]string{"app": "podinfo-primary"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{
					Labels:      map[string]string{"app": "podinfo-primary", "version": "v1"},
					Annotations: map[string]string{"prometheus.io/scrape": "true", "flagger-id": "id-1"},
				},
				Spec: podinfoPrimaryPodSpec(),
			},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("primary (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(before, target); diff != "" {
		t.Errorf("the target was modified (-before +after):\n%s", diff)
	}

	t.Run("replicas 0 or unset give 1; no prefixes give only the selector label", func(t *testing.T) {
		for _, r := range []*int32{nil, int32p(0)} {
			tg := podinfo()
			tg.Spec.Replicas = r
			got := newPrimaryDeployment(cd, tg, nil, selection{Label: "app", Value: "podinfo"}, "x", DefaultSelectorLabels, nil)
			if *got.Spec.Replicas != 1 {
				t.Errorf("target replicas %v: got primary replicas %d, want 1", r, *got.Spec.Replicas)
			}
			if !cmp.Equal(got.Labels, map[string]string{"app": "podinfo-primary"}) {
				t.Errorf("got labels %v, want only app: podinfo-primary", got.Labels)
			}
		}
	})
}

func TestPrimaryPodSpecAffinity(t *testing.T) {
	target := podinfo()
	target.Spec.Template.Spec.TopologySpreadConstraints = []corev1.TopologySpreadConstraint{{
		TopologyKey:   "zone",
		LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "podinfo", "other": "podinfo"}},
	}}
	target.Spec.Template.Spec.Affinity = &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
		PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{Weight: 1, PodAffinityTerm: corev1.PodAffinityTerm{
			LabelSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "app", Operator: metav1.LabelSelectorOpIn, Values: []string{"web", "podinfo"}}}}}}},
		RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
			LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"name": "podinfo"}}}},
	}}
	got := primaryPodSpec(target, nil, DefaultSelectorLabels, "podinfo")
	if v := got.TopologySpreadConstraints[0].LabelSelector.MatchLabels; !cmp.Equal(v, map[string]string{"app": "podinfo-primary", "other": "podinfo"}) {
		t.Errorf("topology spread selector: got %v", v)
	}
	aa := got.Affinity.PodAntiAffinity
	if v := aa.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm.LabelSelector.MatchExpressions[0].Values; !cmp.Equal(v, []string{"web", "podinfo-primary"}) {
		t.Errorf("preferred anti-affinity values: got %v", v)
	}
	if v := aa.RequiredDuringSchedulingIgnoredDuringExecution[0].LabelSelector.MatchLabels; !cmp.Equal(v, map[string]string{"name": "podinfo-primary"}) {
		t.Errorf("required anti-affinity: got %v", v)
	}
	if v := target.Spec.Template.Spec.TopologySpreadConstraints[0].LabelSelector.MatchLabels["app"]; v != "podinfo" {
		t.Errorf("the target was modified: %v", v)
	}
}

func TestPromotedPrimary(t *testing.T) {
	cd := seedDomain(t)
	sel := selection{Label: "app", Value: "podinfo"}
	primary := newPrimaryDeployment(cd, podinfo(), podinfoTracked, sel, "old-id", DefaultSelectorLabels, nil)
	primary.ResourceVersion = "11"
	primary.Annotations["deployment.kubernetes.io/revision"] = "3"

	target := podinfo()
	target.Spec.Replicas = int32p(5)
	target.Spec.MinReadySeconds = 9
	target.Spec.Template.Spec.Containers[0].Image = "ghcr.io/stefanprodan/podinfo:6.0.1"
	target.Spec.Template.Labels["version"] = "v2"

	got := promotedPrimary(cd, primary, target, podinfoTracked, sel, "new-id", DefaultSelectorLabels, []string{"owner"})
	want := primary.DeepCopy()
	want.Annotations = map[string]string{"owner": "team-a", RevisionAnnotation: revisionOf(target, podinfoTracked)}
	want.Labels = map[string]string{"app": "podinfo-primary"}
	want.Spec.Replicas = int32p(5)
	want.Spec.MinReadySeconds = 9
	want.Spec.Template.Labels = map[string]string{"app": "podinfo-primary", "version": "v2"}
	want.Spec.Template.Annotations = map[string]string{"prometheus.io/scrape": "true", "flagger-id": "new-id"}
	want.Spec.Template.Spec = podinfoPrimaryPodSpec()
	want.Spec.Template.Spec.Containers[0].Image = "ghcr.io/stefanprodan/podinfo:6.0.1"
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("promoted primary (-want +got):\n%s", diff)
	}

	t.Run("with an autoscaler the replicas stay", func(t *testing.T) {
		c := cd
		c.Spec.AutoscalerRef = &functions.AutoscalerRef{Kind: "HorizontalPodAutoscaler", Name: "podinfo"}
		if got := promotedPrimary(c, primary, target, nil, sel, "x", DefaultSelectorLabels, nil); *got.Spec.Replicas != 2 {
			t.Errorf("got replicas %d, want the primary's 2", *got.Spec.Replicas)
		}
	})
	t.Run("a target at zero never scales the primary to zero", func(t *testing.T) {
		tg := target.DeepCopy()
		tg.Spec.Replicas = int32p(0)
		if got := promotedPrimary(cd, primary, tg, nil, sel, "x", DefaultSelectorLabels, nil); *got.Spec.Replicas != 2 {
			t.Errorf("got replicas %d, want the primary's 2", *got.Spec.Replicas)
		}
	})
}

func TestNewFlaggerID(t *testing.T) {
	uuidV4 := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	a, err := newFlaggerID()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := newFlaggerID()
	if !uuidV4.MatchString(a) || a == b {
		t.Errorf("got %q and %q, want two different UUIDv4", a, b)
	}
}

func TestPrimaryHPA(t *testing.T) {
	cd := seedDomain(t)
	cd.Spec.AutoscalerRef = &functions.AutoscalerRef{Kind: "HorizontalPodAutoscaler", Name: "podinfo",
		PrimaryScalerReplicas: &functions.PrimaryScalerReplicas{MaxReplicas: int32p(8)}}
	util := int32(80)
	hpa := &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Name: "podinfo", Namespace: "default",
			Labels: map[string]string{"app": "podinfo", "helm.toolkit.fluxcd.io/name": "x"}, Annotations: map[string]string{"note": "n"}},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{Kind: "Deployment", APIVersion: "apps/v1", Name: "podinfo"},
			MinReplicas:    int32p(2), MaxReplicas: 4,
			Metrics: []autoscalingv2.MetricSpec{{Type: autoscalingv2.ResourceMetricSourceType, Resource: &autoscalingv2.ResourceMetricSource{
				Name: corev1.ResourceCPU, Target: autoscalingv2.MetricTarget{Type: autoscalingv2.UtilizationMetricType, AverageUtilization: &util}}}},
		},
	}
	got := primaryHPA(cd, hpa, nil)
	want := &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Name: "podinfo-primary", Namespace: "default",
			Labels: map[string]string{"app": "podinfo"}, OwnerReferences: podinfoOwner},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{Kind: "Deployment", APIVersion: "apps/v1", Name: "podinfo-primary"},
			MinReplicas:    int32p(2), MaxReplicas: 8, Metrics: hpa.Spec.Metrics,
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("primary HPA (-want +got):\n%s", diff)
	}

	live := got.DeepCopy()
	live.ResourceVersion = "3"
	if next := updatedPrimaryHPA(live, got); next != nil {
		t.Errorf("got an update of an identical HPA: %+v", next.Spec)
	}
	live.Spec.MinReplicas = nil // defaulted to 1 by the server: differs from 2
	live.Spec.MaxReplicas = 3
	next := updatedPrimaryHPA(live, got)
	if next == nil || *next.Spec.MinReplicas != 2 || next.Spec.MaxReplicas != 8 || next.ResourceVersion != "3" {
		t.Errorf("got update %+v, want min 2 max 8 on the live object", next)
	}
}

func TestScaleFromZeroReplicas(t *testing.T) {
	tests := []struct {
		name          string
		target        *int32
		hasAutoscaler bool
		primary       *int32
		hpaMin        *int32
		want          int32
	}{
		{"target replicas win", int32p(3), true, int32p(5), int32p(4), 3},
		{"no autoscaler: primary replicas", int32p(0), false, int32p(5), nil, 5},
		{"no autoscaler, unset target: primary replicas", nil, false, int32p(4), nil, 4},
		{"no autoscaler, primary at zero: 1", int32p(0), false, int32p(0), nil, 1},
		{"no autoscaler, no primary: 1", int32p(0), false, nil, nil, 1},
		{"HPA min above 1", int32p(0), true, int32p(5), int32p(3), 3},
		{"HPA min 1: 1", int32p(0), true, int32p(5), int32p(1), 1},
		{"HPA without min: 1, not the primary's", int32p(0), true, int32p(5), nil, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := scaleFromZeroReplicas(tt.target, tt.hasAutoscaler, tt.primary, tt.hpaMin); got != tt.want {
				t.Errorf("got %d, want %d", got, tt.want)
			}
		})
	}
}
