//go:build e2e

package e2e

import (
	"regexp"
	"strings"
	"testing"

	istioapi "istio.io/api/networking/v1"
)

// The deployment strategies of flagger-istio.md sections 2 and 3, end to end: after every step
// the Canary's status, the VirtualService's http routes and both DestinationRules are what a
// Flagger user reads in Flagger's documentation.

// startRelease brings a fresh canary through initialization and changes its target's image.
func startRelease(t *testing.T, e *env, s *siskin, name string, routesAtRest func(snap) []*istioapi.HTTPRoute, setup ...func(*rel)) *rel {
	t.Helper()
	r := newRel(t, e, s, name)
	for _, f := range setup {
		f(r)
	}
	r.initialize(routesAtRest)
	if _, replicas := e.deployment(name); replicas != 0 {
		t.Errorf("after initialization the target has %d replicas, want 0", replicas)
	}
	e.setImage(name, e.lab.Registry()+"/lab/"+name+":2.0.0")
	return r
}

// checkPromoted asserts the end of a successful release: the primary runs the new image and the
// target is scaled to zero.
func checkPromoted(t *testing.T, e *env, name string) {
	t.Helper()
	if img, _ := e.deployment(name + "-primary"); img != e.lab.Registry()+"/lab/"+name+":2.0.0" {
		t.Errorf("primary runs %s, want the new image", img)
	}
	if _, replicas := e.deployment(name); replicas != 0 {
		t.Errorf("target has %d replicas after the release, want 0", replicas)
	}
}

func TestCanaryStepWeightsLadder(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "strat-ladder")
	e.createDeployment("podinfo", e.lab.Registry()+"/lab/podinfo:1.0.0", 2)
	e.apply(specCanary(e.ns, "podinfo", `service:
  port: 9898
analysis:
  interval: 10s
  threshold: 3
  stepWeights: [1, 5, 20, 50]
`))
	s := startSiskin(t, e.lab, siskinOpts{namespace: e.ns})
	r := startRelease(t, e, s, "podinfo", weighted("podinfo", 100, 0))
	want := []stage{
		{Phase: "Initialized", Routes: weighted("podinfo", 100, 0)},
		{Phase: "Progressing", Routes: weighted("podinfo", 100, 0)},
	}
	// The weights follow the ladder; maxWeight is its last rung.
	for _, w := range []int32{1, 5, 20, 50} {
		want = append(want, stage{Phase: "Progressing", Weight: int64(w), Routes: weighted("podinfo", 100-w, w)})
	}
	want = append(want,
		stage{Phase: "Promoting", Weight: 50, Routes: weighted("podinfo", 50, 50)},
		stage{Phase: "Finalising", Routes: weighted("podinfo", 100, 0)},
		stage{Phase: "Succeeded", Routes: weighted("podinfo", 100, 0)},
	)
	r.steps(want, 40)
	checkPromoted(t, e, "podinfo")
}

// abRoutes is Flagger's A/B shape: the analysis match merged into the service match routes to
// the canary with the given weights; everything else of the service match goes to the primary,
// whose lone destination carries 100 (Flagger writes the primary weight there, which Siskin does not).
func abRoutes(name string, primary, canary int32) func(snap) []*istioapi.HTTPRoute {
	return func(snap) []*istioapi.HTTPRoute {
		api := &istioapi.StringMatch{MatchType: &istioapi.StringMatch_Prefix{Prefix: "/api"}}
		header := map[string]*istioapi.StringMatch{"x-canary": {MatchType: &istioapi.StringMatch_Exact{Exact: "insider"}}}
		cookie := map[string]*istioapi.StringMatch{"cookie": {MatchType: &istioapi.StringMatch_Regex{Regex: "^(.*?;)?(canary=always)(;.*)?$"}}}
		return []*istioapi.HTTPRoute{
			{
				Match: []*istioapi.HTTPMatchRequest{{Uri: api, Headers: header}, {Uri: api, Headers: cookie}},
				Route: []*istioapi.HTTPRouteDestination{dest(name+"-primary", primary), dest(name+"-canary", canary)},
			},
			{
				Match: []*istioapi.HTTPMatchRequest{{Uri: api}},
				Route: []*istioapi.HTTPRouteDestination{dest(name+"-primary", 100)},
			},
		}
	}
}

