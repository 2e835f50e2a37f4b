package traffic

import (
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	istioapi "istio.io/api/networking/v1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	istiofake "istio.io/client-go/pkg/clientset/versioned/fake"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubefake "k8s.io/client-go/kubernetes/fake"
)

func TestSimulatorSendsAsTheLiveRoutesSay(t *testing.T) {
	ctx := context.Background()
	primary := deployment("podinfo-primary", "r/podinfo:1.0.0", map[string]string{"app": "podinfo-primary"}, 2)
	canary := deployment("podinfo", "r/podinfo:1.1.0-bad", map[string]string{"app": "podinfo"}, 1)
	primary.Namespace, canary.Namespace = "test", "test"
	svcPrimary := service("podinfo-primary", map[string]string{"app": "podinfo-primary"})
	svcCanary := service("podinfo-canary", map[string]string{"app": "podinfo"})
	svcPrimary.Namespace, svcCanary.Namespace = "test", "test"
	kube := kubefake.NewClientset(&primary, &canary, &svcPrimary, &svcCanary)
	route := &networkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: "podinfo", Namespace: "test"}}
	route.Spec.Http = []*istioapi.HTTPRoute{weighted(90, 10)}
	ic := istiofake.NewSimpleClientset(route)

	sim, err := NewSimulator(kube, ic, SimulatorOptions{Namespaces: []string{"test"}, RPS: 40})
	if err != nil {
		t.Fatal(err)
	}
	sim.refresh(ctx)
	for range 100 {
		sim.send(0.1) // 10 s at 40 rps: 400 requests
	}
	snap := sim.Take("test")
	if got := snap.Shares["podinfo"]; got["podinfo-primary"] != 0.9 || got["podinfo-canary"] != 0.1 {
		t.Errorf("shares: got %v, want 90/10", got)
	}
	p, c := snap.Workloads["podinfo-primary"], snap.Workloads["podinfo"]
	if p == nil || c == nil {
		t.Fatalf("workloads: got %v, want podinfo-primary and podinfo", snap.Workloads)
	}
	// Fractions are carried over ticks: the counts are exact within one request.
	if p.Requests < 359 || p.Requests > 360 || c.Requests < 39 || c.Requests > 40 {
		t.Errorf("requests: got primary %d, canary %d, want 360 and 40", p.Requests, c.Requests)
	}
	if c.Errors < 11 || c.Errors > 12 || p.Errors != 0 {
		t.Errorf("errors: got primary %d, canary %d, want 0 and 12 (30%% of 40)", p.Errors, c.Errors)
	}
	if c.Version != "1.1.0-bad" || len(c.LatenciesMs) != c.Requests {
		t.Errorf("canary window: got version %q with %d latencies", c.Version, len(c.LatenciesMs))
	}
	if again := sim.Take("test"); len(again.Workloads) != 0 {
		t.Errorf("a second Take got %v, want an empty window", again.Workloads)
	}

	// The routes are read live: all traffic back to the primary.
	route.Spec.Http = []*istioapi.HTTPRoute{weighted(100, 0)}
	if _, err := ic.NetworkingV1().VirtualServices("test").Update(ctx, route, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	sim.refresh(ctx)
	for range 10 {
		sim.send(0.1)
	}
	if snap := sim.Take("test"); snap.Workloads["podinfo"] != nil {
		t.Errorf("after the rollback the canary still got %+v", *snap.Workloads["podinfo"])
	}

	srv := httptest.NewServer(sim.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`istio_requests_total{destination_service="podinfo-canary.test.svc.cluster.local",destination_service_name="podinfo-canary",destination_service_namespace="test",destination_version="1.1.0-bad",destination_workload="podinfo",destination_workload_namespace="test",reporter="destination",request_protocol="http",response_code="500",response_flags="-",source_workload="loadtester",source_workload_namespace="test"}`,
		`istio_request_duration_milliseconds_bucket{destination_service="podinfo-primary.test.svc.cluster.local"`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
