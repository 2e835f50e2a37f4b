package traffic

import (
	"math"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/types/known/wrapperspb"
	istioapi "istio.io/api/networking/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func dest(host string, weight int32) *istioapi.HTTPRouteDestination {
	return &istioapi.HTTPRouteDestination{Destination: &istioapi.Destination{Host: host}, Weight: weight}
}

func weighted(primary, canary int32) *istioapi.HTTPRoute {
	return &istioapi.HTTPRoute{Route: []*istioapi.HTTPRouteDestination{dest("podinfo-primary", primary), dest("podinfo-canary", canary)}}
}

func exact(v string) *istioapi.StringMatch {
	return &istioapi.StringMatch{MatchType: &istioapi.StringMatch_Exact{Exact: v}}
}

func prefix(v string) *istioapi.StringMatch {
	return &istioapi.StringMatch{MatchType: &istioapi.StringMatch_Prefix{Prefix: v}}
}

func regex(v string) *istioapi.StringMatch {
	return &istioapi.StringMatch{MatchType: &istioapi.StringMatch_Regex{Regex: v}}
}

func vs(routes ...*istioapi.HTTPRoute) *istioapi.VirtualService {
	return &istioapi.VirtualService{Hosts: []string{"podinfo"}, Http: routes}
}

// canaryWhen sends requests matching m to the canary and the rest to the primary, as
// Flagger's A/B testing does.
func canaryWhen(m ...*istioapi.HTTPMatchRequest) *istioapi.VirtualService {
	return vs(
		&istioapi.HTTPRoute{Match: m, Route: []*istioapi.HTTPRouteDestination{dest("podinfo-canary", 100)}},
		&istioapi.HTTPRoute{Route: []*istioapi.HTTPRouteDestination{dest("podinfo-primary", 100)}},
	)
}

var insiders = []RequestClass{
	{Name: "insider", Share: 0.2, URI: "/api/v1?beta=on", Headers: map[string]string{"X-User": "insider"}},
	{Name: "public", Share: 0.8, Method: "POST", URI: "/web"},
}