func TestABTestingRoutesMatchingRequestsToTheCanary(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "strat-ab")
	e.createDeployment("abtest", e.lab.Registry()+"/lab/abtest:1.0.0", 1)
	e.apply(specCanary(e.ns, "abtest", `service:
  port: 9898
  hosts: [app.example.com]
  gateways: [public-gateway.istio-system.svc.cluster.local, mesh]
  trafficPolicy:
    tls:
      mode: ISTIO_MUTUAL
    loadBalancer:
      simple: LEAST_REQUEST
  match:
    - uri:
        prefix: /api
analysis:
  interval: 10s
  threshold: 3
  iterations: 3
  match:
    - headers:
        x-canary:
          exact: insider
    - headers:
        cookie:
          regex: "^(.*?;)?(canary=always)(;.*)?$"
`))
	s := startSiskin(t, e.lab, siskinOpts{namespace: e.ns})
	// Behind a gateway, with a traffic policy that both DestinationRules carry.
	r := startRelease(t, e, s, "abtest", abRoutes("abtest", 100, 0), func(r *rel) {
		r.hosts = []string{"app.example.com", "abtest"}
		r.gateways = []string{"public-gateway.istio-system.svc.cluster.local", "mesh"}
		r.trafficPolicy = &istioapi.TrafficPolicy{
			Tls:          &istioapi.ClientTLSSettings{Mode: istioapi.ClientTLSSettings_ISTIO_MUTUAL},
			LoadBalancer: &istioapi.LoadBalancerSettings{LbPolicy: &istioapi.LoadBalancerSettings_Simple{Simple: istioapi.LoadBalancerSettings_LEAST_REQUEST}},
		}
	})
	want := []stage{
		{Phase: "Initialized", Routes: abRoutes("abtest", 100, 0)},
		{Phase: "Progressing", Routes: abRoutes("abtest", 100, 0)},
	}
	for i := int64(1); i <= 3; i++ {
		want = append(want, stage{Phase: "Progressing", Weight: 100, Iterations: i, Routes: abRoutes("abtest", 0, 100)})
	}
	want = append(want,
		stage{Phase: "Promoting", Weight: 100, Iterations: 3, Routes: abRoutes("abtest", 0, 100)},
		stage{Phase: "Finalising", Routes: abRoutes("abtest", 100, 0)},
		stage{Phase: "Succeeded", Routes: abRoutes("abtest", 100, 0)},
	)
	r.steps(want, 40)
	checkPromoted(t, e, "abtest")
}

func TestBlueGreenKeepsTrafficOnPrimaryThroughTheIterations(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "strat-bluegreen")
	e.createDeployment("bg", e.lab.Registry()+"/lab/bg:1.0.0", 2)
	e.apply(specCanary(e.ns, "bg", `service:
  port: 9898
analysis:
  interval: 10s
  threshold: 2
  iterations: 3
`))
	s := startSiskin(t, e.lab, siskinOpts{namespace: e.ns})
	r := startRelease(t, e, s, "bg", weighted("bg", 100, 0))
	want := []stage{
		{Phase: "Initialized", Routes: weighted("bg", 100, 0)},
		{Phase: "Progressing", Routes: weighted("bg", 100, 0)},
	}
	for i := int64(1); i <= 3; i++ {
		want = append(want, stage{Phase: "Progressing", Iterations: i, Routes: weighted("bg", 100, 0)})
	}
	want = append(want,
		// Then all the traffic to the canary, counted as one more iteration (Flagger's runBlueGreen).
		stage{Phase: "Progressing", Weight: 100, Iterations: 4, Routes: weighted("bg", 0, 100)},
		stage{Phase: "Promoting", Weight: 100, Iterations: 4, Routes: weighted("bg", 0, 100)},
		stage{Phase: "Finalising", Routes: weighted("bg", 100, 0)},
		stage{Phase: "Succeeded", Routes: weighted("bg", 100, 0)},
	)
	r.steps(want, 40)
	checkPromoted(t, e, "bg")
}

func TestMirroringCanaryMirrorsBeforeShiftingWeight(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "strat-mirror")
	e.createDeployment("mirror", e.lab.Registry()+"/lab/mirror:1.0.0", 1)
	e.apply(specCanary(e.ns, "mirror", `service:
  port: 9898
analysis:
  interval: 10s
  threshold: 2
  stepWeight: 20
  maxWeight: 40
  mirror: true
  mirrorWeight: 50
`))
	s := startSiskin(t, e.lab, siskinOpts{namespace: e.ns})
	r := startRelease(t, e, s, "mirror", weighted("mirror", 100, 0))
	r.steps([]stage{
		{Phase: "Initialized", Routes: weighted("mirror", 100, 0)},
		{Phase: "Progressing", Routes: weighted("mirror", 100, 0)},
		// The first analysis step only mirrors, mirrorWeight as mirrorPercentage.
		{Phase: "Progressing", Routes: mirrored("mirror", 100, 0, 50)},
		// Then the mirror stops and the weights move.
		{Phase: "Progressing", Weight: 20, Routes: weighted("mirror", 80, 20)},
		{Phase: "Progressing", Weight: 40, Routes: weighted("mirror", 60, 40)},
		{Phase: "Promoting", Weight: 40, Routes: weighted("mirror", 60, 40)},
		{Phase: "Finalising", Routes: weighted("mirror", 100, 0)},
		{Phase: "Succeeded", Routes: weighted("mirror", 100, 0)},
	}, 40)
	checkPromoted(t, e, "mirror")
}

