package deploy

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	k8stesting "k8s.io/client-go/testing"

	"github.com/siskin-dev/siskin/functions"
)

func (f *fixture) deployment(t *testing.T, name string) *appsv1.Deployment {
	t.Helper()
	d, err := f.kube.AppsV1().Deployments("default").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get deployment %s: %v", name, err)
	}
	return d
}

// bootstrapped is a cluster after the first observation: primary, configs and Services exist.
func bootstrapped(t *testing.T, extra ...runtime.Object) (*fixture, functions.Canary) {
	t.Helper()
	cd := seedDomain(t)
	f := newFixture(t, append(append(podinfoConfigs(), podinfo()), extra...))
	if _, err := f.bootstrap(context.Background(), cd); err != nil {
		t.Fatalf("ObserveWorkloads: %v", err)
	}
	f.kube.ClearActions()
	return f, cd
}

func TestApplyEnsureApexCreatesIt(t *testing.T) {
	f, cd := bootstrapped(t)
	ctx := context.Background()
	if err := f.c.ApplyWorkloads(ctx, cd, functions.WorkloadPlan{EnsureApex: true}); err != nil {
		t.Fatalf("ApplyWorkloads: %v", err)
	}
	got, err := f.kube.CoreV1().Services("default").Get(ctx, "podinfo", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "podinfo", Namespace: "default", Labels: map[string]string{"app": "podinfo"},
			Annotations: fluxOff, OwnerReferences: podinfoOwner},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, Selector: map[string]string{"app": "podinfo-primary"},
			Ports: []corev1.ServicePort{{Name: "http", Protocol: "TCP", Port: 9898, TargetPort: intstr.FromInt32(9898)}}},
	}
	if diff := cmp.Diff(want, got, ignoreServerMeta, cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".TypeMeta" }, cmp.Ignore())); diff != "" {
		t.Errorf("apex (-want +got):\n%s", diff)
	}
	f.kube.ClearActions()
	if err := f.c.ApplyWorkloads(ctx, cd, functions.WorkloadPlan{EnsureApex: true}); err != nil {
		t.Fatalf("ApplyWorkloads again: %v", err)
	}
	if w := f.writes(); len(w) != 0 {
		t.Errorf("got writes %v, want none", w)
	}
}