func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		name string
		vs   *istioapi.VirtualService
		mix  []RequestClass
		want map[string]Load
	}{
		{name: "all to primary", vs: vs(weighted(100, 0)), want: map[string]Load{"podinfo-primary": {Served: 1000}}},
		{name: "a step of 5", vs: vs(weighted(95, 5)), want: map[string]Load{"podinfo-primary": {Served: 950}, "podinfo-canary": {Served: 50}}},
		{name: "half way", vs: vs(weighted(50, 50)), want: map[string]Load{"podinfo-primary": {Served: 500}, "podinfo-canary": {Served: 500}}},
		{name: "all to canary", vs: vs(weighted(0, 100)), want: map[string]Load{"podinfo-canary": {Served: 1000}}},
		{name: "full host names", vs: vs(&istioapi.HTTPRoute{Route: []*istioapi.HTTPRouteDestination{
			dest("podinfo-primary.test.svc.cluster.local", 90), dest("podinfo-canary.test.svc.cluster.local", 10)}}),
			want: map[string]Load{"podinfo-primary": {Served: 900}, "podinfo-canary": {Served: 100}}},
		{name: "a lone destination takes all whatever its weight",
			vs:   vs(&istioapi.HTTPRoute{Route: []*istioapi.HTTPRouteDestination{dest("podinfo-primary", 0)}}),
			want: map[string]Load{"podinfo-primary": {Served: 1000}}},
		{name: "weights not adding up to 100 are normalised", vs: vs(weighted(30, 10)),
			want: map[string]Load{"podinfo-primary": {Served: 750}, "podinfo-canary": {Served: 250}}},
		{name: "header match sends its share to the canary", mix: insiders,
			vs:   canaryWhen(&istioapi.HTTPMatchRequest{Headers: map[string]*istioapi.StringMatch{"x-user": exact("insider")}}),
			want: map[string]Load{"podinfo-primary": {Served: 800}, "podinfo-canary": {Served: 200}}},
		{name: "a regex must match the whole value", mix: insiders,
			vs:   canaryWhen(&istioapi.HTTPMatchRequest{Headers: map[string]*istioapi.StringMatch{"x-user": regex("ins")}}),
			want: map[string]Load{"podinfo-primary": {Served: 1000}}},
		{name: "a regex matching the whole value", mix: insiders,
			vs:   canaryWhen(&istioapi.HTTPMatchRequest{Headers: map[string]*istioapi.StringMatch{"x-user": regex("ins.*")}}),
			want: map[string]Load{"podinfo-primary": {Served: 800}, "podinfo-canary": {Served: 200}}},
		{name: "an empty StringMatch asks for presence", mix: insiders,
			vs:   canaryWhen(&istioapi.HTTPMatchRequest{Headers: map[string]*istioapi.StringMatch{"x-user": {}}}),
			want: map[string]Load{"podinfo-primary": {Served: 800}, "podinfo-canary": {Served: 200}}},
		{name: "matches are ORed, conditions ANDed", mix: insiders,
			vs: canaryWhen(
				&istioapi.HTTPMatchRequest{Uri: prefix("/web"), Method: exact("GET")},
				&istioapi.HTTPMatchRequest{Uri: prefix("/api"), QueryParams: map[string]*istioapi.StringMatch{"beta": exact("on")}},
			),
			want: map[string]Load{"podinfo-primary": {Served: 800}, "podinfo-canary": {Served: 200}}},
		{name: "uri prefix and method", mix: insiders,
			vs:   canaryWhen(&istioapi.HTTPMatchRequest{Uri: prefix("/web"), Method: exact("POST")}),
			want: map[string]Load{"podinfo-primary": {Served: 200}, "podinfo-canary": {Served: 800}}},
		{name: "ignoreUriCase", mix: insiders,
			vs:   canaryWhen(&istioapi.HTTPMatchRequest{Uri: exact("/WEB"), IgnoreUriCase: true}),
			want: map[string]Load{"podinfo-primary": {Served: 200}, "podinfo-canary": {Served: 800}}},
		{name: "withoutHeaders", mix: insiders,
			vs:   canaryWhen(&istioapi.HTTPMatchRequest{WithoutHeaders: map[string]*istioapi.StringMatch{"x-user": {}}}),
			want: map[string]Load{"podinfo-primary": {Served: 200}, "podinfo-canary": {Served: 800}}},
		{name: "conditions the simulator cannot see are unmet", mix: insiders,
			vs:   canaryWhen(&istioapi.HTTPMatchRequest{SourceLabels: map[string]string{"app": "frontend"}}),
			want: map[string]Load{"podinfo-primary": {Served: 1000}}},
		{name: "requests no route takes reach nothing", mix: insiders,
			vs: vs(&istioapi.HTTPRoute{Match: []*istioapi.HTTPMatchRequest{{Uri: prefix("/api")}},
				Route: []*istioapi.HTTPRouteDestination{dest("podinfo-primary", 100)}}),
			want: map[string]Load{"podinfo-primary": {Served: 200}}},
		{name: "redirects reach nothing",
			vs:   vs(&istioapi.HTTPRoute{Redirect: &istioapi.HTTPRedirect{Uri: "/elsewhere"}}, weighted(100, 0)),
			want: map[string]Load{}},
		{name: "mirror with a percentage", vs: func() *istioapi.VirtualService {
			r := weighted(100, 0)
			r.Mirror = &istioapi.Destination{Host: "podinfo-canary"}
			r.MirrorPercentage = &istioapi.Percent{Value: 50}
			return vs(r)
		}(), want: map[string]Load{"podinfo-primary": {Served: 1000}, "podinfo-canary": {Mirrored: 500}}},
		{name: "mirror without a percentage copies everything", vs: func() *istioapi.VirtualService {
			r := weighted(100, 0)
			r.Mirror = &istioapi.Destination{Host: "podinfo-canary"}
			return vs(r)
		}(), want: map[string]Load{"podinfo-primary": {Served: 1000}, "podinfo-canary": {Mirrored: 1000}}},
		{name: "the older mirrorPercent", vs: func() *istioapi.VirtualService {
			r := weighted(100, 0)
			r.Mirror = &istioapi.Destination{Host: "podinfo-canary"}
			r.MirrorPercent = wrapperspb.UInt32(25)
			return vs(r)
		}(), want: map[string]Load{"podinfo-primary": {Served: 1000}, "podinfo-canary": {Mirrored: 250}}},
		{name: "mirrors list", vs: func() *istioapi.VirtualService {
			r := weighted(90, 10)
			r.Mirrors = []*istioapi.HTTPMirrorPolicy{{Destination: &istioapi.Destination{Host: "podinfo-shadow"}, Percentage: &istioapi.Percent{Value: 10}}}
			return vs(r)
		}(), want: map[string]Load{"podinfo-primary": {Served: 900}, "podinfo-canary": {Served: 100}, "podinfo-shadow": {Mirrored: 100}}},
		{name: "no VirtualService", vs: nil, want: map[string]Load{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Split(tc.vs, tc.mix, 1000)
			if tc.mix == nil {
				got = Split(tc.vs, DefaultMix, 1000)
			}
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateApprox(0, 1e-9)); diff != "" {
				t.Errorf("Split (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPlan(t *testing.T) {
	good, bad := BehaviourOf("1.0.0"), BehaviourOf("1.1.0-bad")
	backends := map[string]Backend{
		"podinfo":         {Workload: "podinfo-primary", Version: "1.0.0", Behaviour: good, Ready: true},
		"podinfo-primary": {Workload: "podinfo-primary", Version: "1.0.0", Behaviour: good, Ready: true},
		"podinfo-canary":  {Workload: "podinfo", Version: "1.1.0-bad", Behaviour: bad, Ready: true},
	}
	scaledDown := map[string]Backend{
		"podinfo-primary": backends["podinfo-primary"],
		"podinfo-canary":  {Workload: "podinfo", Version: "1.1.0-bad", Behaviour: bad},
	}
	mirrored := weighted(100, 0)
	mirrored.Mirror = &istioapi.Destination{Host: "podinfo-canary"}
	mirrored.MirrorPercentage = &istioapi.Percent{Value: 10}
	for _, tc := range []struct {
		name            string
		vs              *istioapi.VirtualService
		backends        map[string]Backend
		want            map[string]Tally
		wantUnavailable float64
	}{
		{name: "at rest", vs: vs(weighted(100, 0)), backends: backends,
			want: map[string]Tally{"podinfo-primary": {Load: Load{Served: 1000}, Errors: 2, Service: "podinfo-primary"}}},
		{name: "a bad canary at 10%", vs: vs(weighted(90, 10)), backends: backends,
			want: map[string]Tally{
				"podinfo-primary": {Load: Load{Served: 900}, Errors: 1.8, Service: "podinfo-primary"},
				"podinfo":         {Load: Load{Served: 100}, Errors: 30, Service: "podinfo-canary"},
			}},
		{name: "two hosts selecting one Deployment add up",
			vs:       vs(&istioapi.HTTPRoute{Route: []*istioapi.HTTPRouteDestination{dest("podinfo", 50), dest("podinfo-primary", 50)}}),
			backends: backends,
			want:     map[string]Tally{"podinfo-primary": {Load: Load{Served: 1000}, Errors: 2, Service: "podinfo"}}},
		{name: "mirrored requests fail too", vs: vs(mirrored), backends: backends,
			want: map[string]Tally{
				"podinfo-primary": {Load: Load{Served: 1000}, Errors: 2, Service: "podinfo-primary"},
				"podinfo":         {Load: Load{Mirrored: 100}, Errors: 30, Service: "podinfo-canary"},
			}},
		{name: "a scaled-down canary answers nothing", vs: vs(weighted(80, 20)), backends: scaledDown,
			want:            map[string]Tally{"podinfo-primary": {Load: Load{Served: 800}, Errors: 1.6, Service: "podinfo-primary"}},
			wantUnavailable: 200},
		{name: "a host without a Service", vs: vs(weighted(80, 20)), backends: map[string]Backend{"podinfo-primary": backends["podinfo-primary"]},
			want:            map[string]Tally{"podinfo-primary": {Load: Load{Served: 800}, Errors: 1.6, Service: "podinfo-primary"}},
			wantUnavailable: 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, unavailable := Plan(tc.vs, DefaultMix, 1000, tc.backends)
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateApprox(0, 1e-9)); diff != "" {
				t.Errorf("Plan (-want +got):\n%s", diff)
			}
			if math.Abs(unavailable-tc.wantUnavailable) > 1e-9 {
				t.Errorf("unavailable: got %v, want %v", unavailable, tc.wantUnavailable)
			}
		})
	}
}

func TestVersionOf(t *testing.T) {
	for _, tc := range []struct{ image, want string }{
		{"127.0.0.1:5000/demo-good/podinfo:1.1.0", "1.1.0"},
		{"127.0.0.1:5000/demo-bad/podinfo:1.1.0-bad@sha256:0123", "1.1.0-bad"},
		{"127.0.0.1:5000/demo/podinfo", "latest"},
		{"127.0.0.1:5000/demo/podinfo@sha256:0123", "latest"},
		{"ghcr.io/stefanprodan/podinfo:6.0.0-slow", "6.0.0-slow"},
	} {
		t.Run(tc.image, func(t *testing.T) {
			if got := VersionOf(tc.image); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestBehaviourOf(t *testing.T) {
	for _, tc := range []struct {
		version string
		want    Behaviour
	}{
		{"1.1.0", Behaviour{ErrorRate: 0.002, LatencyMs: 40}},
		{"1.1.0-bad", Behaviour{ErrorRate: 0.3, LatencyMs: 40}},
		{"1.1.0-slow", Behaviour{ErrorRate: 0.002, LatencyMs: 800}},
		{"2.0.0-bad-slow", Behaviour{ErrorRate: 0.3, LatencyMs: 800}},
	} {
		t.Run(tc.version, func(t *testing.T) {
			if got := BehaviourOf(tc.version); got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func deployment(name, image string, labels map[string]string, available int32) appsv1.Deployment {
	return appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: labels},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: image}}},
		}},
		Status: appsv1.DeploymentStatus{AvailableReplicas: available},
	}
}

func service(name string, selector map[string]string) corev1.Service {
	return corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.ServiceSpec{Selector: selector}}
}

func TestBackends(t *testing.T) {
	deps := []appsv1.Deployment{
		deployment("podinfo-primary", "r/podinfo:1.0.0", map[string]string{"app": "podinfo-primary", "tier": "web"}, 2),
		deployment("podinfo", "r/podinfo:1.1.0-bad@sha256:00", map[string]string{"app": "podinfo"}, 0),
	}
	svcs := []corev1.Service{
		service("podinfo", map[string]string{"app": "podinfo-primary"}),
		service("podinfo-primary", map[string]string{"app": "podinfo-primary"}),
		service("podinfo-canary", map[string]string{"app": "podinfo"}),
		service("headless", nil),
		service("orphan", map[string]string{"app": "gone"}),
	}
	got := Backends(svcs, deps, BehaviourOf)
	want := map[string]Backend{
		"podinfo":         {Workload: "podinfo-primary", Version: "1.0.0", Behaviour: BehaviourOf("1.0.0"), Ready: true},
		"podinfo-primary": {Workload: "podinfo-primary", Version: "1.0.0", Behaviour: BehaviourOf("1.0.0"), Ready: true},
		"podinfo-canary":  {Workload: "podinfo", Version: "1.1.0-bad", Behaviour: BehaviourOf("1.1.0-bad")},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Backends (-want +got):\n%s", diff)
	}
}
