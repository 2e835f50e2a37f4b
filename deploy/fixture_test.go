package deploy

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"sigs.k8s.io/yaml"

	"github.com/siskin-dev/siskin/functions"
)

// seedCanary is the seed Canary of issue 3, verbatim.
const seedCanary = `
apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: podinfo
  namespace: default
spec:
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: podinfo
  service:
    port: 9898
    targetPort: 9898
    primary:
      host: podinfo-primary.default.svc.cluster.local
    canary:
      host: podinfo-canary.default.svc.cluster.local
  analysis:
    interval: 1m
    threshold: 5
    maxWeight: 50
    stepWeight: 5
    metrics:
      - name: request-success-rate
        thresholdRange:
          min: 99
        interval: 1m
      - name: request-duration
        thresholdRange:
          max: 500
        interval: 30s
`

var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func unstructuredFromYAML(t *testing.T, doc string) *unstructured.Unstructured {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
		t.Fatalf("yaml: %v", err)
	}
	return &unstructured.Unstructured{Object: m}
}

// seed returns the seed Canary as stored, with a UID.
func seed(t *testing.T) *unstructured.Unstructured {
	u := unstructuredFromYAML(t, seedCanary)
	u.SetUID("uid-podinfo")
	u.SetGeneration(1)
	return u
}

func seedDomain(t *testing.T) functions.Canary {
	t.Helper()
	cd, err := CanaryFromUnstructured(seed(t))
	if err != nil {
		t.Fatalf("CanaryFromUnstructured: %v", err)
	}
	return cd
}

type fixture struct {
	c    *Cluster
	kube *kubefake.Clientset
	dyn  *dynamicfake.FakeDynamicClient
}

func newFixture(t *testing.T, kubeObjs []runtime.Object, dynObjs ...runtime.Object) *fixture {
	t.Helper()
	kube := kubefake.NewClientset(kubeObjs...)
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		CanaryGVR:         "CanaryList",
		MetricTemplateGVR: "MetricTemplateList",
		AlertProviderGVR:  "AlertProviderList",
	}, dynObjs...)
	c := New(kube, dyn, slog.New(slog.DiscardHandler), Options{Timeout: time.Second})
	c.now = func() time.Time { return testNow }
	ids := 0
	c.newID = func() (string, error) {
		ids++
		return "id-" + string(rune('0'+ids)), nil
	}
	return &fixture{c: c, kube: kube, dyn: dyn}
}

// writes lists the mutating actions the fake clientset saw, as "verb resource/name".
func (f *fixture) writes() []string {
	var out []string
	for _, a := range f.kube.Actions() {
		name := ""
		switch a := a.(type) {
		case k8stesting.PatchAction:
			name = a.GetName()
		case k8stesting.DeleteAction:
			name = a.GetName()
		case k8stesting.CreateAction: // also matches UpdateAction: same methods
			name = a.GetObject().(metav1.Object).GetName()
		default:
			continue
		}
		out = append(out, a.GetVerb()+" "+a.GetResource().Resource+"/"+name)
	}
	return out
}

func int32p(i int32) *int32 { return &i }

// podinfo is a target Deployment like the lab's, observed and available.
func podinfo() *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{
			Name: "podinfo", Namespace: "default", Generation: 3,
			Labels: map[string]string{"app": "podinfo", "app.kubernetes.io/part-of": "shop",
				"kustomize.toolkit.fluxcd.io/name": "apps"},
			Annotations: map[string]string{"owner": "team-a", "kustomize.toolkit.fluxcd.io/checksum": "abc"},
		},
		Spec: appsv1.DeploymentSpec{
			Replicas:                int32p(2),
			ProgressDeadlineSeconds: int32p(60),
			MinReadySeconds:         5,
			RevisionHistoryLimit:    int32p(4),
			Strategy:                appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType},
			Selector:                &metav1.LabelSelector{MatchLabels: map[string]string{"app": "podinfo"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{
					Labels:      map[string]string{"app": "podinfo", "version": "v1"},
					Annotations: map[string]string{"prometheus.io/scrape": "true"},
				},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{{
						Name:  "podinfod",
						Image: "ghcr.io/stefanprodan/podinfo:6.0.0",
						Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 9898}, {Name: "http-metrics", ContainerPort: 9797}, {ContainerPort: 9999}},
						Env: []corev1.EnvVar{{Name: "PODINFO_UI_COLOR", ValueFrom: &corev1.EnvVarSource{
							ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "podinfo-env"}, Key: "color"}}}},
					}},
					Volumes: []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{
						Secret: &corev1.SecretVolumeSource{SecretName: "podinfo-secret"}}}},
				},
			},
		},
		Status: appsv1.DeploymentStatus{ObservedGeneration: 3, Replicas: 2, UpdatedReplicas: 2, AvailableReplicas: 2, ReadyReplicas: 2},
	}
}

func podinfoConfigs() []runtime.Object {
	return []runtime.Object{
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "podinfo-env", Namespace: "default", Labels: map[string]string{"app": "podinfo"}},
			Data: map[string]string{"color": "blue"}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "podinfo-secret", Namespace: "default"},
			Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"token": []byte("s3cr3t")}},
	}
}

func conflictErr(resource, name string) error {
	return apierrors.NewConflict(schema.GroupResource{Resource: resource}, name, errors.New("the object has been modified"))
}

func forbiddenErr(resource, name string) error {
	return apierrors.NewForbidden(schema.GroupResource{Resource: resource}, name, errors.New("RBAC: access denied"))
}

// bootstrap is what a step does with a canary's workloads the first time: observe, create what
// the observation found missing (the machine plans CreatePrimary and CreatePrimaryHPA), and
// observe again.
func (f *fixture) bootstrap(ctx context.Context, cd functions.Canary) (functions.WorkloadObservation, error) {
	obs, err := f.c.ObserveWorkloads(ctx, cd)
	if err != nil || !obs.TargetFound || (obs.PrimaryFound && !obs.PrimaryHPAMissing) {
		return obs, err
	}
	if err := f.c.ApplyWorkloads(ctx, cd, functions.WorkloadPlan{CreatePrimary: !obs.PrimaryFound, CreatePrimaryHPA: obs.PrimaryHPAMissing}); err != nil {
		return obs, err
	}
	return f.c.ObserveWorkloads(ctx, cd)
}
