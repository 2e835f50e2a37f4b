package deploy

import (
	"context"
	"errors"
	"slices"
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
	k8stesting "k8s.io/client-go/testing"

	"github.com/siskin-dev/siskin/functions"
)

func sortedWrites(f *fixture) []string {
	w := f.writes()
	slices.Sort(w)
	return w
}

func TestObserveWorkloadsBootstrap(t *testing.T) {
	f := newFixture(t, append(podinfoConfigs(), podinfo()))
	ctx := context.Background()
	cd := seedDomain(t)

	// Observing only reads: it says what is missing, for the machine to plan.
	first, err := f.c.ObserveWorkloads(ctx, cd)
	if err != nil {
		t.Fatalf("ObserveWorkloads: %v", err)
	}
	if w := f.writes(); len(w) != 0 || !first.TargetFound || first.PrimaryFound {
		t.Fatalf("first observation: got %+v and writes %v, want the target found, no primary and no write", first, w)
	}
	if err := f.c.ApplyWorkloads(ctx, cd, functions.WorkloadPlan{CreatePrimary: true}); err != nil {
		t.Fatalf("ApplyWorkloads(CreatePrimary): %v", err)
	}
	wantWrites := []string{
		"create configmaps/podinfo-env-primary",
		"create deployments/podinfo-primary",
		"create secrets/podinfo-secret-primary",
	}
	if diff := cmp.Diff(wantWrites, sortedWrites(f)); diff != "" {
		t.Errorf("writes of CreatePrimary (-want +got):\n%s", diff)
	}
	f.kube.ClearActions()
	obs, err := f.c.ObserveWorkloads(ctx, cd)
	if err != nil {
		t.Fatalf("ObserveWorkloads after CreatePrimary: %v", err)
	}
	if err := f.c.ApplyWorkloads(ctx, cd, functions.WorkloadPlan{EnsureServices: true}); err != nil {
		t.Fatalf("ApplyWorkloads(EnsureServices): %v", err)
	}
	if diff := cmp.Diff([]string{"create services/podinfo-canary", "create services/podinfo-primary"}, sortedWrites(f)); diff != "" {
		t.Errorf("writes of EnsureServices (-want +got):\n%s", diff)
	}
	wantObs := functions.WorkloadObservation{
		TargetFound:    true,
		TemplateHash:   TemplateHash(podinfo().Spec.Template),
		TrackedConfigs: map[string]string{"configmap/podinfo-env": "f234cb93c08ad64e", "secret/podinfo-secret": "6010bdf95cfd9d10"},
		TargetReplicas: 2,
		Canary:         functions.Readiness{Ready: true},
		PrimaryFound:   true,
		// Just created: nothing rolled out yet.
		Primary: functions.Readiness{Reason: "waiting for rollout to finish: 0 out of 2 new replicas have been updated"},
		Images:  map[string]string{"podinfod": "ghcr.io/stefanprodan/podinfo:6.0.0"},
	}
	wantObs.PrimaryRevision = functions.Revision(wantObs.TemplateHash, wantObs.TrackedConfigs)
	if diff := cmp.Diff(wantObs, obs); diff != "" {
		t.Errorf("observation (-want +got):\n%s", diff)
	}

	primary, err := f.kube.AppsV1().Deployments("default").Get(ctx, "podinfo-primary", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := newPrimaryDeployment(cd, podinfo(), podinfoTracked, selection{Label: "app", Value: "podinfo"}, "id-1", DefaultSelectorLabels, nil)
	// The fixture's checksums are not the fetched configs': the revision is the observed one.
	want.Annotations[RevisionAnnotation] = wantObs.PrimaryRevision
	if diff := cmp.Diff(want.Spec, primary.Spec); diff != "" {
		t.Errorf("primary spec (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want.ObjectMeta, primary.ObjectMeta, ignoreServerMeta); diff != "" {
		t.Errorf("primary metadata (-want +got):\n%s", diff)
	}

	cm, err := f.kube.CoreV1().ConfigMaps("default").Get(ctx, "podinfo-env-primary", metav1.GetOptions{})
	if err != nil || !cmp.Equal(cm.Data, map[string]string{"color": "blue"}) || !cmp.Equal(cm.OwnerReferences, podinfoOwner) {
		t.Errorf("configmap copy = %+v, %v; want the data, owned by the canary", cm, err)
	}
	sec, err := f.kube.CoreV1().Secrets("default").Get(ctx, "podinfo-secret-primary", metav1.GetOptions{})
	if err != nil || string(sec.Data["token"]) != "s3cr3t" || sec.Type != corev1.SecretTypeOpaque {
		t.Errorf("secret copy = %+v, %v; want the data and type", sec, err)
	}
	svc, err := f.kube.CoreV1().Services("default").Get(ctx, "podinfo-primary", metav1.GetOptions{})
	if err != nil || !cmp.Equal(svc.Spec.Selector, map[string]string{"app": "podinfo-primary"}) {
		t.Errorf("primary service = %+v, %v; want selector app: podinfo-primary", svc, err)
	}

	// The apiserver defaults what it creates; the next observation writes nothing.
	for _, name := range []string{"podinfo-canary", "podinfo-primary"} {
		live, _ := f.kube.CoreV1().Services("default").Get(ctx, name, metav1.GetOptions{})
		if _, err := f.kube.CoreV1().Services("default").Update(ctx, serverDefaulted(live), metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	f.kube.ClearActions()
	if _, err := f.c.ObserveWorkloads(ctx, cd); err != nil {
		t.Fatalf("ObserveWorkloads again: %v", err)
	}
	if err := f.c.ApplyWorkloads(ctx, cd, functions.WorkloadPlan{EnsureServices: true}); err != nil {
		t.Fatalf("ApplyWorkloads(EnsureServices) again: %v", err)
	}
	if w := f.writes(); len(w) != 0 {
		t.Errorf("got writes %v on a second observation and assertion, want none", w)
	}
}

var ignoreServerMeta = cmp.FilterPath(func(p cmp.Path) bool {
	switch p.Last().String() {
	case ".ResourceVersion", ".ManagedFields", ".UID", ".CreationTimestamp", ".Generation":
		return true
	}
	return false
}, cmp.Ignore())

func TestObserveWorkloadsMissingTarget(t *testing.T) {
	f := newFixture(t, nil)
	obs, err := f.c.ObserveWorkloads(context.Background(), seedDomain(t))
	if err != nil {
		t.Fatalf("ObserveWorkloads: %v", err)
	}
	if obs.TargetFound || obs.PrimaryFound || len(f.writes()) != 0 {
		t.Errorf("got %+v and writes %v, want nothing found and nothing written", obs, f.writes())
	}
}

func TestObserveWorkloadsHPA(t *testing.T) {
	hpa := &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Name: "podinfo", Namespace: "default"},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{MinReplicas: int32p(2), MaxReplicas: 4,
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{Kind: "Deployment", APIVersion: "apps/v1", Name: "podinfo"}},
	}
	cd := seedDomain(t)
	cd.Spec.AutoscalerRef = &functions.AutoscalerRef{APIVersion: "autoscaling/v2", Kind: "HorizontalPodAutoscaler", Name: "podinfo"}

	f := newFixture(t, append(podinfoConfigs(), podinfo(), hpa))
	obs, err := f.c.ObserveWorkloads(context.Background(), cd)
	if err != nil || !obs.PrimaryHPAMissing {
		t.Fatalf("ObserveWorkloads: got %+v, %v; want PrimaryHPAMissing", obs, err)
	}
	if _, err := f.bootstrap(context.Background(), cd); err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	got, err := f.kube.AutoscalingV2().HorizontalPodAutoscalers("default").Get(context.Background(), "podinfo-primary", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("primary HPA: %v", err)
	}
	if got.Spec.ScaleTargetRef.Name != "podinfo-primary" || *got.Spec.MinReplicas != 2 || got.Spec.MaxReplicas != 4 {
		t.Errorf("got primary HPA spec %+v", got.Spec)
	}

	missing := newFixture(t, append(podinfoConfigs(), podinfo()))
	if _, err := missing.c.ObserveWorkloads(context.Background(), cd); !errors.Is(err, functions.ErrNotFound) {
		t.Errorf("autoscalerRef to a missing HPA: got %v, want ErrNotFound", err)
	}
}

func TestObserveWorkloadsInvalid(t *testing.T) {
	noLabel := podinfo()
	noLabel.Spec.Selector.MatchLabels = map[string]string{"component": "podinfo"}
	tests := []struct {
		name   string
		objs   []runtime.Object
		mutate func(*functions.Canary)
	}{
		{"selector without a selector label", []runtime.Object{noLabel}, func(*functions.Canary) {}},
		{"DaemonSet target", nil, func(c *functions.Canary) { c.Spec.TargetRef.Kind = "DaemonSet" }},
		{"no target name", nil, func(c *functions.Canary) { c.Spec.TargetRef.Name = "" }},
		{"KEDA autoscaler", nil, func(c *functions.Canary) {
			c.Spec.AutoscalerRef = &functions.AutoscalerRef{Kind: "ScaledObject", Name: "x"}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.objs)
			cd := seedDomain(t)
			tt.mutate(&cd)
			if _, err := f.c.ObserveWorkloads(context.Background(), cd); !errors.Is(err, functions.ErrInvalid) {
				t.Errorf("got %v, want ErrInvalid", err)
			}
		})
	}
}

func TestObserveWorkloadsErrors(t *testing.T) {
	gr := schema.GroupResource{Resource: "services"}
	tests := []struct {
		name     string
		verb     string
		resource string
		err      error
		want     error
		wantText string
	}{
		{"RBAC gap on create", "create", "deployments", forbiddenErr("deployments", "podinfo-primary"), functions.ErrUpstreamDenied,
			"create Deployment default/podinfo-primary: denied by a dependency: Siskin's ServiceAccount may not create Deployment"},
		{"RBAC gap on get", "get", "services", forbiddenErr("services", "podinfo-canary"), functions.ErrUpstreamDenied, "get Service default/podinfo-canary"},
		{"apiserver unavailable", "get", "deployments", apierrors.NewServiceUnavailable("etcd"), functions.ErrUnavailable, "get Deployment"},
		{"throttled", "get", "deployments", apierrors.NewTooManyRequests("slow down", 1), functions.ErrUnavailable, "get Deployment"},
		{"timeout", "get", "configmaps", apierrors.NewTimeoutError("slow", 1), functions.ErrUnavailable, "get ConfigMap default/podinfo-env"},
		{"internal error", "create", "services", apierrors.NewInternalError(errors.New("boom")), functions.ErrUnavailable, "create Service"},
		{"connection refused", "get", "deployments", errors.New("dial tcp 10.0.0.1:443: connect: connection refused"), functions.ErrUnavailable, "get Deployment"},
		{"already exists", "create", "services", apierrors.NewAlreadyExists(gr, "podinfo-canary"), functions.ErrConflict, "create Service"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, append(podinfoConfigs(), podinfo()))
			f.kube.PrependReactor(tt.verb, tt.resource, func(k8stesting.Action) (bool, runtime.Object, error) {
				return true, nil, tt.err
			})
			cd := seedDomain(t)
			_, err := f.bootstrap(context.Background(), cd)
			if err == nil {
				err = f.c.ApplyWorkloads(context.Background(), cd, functions.WorkloadPlan{EnsureServices: true})
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("got %q, want it to contain %q", err, tt.wantText)
			}
		})
	}
}

