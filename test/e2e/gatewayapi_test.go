//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/util/retry"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/siskin-dev/siskin/test/lab"
	"github.com/siskin-dev/siskin/test/traffic"
)

// The strategies on the Gateway API (provider gatewayapi:v1), end to end against the lab's
// real HTTPRoute CRD (standard channel, v1.4.1): after every step the Canary's status and the
// HTTPRoute's rules; no VirtualService and no DestinationRule, ever.

func gp[T any](v T) *T { return &v }

// gwCanary is a Canary on the Gateway API; spec is the rest of spec from column 0.
func gwCanary(ns, name, spec string) []byte {
	return specCanary(ns, name, "provider: gatewayapi:v1\n"+spec)
}

// newGatewayRel is a rel whose routing object is the HTTPRoute.
func newGatewayRel(t *testing.T, e *env, s *siskin, name string, parents []gwv1.ParentReference, hostnames []gwv1.Hostname) *rel {
	r := newRel(t, e, s, name)
	r.gateway, r.parentRefs, r.hostnames = true, parents, hostnames
	return r
}

// gatewayParent is a parentRef to an ingress Gateway as the apiserver stores it (group and
// kind defaulted).
func gatewayParent(name, ns string) gwv1.ParentReference {
	return gwv1.ParentReference{Group: gp(gwv1.Group(gwv1.GroupName)), Kind: gp(gwv1.Kind("Gateway")), Namespace: gp(gwv1.Namespace(ns)), Name: gwv1.ObjectName(name)}
}

// meshParent is the GAMMA parentRef: the Service itself (sidecars, ambient waypoints).
func meshParent(name string, port int32) gwv1.ParentReference {
	return gwv1.ParentReference{Group: gp(gwv1.Group("")), Kind: gp(gwv1.Kind("Service")), Name: gwv1.ObjectName(name), Port: gp(gwv1.PortNumber(port))}
}

// checkGatewayInvariants asserts what holds after every step once the HTTPRoute exists: its
// parents, hostnames, Flagger's annotations and the Canary as its controller; and that this
// path created no DestinationRule.
func (r *rel) checkGatewayInvariants(step int, got snap) {
	r.t.Helper()
	if got.DRPrimaryFound || got.DRCanaryFound || got.VSFound {
		r.t.Errorf("step %d: Istio objects on the Gateway API path: DestinationRules %v/%v, VirtualService %v", step, got.DRPrimaryFound, got.DRCanaryFound, got.VSFound)
	}
	if !got.HRFound {
		return
	}
	if d := cmp.Diff(r.parentRefs, got.HRParents); d != "" {
		r.t.Errorf("step %d: parentRefs (-want +got):\n%s", step, d)
	}
	if d := cmp.Diff(r.hostnames, got.HRHostnames); d != "" {
		r.t.Errorf("step %d: hostnames (-want +got):\n%s", step, d)
	}
	for _, a := range []string{"helm.toolkit.fluxcd.io/driftDetection", "kustomize.toolkit.fluxcd.io/reconcile"} {
		if got.HRAnnotations[a] != "disabled" {
			r.t.Errorf("step %d: annotation %s = %q, want disabled", step, a, got.HRAnnotations[a])
		}
	}
	if !got.HROwnedByCanary {
		r.t.Errorf("step %d: the HTTPRoute is not controlled by the Canary", step)
	}
}

// initializeGateway takes a fresh gatewayapi canary to Initialized and changes its image.
func (r *rel) initializeGateway(rules func(snap) []gwv1.HTTPRouteRule) {
	r.t.Helper()
	want := []stage{{}, {Phase: "Initializing"}, {Phase: "Initialized", Rules: rules}}
	if r.snap().Phase == "Initializing" {
		want = want[1:]
	}
	r.steps(want, 30)
	r.e.setImage(r.name, r.e.lab.Registry()+"/lab/"+r.name+":2.0.0")
}

func gwRef(name string, weight int32) gwv1.HTTPBackendRef {
	return gwv1.HTTPBackendRef{BackendRef: gwv1.BackendRef{
		BackendObjectReference: gwv1.BackendObjectReference{Group: gp(gwv1.Group("")), Kind: gp(gwv1.Kind("Service")),
			Name: gwv1.ObjectName(name), Port: gp(gwv1.PortNumber(9898))},
		Weight: gp(weight),
	}}
}

