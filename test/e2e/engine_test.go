//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/util/retry"

	"github.com/siskin-dev/siskin/istio"
	"github.com/siskin-dev/siskin/test/lab"
	"github.com/siskin-dev/siskin/test/traffic"
)

// seedCanary is issue 3's seed Canary, verbatim but for the namespace, the names and the
// analysis interval, which tests shorten.
func seedCanary(t *testing.T, ns, name, interval string) []byte {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "knative", "testdata", "canary-seed.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	s = strings.Replace(s, "    interval: 1m\n    threshold", "    interval: "+interval+"\n    threshold", 1)
	s = strings.ReplaceAll(s, "namespace: default", "namespace: "+ns)
	s = strings.ReplaceAll(s, ".default.svc", "."+ns+".svc")
	s = strings.ReplaceAll(s, "podinfo", name)
	return []byte(s)
}

// startExporter serves Istio metrics for the test's workloads and has Prometheus scrape it.
func startExporter(t *testing.T, e *env) *traffic.Exporter {
	t.Helper()
	ex := traffic.NewExporter(0)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: ex.Handler()}
	go func() { _ = srv.Serve(ln) }()
	job := "e2e-" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))
	if err := e.lab.AddScrapeTarget(context.Background(), job, ln.Addr().String()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = e.lab.RemoveScrapeTarget(context.Background(), job, ln.Addr().String())
		_ = srv.Close()
		ex.Close()
	})
	return ex
}

// observed is what a user sees after a step: the Canary's status and the VirtualService.
type observed struct {
	Phase        string
	CanaryWeight int64
	FailedChecks int64
	Primary      int32
	Canary       int32
}

func (o observed) String() string {
	return fmt.Sprintf("%s status.canaryWeight=%d failedChecks=%d VirtualService=%d/%d", o.Phase, o.CanaryWeight, o.FailedChecks, o.Primary, o.Canary)
}

func (e *env) observe(name string) observed {
	e.t.Helper()
	ctx := context.Background()
	var o observed
	cd, err := e.dyn.Resource(canaryGVR).Namespace(e.ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatalf("get canary: %v", err)
	}
	o.Phase, _, _ = unstructured.NestedString(cd.Object, "status", "phase")
	o.CanaryWeight, _, _ = unstructured.NestedInt64(cd.Object, "status", "canaryWeight")
	o.FailedChecks, _, _ = unstructured.NestedInt64(cd.Object, "status", "failedChecks")
	vs, err := e.istio.NetworkingV1().VirtualServices(e.ns).Get(ctx, name, metav1.GetOptions{})
	if errors.IsNotFound(err) {
		return o
	}
	if err != nil {
		e.t.Fatalf("get VirtualService: %v", err)
	}
	if r, ok := istio.WeightsOf(vs); ok {
		o.Primary, o.Canary = int32(r.Primary), int32(r.Canary)
	} else if len(vs.Spec.Http) > 0 && len(vs.Spec.Http[0].Route) > 0 {
		o.Primary = vs.Spec.Http[0].Route[0].Weight
	}
	return o
}

func (e *env) apply(manifest []byte) {
	e.t.Helper()
	if _, err := e.lab.Apply(context.Background(), manifest); err != nil {
		e.t.Fatalf("apply: %v\n%s", err, manifest)
	}
}

func (e *env) createDeployment(name, image string, replicas int32) {
	e.t.Helper()
	_, err := e.kube.AppsV1().Deployments(e.ns).Create(context.Background(), lab.PodinfoDeployment(e.ns, name, image, replicas), metav1.CreateOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
}

// setImage is `kubectl set image`.
func (e *env) setImage(name, image string) {
	e.t.Helper()
	ctx := context.Background()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		d, err := e.kube.AppsV1().Deployments(e.ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		d.Spec.Template.Spec.Containers[0].Image = image
		_, err = e.kube.AppsV1().Deployments(e.ns).Update(ctx, d, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) deployment(name string) (image string, replicas int32) {
	e.t.Helper()
	d, err := e.kube.AppsV1().Deployments(e.ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return d.Spec.Template.Spec.Containers[0].Image, *d.Spec.Replicas
}

// stepThrough ticks Siskin once per interval and checks that every step leaves the canary
// either where it was (waiting for a rollout) or at the next expected state, until the last.
func stepThrough(t *testing.T, e *env, s *siskin, name string, interval time.Duration, want []observed, maxSteps int) {
	t.Helper()
	i := 0
	prev := e.observe(name)
	for step := 1; step <= maxSteps; step++ {
		if code, body := s.tick(fmt.Sprintf("%s-%d", t.Name(), step)); code != http.StatusOK {
			t.Fatalf("tick %d: %d %s", step, code, body)
		}
		got := e.observe(name)
		switch {
		case got == want[i]:
		case i+1 < len(want) && got == want[i+1]:
			i++
		case got == prev:
			// A step that waited: for the canary's pods, the primary's rollout, or not yet due.
		default:
			t.Fatalf("step %d: got %v, want %v or %v", step, got, want[i], want[min(i+1, len(want)-1)])
		}
		t.Logf("step %d: %v", step, got)
		prev = got
		if i == len(want)-1 {
			return
		}
		time.Sleep(interval)
	}
	t.Fatalf("after %d steps the canary is at %v, want %v", maxSteps, prev, want[len(want)-1])
}

func TestSeedCanaryReleaseSucceeds(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "default")
	ex := startExporter(t, e)
	ex.Set("default", "podinfo", traffic.Behaviour{RPS: 50, LatencyMs: 40})
	e.createDeployment("podinfo", e.lab.Registry()+"/lab/podinfo:1.0.0", 2)
	e.apply(seedCanary(t, "default", "podinfo", "1s"))
	s := startSiskin(t, e.lab, siskinOpts{namespace: "default"})

	stepThrough(t, e, s, "podinfo", time.Second, []observed{
		{Phase: "Initializing"},
		{Phase: "Initialized", Primary: 100},
	}, 20)
	if _, replicas := e.deployment("podinfo"); replicas != 0 {
		t.Errorf("after initialization the target has %d replicas, want 0", replicas)
	}
	if img, replicas := e.deployment("podinfo-primary"); img != e.lab.Registry()+"/lab/podinfo:1.0.0" || replicas != 2 {
		t.Errorf("primary: got %s ×%d", img, replicas)
	}

	e.setImage("podinfo", e.lab.Registry()+"/lab/podinfo:1.1.0")
	want := []observed{{Phase: "Initialized", Primary: 100}, {Phase: "Progressing", Primary: 100}}
	for w := int64(5); w <= 50; w += 5 {
		want = append(want, observed{Phase: "Progressing", CanaryWeight: w, Primary: int32(100 - w), Canary: int32(w)})
	}
	want = append(want,
		observed{Phase: "Promoting", CanaryWeight: 50, Primary: 50, Canary: 50},
		observed{Phase: "Finalising", Primary: 100},
		observed{Phase: "Succeeded", Primary: 100},
	)
	stepThrough(t, e, s, "podinfo", time.Second, want, 60)

	if img, _ := e.deployment("podinfo-primary"); img != e.lab.Registry()+"/lab/podinfo:1.1.0" {
		t.Errorf("primary runs %s, want the new image", img)
	}
	if _, replicas := e.deployment("podinfo"); replicas != 0 {
		t.Errorf("canary has %d replicas, want 0", replicas)
	}
}
