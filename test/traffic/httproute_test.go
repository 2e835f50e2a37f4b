package traffic

import (
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	istiofake "istio.io/client-go/pkg/clientset/versioned/fake"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubefake "k8s.io/client-go/kubernetes/fake"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"
)

func gwBackend(name string, weight int32) gwv1.HTTPBackendRef {
	return gwv1.HTTPBackendRef{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: gwv1.ObjectName(name)}, Weight: &weight}}
}

func TestSplitOfAnHTTPRoute(t *testing.T) {
	prefix, exact, regex := gwv1.PathMatchPathPrefix, gwv1.HeaderMatchExact, gwv1.HeaderMatchRegularExpression
	api := "/api"
	pct := int32(50)
	tests := []struct {
		name  string
		rules []gwv1.HTTPRouteRule
		mix   []RequestClass
		want  map[string]Load
	}{
		{
			name:  "weights",
			rules: []gwv1.HTTPRouteRule{{BackendRefs: []gwv1.HTTPBackendRef{gwBackend("podinfo-primary", 80), gwBackend("podinfo-canary", 20)}}},
			mix:   DefaultMix,
			want:  map[string]Load{"podinfo-primary": {Served: 80}, "podinfo-canary": {Served: 20}},
		},
		{
			// The fallback rule comes first in the list; the more specific match still wins.
			name: "A/B: the header rule is more specific than the fallback, whatever their order",
			rules: []gwv1.HTTPRouteRule{
				{Matches: []gwv1.HTTPRouteMatch{{Path: &gwv1.HTTPPathMatch{Type: &prefix, Value: &api}}}, BackendRefs: []gwv1.HTTPBackendRef{gwBackend("podinfo-primary", 100)}},
				{Matches: []gwv1.HTTPRouteMatch{{Path: &gwv1.HTTPPathMatch{Type: &prefix, Value: &api}, Headers: []gwv1.HTTPHeaderMatch{{Type: &exact, Name: "x-canary", Value: "insider"}}}},
					BackendRefs: []gwv1.HTTPBackendRef{gwBackend("podinfo-primary", 0), gwBackend("podinfo-canary", 100)}},
			},
			mix: []RequestClass{
				{Name: "insider", Share: 1, URI: "/api/x", Headers: map[string]string{"X-Canary": "insider"}},
				{Name: "other", Share: 2, URI: "/api"},
				{Name: "elsewhere", Share: 1, URI: "/apix"},
			},
			want: map[string]Load{"podinfo-canary": {Served: 25}, "podinfo-primary": {Served: 50}},
		},
		{
			name: "a cookie regex and a mirror with its percent",
			rules: []gwv1.HTTPRouteRule{
				{Matches: []gwv1.HTTPRouteMatch{{Headers: []gwv1.HTTPHeaderMatch{{Type: &regex, Name: "Cookie", Value: ".*flagger-cookie.*abc.*"}}}},
					BackendRefs: []gwv1.HTTPBackendRef{gwBackend("podinfo-primary", 0), gwBackend("podinfo-canary", 100)}},
				{BackendRefs: []gwv1.HTTPBackendRef{gwBackend("podinfo-primary", 100), gwBackend("podinfo-canary", 0)},
					Filters: []gwv1.HTTPRouteFilter{{Type: gwv1.HTTPRouteFilterRequestMirror, RequestMirror: &gwv1.HTTPRequestMirrorFilter{
						BackendRef: gwv1.BackendObjectReference{Name: "podinfo-canary"}, Percent: &pct}}}},
			},
			mix: []RequestClass{
				{Name: "sticky", Share: 1, Headers: map[string]string{"Cookie": "a=b; flagger-cookie=abc"}},
				{Name: "new", Share: 3},
			},
			want: map[string]Load{"podinfo-canary": {Served: 25, Mirrored: 37.5}, "podinfo-primary": {Served: 75}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			route := &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Name: "podinfo"}, Spec: gwv1.HTTPRouteSpec{Rules: tt.rules}}
			got := Split(FromHTTPRoute(route), tt.mix, 100)
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("Split (-want +got):\n%s", d)
			}
		})
	}
}

func TestSimulatorReadsHTTPRoutesAndExportsTheAppHistogram(t *testing.T) {
	primary := deployment("podinfo-primary", "r/podinfo:1.0.0", map[string]string{"app": "podinfo-primary"}, 2)
	canary := deployment("podinfo", "r/podinfo:1.1.0", map[string]string{"app": "podinfo"}, 1)
	primary.Namespace, canary.Namespace = "test", "test"
	svcPrimary := service("podinfo-primary", map[string]string{"app": "podinfo-primary"})
	svcCanary := service("podinfo-canary", map[string]string{"app": "podinfo"})
	svcPrimary.Namespace, svcCanary.Namespace = "test", "test"
	route := &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Name: "podinfo", Namespace: "test"},
		Spec: gwv1.HTTPRouteSpec{Rules: []gwv1.HTTPRouteRule{{BackendRefs: []gwv1.HTTPBackendRef{gwBackend("podinfo-primary", 90), gwBackend("podinfo-canary", 10)}}}}}
	sim, err := NewSimulator(kubefake.NewClientset(&primary, &canary, &svcPrimary, &svcCanary), istiofake.NewSimpleClientset(),
		SimulatorOptions{Namespaces: []string{"test"}, RPS: 40, GatewayAPI: gatewayfake.NewSimpleClientset(route)})
	if err != nil {
		t.Fatal(err)
	}
	sim.refresh(context.Background())
	for range 100 {
		sim.send(0.1)
	}
	if got := sim.Take("test").Shares["podinfo"]; got["podinfo-primary"] != 0.9 || got["podinfo-canary"] != 0.1 {
		t.Errorf("shares: got %v, want 90/10", got)
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
		`http_request_duration_seconds_count{kubernetes_namespace="test",kubernetes_pod_name="podinfo-5c9b7d8f4-sim01",status="200"} 40`,
		`http_request_duration_seconds_count{kubernetes_namespace="test",kubernetes_pod_name="podinfo-primary-5c9b7d8f4-sim01",status="200"} 360`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