func everyPathMatch() []gwv1.HTTPRouteMatch {
	return []gwv1.HTTPRouteMatch{{Path: &gwv1.HTTPPathMatch{Type: gp(gwv1.PathMatchPathPrefix), Value: gp("/")}}}
}

// gwWeighted is the single rule of the canary strategy.
func gwWeighted(name string, primary, canary int32) func(snap) []gwv1.HTTPRouteRule {
	return func(snap) []gwv1.HTTPRouteRule {
		return []gwv1.HTTPRouteRule{{Matches: everyPathMatch(), BackendRefs: []gwv1.HTTPBackendRef{gwRef(name+"-primary", primary), gwRef(name+"-canary", canary)}}}
	}
}

func gwMirror(name string, percent *int32) gwv1.HTTPRouteFilter {
	return gwv1.HTTPRouteFilter{Type: gwv1.HTTPRouteFilterRequestMirror, RequestMirror: &gwv1.HTTPRequestMirrorFilter{
		BackendRef: gwv1.BackendObjectReference{Group: gp(gwv1.Group("")), Kind: gp(gwv1.Kind("Service")),
			Name: gwv1.ObjectName(name + "-canary"), Port: gp(gwv1.PortNumber(9898))}, Percent: percent}}
}

// TestGatewayAPICanaryReleaseIsPromoted: progressive weights on an HTTPRoute behind an ingress
// Gateway, with the built-in checks measured by Flagger's HTTP observer queries (the app's
// http_request_duration_seconds, which the exporter serves), promotion, and a hand edit of the
// weights put back by the next step.
func TestGatewayAPICanaryReleaseIsPromoted(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "gw-canary")
	ex := startExporter(t, e)
	ex.Set(e.ns, "podinfo", traffic.Behaviour{RPS: 20, LatencyMs: 30})
	e.createDeployment("podinfo", e.lab.Registry()+"/lab/podinfo:1.0.0", 2)
	e.apply(gwCanary(e.ns, "podinfo", `service:
  port: 9898
  hosts: [app.example.com]
  gatewayRefs:
    - name: public
      namespace: istio-ingress
analysis:
  interval: 10s
  threshold: 2
  maxWeight: 30
  stepWeight: 10
  metrics:
    - name: request-success-rate
      thresholdRange:
        min: 99
      interval: 1m
    - name: request-duration
      thresholdRange:
        max: 500
      interval: 30s
`))
	s := startSiskin(t, e.lab, siskinOpts{namespace: e.ns})
	r := newGatewayRel(t, e, s, "podinfo", []gwv1.ParentReference{gatewayParent("public", "istio-ingress")}, []gwv1.Hostname{"app.example.com"})
	waitForHTTPRate(t, e, "podinfo")
	r.initializeGateway(gwWeighted("podinfo", 100, 0))
	want := []stage{
		{Phase: "Initialized", Rules: gwWeighted("podinfo", 100, 0)},
		{Phase: "Progressing", Rules: gwWeighted("podinfo", 100, 0)},
	}
	for _, w := range []int32{10, 20, 30} {
		want = append(want, stage{Phase: "Progressing", Weight: int64(w), Rules: gwWeighted("podinfo", 100-w, w)})
	}
	want = append(want,
		stage{Phase: "Promoting", Weight: 30, Rules: gwWeighted("podinfo", 70, 30)},
		stage{Phase: "Finalising", Rules: gwWeighted("podinfo", 100, 0)},
		stage{Phase: "Succeeded", Rules: gwWeighted("podinfo", 100, 0)},
	)
	r.steps(want, 40)
	checkPromoted(t, e, "podinfo")

	// A hand edit of the weights (Flux, a user) is put back by the next step.
	ctx := context.Background()
	live, err := e.gw.GatewayV1().HTTPRoutes(e.ns).Get(ctx, "podinfo", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	*live.Spec.Rules[0].BackendRefs[0].Weight, *live.Spec.Rules[0].BackendRefs[1].Weight = 0, 100
	if _, err := e.gw.GatewayV1().HTTPRoutes(e.ns).Update(ctx, live, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if !r.tick() {
		t.Fatal("the canary did not step after the hand edit")
	}
	if d := (stage{Phase: "Succeeded", Rules: gwWeighted("podinfo", 100, 0)}).diff(r.snap()); d != "" {
		t.Errorf("after the hand edit and one step:\n%s", d)
	}
}

// waitForHTTPRate waits until Prometheus has the app's series for the workload, so the first
// checks of the HTTP observer queries have data.
func waitForHTTPRate(t *testing.T, e *env, workload string) {
	t.Helper()
	q := fmt.Sprintf(`sum(rate(http_request_duration_seconds_count{kubernetes_namespace=%q,kubernetes_pod_name=~"%s-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"}[30s]))`, e.ns, workload)
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if v, ok := promQuery(t, e.lab.PrometheusURL(), q); ok && v > 0 {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("no http_request_duration_seconds for %s in Prometheus", workload)
}

// TestGatewayAPIAlertAbortsToThePrimary: an Alertmanager alert naming the canary rolls it back
// at once: the HTTPRoute sends everything to the primary again.
func TestGatewayAPIAlertAbortsToThePrimary(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "gw-abort")
	e.createDeployment("podinfo", e.lab.Registry()+"/lab/podinfo:1.0.0", 1)
	e.apply(gwCanary(e.ns, "podinfo", `service:
  port: 9898
  gatewayRefs:
    - name: public
      namespace: istio-ingress
analysis:
  interval: 10s
  threshold: 2
  maxWeight: 50
  stepWeight: 10
`))
	s := startSiskin(t, e.lab, siskinOpts{namespace: e.ns})
	r := newGatewayRel(t, e, s, "podinfo", []gwv1.ParentReference{gatewayParent("public", "istio-ingress")}, nil)
	r.initializeGateway(gwWeighted("podinfo", 100, 0))
	r.steps([]stage{
		{Phase: "Initialized", Rules: gwWeighted("podinfo", 100, 0)},
		{Phase: "Progressing", Rules: gwWeighted("podinfo", 100, 0)},
		{Phase: "Progressing", Weight: 10, Rules: gwWeighted("podinfo", 90, 10)},
		{Phase: "Progressing", Weight: 20, Rules: gwWeighted("podinfo", 80, 20)},
	}, 20)
	body := alertmanagerBody(t, "firing", "00000000000000a1", map[string]string{
		"alertname": "PodinfoErrors", "namespace": e.ns, "canary": "podinfo", "severity": "critical"})
	code, reply := s.post("/webhooks/alertmanager", map[string]string{"Content-Type": "application/json", "User-Agent": "Alertmanager/0.25.0"}, body)
	if code != http.StatusOK {
		t.Fatalf("alert: %d %s", code, reply)
	}
	got := r.snap()
	if d := (stage{Phase: "Failed", Rules: gwWeighted("podinfo", 100, 0)}).diff(got); d != "" {
		t.Errorf("right after the alert's reply:\n%s", d)
	}
	r.checkGatewayInvariants(0, got)
	if _, replicas := e.deployment("podinfo"); replicas != 0 {
		t.Errorf("canary has %d replicas after the abort, want 0", replicas)
	}
}

// abRules is the A/B shape on the Gateway API: the analysis headers merged into the service
// match route to the canary; the fallback rule sends the rest of the service match to the
// primary, with no timeouts field at all (Flagger v1.36.1 writes timeouts.request: "" there,
// which the v1.4.1 schema refuses).
func abRules(name string, primary, canary int32) func(snap) []gwv1.HTTPRouteRule {
	return func(snap) []gwv1.HTTPRouteRule {
		api := &gwv1.HTTPPathMatch{Type: gp(gwv1.PathMatchPathPrefix), Value: gp("/api")}
		return []gwv1.HTTPRouteRule{
			{
				Matches: []gwv1.HTTPRouteMatch{
					{Path: api, Headers: []gwv1.HTTPHeaderMatch{{Type: gp(gwv1.HeaderMatchExact), Name: "x-canary", Value: "insider"}}},
					{Path: api, Headers: []gwv1.HTTPHeaderMatch{{Type: gp(gwv1.HeaderMatchRegularExpression), Name: "cookie", Value: "^(.*?;)?(canary=always)(;.*)?$"}}},
				},
				BackendRefs: []gwv1.HTTPBackendRef{gwRef(name+"-primary", primary), gwRef(name+"-canary", canary)},
			},
			{Matches: []gwv1.HTTPRouteMatch{{Path: api}}, BackendRefs: []gwv1.HTTPBackendRef{gwRef(name+"-primary", 100)}},
		}
	}
}

// TestGatewayAPIABTestingInTheMesh: A/B on a GAMMA HTTPRoute (the parent is the Service, as
// for sidecars and ambient waypoints), iterations, promotion.
func TestGatewayAPIABTestingInTheMesh(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "gw-ab")
	e.createDeployment("abtest", e.lab.Registry()+"/lab/abtest:1.0.0", 1)
	e.apply(gwCanary(e.ns, "abtest", `service:
  port: 9898
  gatewayRefs:
    - group: ""
      kind: Service
      name: abtest
      port: 9898
  match:
    - uri:
        prefix: /api
analysis:
  interval: 10s
  threshold: 2
  iterations: 2
  match:
    - headers:
        x-canary:
          exact: insider
    - headers:
        cookie:
          regex: "^(.*?;)?(canary=always)(;.*)?$"
`))
	s := startSiskin(t, e.lab, siskinOpts{namespace: e.ns})
	r := newGatewayRel(t, e, s, "abtest", []gwv1.ParentReference{meshParent("abtest", 9898)}, nil)
	r.initializeGateway(abRules("abtest", 100, 0))
	want := []stage{
		{Phase: "Initialized", Rules: abRules("abtest", 100, 0)},
		{Phase: "Progressing", Rules: abRules("abtest", 100, 0)},
	}
	for i := int64(1); i <= 2; i++ {
		want = append(want, stage{Phase: "Progressing", Weight: 100, Iterations: i, Rules: abRules("abtest", 0, 100)})
	}
	want = append(want,
		stage{Phase: "Promoting", Weight: 100, Iterations: 2, Rules: abRules("abtest", 0, 100)},
		stage{Phase: "Finalising", Rules: abRules("abtest", 100, 0)},
		stage{Phase: "Succeeded", Rules: abRules("abtest", 100, 0)},
	)
	r.steps(want, 30)
	checkPromoted(t, e, "abtest")
}

