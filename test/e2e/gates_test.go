//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	istioapi "istio.io/api/networking/v1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"

	"github.com/siskin-dev/siskin/test/lab"
)

// Manual gates over Siskin's HTTP API, and the Canary fields that control a release:
// skipAnalysis, suspend, progressDeadlineSeconds, revertOnDeletion, autoscalerRef and config
// tracking (flagger-istio.md sections 1, 2 and 4).

// updateDeployment changes a Deployment as `kubectl edit` would.
func (e *env) updateDeployment(name string, mutate func(d *appsv1.Deployment)) {
	e.t.Helper()
	ctx := context.Background()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		d, err := e.kube.AppsV1().Deployments(e.ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		mutate(d)
		_, err = e.kube.AppsV1().Deployments(e.ns).Update(ctx, d, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

// patchCanary merge-patches the Canary.
func (e *env) patchCanary(name, patch string) {
	e.t.Helper()
	_, err := e.dyn.Resource(canaryGVR).Namespace(e.ns).Patch(context.Background(), name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	if err != nil {
		e.t.Fatalf("patch canary %s: %v", name, err)
	}
}

// rawPost posts without Siskin's token, or with the one given.
func rawPost(t *testing.T, url, token string) (int, http.Header, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(nil))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// mustGate posts a gate and checks its status code; it returns the reply.
func mustGate(t *testing.T, s *siskin, ns, name, gate string, want int) map[string]any {
	t.Helper()
	code, body := s.gate(ns, name, gate)
	if code != want {
		t.Fatalf("POST %s: got %d %v, want %d", gate, code, body, want)
	}
	return body
}

func TestManualGatesOverHTTP(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "gates-http")
	h := newHookRecorder(t)
	e.createDeployment("gated", e.lab.Registry()+"/lab/gated:1.0.0", 2)
	e.apply(specCanary(e.ns, "gated", fmt.Sprintf(`service:
  port: 9898
analysis:
  interval: 10s
  threshold: 2
  stepWeight: 10
  maxWeight: 30
  webhooks:
    - name: approval
      type: confirm-rollout
      url: %s/confirm-rollout
`, h.srv.URL)))
	s := startSiskin(t, e.lab, siskinOpts{namespace: e.ns})
	r := newRel(t, e, s, "gated")
	r.initialize(weighted("gated", 100, 0))
	image := func(v string) string { return e.lab.Registry() + "/lab/gated:" + v }

	e.setImage("gated", image("2.0.0"))
	r.steps([]stage{
		{Phase: "Initialized", Routes: weighted("gated", 100, 0)},
		{Phase: "Progressing", Routes: weighted("gated", 100, 0)},
		{Phase: "Progressing", Weight: 10, Routes: weighted("gated", 90, 10)},
	}, 30)

	// Without the token, or with a wrong one: 401, and nothing moves.
	for _, gate := range []string{"promote", "abort", "resume"} {
		url := s.url + "/api/v1/canaries/" + e.ns + "/gated/" + gate
		for _, token := range []string{"", "not-the-token"} {
			code, hdr, body := rawPost(t, url, token)
			if code != http.StatusUnauthorized || !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("POST %s with token %q: got %d %q (WWW-Authenticate %q), want 401 with a Bearer challenge", gate, token, code, body, hdr.Get("WWW-Authenticate"))
			}
		}
		// The senders' token (the one in registry URLs) never opens a gate.
		if code, _, body := rawPost(t, url, webhookToken); code != http.StatusForbidden {
			t.Errorf("POST %s with the senders' token: got %d %q, want 403", gate, code, body)
		}
	}
	if d := (stage{Phase: "Progressing", Weight: 10, Routes: weighted("gated", 90, 10)}).diff(r.snap()); d != "" {
		t.Fatalf("after unauthenticated gates: %s", d)
	}

	// promote during the analysis: Promoting at once (the request runs the step), then the
	// usual promotion.
	rep := mustGate(t, s, e.ns, "gated", "promote", http.StatusOK)
	if rep["to"] != "Promoting" {
		t.Errorf("promote reply %v, want to=Promoting", rep)
	}
	r.steps([]stage{
		{Phase: "Promoting", Weight: 10, Routes: weighted("gated", 90, 10)},
		{Phase: "Finalising", Routes: weighted("gated", 100, 0)},
		{Phase: "Succeeded", Routes: weighted("gated", 100, 0)},
	}, 20)
	if img, _ := e.deployment("gated-primary"); img != image("2.0.0") {
		t.Errorf("primary runs %s after a manual promotion, want 2.0.0", img)
	}

	// Gates of an idle canary: 422 with the reason.
	for _, gate := range []string{"promote", "abort", "resume"} {
		body := mustGate(t, s, e.ns, "gated", gate, http.StatusUnprocessableEntity)
		if msg, _ := body["error"].(string); !strings.Contains(msg, "Succeeded") {
			t.Errorf("%s of an idle canary: reason %q does not say it is Succeeded", gate, msg)
		}
	}

	// abort during the analysis: Failed, all traffic to the primary, the canary scaled to zero.
	e.setImage("gated", image("3.0.0"))
	r.steps([]stage{
		{Phase: "Succeeded", Routes: weighted("gated", 100, 0)},
		{Phase: "Progressing", Routes: weighted("gated", 100, 0)},
		{Phase: "Progressing", Weight: 10, Routes: weighted("gated", 90, 10)},
	}, 30)
	mustGate(t, s, e.ns, "gated", "abort", http.StatusOK)
	failed := stage{Phase: "Failed", Routes: weighted("gated", 100, 0)}
	if d := failed.diff(r.snap()); d != "" {
		t.Fatalf("after abort: %s", d)
	}
	if _, replicas := e.deployment("gated"); replicas != 0 {
		t.Errorf("target has %d replicas after abort, want 0", replicas)
	}
	if img, _ := e.deployment("gated-primary"); img != image("2.0.0") {
		t.Errorf("primary runs %s after abort, want 2.0.0", img)
	}
	r.holds(2, failed)

	// resume of the Failed canary retries the same revision (no template change needed).
	rep = mustGate(t, s, e.ns, "gated", "resume", http.StatusOK)
	if rep["to"] != "Progressing" {
		t.Errorf("resume reply %v, want to=Progressing", rep)
	}
	if img, replicas := e.deployment("gated"); img != image("3.0.0") || replicas != 2 {
		t.Errorf("after resume the target runs %s ×%d, want 3.0.0 ×2", img, replicas)
	}
	r.steps([]stage{
		{Phase: "Progressing", Routes: weighted("gated", 100, 0)},
		{Phase: "Progressing", Weight: 10, Routes: weighted("gated", 90, 10)},
		{Phase: "Progressing", Weight: 20, Routes: weighted("gated", 80, 20)},
		{Phase: "Progressing", Weight: 30, Routes: weighted("gated", 70, 30)},
		{Phase: "Promoting", Weight: 30, Routes: weighted("gated", 70, 30)},
		{Phase: "Finalising", Routes: weighted("gated", 100, 0)},
		{Phase: "Succeeded", Routes: weighted("gated", 100, 0)},
	}, 40)
	if img, _ := e.deployment("gated-primary"); img != image("3.0.0") {
		t.Errorf("primary runs %s after the retried release, want 3.0.0", img)
	}

	// resume of a Waiting canary passes its confirm-rollout gate, which stays closed.
	h.set("/confirm-rollout", http.StatusForbidden)
	e.setImage("gated", image("4.0.0"))
	r.steps([]stage{
		{Phase: "Succeeded", Routes: weighted("gated", 100, 0)},
		{Phase: "Waiting", Routes: weighted("gated", 100, 0)},
	}, 10)
	r.holds(1, stage{Phase: "Waiting", Routes: weighted("gated", 100, 0)})
	rep = mustGate(t, s, e.ns, "gated", "resume", http.StatusOK)
	if rep["to"] != "Progressing" {
		t.Errorf("resume of Waiting: reply %v, want to=Progressing", rep)
	}
	r.steps([]stage{
		{Phase: "Progressing", Routes: weighted("gated", 100, 0)},
		{Phase: "Progressing", Weight: 10, Routes: weighted("gated", 90, 10)},
	}, 30)

	// abort of that release, then of a Waiting one: neither starts again on its own.
	mustGate(t, s, e.ns, "gated", "abort", http.StatusOK)
	r.holds(1, failed)
	e.setImage("gated", image("5.0.0"))
	r.steps([]stage{failed, {Phase: "Waiting", Routes: weighted("gated", 100, 0)}}, 10)
	mustGate(t, s, e.ns, "gated", "abort", http.StatusOK)
	h.set("/confirm-rollout", http.StatusOK)
	r.holds(2, failed)
}

const skipSpec = `service:
  port: 9898
skipAnalysis: true
analysis:
  interval: 10s
  threshold: 2
  stepWeight: 10
`

func TestSkipAnalysisPromotesWithoutAnalysis(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "gates-skip")
	e.createDeployment("skip", e.lab.Registry()+"/lab/skip:1.0.0", 1)
	e.apply(specCanary(e.ns, "skip", skipSpec))
	s := startSiskin(t, e.lab, siskinOpts{namespace: e.ns})
	r := startRelease(t, e, s, "skip", weighted("skip", 100, 0))
	// No weight ever goes to the canary: it is scaled up, then promoted at once.
	r.steps([]stage{
		{Phase: "Initialized", Routes: weighted("skip", 100, 0)},
		{Phase: "Progressing", Routes: weighted("skip", 100, 0)},
		{Phase: "Succeeded", Routes: weighted("skip", 100, 0)},
	}, 20)
	checkPromoted(t, e, "skip")
}

func TestSuspendedCanaryTakesNoStep(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "gates-suspend")
	e.createDeployment("susp", e.lab.Registry()+"/lab/susp:1.0.0", 1)
	e.apply(specCanary(e.ns, "susp", `service:
  port: 9898
analysis:
  interval: 10s
  threshold: 2
  stepWeight: 10
`))
	s := startSiskin(t, e.lab, siskinOpts{namespace: e.ns})
	r := startRelease(t, e, s, "susp", weighted("susp", 100, 0))
	r.steps([]stage{
		{Phase: "Initialized", Routes: weighted("susp", 100, 0)},
		{Phase: "Progressing", Routes: weighted("susp", 100, 0)},
		{Phase: "Progressing", Weight: 10, Routes: weighted("susp", 90, 10)},
	}, 30)
	e.patchCanary("susp", `{"spec":{"suspend":true}}`)
	steps := s.view(e.ns, "susp").Steps
	at10 := stage{Phase: "Progressing", Weight: 10, Routes: weighted("susp", 90, 10)}
	for i := range 3 {
		if r.tick() {
			t.Errorf("tick %d stepped the suspended canary", i)
		}
		if d := at10.diff(r.snap()); d != "" {
			t.Fatalf("tick %d while suspended: %s", i, d)
		}
	}
	if got := s.view(e.ns, "susp").Steps; got != steps {
		t.Errorf("the suspended canary took %d steps, want none", got-steps)
	}
	e.patchCanary("susp", `{"spec":{"suspend":false}}`)
	r.steps([]stage{at10, {Phase: "Progressing", Weight: 20, Routes: weighted("susp", 80, 20)}}, 5)
}

