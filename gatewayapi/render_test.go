package gatewayapi

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/siskin-dev/siskin/functions"
)

func ptr[T any](v T) *T { return &v }

const (
	gatewayRef = `[{"name":"public","namespace":"istio-ingress"}]`
	meshRef    = `[{"group":"","kind":"Service","name":"podinfo","port":9898}]`
)

func canary(mutate ...func(*functions.Canary)) functions.Canary {
	c := functions.Canary{
		Key: functions.Key{Namespace: "test", Name: "podinfo"},
		UID: "uid-1",
		Spec: functions.Spec{
			Provider:  "gatewayapi:v1",
			TargetRef: functions.TargetRef{Kind: "Deployment", Name: "podinfo"},
			Service:   functions.ServiceSpec{Port: 9898, GatewayRefs: json.RawMessage(gatewayRef)},
			Analysis:  &functions.Analysis{Interval: "1m", Threshold: 5, MaxWeight: 50, StepWeight: 5},
		},
	}
	for _, m := range mutate {
		m(&c)
	}
	return c
}

func backend(name string, weight int32) gwv1.HTTPBackendRef {
	return gwv1.HTTPBackendRef{BackendRef: gwv1.BackendRef{
		BackendObjectReference: gwv1.BackendObjectReference{Group: ptr(gwv1.Group("")), Kind: ptr(gwv1.Kind("Service")),
			Name: gwv1.ObjectName(name), Port: ptr(gwv1.PortNumber(9898))},
		Weight: ptr(weight),
	}}
}

func prefix(v string) gwv1.HTTPRouteMatch {
	return gwv1.HTTPRouteMatch{Path: &gwv1.HTTPPathMatch{Type: ptr(gwv1.PathMatchPathPrefix), Value: ptr(v)}}
}

func header(t gwv1.HeaderMatchType, name, value string) gwv1.HTTPHeaderMatch {
	return gwv1.HTTPHeaderMatch{Type: ptr(t), Name: gwv1.HTTPHeaderName(name), Value: value}
}

func setCookie(value string) gwv1.HTTPRouteFilter {
	return gwv1.HTTPRouteFilter{Type: gwv1.HTTPRouteFilterResponseHeaderModifier,
		ResponseHeaderModifier: &gwv1.HTTPHeaderFilter{Add: []gwv1.HTTPHeader{{Name: "Set-Cookie", Value: value}}}}
}

func mirrorTo(name string, percent *int32) gwv1.HTTPRouteFilter {
	return gwv1.HTTPRouteFilter{Type: gwv1.HTTPRouteFilterRequestMirror, RequestMirror: &gwv1.HTTPRequestMirrorFilter{
		BackendRef: gwv1.BackendObjectReference{Group: ptr(gwv1.Group("")), Kind: ptr(gwv1.Kind("Service")),
			Name: gwv1.ObjectName(name), Port: ptr(gwv1.PortNumber(9898))},
		Percent: percent,
	}}
}