// TestGatewayAPIBlueGreenWithMirroring: blue/green iterations with the requests mirrored to the
// canary through a RequestMirror filter, then the switch and promotion.
func TestGatewayAPIBlueGreenWithMirroring(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "gw-bg")
	e.createDeployment("bluegreen", e.lab.Registry()+"/lab/bluegreen:1.0.0", 1)
	e.apply(gwCanary(e.ns, "bluegreen", `service:
  port: 9898
  gatewayRefs:
    - name: public
      namespace: istio-ingress
analysis:
  interval: 10s
  threshold: 2
  iterations: 2
  mirror: true
`))
	s := startSiskin(t, e.lab, siskinOpts{namespace: e.ns})
	r := newGatewayRel(t, e, s, "bluegreen", []gwv1.ParentReference{gatewayParent("public", "istio-ingress")}, nil)
	r.initializeGateway(gwWeighted("bluegreen", 100, 0))
	mirrored := func(snap) []gwv1.HTTPRouteRule {
		rules := gwWeighted("bluegreen", 100, 0)(snap{})
		rules[0].Filters = []gwv1.HTTPRouteFilter{gwMirror("bluegreen", nil)}
		return rules
	}
	r.steps([]stage{
		{Phase: "Initialized", Rules: gwWeighted("bluegreen", 100, 0)},
		{Phase: "Progressing", Rules: gwWeighted("bluegreen", 100, 0)},
		{Phase: "Progressing", Iterations: 1, Rules: mirrored},
		{Phase: "Progressing", Iterations: 2, Rules: mirrored},
		{Phase: "Progressing", Weight: 100, Iterations: 3, Rules: gwWeighted("bluegreen", 0, 100)},
		{Phase: "Promoting", Weight: 100, Iterations: 3, Rules: gwWeighted("bluegreen", 0, 100)},
		{Phase: "Finalising", Rules: gwWeighted("bluegreen", 100, 0)},
		{Phase: "Succeeded", Rules: gwWeighted("bluegreen", 100, 0)},
	}, 30)
	checkPromoted(t, e, "bluegreen")
}