func TestProgressDeadlineRollsBackACanaryThatNeverStarts(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "gates-deadline")
	e.createDeployment("stuck", e.lab.Registry()+"/lab/stuck:1.0.0", 1)
	e.apply(specCanary(e.ns, "stuck", `progressDeadlineSeconds: 3
service:
  port: 9898
analysis:
  interval: 10s
  threshold: 2
  stepWeight: 10
`))
	s := startSiskin(t, e.lab, siskinOpts{namespace: e.ns})
	r := newRel(t, e, s, "stuck")
	r.initialize(weighted("stuck", 100, 0))
	// The new revision's pods can be scheduled on no node: they stay Pending.
	e.updateDeployment("stuck", func(d *appsv1.Deployment) {
		d.Spec.Template.Spec.Containers[0].Image = e.lab.Registry() + "/lab/stuck:2.0.0"
		d.Spec.Template.Spec.NodeSelector = map[string]string{"siskin.dev/e2e": "nowhere"}
	})
	seen := r.steps([]stage{
		{Phase: "Initialized", Routes: weighted("stuck", 100, 0)},
		{Phase: "Progressing", Routes: weighted("stuck", 100, 0)},
		{Phase: "Failed", Routes: weighted("stuck", 100, 0)},
	}, 80)
	if msg := seen[2].message; !strings.Contains(msg, "deadline") {
		t.Errorf("Failed with message %q, want the progress deadline named", msg)
	}
	if _, replicas := e.deployment("stuck"); replicas != 0 {
		t.Errorf("target has %d replicas after the rollback, want 0", replicas)
	}
	pods, err := e.kube.CoreV1().Pods(e.ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.Spec.NodeSelector["siskin.dev/e2e"] == "nowhere" && p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
			t.Errorf("pod %s of the stuck revision is running", p.Name)
		}
	}
}