func TestApplyEnsureApexTakesOverAndFinalizeReverts(t *testing.T) {
	userSvc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "podinfo", Namespace: "default", Labels: map[string]string{"team": "a"}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, Selector: map[string]string{"app": "podinfo"},
			Ports: []corev1.ServicePort{{Name: "web", Protocol: "TCP", Port: 80, TargetPort: intstr.FromInt32(9898)}}},
	}
	f, cd := bootstrapped(t, userSvc)
	ctx := context.Background()
	if err := f.c.ApplyWorkloads(ctx, cd, functions.WorkloadPlan{EnsureApex: true}); err != nil {
		t.Fatalf("ApplyWorkloads: %v", err)
	}
	got, _ := f.kube.CoreV1().Services("default").Get(ctx, "podinfo", metav1.GetOptions{})
	if !cmp.Equal(got.Spec.Selector, map[string]string{"app": "podinfo-primary"}) || got.Labels["team"] != "a" ||
		len(got.OwnerReferences) != 0 || got.Annotations[OriginalSelectorAnnotation] != `{"app":"podinfo"}` {
		t.Errorf("got apex %+v, want the primary selector, its own labels, no owner and the original selector kept", got)
	}
	if got.Spec.Ports[0].Port != 9898 || got.Spec.Ports[0].Name != "http" {
		t.Errorf("got ports %+v, want the canary's", got.Spec.Ports)
	}

	// revertOnDeletion: the target is scaled down, the primary runs 2.
	if _, err := f.kube.AppsV1().Deployments("default").Patch(ctx, "podinfo", "application/merge-patch+json",
		[]byte(`{"spec":{"replicas":0}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := f.c.Finalize(ctx, cd); err != nil {
		t.Fatalf("Finalize: %v", err)
	}
	got, _ = f.kube.CoreV1().Services("default").Get(ctx, "podinfo", metav1.GetOptions{})
	if !cmp.Equal(got.Spec.Selector, map[string]string{"app": "podinfo"}) {
		t.Errorf("got selector %v after Finalize, want the original", got.Spec.Selector)
	}
	if _, ok := got.Annotations[OriginalSelectorAnnotation]; ok {
		t.Errorf("the original-selector annotation is still there")
	}
	if r := *f.deployment(t, "podinfo").Spec.Replicas; r != 2 {
		t.Errorf("got target replicas %d after Finalize, want the primary's 2", r)
	}
}

func TestFinalizeWithoutPrimaryScalesFromZero(t *testing.T) {
	target := podinfo()
	target.Spec.Replicas = int32p(0)
	f := newFixture(t, []runtime.Object{target})
	if err := f.c.Finalize(context.Background(), seedDomain(t)); err != nil {
		t.Fatalf("Finalize: %v", err)
	}
	if r := *f.deployment(t, "podinfo").Spec.Replicas; r != 1 {
		t.Errorf("got target replicas %d, want 1", r)
	}
}

func TestFinalizeLeavesOwnedApex(t *testing.T) {
	f, cd := bootstrapped(t)
	ctx := context.Background()
	if err := f.c.ApplyWorkloads(ctx, cd, functions.WorkloadPlan{EnsureApex: true}); err != nil {
		t.Fatal(err)
	}
	f.kube.ClearActions()
	if err := f.c.Finalize(ctx, cd); err != nil {
		t.Fatalf("Finalize: %v", err)
	}
	if w := f.writes(); len(w) != 0 {
		t.Errorf("got writes %v, want none (owned apex is garbage-collected, replicas already equal)", w)
	}
}

func TestApplyScale(t *testing.T) {
	hpa := &autoscalingv2.HorizontalPodAutoscaler{ObjectMeta: metav1.ObjectMeta{Name: "podinfo", Namespace: "default"},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{MinReplicas: int32p(3), MaxReplicas: 6}}
	tests := []struct {
		name           string
		targetReplicas int32
		autoscaler     bool
		scale          functions.Scale
		want           int32
		wantWrites     int
	}{
		{"to zero", 2, false, functions.ScaleToZero, 0, 1},
		{"up from zero to the primary's replicas", 0, false, functions.ScaleUp, 2, 1},
		{"up from zero to the HPA's min", 0, true, functions.ScaleUp, 3, 1},
		{"up when already up writes nothing", 4, false, functions.ScaleUp, 4, 0},
		{"none", 2, false, functions.ScaleNone, 2, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, cd := bootstrapped(t, hpa)
			if tt.autoscaler {
				cd.Spec.AutoscalerRef = &functions.AutoscalerRef{Kind: "HorizontalPodAutoscaler", Name: "podinfo"}
			}
			ctx := context.Background()
			patch := []byte(`{"spec":{"replicas":` + string(rune('0'+tt.targetReplicas)) + `}}`)
			if _, err := f.kube.AppsV1().Deployments("default").Patch(ctx, "podinfo", "application/merge-patch+json", patch, metav1.PatchOptions{}); err != nil {
				t.Fatal(err)
			}
			f.kube.ClearActions()
			if err := f.c.ApplyWorkloads(ctx, cd, functions.WorkloadPlan{ScaleTarget: tt.scale}); err != nil {
				t.Fatalf("ApplyWorkloads: %v", err)
			}
			if r := *f.deployment(t, "podinfo").Spec.Replicas; r != tt.want {
				t.Errorf("got replicas %d, want %d", r, tt.want)
			}
			if w := f.writes(); len(w) != tt.wantWrites {
				t.Errorf("got writes %v, want %d", w, tt.wantWrites)
			}
		})
	}
}

func TestApplyPromote(t *testing.T) {
	f, cd := bootstrapped(t)
	ctx := context.Background()
	target := f.deployment(t, "podinfo")
	target.Spec.Template.Spec.Containers[0].Image = "ghcr.io/stefanprodan/podinfo:6.0.1"
	target.Spec.Replicas = int32p(3)
	if _, err := f.kube.AppsV1().Deployments("default").Update(ctx, target, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	cm, _ := f.kube.CoreV1().ConfigMaps("default").Get(ctx, "podinfo-env", metav1.GetOptions{})
	cm.Data["color"] = "green"
	if _, err := f.kube.CoreV1().ConfigMaps("default").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.kube.ClearActions()

	if err := f.c.ApplyWorkloads(ctx, cd, functions.WorkloadPlan{Promote: true}); err != nil {
		t.Fatalf("ApplyWorkloads: %v", err)
	}
	primary := f.deployment(t, "podinfo-primary")
	want := promotedPrimary(cd, primary, target, podinfoTracked, selection{Label: "app", Value: "podinfo"},
		primary.Spec.Template.Annotations["flagger-id"], DefaultSelectorLabels, nil)
	if diff := cmp.Diff(want.Spec, primary.Spec); diff != "" {
		t.Errorf("primary spec (-want +got):\n%s", diff)
	}
	if primary.Spec.Template.Spec.Containers[0].Image != "ghcr.io/stefanprodan/podinfo:6.0.1" || *primary.Spec.Replicas != 3 {
		t.Errorf("got image %s replicas %d, want the target's", primary.Spec.Template.Spec.Containers[0].Image, *primary.Spec.Replicas)
	}
	if id := primary.Spec.Template.Annotations["flagger-id"]; id == "id-1" || id == "" {
		t.Errorf("got flagger-id %q, want a new one", id)
	}
	copy, _ := f.kube.CoreV1().ConfigMaps("default").Get(ctx, "podinfo-env-primary", metav1.GetOptions{})
	if copy.Data["color"] != "green" {
		t.Errorf("got primary configmap %v, want the new data", copy.Data)
	}
	wantWrites := []string{"update configmaps/podinfo-env-primary", "update deployments/podinfo-primary"}
	if diff := cmp.Diff(wantWrites, sortedWrites(f)); diff != "" {
		t.Errorf("writes (-want +got), the unchanged secret copy must not be written:\n%s", diff)
	}
}

func TestApplyPromoteRetriesConflicts(t *testing.T) {
	f, cd := bootstrapped(t)
	conflicts := 0
	f.kube.PrependReactor("update", "deployments", func(k8stesting.Action) (bool, runtime.Object, error) {
		if conflicts < 2 {
			conflicts++
			return true, nil, apierrors.NewConflict(schema.GroupResource{Group: "apps", Resource: "deployments"}, "podinfo-primary", errors.New("modified"))
		}
		return false, nil, nil
	})
	if err := f.c.ApplyWorkloads(context.Background(), cd, functions.WorkloadPlan{Promote: true}); err != nil {
		t.Fatalf("ApplyWorkloads: %v", err)
	}
	if conflicts != 2 {
		t.Errorf("got %d conflicts, want 2 retried", conflicts)
	}
}

func TestApplyPromoteThenScaleToZero(t *testing.T) {
	f, cd := bootstrapped(t)
	if err := f.c.ApplyWorkloads(context.Background(), cd, functions.WorkloadPlan{Promote: true, ScaleTarget: functions.ScaleToZero}); err != nil {
		t.Fatalf("ApplyWorkloads: %v", err)
	}
	if r := *f.deployment(t, "podinfo-primary").Spec.Replicas; r != 2 {
		t.Errorf("got primary replicas %d, want 2 (copied before the scale-down)", r)
	}
	if r := *f.deployment(t, "podinfo").Spec.Replicas; r != 0 {
		t.Errorf("got target replicas %d, want 0", r)
	}
}

func TestApplyPromoteSyncsHPA(t *testing.T) {
	hpa := &autoscalingv2.HorizontalPodAutoscaler{ObjectMeta: metav1.ObjectMeta{Name: "podinfo", Namespace: "default"},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{MinReplicas: int32p(2), MaxReplicas: 4,
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{Kind: "Deployment", APIVersion: "apps/v1", Name: "podinfo"}}}
	cd := seedDomain(t)
	cd.Spec.AutoscalerRef = &functions.AutoscalerRef{Kind: "HorizontalPodAutoscaler", Name: "podinfo"}
	f := newFixture(t, append(podinfoConfigs(), podinfo(), hpa))
	ctx := context.Background()
	if _, err := f.bootstrap(ctx, cd); err != nil {
		t.Fatal(err)
	}
	hpa.Spec.MaxReplicas = 10
	if _, err := f.kube.AutoscalingV2().HorizontalPodAutoscalers("default").Update(ctx, hpa, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Observing does not update an existing primary HPA (Flagger's init=true).
	if _, err := f.bootstrap(ctx, cd); err != nil {
		t.Fatal(err)
	}
	primaryHPA := func() *autoscalingv2.HorizontalPodAutoscaler {
		h, _ := f.kube.AutoscalingV2().HorizontalPodAutoscalers("default").Get(ctx, "podinfo-primary", metav1.GetOptions{})
		return h
	}
	if m := primaryHPA().Spec.MaxReplicas; m != 4 {
		t.Errorf("got primary max %d after observing, want 4", m)
	}
	if err := f.c.ApplyWorkloads(ctx, cd, functions.WorkloadPlan{Promote: true}); err != nil {
		t.Fatalf("ApplyWorkloads: %v", err)
	}
	if m := primaryHPA().Spec.MaxReplicas; m != 10 {
		t.Errorf("got primary max %d after promotion, want 10", m)
	}
	if r := *f.deployment(t, "podinfo-primary").Spec.Replicas; r != 2 {
		t.Errorf("got primary replicas %d, want them left to the HPA (2)", r)
	}
}

func TestApplyErrors(t *testing.T) {
	f, cd := bootstrapped(t)
	f.kube.PrependReactor("patch", "deployments", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, forbiddenErr("deployments", "podinfo")
	})
	err := f.c.ApplyWorkloads(context.Background(), cd, functions.WorkloadPlan{ScaleTarget: functions.ScaleToZero})
	if !errors.Is(err, functions.ErrUpstreamDenied) || !strings.Contains(err.Error(), "scale Deployment default/podinfo") {
		t.Errorf("got %v, want functions.ErrUpstreamDenied naming scale Deployment default/podinfo", err)
	}
	if err := f.c.ApplyWorkloads(context.Background(), cd, functions.WorkloadPlan{ScaleTarget: 7}); !errors.Is(err, functions.ErrInvalid) {
		t.Errorf("unknown scale: got %v, want ErrInvalid", err)
	}
}

func TestCreatePrimaryRace(t *testing.T) {
	// Another invocation creates the primary between our read and our create.
	cd := seedDomain(t)
	other := newPrimaryDeployment(cd, podinfo(), podinfoTracked, selection{Label: "app", Value: "podinfo"}, "theirs", DefaultSelectorLabels, nil)
	f := newFixture(t, append(podinfoConfigs(), podinfo()))
	f.kube.PrependReactor("create", "deployments", func(k8stesting.Action) (bool, runtime.Object, error) {
		if err := f.kube.Tracker().Create(schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}, other, "default"); err != nil {
			t.Fatal(err)
		}
		return true, nil, apierrors.NewAlreadyExists(schema.GroupResource{Group: "apps", Resource: "deployments"}, "podinfo-primary")
	})
	obs, err := f.bootstrap(context.Background(), cd)
	if err != nil || !obs.PrimaryFound {
		t.Fatalf("ObserveWorkloads = %+v, %v; want the other primary found", obs, err)
	}
	if id := f.deployment(t, "podinfo-primary").Spec.Template.Annotations["flagger-id"]; id != "theirs" {
		t.Errorf("got flagger-id %q, want theirs kept", id)
	}
}

func TestSetImage(t *testing.T) {
	f := newFixture(t, []runtime.Object{podinfo()})
	ctx := context.Background()
	key := functions.Key{Namespace: "default", Name: "podinfo"}
	if err := f.c.SetImage(ctx, key, "podinfod", "ghcr.io/stefanprodan/podinfo:6.1.0"); err != nil {
		t.Fatalf("SetImage: %v", err)
	}
	d := f.deployment(t, "podinfo")
	if len(d.Spec.Template.Spec.Containers) != 1 || d.Spec.Template.Spec.Containers[0].Image != "ghcr.io/stefanprodan/podinfo:6.1.0" {
		t.Errorf("got containers %+v, want one with the new image", d.Spec.Template.Spec.Containers)
	}
	if d.Spec.Template.Spec.Containers[0].Env[0].Name != "PODINFO_UI_COLOR" {
		t.Errorf("the rest of the container was lost: %+v", d.Spec.Template.Spec.Containers[0])
	}
	f.kube.ClearActions()
	if err := f.c.SetImage(ctx, key, "podinfod", "ghcr.io/stefanprodan/podinfo:6.1.0"); err != nil || len(f.writes()) != 0 {
		t.Errorf("same image: got %v and writes %v, want no write", err, f.writes())
	}
	if err := f.c.SetImage(ctx, key, "sidecar", "x"); !errors.Is(err, functions.ErrInvalid) {
		t.Errorf("unknown container: got %v, want ErrInvalid", err)
	}
	if err := f.c.SetImage(ctx, functions.Key{Namespace: "default", Name: "nope"}, "c", "x"); !errors.Is(err, functions.ErrNotFound) {
		t.Errorf("missing deployment: got %v, want ErrNotFound", err)
	}
}

func TestFinalizeInvalidSpecHasNothingToRevert(t *testing.T) {
	f := newFixture(t, []runtime.Object{podinfo()})
	cd := seedDomain(t)
	cd.Spec.TargetRef.Kind = "DaemonSet"
	if err := f.c.Finalize(context.Background(), cd); err != nil || len(f.kube.Actions()) != 0 {
		t.Errorf("got %v and actions %v, want nil and no call", err, f.kube.Actions())
	}
}

// A second `kubectl set image` during the last step of an analysis must not reach the primary:
// the promotion carries the revision the analysis approved, and a target that no longer runs
// it is not promoted.
func TestPromoteOnlyTheApprovedRevision(t *testing.T) {
	f, cd := bootstrapped(t)
	ctx := context.Background()
	obs, err := f.bootstrap(ctx, cd)
	if err != nil {
		t.Fatal(err)
	}
	approved := functions.Revision(obs.TemplateHash, obs.TrackedConfigs)
	before := f.deployment(t, "podinfo-primary")

	unanalysed := f.deployment(t, "podinfo")
	unanalysed.Spec.Template.Spec.Containers[0].Image = "ghcr.io/stefanprodan/podinfo:9.9.9"
	if _, err := f.kube.AppsV1().Deployments("default").Update(ctx, unanalysed, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.kube.ClearActions()
	err = f.c.ApplyWorkloads(ctx, cd, functions.WorkloadPlan{Promote: true, PromoteRevision: approved})
	if !errors.Is(err, functions.ErrRevisionChanged) {
		t.Fatalf("promote after the target changed: got %v, want ErrRevisionChanged", err)
	}
	if w := f.writes(); len(w) != 0 {
		t.Errorf("got writes %v, want none", w)
	}
	if got := f.deployment(t, "podinfo-primary"); got.Spec.Template.Spec.Containers[0].Image != before.Spec.Template.Spec.Containers[0].Image {
		t.Errorf("primary runs %s, want %s (the unanalysed image must never reach it)",
			got.Spec.Template.Spec.Containers[0].Image, before.Spec.Template.Spec.Containers[0].Image)
	}

	now, err := f.bootstrap(ctx, cd)
	if err != nil {
		t.Fatal(err)
	}
	next := functions.Revision(now.TemplateHash, now.TrackedConfigs)
	if err := f.c.ApplyWorkloads(ctx, cd, functions.WorkloadPlan{Promote: true, PromoteRevision: next}); err != nil {
		t.Fatalf("promote of the approved revision: %v", err)
	}
	got := f.deployment(t, "podinfo-primary")
	if img := got.Spec.Template.Spec.Containers[0].Image; img != "ghcr.io/stefanprodan/podinfo:9.9.9" {
		t.Errorf("primary runs %s after promoting the approved revision", img)
	}
	if rev := got.Annotations[RevisionAnnotation]; rev != next {
		t.Errorf("primary %s annotation: got %q, want %q", RevisionAnnotation, rev, next)
	}
	if rev, err := f.c.PrimaryRevision(ctx, cd); err != nil || rev != next {
		t.Errorf("PrimaryRevision: got %q, %v; want %q", rev, err, next)
	}
}