// stickyRules is session affinity on the Gateway API, with the cookie the status names: during
// the release a rule pins the cookie's requests to the canary and the weighted rule sets the
// cookie on the canary's responses; after it, a rule expires the previous cookie.
func stickyRules(name string, primary, canary int32) func(snap) []gwv1.HTTPRouteRule {
	return func(got snap) []gwv1.HTTPRouteRule {
		cookieMatch := func(cookie string) []gwv1.HTTPRouteMatch {
			n, v, _ := strings.Cut(cookie, "=")
			// The schema defaults the path of a match that has none: every path.
			return []gwv1.HTTPRouteMatch{{Path: everyPathMatch()[0].Path, Headers: []gwv1.HTTPHeaderMatch{{Type: gp(gwv1.HeaderMatchRegularExpression), Name: "Cookie",
				Value: ".*" + n + ".*" + v + ".*"}}}}
		}
		setCookie := func(value string) []gwv1.HTTPRouteFilter {
			return []gwv1.HTTPRouteFilter{{Type: gwv1.HTTPRouteFilterResponseHeaderModifier,
				ResponseHeaderModifier: &gwv1.HTTPHeaderFilter{Add: []gwv1.HTTPHeader{{Name: "Set-Cookie", Value: value}}}}}
		}
		weighted := gwWeighted(name, primary, canary)(got)[0]
		if canary == 0 {
			if got.PreviousCookie == "" {
				return []gwv1.HTTPRouteRule{weighted}
			}
			expire := gwv1.HTTPRouteRule{Matches: cookieMatch(got.PreviousCookie), Filters: setCookie(got.PreviousCookie + "; Max-Age=-1"),
				BackendRefs: []gwv1.HTTPBackendRef{gwRef(name+"-primary", 100), gwRef(name+"-canary", 0)}}
			return []gwv1.HTTPRouteRule{expire, weighted}
		}
		weighted.BackendRefs[1].Filters = setCookie(got.Cookie + "; Max-Age=600")
		sticky := gwv1.HTTPRouteRule{Matches: cookieMatch(got.Cookie), BackendRefs: []gwv1.HTTPBackendRef{gwRef(name+"-primary", 0), gwRef(name+"-canary", 100)}}
		return []gwv1.HTTPRouteRule{sticky, weighted}
	}
}