func TestRevertOnDeletionRestoresWhatSiskinTookOver(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "gates-revert")
	ctx := context.Background()
	e.createDeployment("revert", e.lab.Registry()+"/lab/revert:1.0.0", 2)
	// The user's own Service and VirtualService, from before the Canary.
	userSvc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "revert", Namespace: e.ns, Labels: map[string]string{"owner": "user"}},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "revert"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 9898, TargetPort: intstr.FromInt32(9898)}}},
	}
	if _, err := e.kube.CoreV1().Services(e.ns).Create(ctx, userSvc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	userVS := &networkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: "revert", Namespace: e.ns}}
	userVS.Spec = istioapi.VirtualService{
		Hosts:    []string{"revert.example.com", "revert"},
		Gateways: []string{"mesh"},
		Http: []*istioapi.HTTPRoute{{
			Name:    "user-route",
			Retries: &istioapi.HTTPRetry{Attempts: 7},
			Route:   []*istioapi.HTTPRouteDestination{{Destination: &istioapi.Destination{Host: "revert"}}},
		}},
	}
	if _, err := e.istio.NetworkingV1().VirtualServices(e.ns).Create(ctx, userVS, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.apply(specCanary(e.ns, "revert", `revertOnDeletion: true
service:
  port: 9898
  hosts: [revert.example.com]
analysis:
  interval: 10s
  threshold: 2
  stepWeight: 10
`))
	s := startSiskin(t, e.lab, siskinOpts{namespace: e.ns})
	r := newRel(t, e, s, "revert")
	r.hosts = []string{"revert.example.com", "revert"}
	r.steps([]stage{{Routes: func(snap) []*istioapi.HTTPRoute { return userVS.Spec.Http }}, {Phase: "Initializing", Routes: func(snap) []*istioapi.HTTPRoute { return userVS.Spec.Http }},
		{Phase: "Initialized", Routes: weighted("revert", 100, 0)}}, 30)
	cd, err := e.dyn.Resource(canaryGVR).Namespace(e.ns).Get(ctx, "revert", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(cd.GetFinalizers(), "finalizer.flagger.app") {
		t.Errorf("finalizers %v, want finalizer.flagger.app", cd.GetFinalizers())
	}
	got := r.snap()
	if got.VSOwnedByCanary {
		t.Error("the user's VirtualService was given to the Canary: it would be garbage collected with it")
	}
	if _, ok := got.VSAnnotations["flagger.kubernetes.io/original-configuration"]; !ok {
		t.Errorf("the user's VirtualService has no original-configuration annotation: %v", got.VSAnnotations)
	}
	if svc, err := e.kube.CoreV1().Services(e.ns).Get(ctx, "revert", metav1.GetOptions{}); err != nil || svc.Spec.Selector["app"] != "revert-primary" {
		t.Fatalf("apex Service selector %v (err %v), want app=revert-primary", svc.Spec.Selector, err)
	}

	e.setImage("revert", e.lab.Registry()+"/lab/revert:2.0.0")
	r.steps([]stage{
		{Phase: "Initialized", Routes: weighted("revert", 100, 0)},
		{Phase: "Progressing", Routes: weighted("revert", 100, 0)},
		{Phase: "Progressing", Weight: 10, Routes: weighted("revert", 90, 10)},
	}, 30)

	if err := e.dyn.Resource(canaryGVR).Namespace(e.ns).Delete(ctx, "revert", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	_, primaryReplicas := e.deployment("revert-primary")
	terminating := false
	for step := 1; step <= 40; step++ {
		r.tick()
		cd, err := e.dyn.Resource(canaryGVR).Namespace(e.ns).Get(ctx, "revert", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		phase, _, _ := unstructured.NestedString(cd.Object, "status", "phase")
		t.Logf("step %d: %s finalizers %v", step, phase, cd.GetFinalizers())
		if phase == "Terminating" {
			terminating = true
		}
		time.Sleep(250 * time.Millisecond)
	}
	if _, err := e.dyn.Resource(canaryGVR).Namespace(e.ns).Get(ctx, "revert", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the Canary is still there (err %v)", err)
	}
	if !terminating {
		t.Error("the Canary was never seen Terminating")
	}
	if _, replicas := e.deployment("revert"); replicas != primaryReplicas {
		t.Errorf("target has %d replicas, want the primary's %d back", replicas, primaryReplicas)
	}
	vs, err := e.istio.NetworkingV1().VirtualServices(e.ns).Get(ctx, "revert", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the user's VirtualService is gone: %v", err)
	}
	if d := cmp.Diff(&userVS.Spec, &vs.Spec, protocmp.Transform()); d != "" {
		t.Errorf("VirtualService not restored (-original +got):\n%s", d)
	}
	if _, ok := vs.Annotations["flagger.kubernetes.io/original-configuration"]; ok {
		t.Error("the restored VirtualService keeps the original-configuration annotation")
	}
	svc, err := e.kube.CoreV1().Services(e.ns).Get(ctx, "revert", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the user's Service is gone: %v", err)
	}
	if !cmp.Equal(svc.Spec.Selector, map[string]string{"app": "revert"}) {
		t.Errorf("Service selector %v, want the original app=revert", svc.Spec.Selector)
	}
}

func TestAutoscalerRefGetsAPrimaryHPA(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "gates-hpa")
	ctx := context.Background()
	e.createDeployment("scaled", e.lab.Registry()+"/lab/scaled:1.0.0", 1)
	cpu := []autoscalingv2.MetricSpec{{Type: autoscalingv2.ResourceMetricSourceType, Resource: &autoscalingv2.ResourceMetricSource{
		Name: corev1.ResourceCPU, Target: autoscalingv2.MetricTarget{Type: autoscalingv2.UtilizationMetricType, AverageUtilization: ptrTo[int32](80)}}}}
	hpa := &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Name: "scaled-hpa", Namespace: e.ns},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "scaled"},
			MinReplicas:    ptrTo[int32](2), MaxReplicas: 4, Metrics: cpu,
		},
	}
	if _, err := e.kube.AutoscalingV2().HorizontalPodAutoscalers(e.ns).Create(ctx, hpa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.apply(specCanary(e.ns, "scaled", `autoscalerRef:
  apiVersion: autoscaling/v2
  kind: HorizontalPodAutoscaler
  name: scaled-hpa
  primaryScalerReplicas:
    minReplicas: 3
    maxReplicas: 6
service:
  port: 9898
analysis:
  interval: 10s
  threshold: 2
  stepWeight: 50
  maxWeight: 50
`))
	s := startSiskin(t, e.lab, siskinOpts{namespace: e.ns})
	r := newRel(t, e, s, "scaled")
	r.initialize(weighted("scaled", 100, 0))
	got, err := e.kube.AutoscalingV2().HorizontalPodAutoscalers(e.ns).Get(ctx, "scaled-hpa-primary", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("primary HPA: %v", err)
	}
	want := autoscalingv2.HorizontalPodAutoscalerSpec{
		ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "scaled-primary"},
		MinReplicas:    ptrTo[int32](3), MaxReplicas: 6, Metrics: cpu,
	}
	if d := cmp.Diff(want, got.Spec); d != "" {
		t.Errorf("primary HPA spec (-want +got):\n%s", d)
	}
	// The target's own HPA stays on the target.
	if orig, err := e.kube.AutoscalingV2().HorizontalPodAutoscalers(e.ns).Get(ctx, "scaled-hpa", metav1.GetOptions{}); err != nil || orig.Spec.ScaleTargetRef.Name != "scaled" {
		t.Errorf("target HPA: %v (err %v)", orig, err)
	}
	// A release scales the canary up from zero to the HPA's minReplicas.
	e.setImage("scaled", e.lab.Registry()+"/lab/scaled:2.0.0")
	r.steps([]stage{
		{Phase: "Initialized", Routes: weighted("scaled", 100, 0)},
		{Phase: "Progressing", Routes: weighted("scaled", 100, 0)},
	}, 10)
	if _, replicas := e.deployment("scaled"); replicas != 2 {
		t.Errorf("canary scaled up to %d replicas, want the HPA's minReplicas 2", replicas)
	}
	r.steps([]stage{
		{Phase: "Progressing", Routes: weighted("scaled", 100, 0)},
		{Phase: "Progressing", Weight: 50, Routes: weighted("scaled", 50, 50)},
		{Phase: "Promoting", Weight: 50, Routes: weighted("scaled", 50, 50)},
		{Phase: "Finalising", Routes: weighted("scaled", 100, 0)},
		{Phase: "Succeeded", Routes: weighted("scaled", 100, 0)},
	}, 40)
	checkPromoted(t, e, "scaled")
}