func TestRenderHTTPRoute(t *testing.T) {
	everything := []gwv1.HTTPRouteMatch{prefix("/")}
	abSpec := func(c *functions.Canary) {
		c.Spec.Service.Match = json.RawMessage(`[{"uri":{"prefix":"/api"}}]`)
		c.Spec.Analysis = &functions.Analysis{Interval: "1m", Iterations: 10, Match: json.RawMessage(
			`[{"headers":{"x-canary":{"exact":"insider"}}},{"headers":{"cookie":{"regex":"^(.*?;)?(canary=always)(;.*)?$"}}}]`)}
	}
	sticky := func(c *functions.Canary) {
		c.Spec.Analysis.SessionAffinity = &functions.SessionAffinity{CookieName: "flagger-cookie", MaxAge: 600}
	}
	tests := []struct {
		name      string
		c         functions.Canary
		plan      functions.RoutePlan
		wantRefs  []gwv1.ParentReference
		wantHosts []gwv1.Hostname
		want      []gwv1.HTTPRouteRule
	}{
		{
			name:      "progressive, behind a Gateway",
			c:         canary(func(c *functions.Canary) { c.Spec.Service.Hosts = []string{"app.example.com"} }),
			plan:      functions.RoutePlan{Routing: functions.Routing{Primary: 90, Canary: 10}},
			wantRefs:  []gwv1.ParentReference{{Name: "public", Namespace: ptr(gwv1.Namespace("istio-ingress"))}},
			wantHosts: []gwv1.Hostname{"app.example.com"},
			want:      []gwv1.HTTPRouteRule{{Matches: everything, BackendRefs: []gwv1.HTTPBackendRef{backend("podinfo-primary", 90), backend("podinfo-canary", 10)}}},
		},
		{
			name:     "progressive, mesh (GAMMA): the parent is the Service",
			c:        canary(func(c *functions.Canary) { c.Spec.Service.GatewayRefs = json.RawMessage(meshRef) }),
			plan:     functions.RoutePlan{Routing: functions.Routing{Primary: 100, Canary: 0}},
			wantRefs: []gwv1.ParentReference{{Group: ptr(gwv1.Group("")), Kind: ptr(gwv1.Kind("Service")), Name: "podinfo", Port: ptr(gwv1.PortNumber(9898))}},
			want:     []gwv1.HTTPRouteRule{{Matches: everything, BackendRefs: []gwv1.HTTPBackendRef{backend("podinfo-primary", 100), backend("podinfo-canary", 0)}}},
		},
		{
			name: "timeouts, headers and rewrite on the rule; timeout only because it is set",
			c: canary(func(c *functions.Canary) {
				c.Spec.Service.Timeout = "30s"
				c.Spec.Service.Headers = json.RawMessage(`{"request":{"set":{"b":"2","a":"1"},"remove":["x-debug"]},"response":{"add":{"x-served":"siskin"}}}`)
				c.Spec.Service.Rewrite = json.RawMessage(`{"uri":"/v2","type":"ReplacePrefixMatch"}`)
			}),
			plan:     functions.RoutePlan{Routing: functions.Routing{Primary: 70, Canary: 30}},
			wantRefs: []gwv1.ParentReference{{Name: "public", Namespace: ptr(gwv1.Namespace("istio-ingress"))}},
			want: []gwv1.HTTPRouteRule{{
				Matches: everything,
				Filters: []gwv1.HTTPRouteFilter{
					{Type: gwv1.HTTPRouteFilterRequestHeaderModifier, RequestHeaderModifier: &gwv1.HTTPHeaderFilter{
						Set: []gwv1.HTTPHeader{{Name: "a", Value: "1"}, {Name: "b", Value: "2"}}, Remove: []string{"x-debug"}}},
					{Type: gwv1.HTTPRouteFilterResponseHeaderModifier, ResponseHeaderModifier: &gwv1.HTTPHeaderFilter{
						Add: []gwv1.HTTPHeader{{Name: "x-served", Value: "siskin"}}}},
					{Type: gwv1.HTTPRouteFilterURLRewrite, URLRewrite: &gwv1.HTTPURLRewriteFilter{
						Path: &gwv1.HTTPPathModifier{Type: gwv1.PrefixMatchHTTPPathModifier, ReplacePrefixMatch: ptr("/v2")}}},
				},
				BackendRefs: []gwv1.HTTPBackendRef{backend("podinfo-primary", 70), backend("podinfo-canary", 30)},
				Timeouts:    &gwv1.HTTPRouteTimeouts{Request: ptr(gwv1.Duration("30s"))},
			}},
		},
		{
			name:     "A/B: the analysis headers merged into the service match; the fallback has no empty timeout",
			c:        canary(abSpec),
			plan:     functions.RoutePlan{Routing: functions.Routing{Primary: 0, Canary: 100}},
			wantRefs: []gwv1.ParentReference{{Name: "public", Namespace: ptr(gwv1.Namespace("istio-ingress"))}},
			want: []gwv1.HTTPRouteRule{
				{
					Matches: []gwv1.HTTPRouteMatch{
						{Path: prefix("/api").Path, Headers: []gwv1.HTTPHeaderMatch{header(gwv1.HeaderMatchExact, "x-canary", "insider")}},
						{Path: prefix("/api").Path, Headers: []gwv1.HTTPHeaderMatch{header(gwv1.HeaderMatchRegularExpression, "cookie", "^(.*?;)?(canary=always)(;.*)?$")}},
					},
					BackendRefs: []gwv1.HTTPBackendRef{backend("podinfo-primary", 0), backend("podinfo-canary", 100)},
				},
				{Matches: []gwv1.HTTPRouteMatch{prefix("/api")}, BackendRefs: []gwv1.HTTPBackendRef{backend("podinfo-primary", 100)}},
			},
		},
		{
			name: "blue/green with mirroring: RequestMirror to the canary",
			c: canary(func(c *functions.Canary) {
				c.Spec.Analysis = &functions.Analysis{Interval: "1m", Iterations: 5, Mirror: true}
			}),
			plan:     functions.RoutePlan{Routing: functions.Routing{Primary: 100, Canary: 0, Mirrored: true}},
			wantRefs: []gwv1.ParentReference{{Name: "public", Namespace: ptr(gwv1.Namespace("istio-ingress"))}},
			want: []gwv1.HTTPRouteRule{{
				Matches:     everything,
				Filters:     []gwv1.HTTPRouteFilter{mirrorTo("podinfo-canary", nil)},
				BackendRefs: []gwv1.HTTPBackendRef{backend("podinfo-primary", 100), backend("podinfo-canary", 0)},
			}},
		},
		{
			name: "canary mirroring with mirrorWeight: the filter's percent",
			c: canary(func(c *functions.Canary) {
				c.Spec.Analysis.Mirror, c.Spec.Analysis.MirrorWeight = true, 40
			}),
			plan:     functions.RoutePlan{Routing: functions.Routing{Primary: 100, Canary: 0, Mirrored: true}},
			wantRefs: []gwv1.ParentReference{{Name: "public", Namespace: ptr(gwv1.Namespace("istio-ingress"))}},
			want: []gwv1.HTTPRouteRule{{
				Matches:     everything,
				Filters:     []gwv1.HTTPRouteFilter{mirrorTo("podinfo-canary", ptr(int32(40)))},
				BackendRefs: []gwv1.HTTPBackendRef{backend("podinfo-primary", 100), backend("podinfo-canary", 0)},
			}},
		},
		{
			name:     "session affinity during the release: sticky rule first, cookie set on the canary's responses",
			c:        canary(sticky),
			plan:     functions.RoutePlan{Routing: functions.Routing{Primary: 80, Canary: 20}, SessionAffinityCookie: "flagger-cookie=abc"},
			wantRefs: []gwv1.ParentReference{{Name: "public", Namespace: ptr(gwv1.Namespace("istio-ingress"))}},
			want: []gwv1.HTTPRouteRule{
				{
					Matches:     []gwv1.HTTPRouteMatch{{Headers: []gwv1.HTTPHeaderMatch{header(gwv1.HeaderMatchRegularExpression, "Cookie", ".*flagger-cookie.*abc.*")}}},
					BackendRefs: []gwv1.HTTPBackendRef{backend("podinfo-primary", 0), backend("podinfo-canary", 100)},
				},
				{
					Matches: everything,
					BackendRefs: []gwv1.HTTPBackendRef{backend("podinfo-primary", 80), func() gwv1.HTTPBackendRef {
						b := backend("podinfo-canary", 20)
						b.Filters = []gwv1.HTTPRouteFilter{setCookie("flagger-cookie=abc; Max-Age=600")}
						return b
					}()},
				},
			},
		},
		{
			name:     "session affinity after the release: the previous cookie is expired",
			c:        canary(sticky),
			plan:     functions.RoutePlan{Routing: functions.Routing{Primary: 100, Canary: 0}, PreviousSessionAffinityCookie: "flagger-cookie=abc"},
			wantRefs: []gwv1.ParentReference{{Name: "public", Namespace: ptr(gwv1.Namespace("istio-ingress"))}},
			want: []gwv1.HTTPRouteRule{
				{
					Matches:     []gwv1.HTTPRouteMatch{{Headers: []gwv1.HTTPHeaderMatch{header(gwv1.HeaderMatchRegularExpression, "Cookie", ".*flagger-cookie.*abc.*")}}},
					Filters:     []gwv1.HTTPRouteFilter{setCookie("flagger-cookie=abc; Max-Age=-1")},
					BackendRefs: []gwv1.HTTPBackendRef{backend("podinfo-primary", 100), backend("podinfo-canary", 0)},
				},
				{Matches: everything, BackendRefs: []gwv1.HTTPBackendRef{backend("podinfo-primary", 100), backend("podinfo-canary", 0)}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := RenderHTTPRoute(tt.c, tt.plan)
			if err != nil {
				t.Fatalf("RenderHTTPRoute: %v", err)
			}
			if got.Name != "podinfo" || got.Namespace != "test" {
				t.Errorf("got %s/%s, want test/podinfo", got.Namespace, got.Name)
			}
			if d := cmp.Diff(tt.wantRefs, got.Spec.ParentRefs); d != "" {
				t.Errorf("parentRefs (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tt.wantHosts, got.Spec.Hostnames); d != "" {
				t.Errorf("hostnames (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tt.want, got.Spec.Rules); d != "" {
				t.Errorf("rules (-want +got):\n%s", d)
			}
			wantAnn := map[string]string{"helm.toolkit.fluxcd.io/driftDetection": "disabled", "kustomize.toolkit.fluxcd.io/reconcile": "disabled"}
			if d := cmp.Diff(wantAnn, got.Annotations); d != "" {
				t.Errorf("annotations (-want +got):\n%s", d)
			}
			if len(got.OwnerReferences) != 1 || got.OwnerReferences[0].Kind != "Canary" || got.OwnerReferences[0].UID != "uid-1" || !*got.OwnerReferences[0].Controller {
				t.Errorf("ownerReferences: got %+v, want the Canary as controller", got.OwnerReferences)
			}
			// What is rendered reads back as the plan.
			routing, ok := WeightsOf(got, stickyFirst(tt.c))
			if !ok || routing != tt.plan.Routing {
				t.Errorf("WeightsOf: got %+v (found %v), want %+v", routing, ok, tt.plan.Routing)
			}
		})
	}
}

func TestMatchTranslation(t *testing.T) {
	tests := []struct {
		name         string
		match        string
		want         []gwv1.HTTPRouteMatch
		wantProblems []string
	}{
		{
			name:  "uri exact, regex; method; query parameters; headers sorted by name",
			match: `[{"uri":{"exact":"/a"},"method":{"exact":"POST"}},{"uri":{"regex":"/v[0-9]+"},"queryParams":{"q":{"exact":"1"},"p":{"regex":"x.*"}},"headers":{"z":{"exact":"1"},"a":{"regex":"b"}}}]`,
			want: []gwv1.HTTPRouteMatch{
				{Path: &gwv1.HTTPPathMatch{Type: ptr(gwv1.PathMatchExact), Value: ptr("/a")}, Method: ptr(gwv1.HTTPMethodPost)},
				{
					Path:    &gwv1.HTTPPathMatch{Type: ptr(gwv1.PathMatchRegularExpression), Value: ptr("/v[0-9]+")},
					Headers: []gwv1.HTTPHeaderMatch{header(gwv1.HeaderMatchRegularExpression, "a", "b"), header(gwv1.HeaderMatchExact, "z", "1")},
					QueryParams: []gwv1.HTTPQueryParamMatch{
						{Type: ptr(gwv1.QueryParamMatchRegularExpression), Name: "p", Value: "x.*"},
						{Type: ptr(gwv1.QueryParamMatchExact), Name: "q", Value: "1"},
					},
				},
			},
		},
		{name: "a header prefix", match: `[{"headers":{"x-user":{"prefix":"beta"}}}]`,
			wantProblems: []string{"spec.service.match[0].headers.x-user: the Gateway API matches headers exactly or by regex; a prefix cannot be expressed"}},
		{name: "sourceLabels", match: `[{"sourceLabels":{"app":"x"}}]`,
			wantProblems: []string{"spec.service.match[0].sourceLabels cannot be expressed with the Gateway API"}},
		{name: "a method regex", match: `[{"method":{"regex":"GET|POST"}}]`,
			wantProblems: []string{"spec.service.match[0].method: the Gateway API matches a method exactly"}},
		{name: "a relative path", match: `[{"uri":{"prefix":"api"}}]`,
			wantProblems: []string{`spec.service.match[0].uri: an HTTPRoute path "api" must start with /`}},
		{name: "an unknown field", match: `[{"urii":{"prefix":"/"}}]`,
			wantProblems: []string{"spec.service.match[0].urii: unknown field"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, problems := decodeMatches("spec.service.match", json.RawMessage(tt.match))
			if len(problems) != len(tt.wantProblems) {
				t.Fatalf("problems: got %q, want %d like %q", problems, len(tt.wantProblems), tt.wantProblems)
			}
			for i, want := range tt.wantProblems {
				if !strings.Contains(problems[i], want) {
					t.Errorf("problem %d: got %q, want it to say %q", i, problems[i], want)
				}
			}
			if tt.wantProblems == nil {
				if d := cmp.Diff(tt.want, got); d != "" {
					t.Errorf("matches (-want +got):\n%s", d)
				}
			}
		})
	}
}

func TestProblems(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*functions.Canary)
		want   string // "" means none
	}{
		{"the seed's shape with a gatewayRef", func(*functions.Canary) {}, ""},
		{"gatewayRefs missing", func(c *functions.Canary) { c.Spec.Service.GatewayRefs = nil }, "spec.service.gatewayRefs is required with provider gatewayapi:v1"},
		{"gatewayRefs empty", func(c *functions.Canary) { c.Spec.Service.GatewayRefs = json.RawMessage(`[]`) }, "spec.service.gatewayRefs is empty"},
		{"gatewayRefs misspelt", func(c *functions.Canary) { c.Spec.Service.GatewayRefs = json.RawMessage(`[{"nmae":"x"}]`) }, `unknown field "nmae"`},
		{"Istio gateways", func(c *functions.Canary) { c.Spec.Service.Gateways = []string{"mesh"} }, "spec.service.gateways names Istio Gateways"},
		{"trafficPolicy", func(c *functions.Canary) {
			c.Spec.Service.TrafficPolicy = json.RawMessage(`{"tls":{"mode":"ISTIO_MUTUAL"}}`)
		}, "DestinationRules, which the Gateway API path does not create"},
		{"retries", func(c *functions.Canary) { c.Spec.Service.Retries = json.RawMessage(`{"attempts":3}`) }, "spec.service.retries cannot be expressed"},
		{"corsPolicy", func(c *functions.Canary) { c.Spec.Service.CorsPolicy = json.RawMessage(`{"allowOrigin":["*"]}`) }, "spec.service.corsPolicy cannot be expressed"},
		{"delegation", func(c *functions.Canary) { c.Spec.Service.Delegation = true }, "an HTTPRoute cannot be a delegate"},
		{"tcp", func(c *functions.Canary) { c.Spec.Service.AppProtocol = "tcp" }, "TCP routing is not supported"},
		{"a fractional timeout", func(c *functions.Canary) { c.Spec.Service.Timeout = "1.5s" }, `spec.service.timeout "1.5s" is not a Gateway API duration`},
		{"backendTimeout over timeout", func(c *functions.Canary) { c.Spec.Service.Timeout, c.Spec.Service.BackendTimeout = "5s", "10s" }, "longer than spec.service.timeout"},
		{"a bare wildcard host", func(c *functions.Canary) { c.Spec.Service.Hosts = []string{"*"} }, "is not an HTTPRoute hostname"},
		{"an A/B header prefix", func(c *functions.Canary) {
			c.Spec.Analysis = &functions.Analysis{Iterations: 3, Match: json.RawMessage(`[{"headers":{"x":{"prefix":"a"}}}]`)}
		}, "spec.analysis.match[0].headers.x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Problems(canary(tt.mutate))
			if tt.want == "" {
				if len(got) != 0 {
					t.Errorf("got problems %q, want none", got)
				}
				return
			}
			if len(got) != 1 || !strings.Contains(got[0], tt.want) {
				t.Errorf("got problems %q, want one saying %q", got, tt.want)
			}
			// A Canary with problems renders no HTTPRoute at all.
			if _, err := RenderHTTPRoute(canary(tt.mutate), functions.RoutePlan{Routing: functions.AllToPrimary}); err == nil {
				t.Errorf("RenderHTTPRoute: got no error, want the problem")
			}
		})
	}
}

func TestIsProvider(t *testing.T) {
	for _, tt := range []struct {
		provider string
		want     bool
	}{{"gatewayapi:v1", true}, {"gatewayapi:v1beta1", true}, {"istio", false}, {"", false}} {
		if got := IsProvider(tt.provider); got != tt.want {
			t.Errorf("IsProvider(%q): got %v, want %v", tt.provider, got, tt.want)
		}
	}
}