func TestMirroringBlueGreenMirrorsThroughTheIterations(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "strat-bg-mirror")
	e.createDeployment("bgm", e.lab.Registry()+"/lab/bgm:1.0.0", 1)
	e.apply(specCanary(e.ns, "bgm", `service:
  port: 9898
analysis:
  interval: 10s
  threshold: 2
  iterations: 2
  mirror: true
`))
	s := startSiskin(t, e.lab, siskinOpts{namespace: e.ns})
	r := startRelease(t, e, s, "bgm", weighted("bgm", 100, 0))
	r.steps([]stage{
		{Phase: "Initialized", Routes: weighted("bgm", 100, 0)},
		{Phase: "Progressing", Routes: weighted("bgm", 100, 0)},
		// No mirrorWeight: Istio's default, no mirrorPercentage.
		{Phase: "Progressing", Iterations: 1, Routes: mirrored("bgm", 100, 0, 0)},
		{Phase: "Progressing", Iterations: 2, Routes: mirrored("bgm", 100, 0, 0)},
		{Phase: "Progressing", Weight: 100, Iterations: 3, Routes: weighted("bgm", 0, 100)},
		{Phase: "Promoting", Weight: 100, Iterations: 3, Routes: weighted("bgm", 0, 100)},
		{Phase: "Finalising", Routes: weighted("bgm", 100, 0)},
		{Phase: "Succeeded", Routes: weighted("bgm", 100, 0)},
	}, 40)
	checkPromoted(t, e, "bgm")
}

// Session affinity: the sticky routes and Set-Cookie headers of Flagger's Istio router, with the
// primary cookie of primaryCookieName.
const stickySpec = `service:
  port: 9898
analysis:
  interval: 30s
  threshold: 2
  stepWeights: [20, 50]
  sessionAffinity:
    cookieName: canary-cookie
    primaryCookieName: primary-cookie
    maxAge: 3600
    domain: example.com
    path: /
    sameSite: Strict
    secure: true
`

func cookieMatch(cookie string) []*istioapi.HTTPMatchRequest {
	name, value, _ := strings.Cut(cookie, "=")
	return []*istioapi.HTTPMatchRequest{{Headers: map[string]*istioapi.StringMatch{
		"Cookie": {MatchType: &istioapi.StringMatch_Regex{Regex: ".*" + name + ".*" + value + ".*"}},
	}}}
}

func setCookie(value string) *istioapi.Headers {
	return &istioapi.Headers{Response: &istioapi.Headers_HeaderOperations{Add: map[string]string{"Set-Cookie": value}}}
}

// stickyRoutes is the shape while the canary takes traffic: requests with the canary cookie go
// to the canary, requests with the primary cookie to the primary, the rest is weighted and each
// side sets its cookie (the primary's lives one analysis interval).
func stickyRoutes(name string, primary, canary int32) func(snap) []*istioapi.HTTPRoute {
	return func(got snap) []*istioapi.HTTPRoute {
		w := weightedRoute(name, primary, canary)
		w.Route[0].Headers = setCookie(got.PrimaryCookie + "; Max-Age=30; Domain=example.com; Path=/; SameSite=Strict; Secure")
		w.Route[1].Headers = setCookie(got.Cookie + "; Max-Age=3600; Domain=example.com; Path=/; SameSite=Strict; Secure")
		return []*istioapi.HTTPRoute{
			{Name: "sticky-route", Match: cookieMatch(got.Cookie),
				Route: []*istioapi.HTTPRouteDestination{dest(name+"-primary", 0), dest(name+"-canary", 100)}},
			{Name: "sticky-primary-route", Match: cookieMatch(got.PrimaryCookie),
				Route: []*istioapi.HTTPRouteDestination{dest(name+"-primary", 100), dest(name+"-canary", 0)}},
			w,
		}
	}
}