func TestTrackedConfigsAreCopiedAndStartReleases(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "gates-configs")
	ctx := context.Background()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "app-config", Namespace: e.ns}, Data: map[string]string{"color": "blue"}}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "app-secret", Namespace: e.ns}, Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{"token": []byte("s3cr3t")}}
	if _, err := e.kube.CoreV1().ConfigMaps(e.ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.kube.CoreV1().Secrets(e.ns).Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	d := lab.PodinfoDeployment(e.ns, "conf", e.lab.Registry()+"/lab/conf:1.0.0", 1)
	d.Spec.Template.Spec.Containers[0].EnvFrom = []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: "app-config"}}}}
	d.Spec.Template.Spec.Volumes = []corev1.Volume{{Name: "secret", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "app-secret"}}}}
	if _, err := e.kube.AppsV1().Deployments(e.ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.apply(specCanary(e.ns, "conf", `service:
  port: 9898
analysis:
  interval: 10s
  threshold: 2
  stepWeight: 50
  maxWeight: 50
`))
	s := startSiskin(t, e.lab, siskinOpts{namespace: e.ns})
	r := newRel(t, e, s, "conf")
	r.initialize(weighted("conf", 100, 0))

	checkCopies := func(color string) {
		t.Helper()
		pcm, err := e.kube.CoreV1().ConfigMaps(e.ns).Get(ctx, "app-config-primary", metav1.GetOptions{})
		if err != nil || pcm.Data["color"] != color {
			t.Errorf("app-config-primary: %v (err %v), want color=%s", pcm.Data, err, color)
		}
		psec, err := e.kube.CoreV1().Secrets(e.ns).Get(ctx, "app-secret-primary", metav1.GetOptions{})
		if err != nil || string(psec.Data["token"]) != "s3cr3t" || psec.Type != corev1.SecretTypeOpaque {
			t.Errorf("app-secret-primary: %v (err %v), want the secret's data", psec, err)
		}
		primary, err := e.kube.AppsV1().Deployments(e.ns).Get(ctx, "conf-primary", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		spec := primary.Spec.Template.Spec
		if spec.Containers[0].EnvFrom[0].ConfigMapRef.Name != "app-config-primary" || spec.Volumes[0].Secret.SecretName != "app-secret-primary" {
			t.Errorf("the primary reads %s and %s, want the -primary copies", spec.Containers[0].EnvFrom[0].ConfigMapRef.Name, spec.Volumes[0].Secret.SecretName)
		}
	}
	checkCopies("blue")
	cd, err := e.dyn.Resource(canaryGVR).Namespace(e.ns).Get(ctx, "conf", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tracked, _, _ := unstructured.NestedMap(cd.Object, "status", "trackedConfigs")
	if _, ok := tracked["configmap/app-config"]; !ok || len(tracked) != 2 {
		t.Errorf("status.trackedConfigs %v, want configmap/app-config and secret/app-secret", tracked)
	}
	if _, ok := tracked["secret/app-secret"]; !ok {
		t.Errorf("status.trackedConfigs %v, want secret/app-secret", tracked)
	}

	// A ConfigMap change, with the Deployment untouched, is a new release.
	cm.Data["color"] = "green"
	if _, err := e.kube.CoreV1().ConfigMaps(e.ns).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	r.steps([]stage{
		{Phase: "Initialized", Routes: weighted("conf", 100, 0)},
		{Phase: "Progressing", Routes: weighted("conf", 100, 0)},
		{Phase: "Progressing", Weight: 50, Routes: weighted("conf", 50, 50)},
		{Phase: "Promoting", Weight: 50, Routes: weighted("conf", 50, 50)},
		{Phase: "Finalising", Routes: weighted("conf", 100, 0)},
		{Phase: "Succeeded", Routes: weighted("conf", 100, 0)},
	}, 40)
	checkCopies("green")
}

func ptrTo[T any](v T) *T { return &v }