// TestGatewayAPISessionAffinity: progressive weights with session affinity through cookies.
func TestGatewayAPISessionAffinity(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "gw-sticky")
	e.createDeployment("sticky", e.lab.Registry()+"/lab/sticky:1.0.0", 1)
	e.apply(gwCanary(e.ns, "sticky", `service:
  port: 9898
  gatewayRefs:
    - name: public
      namespace: istio-ingress
analysis:
  interval: 10s
  threshold: 2
  maxWeight: 20
  stepWeight: 10
  sessionAffinity:
    cookieName: flagger-cookie
    maxAge: 600
`))
	s := startSiskin(t, e.lab, siskinOpts{namespace: e.ns})
	r := newGatewayRel(t, e, s, "sticky", []gwv1.ParentReference{gatewayParent("public", "istio-ingress")}, nil)
	r.initializeGateway(stickyRules("sticky", 100, 0))
	seen := r.steps([]stage{
		{Phase: "Initialized", Rules: stickyRules("sticky", 100, 0)},
		{Phase: "Progressing", Rules: stickyRules("sticky", 100, 0)},
		{Phase: "Progressing", Weight: 10, Rules: stickyRules("sticky", 90, 10)},
		{Phase: "Progressing", Weight: 20, Rules: stickyRules("sticky", 80, 20)},
		{Phase: "Promoting", Weight: 20, Rules: stickyRules("sticky", 80, 20)},
		{Phase: "Finalising", Rules: stickyRules("sticky", 100, 0)},
		{Phase: "Succeeded", Rules: stickyRules("sticky", 100, 0)},
	}, 30)
	if last := seen[len(seen)-1]; last.PreviousCookie == "" || len(last.HRRules) != 2 {
		t.Errorf("after the release: previous cookie %q, %d rules; want the cookie expired by a rule of its own", last.PreviousCookie, len(last.HRRules))
	}
	checkPromoted(t, e, "sticky")
}