// expiringRoutes is the shape once the canary takes no traffic: the previous cookie is matched
// and expired (Max-Age=-1), everything goes to the primary.
func expiringRoutes(name string) func(snap) []*istioapi.HTTPRoute {
	return func(got snap) []*istioapi.HTTPRoute {
		expire := weightedRoute(name, 100, 0)
		expire.Name = "sticky-route"
		expire.Match = cookieMatch(got.PreviousCookie)
		expire.Headers = setCookie(got.PreviousCookie + "; Max-Age=-1; Domain=example.com; Path=/")
		return []*istioapi.HTTPRoute{expire, weightedRoute(name, 100, 0)}
	}
}

func TestSessionAffinityCookies(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "strat-sticky")
	e.createDeployment("sticky", e.lab.Registry()+"/lab/sticky:1.0.0", 1)
	e.apply(specCanary(e.ns, "sticky", stickySpec))
	s := startSiskin(t, e.lab, siskinOpts{namespace: e.ns})
	r := startRelease(t, e, s, "sticky", weighted("sticky", 100, 0))
	seen := r.steps([]stage{
		{Phase: "Initialized", Routes: weighted("sticky", 100, 0)},
		{Phase: "Progressing", Routes: weighted("sticky", 100, 0)},
		{Phase: "Progressing", Weight: 20, Routes: stickyRoutes("sticky", 80, 20)},
		{Phase: "Progressing", Weight: 50, Routes: stickyRoutes("sticky", 50, 50)},
		{Phase: "Promoting", Weight: 50, Routes: stickyRoutes("sticky", 50, 50)},
		{Phase: "Finalising", Routes: expiringRoutes("sticky")},
		{Phase: "Succeeded", Routes: expiringRoutes("sticky")},
	}, 40)
	canaryCookie := regexp.MustCompile(`^canary-cookie=[A-Za-z]{10}$`)
	primaryCookie := regexp.MustCompile(`^primary-cookie=[A-Za-z]{10}$`)
	first := seen[2]
	if !canaryCookie.MatchString(first.Cookie) || !primaryCookie.MatchString(first.PrimaryCookie) {
		t.Fatalf("status cookies %q %q, want canary-cookie=<10 letters> and primary-cookie=<10 letters>", first.Cookie, first.PrimaryCookie)
	}
	// The cookie is saved: every step of the release routes on the same one.
	for _, sn := range seen[2:5] {
		if sn.Cookie != first.Cookie || sn.PrimaryCookie != first.PrimaryCookie {
			t.Errorf("%s at %d: cookies %q %q, want the release's %q %q", sn.Phase, sn.Weight, sn.Cookie, sn.PrimaryCookie, first.Cookie, first.PrimaryCookie)
		}
	}
	// At the end it expires: the status keeps it as the previous cookie only.
	for _, sn := range seen[5:] {
		if sn.Cookie != "" || sn.PrimaryCookie != "" || sn.PreviousCookie != first.Cookie {
			t.Errorf("%s: cookies %q %q previous %q, want none and previous %q", sn.Phase, sn.Cookie, sn.PrimaryCookie, sn.PreviousCookie, first.Cookie)
		}
	}
	checkPromoted(t, e, "sticky")

	// A second release gets a new cookie, which expires when the release is rolled back.
	e.setImage("sticky", e.lab.Registry()+"/lab/sticky:3.0.0")
	seen = r.steps([]stage{
		{Phase: "Succeeded", Routes: expiringRoutes("sticky")},
		{Phase: "Progressing", Routes: expiringRoutes("sticky")},
		{Phase: "Progressing", Weight: 20, Routes: stickyRoutes("sticky", 80, 20)},
	}, 30)
	second := seen[2]
	if !canaryCookie.MatchString(second.Cookie) || second.Cookie == first.Cookie {
		t.Fatalf("second release cookie %q, want a new canary-cookie (first was %q)", second.Cookie, first.Cookie)
	}
	if code, body := s.gate(e.ns, "sticky", "abort"); code != 200 {
		t.Fatalf("abort: %d %v", code, body)
	}
	got := r.snap()
	if d := (stage{Phase: "Failed", Routes: expiringRoutes("sticky")}).diff(got); d != "" {
		t.Fatalf("after the rollback:\n%s", d)
	}
	if got.Cookie != "" || got.PreviousCookie != second.Cookie {
		t.Errorf("after the rollback: cookie %q previous %q, want none and previous %q", got.Cookie, got.PreviousCookie, second.Cookie)
	}
}