func TestObserveWorkloadsExistingPrimaryIsKept(t *testing.T) {
	cd := seedDomain(t)
	primary := newPrimaryDeployment(cd, podinfo(), podinfoTracked, selection{Label: "app", Value: "podinfo"}, "keep", DefaultSelectorLabels, nil)
	primary.Generation = 4
	primary.Status = appsv1.DeploymentStatus{ObservedGeneration: 4, Replicas: 2, UpdatedReplicas: 2, AvailableReplicas: 2}
	f := newFixture(t, append(podinfoConfigs(), podinfo(), primary))
	obs, err := f.c.ObserveWorkloads(context.Background(), cd)
	if err != nil {
		t.Fatalf("ObserveWorkloads: %v", err)
	}
	if !obs.Primary.Ready || !obs.PrimaryFound {
		t.Errorf("got primary %+v, want found and ready", obs.Primary)
	}
	for _, w := range f.writes() {
		if strings.Contains(w, "deployments") || strings.Contains(w, "configmaps") || strings.Contains(w, "secrets") {
			t.Errorf("got write %s with an existing primary, want none", w)
		}
	}
}

// The Services are read from the watch cache; a cache that has not seen a Service yet makes the
// create fail with AlreadyExists, and the Service is then read fresh and reconciled.
func TestEnsureServicesRetriesAStaleCacheReadFresh(t *testing.T) {
	f := newFixture(t, append(podinfoConfigs(), podinfo()))
	ctx := context.Background()
	cd := seedDomain(t)
	if err := f.c.ApplyWorkloads(ctx, cd, functions.WorkloadPlan{EnsureServices: true}); err != nil {
		t.Fatalf("first EnsureServices: %v", err)
	}
	f.kube.PrependReactor("get", "services", func(a k8stesting.Action) (bool, runtime.Object, error) {
		get := a.(k8stesting.GetActionImpl)
		if get.Name == "podinfo-canary" && get.GetOptions.ResourceVersion == "0" {
			return true, nil, apierrors.NewNotFound(schema.GroupResource{Resource: "services"}, get.Name)
		}
		return false, nil, nil
	})
	f.kube.ClearActions()
	if err := f.c.ApplyWorkloads(ctx, cd, functions.WorkloadPlan{EnsureServices: true}); err != nil {
		t.Fatalf("EnsureServices with a cache behind: %v", err)
	}
	var reads []string
	for _, a := range f.kube.Actions() {
		if get, ok := a.(k8stesting.GetActionImpl); ok && get.Name == "podinfo-canary" {
			reads = append(reads, "rv="+get.GetOptions.ResourceVersion)
		}
	}
	if diff := cmp.Diff([]string{"rv=0", "rv="}, reads); diff != "" {
		t.Errorf("reads of podinfo-canary (-want +got): the cache, then fresh after AlreadyExists\n%s", diff)
	}
	if diff := cmp.Diff([]string{"create services/podinfo-canary"}, sortedWrites(f)); diff != "" {
		t.Errorf("writes (-want +got): one refused create, no update of an unchanged Service\n%s", diff)
	}
}