// TestGatewayAPIBadInputIsReported: what the Gateway API cannot take is a status condition and
// an Event on its Canary, never a crash, and never stops the canary beside it.
func TestGatewayAPIBadInputIsReported(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "gw-invalid")
	for _, name := range []string{"good", "norefs", "prefix", "unknown", "upper"} {
		e.createDeployment(name, e.lab.Registry()+"/lab/"+name+":1.0.0", 1)
	}
	refs := "  gatewayRefs:\n    - name: public\n      namespace: istio-ingress\n"
	analysis := "analysis:\n  interval: 10s\n  threshold: 2\n  maxWeight: 50\n  stepWeight: 10\n"
	e.apply(gwCanary(e.ns, "good", "service:\n  port: 9898\n"+refs+analysis))
	e.apply(gwCanary(e.ns, "norefs", "service:\n  port: 9898\n"+analysis))
	e.apply(gwCanary(e.ns, "prefix", "service:\n  port: 9898\n"+refs+"  match:\n    - headers:\n        x-user:\n          prefix: beta\n"+analysis))
	e.apply(specCanary(e.ns, "unknown", "provider: linkerd\nservice:\n  port: 9898\n"+analysis))
	// Through Siskin's checks, refused by the CRD's schema: hostnames are lower case.
	e.apply(gwCanary(e.ns, "upper", "service:\n  port: 9898\n  hosts: [App.Example.com]\n"+refs+analysis))
	s := startSiskin(t, e.lab, siskinOpts{namespace: e.ns})
	r := newGatewayRel(t, e, s, "good", []gwv1.ParentReference{gatewayParent("public", "istio-ingress")}, nil)
	r.steps([]stage{{}, {Phase: "Initializing"}, {Phase: "Initialized", Rules: gwWeighted("good", 100, 0)}}, 30)
	// The refused HTTPRoute is found at the end of the initialisation: tick until it is.
	for range 20 {
		forceDue(t, e, "upper")
		r.s.tick(fmt.Sprintf("%s-upper-%d", e.ns, time.Now().UnixNano()))
		if specErrorOf(t, e, "upper") != "" {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	ctx := context.Background()
	for _, tc := range []struct{ name, want string }{
		{"norefs", "spec.service.gatewayRefs is required with provider gatewayapi:v1"},
		{"prefix", "spec.service.match[0].headers.x-user: the Gateway API matches headers exactly or by regex; a prefix cannot be expressed"},
		{"unknown", "spec.provider linkerd is not supported"},
		{"upper", "spec.hostnames[0]"},
	} {
		specErr := specErrorOf(t, e, tc.name)
		if !strings.Contains(specErr, tc.want) {
			t.Errorf("%s: got status.specError %q, want it to say %q", tc.name, specErr, tc.want)
		}
		cd, err := e.dyn.Resource(canaryGVR).Namespace(e.ns).Get(ctx, tc.name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		conds, _, _ := unstructured.NestedSlice(cd.Object, "status", "conditions")
		if !slices.ContainsFunc(conds, func(c any) bool {
			m := c.(map[string]any)
			msg, _ := m["message"].(string)
			return m["type"] == "Valid" && m["status"] == "False" && strings.Contains(msg, tc.want)
		}) {
			t.Errorf("%s: no Valid=False condition naming the problem in %v", tc.name, conds)
		}
		if ev := e.canaryEvents(tc.name); !slicesContainsKeyWith(ev, "Invalid canary spec") {
			t.Errorf("%s: no Warning event about the invalid spec in %v", tc.name, ev)
		}
		if _, err := e.gw.GatewayV1().HTTPRoutes(e.ns).Get(ctx, tc.name, metav1.GetOptions{}); err == nil {
			t.Errorf("%s: an HTTPRoute exists for an invalid canary", tc.name)
		}
	}
}

func specErrorOf(t *testing.T, e *env, name string) string {
	t.Helper()
	cd, err := e.dyn.Resource(canaryGVR).Namespace(e.ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s, _, _ := unstructured.NestedString(cd.Object, "status", "specError")
	return s
}

func slicesContainsKeyWith(events map[string]string, part string) bool {
	for msg, typ := range events {
		if typ == "Warning" && strings.Contains(msg, part) {
			return true
		}
	}
	return false
}

// TestGatewayAPICanaryMirroring: the canary strategy's first analysis step only mirrors, with
// mirrorWeight as the RequestMirror filter's percent; then the weights move. (Flagger's Gateway
// API router mirrors blue/green only; the filter can express this too.)
func TestGatewayAPICanaryMirroring(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "gw-mirror")
	e.createDeployment("mirror", e.lab.Registry()+"/lab/mirror:1.0.0", 1)
	e.apply(gwCanary(e.ns, "mirror", `service:
  port: 9898
  gatewayRefs:
    - name: public
      namespace: istio-ingress
analysis:
  interval: 10s
  threshold: 2
  stepWeight: 20
  maxWeight: 40
  mirror: true
  mirrorWeight: 50
`))
	s := startSiskin(t, e.lab, siskinOpts{namespace: e.ns})
	r := newGatewayRel(t, e, s, "mirror", []gwv1.ParentReference{gatewayParent("public", "istio-ingress")}, nil)
	r.initializeGateway(gwWeighted("mirror", 100, 0))
	mirrored := func(snap) []gwv1.HTTPRouteRule {
		rules := gwWeighted("mirror", 100, 0)(snap{})
		rules[0].Filters = []gwv1.HTTPRouteFilter{gwMirror("mirror", gp(int32(50)))}
		return rules
	}
	r.steps([]stage{
		{Phase: "Initialized", Rules: gwWeighted("mirror", 100, 0)},
		{Phase: "Progressing", Rules: gwWeighted("mirror", 100, 0)},
		{Phase: "Progressing", Rules: mirrored},
		{Phase: "Progressing", Weight: 20, Rules: gwWeighted("mirror", 80, 20)},
		{Phase: "Progressing", Weight: 40, Rules: gwWeighted("mirror", 60, 40)},
		{Phase: "Promoting", Weight: 40, Rules: gwWeighted("mirror", 60, 40)},
		{Phase: "Finalising", Rules: gwWeighted("mirror", 100, 0)},
		{Phase: "Succeeded", Rules: gwWeighted("mirror", 100, 0)},
	}, 40)
	checkPromoted(t, e, "mirror")
}

// TestGatewayAPIHandEditPutBackByItsEvent: with the ApiServerSource stand-in and no ping, a
// hand edit of the HTTPRoute's weights is put back by the HTTPRoute's own event, at once, and
// the release does not step.
func TestGatewayAPIHandEditPutBackByItsEvent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "gw-events")
	ctx := context.Background()
	e.createDeployment("podinfo", e.lab.Registry()+"/lab/podinfo:1.0.0", 1)
	s := startSiskin(t, e.lab, siskinOpts{namespace: e.ns, extraEnv: []string{"SISKIN_RESYNC=5m"}})
	src, err := e.lab.StartAPIServerSource(ctx, lab.APIServerSourceOptions{Namespace: e.ns, Sink: s.url + "/", Token: webhookToken})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Stop)
	e.apply(gwCanary(e.ns, "podinfo", `service:
  port: 9898
  gatewayRefs:
    - name: public
      namespace: istio-ingress
analysis:
  interval: 1m
  threshold: 2
  maxWeight: 50
  stepWeight: 10
`))
	r := newGatewayRel(t, e, s, "podinfo", []gwv1.ParentReference{gatewayParent("public", "istio-ingress")}, nil)
	waitUntil(t, 60*time.Second, "the Canary Initialized by its events", func() bool { return r.snap().Phase == "Initialized" })
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		hr, err := e.gw.GatewayV1().HTTPRoutes(e.ns).Get(ctx, "podinfo", metav1.GetOptions{})
		if err != nil {
			return err
		}
		*hr.Spec.Rules[0].BackendRefs[0].Weight, *hr.Spec.Rules[0].BackendRefs[1].Weight = 50, 50
		_, err = e.gw.GatewayV1().HTTPRoutes(e.ns).Update(ctx, hr, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitUntil(t, 30*time.Second, "the hand edit put back", func() bool {
		return (stage{Phase: "Initialized", Rules: gwWeighted("podinfo", 100, 0)}).diff(r.snap()) == ""
	})
	t.Logf("hand edit of the HTTPRoute -> corrected in %v, no ping", time.Since(start).Round(10*time.Millisecond))
}
