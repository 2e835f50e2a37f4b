package istio

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	istioapi "istio.io/api/networking/v1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/siskin-dev/siskin/functions"
)

const testUID = "3f0c1a52-7b8e-4c1d-9a2b-5e6f7a8b9c0d"

// podinfo is the seed Canary of issue 3, with a uid as read from the cluster.
func podinfo(mutate ...func(*functions.Canary)) functions.Canary {
	c := functions.Canary{
		Key: functions.Key{Namespace: "default", Name: "podinfo"},
		UID: testUID,
		Spec: functions.Spec{
			TargetRef: functions.TargetRef{APIVersion: "apps/v1", Kind: "Deployment", Name: "podinfo"},
			Service:   functions.ServiceSpec{Port: 9898},
			Analysis:  &functions.Analysis{Interval: "1m", Threshold: 5, MaxWeight: 50, StepWeight: 5},
		},
	}
	for _, m := range mutate {
		m(&c)
	}
	return c
}

func plan(primary, canary int) functions.RoutePlan {
	return functions.RoutePlan{Routing: functions.Routing{Primary: primary, Canary: canary}}
}

func yes() *bool { b := true; return &b }

func canaryOwner() []metav1.OwnerReference {
	return []metav1.OwnerReference{{
		APIVersion:         "flagger.app/v1beta1",
		Kind:               "Canary",
		Name:               "podinfo",
		UID:                testUID,
		Controller:         yes(),
		BlockOwnerDeletion: yes(),
	}}
}

func fluxDisabledAnnotations() map[string]string {
	return map[string]string{
		"kustomize.toolkit.fluxcd.io/reconcile": "disabled",
		"helm.toolkit.fluxcd.io/driftDetection": "disabled",
	}
}

// virtualService is the expected apex VirtualService: Siskin's metadata around spec.
func virtualService(spec *istioapi.VirtualService) *networkingv1.VirtualService {
	vs := &networkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{
		Name:            "podinfo",
		Namespace:       "default",
		Annotations:     fluxDisabledAnnotations(),
		OwnerReferences: canaryOwner(),
	}}
	spec.DeepCopyInto(&vs.Spec)
	return vs
}

func dest(host string, weight int32) *istioapi.HTTPRouteDestination {
	return &istioapi.HTTPRouteDestination{Destination: &istioapi.Destination{Host: host}, Weight: weight}
}

func destPort(host string, port uint32, weight int32) *istioapi.HTTPRouteDestination {
	return &istioapi.HTTPRouteDestination{
		Destination: &istioapi.Destination{Host: host, Port: &istioapi.PortSelector{Number: port}},
		Weight:      weight,
	}
}

func prefix(s string) *istioapi.StringMatch {
	return &istioapi.StringMatch{MatchType: &istioapi.StringMatch_Prefix{Prefix: s}}
}

func exact(s string) *istioapi.StringMatch {
	return &istioapi.StringMatch{MatchType: &istioapi.StringMatch_Exact{Exact: s}}
}

func regex(s string) *istioapi.StringMatch {
	return &istioapi.StringMatch{MatchType: &istioapi.StringMatch_Regex{Regex: s}}
}

func responseAdd(kv ...string) *istioapi.Headers {
	add := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		add[kv[i]] = kv[i+1]
	}
	return &istioapi.Headers{Response: &istioapi.Headers_HeaderOperations{Add: add}}
}

type virtualServiceCase struct {
	name   string
	canary functions.Canary
	plan   functions.RoutePlan
	want   *networkingv1.VirtualService
}

// virtualServiceCases has one case per spec feature; the CRD schema test reuses them.
func virtualServiceCases() []virtualServiceCase {
	return []virtualServiceCase{
		{
			name:   "defaults: mesh gateway, apex host, all traffic to the primary",
			canary: podinfo(),
			plan:   plan(100, 0),
			want: virtualService(&istioapi.VirtualService{
				Hosts:    []string{"podinfo"},
				Gateways: []string{"mesh"},
				Http: []*istioapi.HTTPRoute{{
					Route: []*istioapi.HTTPRouteDestination{dest("podinfo-primary", 100), dest("podinfo-canary", 0)},
				}},
			}),
		},
		{
			name: "custom hosts and gateways are kept as given, the apex host appended",
			canary: podinfo(func(c *functions.Canary) {
				c.Spec.Service.Hosts = []string{"app.example.com"}
				c.Spec.Service.Gateways = []string{"istio-system/public-gateway", "mesh"}
			}),
			plan: plan(90, 10),
			want: virtualService(&istioapi.VirtualService{
				Hosts:    []string{"app.example.com", "podinfo"},
				Gateways: []string{"istio-system/public-gateway", "mesh"},
				Http: []*istioapi.HTTPRoute{{
					Route: []*istioapi.HTTPRouteDestination{dest("podinfo-primary", 90), dest("podinfo-canary", 10)},
				}},
			}),
		},
		{
			name: "a non-mesh gateway alone does not get mesh added",
			canary: podinfo(func(c *functions.Canary) {
				c.Spec.Service.Gateways = []string{"istio-system/public-gateway"}
			}),
			plan: plan(100, 0),
			want: virtualService(&istioapi.VirtualService{
				Hosts:    []string{"podinfo"},
				Gateways: []string{"istio-system/public-gateway"},
				Http: []*istioapi.HTTPRoute{{
					Route: []*istioapi.HTTPRouteDestination{dest("podinfo-primary", 100), dest("podinfo-canary", 0)},
				}},
			}),
		},
		{
			name:   "wildcard host: the apex host is not appended",
			canary: podinfo(func(c *functions.Canary) { c.Spec.Service.Hosts = []string{"*"} }),
			plan:   plan(100, 0),
			want: virtualService(&istioapi.VirtualService{
				Hosts:    []string{"*"},
				Gateways: []string{"mesh"},
				Http: []*istioapi.HTTPRoute{{
					Route: []*istioapi.HTTPRouteDestination{dest("podinfo-primary", 100), dest("podinfo-canary", 0)},
				}},
			}),
		},
		{
			name:   "apex host already listed: not appended twice",
			canary: podinfo(func(c *functions.Canary) { c.Spec.Service.Hosts = []string{"podinfo", "podinfo.example.com"} }),
			plan:   plan(100, 0),
			want: virtualService(&istioapi.VirtualService{
				Hosts:    []string{"podinfo", "podinfo.example.com"},
				Gateways: []string{"mesh"},
				Http: []*istioapi.HTTPRoute{{
					Route: []*istioapi.HTTPRouteDestination{dest("podinfo-primary", 100), dest("podinfo-canary", 0)},
				}},
			}),
		},
		{
			name:   "delegation: no hosts and no gateways",
			canary: podinfo(func(c *functions.Canary) { c.Spec.Service.Delegation = true }),
			plan:   plan(100, 0),
			want: virtualService(&istioapi.VirtualService{
				Http: []*istioapi.HTTPRoute{{
					Route: []*istioapi.HTTPRouteDestination{dest("podinfo-primary", 100), dest("podinfo-canary", 0)},
				}},
			}),
		},
		{
			name: "delegation with portDiscovery names the port",
			canary: podinfo(func(c *functions.Canary) {
				c.Spec.Service.Delegation = true
				c.Spec.Service.PortDiscovery = true
			}),
			plan: plan(80, 20),
			want: virtualService(&istioapi.VirtualService{
				Http: []*istioapi.HTTPRoute{{
					Route: []*istioapi.HTTPRouteDestination{destPort("podinfo-primary", 9898, 80), destPort("podinfo-canary", 9898, 20)},
				}},
			}),
		},
		{
			name: "portDiscovery behind an ingress gateway names the port",
			canary: podinfo(func(c *functions.Canary) {
				c.Spec.Service.PortDiscovery = true
				c.Spec.Service.Gateways = []string{"istio-system/public-gateway"}
				c.Spec.Service.Hosts = []string{"app.example.com"}
			}),
			plan: plan(100, 0),
			want: virtualService(&istioapi.VirtualService{
				Hosts:    []string{"app.example.com", "podinfo"},
				Gateways: []string{"istio-system/public-gateway"},
				Http: []*istioapi.HTTPRoute{{
					Route: []*istioapi.HTTPRouteDestination{destPort("podinfo-primary", 9898, 100), destPort("podinfo-canary", 9898, 0)},
				}},
			}),
		},
		{
			name: "portDiscovery on the mesh gateway leaves the port to Istio",
			canary: podinfo(func(c *functions.Canary) {
				c.Spec.Service.PortDiscovery = true
				c.Spec.Service.Gateways = []string{"mesh", "istio-system/public-gateway"}
			}),
			plan: plan(100, 0),
			want: virtualService(&istioapi.VirtualService{
				Hosts:    []string{"podinfo"},
				Gateways: []string{"mesh", "istio-system/public-gateway"},
				Http: []*istioapi.HTTPRoute{{
					Route: []*istioapi.HTTPRouteDestination{dest("podinfo-primary", 100), dest("podinfo-canary", 0)},
				}},
			}),
		},
		{
			name: "service match is copied",
			canary: podinfo(func(c *functions.Canary) {
				c.Spec.Service.Match = json.RawMessage(`[{"uri":{"prefix":"/api"}},{"uri":{"prefix":"/v2"},"method":{"exact":"GET"},"ignoreUriCase":true}]`)
			}),
			plan: plan(95, 5),
			want: virtualService(&istioapi.VirtualService{
				Hosts:    []string{"podinfo"},
				Gateways: []string{"mesh"},
				Http: []*istioapi.HTTPRoute{{
					Match: []*istioapi.HTTPMatchRequest{
						{Uri: prefix("/api")},
						{Uri: prefix("/v2"), Method: exact("GET"), IgnoreUriCase: true},
					},
					Route: []*istioapi.HTTPRouteDestination{dest("podinfo-primary", 95), dest("podinfo-canary", 5)},
				}},
			}),
		},
		{
			name: "rewrite keeps uri and authority (type is for the Gateway API)",
			canary: podinfo(func(c *functions.Canary) {
				c.Spec.Service.Rewrite = json.RawMessage(`{"uri":"/","authority":"podinfo.internal","type":"ReplacePrefixMatch"}`)
			}),
			plan: plan(100, 0),
			want: virtualService(&istioapi.VirtualService{
				Hosts:    []string{"podinfo"},
				Gateways: []string{"mesh"},
				Http: []*istioapi.HTTPRoute{{
					Rewrite: &istioapi.HTTPRewrite{Uri: "/", Authority: "podinfo.internal"},
					Route:   []*istioapi.HTTPRouteDestination{dest("podinfo-primary", 100), dest("podinfo-canary", 0)},
				}},
			}),
		},
		{
			name:   "timeout",
			canary: podinfo(func(c *functions.Canary) { c.Spec.Service.Timeout = "1m30s" }),
			plan:   plan(100, 0),
			want: virtualService(&istioapi.VirtualService{
				Hosts:    []string{"podinfo"},
				Gateways: []string{"mesh"},
				Http: []*istioapi.HTTPRoute{{
					Timeout: durationpb.New(90 * time.Second),
					Route:   []*istioapi.HTTPRouteDestination{dest("podinfo-primary", 100), dest("podinfo-canary", 0)},
				}},
			}),
		},
		{
			name: "retries, with a Go duration as Istio accepts it",
			canary: podinfo(func(c *functions.Canary) {
				c.Spec.Service.Retries = json.RawMessage(`{"attempts":3,"perTryTimeout":"500ms","retryOn":"gateway-error,connect-failure,refused-stream"}`)
			}),
			plan: plan(100, 0),
			want: virtualService(&istioapi.VirtualService{
				Hosts:    []string{"podinfo"},
				Gateways: []string{"mesh"},
				Http: []*istioapi.HTTPRoute{{
					Retries: &istioapi.HTTPRetry{Attempts: 3, PerTryTimeout: durationpb.New(500 * time.Millisecond), RetryOn: "gateway-error,connect-failure,refused-stream"},
					Route:   []*istioapi.HTTPRouteDestination{dest("podinfo-primary", 100), dest("podinfo-canary", 0)},
				}},
			}),
		},
		{
			name: "headers",
			canary: podinfo(func(c *functions.Canary) {
				c.Spec.Service.Headers = json.RawMessage(`{"request":{"add":{"x-some-header":"value"}},"response":{"set":{"x-frame-options":"DENY"},"remove":["x-powered-by"]}}`)
			}),
			plan: plan(100, 0),
			want: virtualService(&istioapi.VirtualService{
				Hosts:    []string{"podinfo"},
				Gateways: []string{"mesh"},
				Http: []*istioapi.HTTPRoute{{
					Headers: &istioapi.Headers{
						Request:  &istioapi.Headers_HeaderOperations{Add: map[string]string{"x-some-header": "value"}},
						Response: &istioapi.Headers_HeaderOperations{Set: map[string]string{"x-frame-options": "DENY"}, Remove: []string{"x-powered-by"}},
					},
					Route: []*istioapi.HTTPRouteDestination{dest("podinfo-primary", 100), dest("podinfo-canary", 0)},
				}},
			}),
		},
		{
			name: "CORS policy",
			canary: podinfo(func(c *functions.Canary) {
				c.Spec.Service.CorsPolicy = json.RawMessage(`{"allowOrigins":[{"exact":"https://example.com"}],"allowMethods":["GET","POST"],"allowHeaders":["x-some-header"],"allowCredentials":false,"maxAge":"24h"}`)
			}),
			plan: plan(100, 0),
			want: virtualService(&istioapi.VirtualService{
				Hosts:    []string{"podinfo"},
				Gateways: []string{"mesh"},
				Http: []*istioapi.HTTPRoute{{
					CorsPolicy: &istioapi.CorsPolicy{
						AllowOrigins:     []*istioapi.StringMatch{exact("https://example.com")},
						AllowMethods:     []string{"GET", "POST"},
						AllowHeaders:     []string{"x-some-header"},
						AllowCredentials: wrapperspb.Bool(false),
						MaxAge:           durationpb.New(24 * time.Hour),
					},
					Route: []*istioapi.HTTPRouteDestination{dest("podinfo-primary", 100), dest("podinfo-canary", 0)},
				}},
			}),
		},
		{
			name: "A/B: cross product of canary and service conditions, canary headers and sourceLabels override",
			canary: podinfo(func(c *functions.Canary) {
				c.Spec.Analysis = &functions.Analysis{Interval: "1m", Threshold: 5, Iterations: 10,
					Match: json.RawMessage(`[{"headers":{"x-canary":{"exact":"insider"}}},{"sourceLabels":{"app":"tester"}}]`)}
				c.Spec.Service.Match = json.RawMessage(`[{"uri":{"prefix":"/api"}},{"uri":{"prefix":"/v2"},"headers":{"x-svc":{"exact":"a"}}}]`)
			}),
			plan: plan(0, 100),
			want: virtualService(&istioapi.VirtualService{
				Hosts:    []string{"podinfo"},
				Gateways: []string{"mesh"},
				Http: []*istioapi.HTTPRoute{
					{
						Match: []*istioapi.HTTPMatchRequest{
							{Uri: prefix("/api"), Headers: map[string]*istioapi.StringMatch{"x-canary": exact("insider")}},
							{Uri: prefix("/v2"), Headers: map[string]*istioapi.StringMatch{"x-canary": exact("insider")}},
							{Uri: prefix("/api"), SourceLabels: map[string]string{"app": "tester"}},
							{Uri: prefix("/v2"), Headers: map[string]*istioapi.StringMatch{"x-svc": exact("a")}, SourceLabels: map[string]string{"app": "tester"}},
						},
						Route: []*istioapi.HTTPRouteDestination{dest("podinfo-primary", 0), dest("podinfo-canary", 100)},
					},
					{
						// Unlike Flagger, the lone primary destination weighs 100, not 0.
						Match: []*istioapi.HTTPMatchRequest{
							{Uri: prefix("/api")},
							{Uri: prefix("/v2"), Headers: map[string]*istioapi.StringMatch{"x-svc": exact("a")}},
						},
						Route: []*istioapi.HTTPRouteDestination{dest("podinfo-primary", 100)},
					},
				},
			}),
		},
		{
			name: "A/B without a service match uses the canary conditions as written",
			canary: podinfo(func(c *functions.Canary) {
				c.Spec.Analysis = &functions.Analysis{Interval: "1m", Threshold: 5, Iterations: 10,
					Match: json.RawMessage(`[{"headers":{"cookie":{"regex":"^(.*?;)?(type=insider)(;.*)?$"}}},{"uri":{"prefix":"/beta"}}]`)}
			}),
			plan: plan(0, 100),
			want: virtualService(&istioapi.VirtualService{
				Hosts:    []string{"podinfo"},
				Gateways: []string{"mesh"},
				Http: []*istioapi.HTTPRoute{
					{
						Match: []*istioapi.HTTPMatchRequest{
							{Headers: map[string]*istioapi.StringMatch{"cookie": regex("^(.*?;)?(type=insider)(;.*)?$")}},
							{Uri: prefix("/beta")},
						},
						Route: []*istioapi.HTTPRouteDestination{dest("podinfo-primary", 0), dest("podinfo-canary", 100)},
					},
					{Route: []*istioapi.HTTPRouteDestination{dest("podinfo-primary", 100)}},
				},
			}),
		},
		{
			name: "A/B carries the canary queryParams into the service conditions",
			canary: podinfo(func(c *functions.Canary) {
				c.Spec.Analysis = &functions.Analysis{Interval: "1m", Threshold: 5, Iterations: 10,
					Match: json.RawMessage(`[{"queryParams":{"canary":{"exact":"true"}}}]`)}
				c.Spec.Service.Match = json.RawMessage(`[{"uri":{"prefix":"/"}}]`)
			}),
			plan: plan(100, 0),
			want: virtualService(&istioapi.VirtualService{
				Hosts:    []string{"podinfo"},
				Gateways: []string{"mesh"},
				Http: []*istioapi.HTTPRoute{
					{
						Match: []*istioapi.HTTPMatchRequest{
							{Uri: prefix("/"), QueryParams: map[string]*istioapi.StringMatch{"canary": exact("true")}},
						},
						Route: []*istioapi.HTTPRouteDestination{dest("podinfo-primary", 100), dest("podinfo-canary", 0)},
					},
					{
						Match: []*istioapi.HTTPMatchRequest{{Uri: prefix("/")}},
						Route: []*istioapi.HTTPRouteDestination{dest("podinfo-primary", 100)},
					},
				},
			}),
		},
		{
			name: "mirror without mirrorWeight mirrors everything",
			canary: podinfo(func(c *functions.Canary) {
				c.Spec.Analysis = &functions.Analysis{Interval: "1m", Threshold: 5, Iterations: 10, Mirror: true}
			}),
			plan: functions.RoutePlan{Routing: functions.Routing{Primary: 100, Canary: 0, Mirrored: true}},
			want: virtualService(&istioapi.VirtualService{
				Hosts:    []string{"podinfo"},
				Gateways: []string{"mesh"},
				Http: []*istioapi.HTTPRoute{{
					Route:  []*istioapi.HTTPRouteDestination{dest("podinfo-primary", 100), dest("podinfo-canary", 0)},
					Mirror: &istioapi.Destination{Host: "podinfo-canary"},
				}},
			}),
		},
		{
			name: "mirror with mirrorWeight sets mirrorPercentage",
			canary: podinfo(func(c *functions.Canary) {
				c.Spec.Analysis = &functions.Analysis{Interval: "1m", Threshold: 5, Iterations: 10, Mirror: true, MirrorWeight: 40}
			}),
			plan: functions.RoutePlan{Routing: functions.Routing{Primary: 100, Canary: 0, Mirrored: true}},
			want: virtualService(&istioapi.VirtualService{
				Hosts:    []string{"podinfo"},
				Gateways: []string{"mesh"},
				Http: []*istioapi.HTTPRoute{{
					Route:            []*istioapi.HTTPRouteDestination{dest("podinfo-primary", 100), dest("podinfo-canary", 0)},
					Mirror:           &istioapi.Destination{Host: "podinfo-canary"},
					MirrorPercentage: &istioapi.Percent{Value: 40},
				}},
			}),
		},
		{
			name: "mirrorWeight without a mirrored plan mirrors nothing",
			canary: podinfo(func(c *functions.Canary) {
				c.Spec.Analysis = &functions.Analysis{Interval: "1m", Threshold: 5, Iterations: 10, Mirror: true, MirrorWeight: 40}
			}),
			plan: plan(0, 100),
			want: virtualService(&istioapi.VirtualService{
				Hosts:    []string{"podinfo"},
				Gateways: []string{"mesh"},
				Http: []*istioapi.HTTPRoute{{
					Route: []*istioapi.HTTPRouteDestination{dest("podinfo-primary", 0), dest("podinfo-canary", 100)},
				}},
			}),
		},
		{
			name: "session affinity with canary weight: sticky canary route and Set-Cookie on the canary",
			canary: podinfo(func(c *functions.Canary) {
				c.Spec.Analysis.SessionAffinity = &functions.SessionAffinity{CookieName: "canary-flagger-cookie", MaxAge: 21600, Path: "/", SameSite: "Lax", Secure: true}
				c.Spec.Service.Match = json.RawMessage(`[{"uri":{"prefix":"/"}}]`)
			}),
			plan: functions.RoutePlan{Routing: functions.Routing{Primary: 90, Canary: 10}, SessionAffinityCookie: "canary-flagger-cookie=AbCdEfGhIj"},
			want: virtualService(&istioapi.VirtualService{
				Hosts:    []string{"podinfo"},
				Gateways: []string{"mesh"},
				Http: []*istioapi.HTTPRoute{
					{
						Name: "sticky-route",
						Match: []*istioapi.HTTPMatchRequest{{
							Uri:     prefix("/"),
							Headers: map[string]*istioapi.StringMatch{"Cookie": regex(".*canary-flagger-cookie.*AbCdEfGhIj.*")},
						}},
						Route: []*istioapi.HTTPRouteDestination{dest("podinfo-primary", 0), dest("podinfo-canary", 100)},
					},
					{
						Match: []*istioapi.HTTPMatchRequest{{Uri: prefix("/")}},
						Route: []*istioapi.HTTPRouteDestination{
							dest("podinfo-primary", 90),
							{
								Destination: &istioapi.Destination{Host: "podinfo-canary"},
								Weight:      10,
								Headers:     responseAdd("Set-Cookie", "canary-flagger-cookie=AbCdEfGhIj; Max-Age=21600; Path=/; SameSite=Lax; Secure"),
							},
						},
					},
				},
			}),
		},
		{
			name: "session affinity with a primary cookie: sticky primary route, primary cookie lives one interval",
			canary: podinfo(func(c *functions.Canary) {
				c.Spec.Analysis.SessionAffinity = &functions.SessionAffinity{CookieName: "canary-flagger-cookie", PrimaryCookieName: "primary-flagger-cookie",
					Domain: "example.com", HTTPOnly: true, Partitioned: true, Secure: true, SameSite: "None"}
			}),
			plan: functions.RoutePlan{Routing: functions.Routing{Primary: 80, Canary: 20},
				SessionAffinityCookie: "canary-flagger-cookie=AbCdEfGhIj", PrimarySessionAffinityCookie: "primary-flagger-cookie=KlMnOpQrSt"},
			want: virtualService(&istioapi.VirtualService{
				Hosts:    []string{"podinfo"},
				Gateways: []string{"mesh"},
				Http: []*istioapi.HTTPRoute{
					{
						Name:  "sticky-route",
						Match: []*istioapi.HTTPMatchRequest{{Headers: map[string]*istioapi.StringMatch{"Cookie": regex(".*canary-flagger-cookie.*AbCdEfGhIj.*")}}},
						Route: []*istioapi.HTTPRouteDestination{dest("podinfo-primary", 0), dest("podinfo-canary", 100)},
					},
					{
						Name:  "sticky-primary-route",
						Match: []*istioapi.HTTPMatchRequest{{Headers: map[string]*istioapi.StringMatch{"Cookie": regex(".*primary-flagger-cookie.*KlMnOpQrSt.*")}}},
						Route: []*istioapi.HTTPRouteDestination{dest("podinfo-primary", 100), dest("podinfo-canary", 0)},
					},
					{
						Route: []*istioapi.HTTPRouteDestination{
							{
								Destination: &istioapi.Destination{Host: "podinfo-primary"},
								Weight:      80,
								Headers:     responseAdd("Set-Cookie", "primary-flagger-cookie=KlMnOpQrSt; Max-Age=60; Domain=example.com; SameSite=None; Secure; HttpOnly; Partitioned"),
							},
							{
								Destination: &istioapi.Destination{Host: "podinfo-canary"},
								Weight:      20,
								Headers:     responseAdd("Set-Cookie", "canary-flagger-cookie=AbCdEfGhIj; Max-Age=86400; Domain=example.com; SameSite=None; Secure; HttpOnly; Partitioned"),
							},
						},
					},
				},
			}),
		},
		{
			name: "session affinity at weight 0 expires the previous cookie without touching the service headers",
			canary: podinfo(func(c *functions.Canary) {
				c.Spec.Analysis.SessionAffinity = &functions.SessionAffinity{CookieName: "canary-flagger-cookie", Path: "/app"}
				c.Spec.Service.Headers = json.RawMessage(`{"response":{"add":{"x-served-by":"siskin"}}}`)
			}),
			plan: functions.RoutePlan{Routing: functions.Routing{Primary: 100, Canary: 0}, PreviousSessionAffinityCookie: "canary-flagger-cookie=AbCdEfGhIj"},
			want: virtualService(&istioapi.VirtualService{
				Hosts:    []string{"podinfo"},
				Gateways: []string{"mesh"},
				Http: []*istioapi.HTTPRoute{
					{
						Name:    "sticky-route",
						Match:   []*istioapi.HTTPMatchRequest{{Headers: map[string]*istioapi.StringMatch{"Cookie": regex(".*canary-flagger-cookie.*AbCdEfGhIj.*")}}},
						Headers: responseAdd("x-served-by", "siskin", "Set-Cookie", "canary-flagger-cookie=AbCdEfGhIj; Max-Age=-1; Path=/app"),
						Route:   []*istioapi.HTTPRouteDestination{dest("podinfo-primary", 100), dest("podinfo-canary", 0)},
					},
					{
						Headers: responseAdd("x-served-by", "siskin"),
						Route:   []*istioapi.HTTPRouteDestination{dest("podinfo-primary", 100), dest("podinfo-canary", 0)},
					},
				},
			}),
		},
		{
			name: "session affinity at weight 0 with a cookie still current expires that one",
			canary: podinfo(func(c *functions.Canary) {
				c.Spec.Analysis.SessionAffinity = &functions.SessionAffinity{CookieName: "canary-flagger-cookie"}
			}),
			plan: functions.RoutePlan{Routing: functions.Routing{Primary: 100, Canary: 0},
				SessionAffinityCookie: "canary-flagger-cookie=NewNewNewN", PreviousSessionAffinityCookie: "canary-flagger-cookie=OldOldOldO"},
			want: virtualService(&istioapi.VirtualService{
				Hosts:    []string{"podinfo"},
				Gateways: []string{"mesh"},
				Http: []*istioapi.HTTPRoute{
					{
						Name:    "sticky-route",
						Match:   []*istioapi.HTTPMatchRequest{{Headers: map[string]*istioapi.StringMatch{"Cookie": regex(".*canary-flagger-cookie.*NewNewNewN.*")}}},
						Headers: responseAdd("Set-Cookie", "canary-flagger-cookie=NewNewNewN; Max-Age=-1"),
						Route:   []*istioapi.HTTPRouteDestination{dest("podinfo-primary", 100), dest("podinfo-canary", 0)},
					},
					{Route: []*istioapi.HTTPRouteDestination{dest("podinfo-primary", 100), dest("podinfo-canary", 0)}},
				},
			}),
		},
		{
			name: "session affinity at weight 0 with no cookie ever set: the weighted route only",
			canary: podinfo(func(c *functions.Canary) {
				c.Spec.Analysis.SessionAffinity = &functions.SessionAffinity{CookieName: "canary-flagger-cookie"}
			}),
			plan: plan(100, 0),
			want: virtualService(&istioapi.VirtualService{
				Hosts:    []string{"podinfo"},
				Gateways: []string{"mesh"},
				Http: []*istioapi.HTTPRoute{
					{Route: []*istioapi.HTTPRouteDestination{dest("podinfo-primary", 100), dest("podinfo-canary", 0)}},
				},
			}),
		},
		{
			name: "TCP: one tcp route matching the service ports",
			canary: podinfo(func(c *functions.Canary) {
				c.Spec.Service.AppProtocol = "TCP"
				c.Spec.Service.Match = json.RawMessage(`[{"port":9898},{"port":9899}]`)
			}),
			plan: plan(95, 5),
			want: virtualService(&istioapi.VirtualService{
				Hosts:    []string{"podinfo"},
				Gateways: []string{"mesh"},
				Tcp: []*istioapi.TCPRoute{{
					Match: []*istioapi.L4MatchAttributes{{Port: 9898}, {Port: 9899}},
					Route: []*istioapi.RouteDestination{
						{Destination: &istioapi.Destination{Host: "podinfo-primary"}, Weight: 95},
						{Destination: &istioapi.Destination{Host: "podinfo-canary"}, Weight: 5},
					},
				}},
			}),
		},
		{
			name: "apex labels and annotations go on the VirtualService, with Flux's opt-out",
			canary: podinfo(func(c *functions.Canary) {
				c.Spec.Service.Apex = &functions.ServiceMeta{Labels: map[string]string{"app": "podinfo"}, Annotations: map[string]string{"team": "checkout"}}
			}),
			plan: plan(100, 0),
			want: func() *networkingv1.VirtualService {
				vs := virtualService(&istioapi.VirtualService{
					Hosts:    []string{"podinfo"},
					Gateways: []string{"mesh"},
					Http: []*istioapi.HTTPRoute{{
						Route: []*istioapi.HTTPRouteDestination{dest("podinfo-primary", 100), dest("podinfo-canary", 0)},
					}},
				})
				vs.Labels = map[string]string{"app": "podinfo"}
				vs.Annotations["team"] = "checkout"
				return vs
			}(),
		},
		{
			name: "service.name names the apex and the destinations",
			canary: podinfo(func(c *functions.Canary) {
				c.Spec.Service.Name = "frontend"
			}),
			plan: plan(100, 0),
			want: func() *networkingv1.VirtualService {
				vs := virtualService(&istioapi.VirtualService{
					Hosts:    []string{"frontend"},
					Gateways: []string{"mesh"},
					Http: []*istioapi.HTTPRoute{{
						Route: []*istioapi.HTTPRouteDestination{dest("frontend-primary", 100), dest("frontend-canary", 0)},
					}},
				})
				vs.Name = "frontend"
				return vs
			}(),
		},
	}
}

func TestRenderVirtualService(t *testing.T) {
	for _, tt := range virtualServiceCases() {
		t.Run(tt.name, func(t *testing.T) {
			got, err := RenderVirtualService(tt.canary, tt.plan)
			if err != nil {
				t.Fatalf("RenderVirtualService: got error %v, want none", err)
			}
			if diff := cmp.Diff(tt.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("RenderVirtualService mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRenderVirtualServiceRejectsInvalidInput(t *testing.T) {
	tests := []struct {
		name    string
		canary  functions.Canary
		plan    functions.RoutePlan
		wantMsg string
	}{
		{
			name: "delegation with hosts",
			canary: podinfo(func(c *functions.Canary) {
				c.Spec.Service.Delegation = true
				c.Spec.Service.Hosts = []string{"app.example.com"}
			}),
			plan:    plan(100, 0),
			wantMsg: "delegate VirtualService cannot have hosts or gateways",
		},
		{
			name: "delegation with gateways",
			canary: podinfo(func(c *functions.Canary) {
				c.Spec.Service.Delegation = true
				c.Spec.Service.Gateways = []string{"mesh"}
			}),
			plan:    plan(100, 0),
			wantMsg: "delegate VirtualService cannot have hosts or gateways",
		},
		{
			name:    "match is not a list",
			canary:  podinfo(func(c *functions.Canary) { c.Spec.Service.Match = json.RawMessage(`{"uri":{"prefix":"/"}}`) }),
			plan:    plan(100, 0),
			wantMsg: "spec.service.match is not a list",
		},
		{
			name: "unknown field in a match",
			canary: podinfo(func(c *functions.Canary) {
				c.Spec.Service.Match = json.RawMessage(`[{"uri":{"prefix":"/"}},{"headerz":{}}]`)
			}),
			plan:    plan(100, 0),
			wantMsg: `spec.service.match[1]: unknown field "headerz"`,
		},
		{
			name: "string match operator Istio does not have",
			canary: podinfo(func(c *functions.Canary) {
				c.Spec.Service.Match = json.RawMessage(`[{"headers":{"x-a":{"suffix":"b"}}}]`)
			}),
			plan:    plan(100, 0),
			wantMsg: `spec.service.match[0].headers.x-a: unknown field "suffix"`,
		},
		{
			name:    "misspelt retries field",
			canary:  podinfo(func(c *functions.Canary) { c.Spec.Service.Retries = json.RawMessage(`{"attempts":3,"retryon":"5xx"}`) }),
			plan:    plan(100, 0),
			wantMsg: `spec.service.retries: unknown field "retryon"`,
		},
		{
			name:    "retries of the wrong type",
			canary:  podinfo(func(c *functions.Canary) { c.Spec.Service.Retries = json.RawMessage(`{"attempts":"three"}`) }),
			plan:    plan(100, 0),
			wantMsg: "spec.service.retries",
		},
		{
			name:    "headers not an object",
			canary:  podinfo(func(c *functions.Canary) { c.Spec.Service.Headers = json.RawMessage(`["x-a"]`) }),
			plan:    plan(100, 0),
			wantMsg: "spec.service.headers: not a JSON object",
		},
		{
			name:    "CORS methods not a list",
			canary:  podinfo(func(c *functions.Canary) { c.Spec.Service.CorsPolicy = json.RawMessage(`{"allowMethods":"GET"}`) }),
			plan:    plan(100, 0),
			wantMsg: "spec.service.corsPolicy",
		},
		{
			name:    "malformed JSON",
			canary:  podinfo(func(c *functions.Canary) { c.Spec.Service.CorsPolicy = json.RawMessage(`{"allowMethods":`) }),
			plan:    plan(100, 0),
			wantMsg: "spec.service.corsPolicy",
		},
		{
			name: "rewrite with a field Flagger does not have",
			canary: podinfo(func(c *functions.Canary) {
				c.Spec.Service.Rewrite = json.RawMessage(`{"uriRegexRewrite":{"match":"a"}}`)
			}),
			plan:    plan(100, 0),
			wantMsg: "spec.service.rewrite",
		},
		{
			name:    "timeout not a duration",
			canary:  podinfo(func(c *functions.Canary) { c.Spec.Service.Timeout = "soon" }),
			plan:    plan(100, 0),
			wantMsg: `spec.service.timeout "soon"`,
		},
		{
			name: "A/B match with an unknown field",
			canary: podinfo(func(c *functions.Canary) {
				c.Spec.Analysis = &functions.Analysis{Iterations: 10, Match: json.RawMessage(`[{"header":{"x-canary":{"exact":"1"}}}]`)}
			}),
			plan:    plan(0, 100),
			wantMsg: `spec.analysis.match[0]: unknown field "header"`,
		},
		{
			name: "session affinity with canary weight but no cookie in the plan",
			canary: podinfo(func(c *functions.Canary) {
				c.Spec.Analysis.SessionAffinity = &functions.SessionAffinity{CookieName: "canary-flagger-cookie"}
			}),
			plan:    plan(90, 10),
			wantMsg: "no canary cookie",
		},
		{
			name: "session affinity with a primary cookie name but no primary cookie in the plan",
			canary: podinfo(func(c *functions.Canary) {
				c.Spec.Analysis.SessionAffinity = &functions.SessionAffinity{CookieName: "c", PrimaryCookieName: "p"}
			}),
			plan:    functions.RoutePlan{Routing: functions.Routing{Primary: 90, Canary: 10}, SessionAffinityCookie: "c=AbCdEfGhIj"},
			wantMsg: "no primary cookie",
		},
		{
			name: "session affinity cookie without a value",
			canary: podinfo(func(c *functions.Canary) {
				c.Spec.Analysis.SessionAffinity = &functions.SessionAffinity{CookieName: "c"}
			}),
			plan:    functions.RoutePlan{Routing: functions.Routing{Primary: 90, Canary: 10}, SessionAffinityCookie: "c"},
			wantMsg: `cookie "c" is not name=value`,
		},
		{
			name:    "weight above 100",
			canary:  podinfo(),
			plan:    plan(-10, 110),
			wantMsg: "not percentages",
		},
		{
			name:    "no traffic at all",
			canary:  podinfo(),
			plan:    plan(0, 0),
			wantMsg: "sends no traffic",
		},
		{
			name:    "canary without uid",
			canary:  podinfo(func(c *functions.Canary) { c.UID = "" }),
			plan:    plan(100, 0),
			wantMsg: "has no uid",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := RenderVirtualService(tt.canary, tt.plan)
			if err == nil {
				t.Fatalf("RenderVirtualService: got %v and no error, want an error containing %q", got, tt.wantMsg)
			}
			if !errors.Is(err, functions.ErrInvalid) {
				t.Errorf("RenderVirtualService: got error %v, want one wrapping functions.ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("RenderVirtualService: got error %q, want it to contain %q", err, tt.wantMsg)
			}
		})
	}
}

func TestRenderDestinationRules(t *testing.T) {
	rule := func(name string, policy *istioapi.TrafficPolicy) *networkingv1.DestinationRule {
		dr := &networkingv1.DestinationRule{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", OwnerReferences: canaryOwner()}}
		dr.Spec.Host = name
		dr.Spec.TrafficPolicy = policy
		return dr
	}
	policy := func() *istioapi.TrafficPolicy {
		return &istioapi.TrafficPolicy{
			LoadBalancer: &istioapi.LoadBalancerSettings{LbPolicy: &istioapi.LoadBalancerSettings_Simple{Simple: istioapi.LoadBalancerSettings_LEAST_REQUEST}},
			ConnectionPool: &istioapi.ConnectionPoolSettings{
				Http: &istioapi.ConnectionPoolSettings_HTTPSettings{Http1MaxPendingRequests: 1024},
			},
			OutlierDetection: &istioapi.OutlierDetection{
				Consecutive_5XxErrors: wrapperspb.UInt32(5),
				Interval:              durationpb.New(30 * time.Second),
				BaseEjectionTime:      durationpb.New(time.Minute),
			},
			Tls: &istioapi.ClientTLSSettings{Mode: istioapi.ClientTLSSettings_ISTIO_MUTUAL},
		}
	}
	tests := []struct {
		name                    string
		canary                  functions.Canary
		wantPrimary, wantCanary *networkingv1.DestinationRule
		wantErr                 string
	}{
		{
			name:        "no traffic policy",
			canary:      podinfo(),
			wantPrimary: rule("podinfo-primary", nil),
			wantCanary:  rule("podinfo-canary", nil),
		},
		{
			name: "traffic policy on both rules",
			canary: podinfo(func(c *functions.Canary) {
				c.Spec.Service.TrafficPolicy = json.RawMessage(`{"loadBalancer":{"simple":"LEAST_REQUEST"},` +
					`"connectionPool":{"http":{"http1MaxPendingRequests":1024}},` +
					`"outlierDetection":{"consecutive5xxErrors":5,"interval":"30s","baseEjectionTime":"1m"},` +
					`"tls":{"mode":"ISTIO_MUTUAL"}}`)
			}),
			wantPrimary: rule("podinfo-primary", policy()),
			wantCanary:  rule("podinfo-canary", policy()),
		},
		{
			name: "unknown traffic policy field",
			canary: podinfo(func(c *functions.Canary) {
				c.Spec.Service.TrafficPolicy = json.RawMessage(`{"loadbalancer":{"simple":"ROUND_ROBIN"}}`)
			}),
			wantErr: `spec.service.trafficPolicy: unknown field "loadbalancer"`,
		},
		{
			name: "unknown load balancer",
			canary: podinfo(func(c *functions.Canary) {
				c.Spec.Service.TrafficPolicy = json.RawMessage(`{"loadBalancer":{"simple":"FASTEST"}}`)
			}),
			wantErr: "spec.service.trafficPolicy",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			primary, canary, err := RenderDestinationRules(tt.canary)
			if tt.wantErr != "" {
				if !errors.Is(err, functions.ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("RenderDestinationRules: got error %v, want ErrInvalid containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("RenderDestinationRules: got error %v, want none", err)
			}
			if diff := cmp.Diff(tt.wantPrimary, primary, protocmp.Transform()); diff != "" {
				t.Errorf("primary DestinationRule mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantCanary, canary, protocmp.Transform()); diff != "" {
				t.Errorf("canary DestinationRule mismatch (-want +got):\n%s", diff)
			}
			if primary.Spec.TrafficPolicy != nil && primary.Spec.TrafficPolicy == canary.Spec.TrafficPolicy {
				t.Errorf("the two DestinationRules share one TrafficPolicy; want separate copies")
			}
		})
	}
}

func TestWeightsOfReadsWhatWasRendered(t *testing.T) {
	sessionAffinity := func(c *functions.Canary) {
		c.Spec.Analysis.SessionAffinity = &functions.SessionAffinity{CookieName: "canary-flagger-cookie", PrimaryCookieName: "primary-flagger-cookie"}
	}
	tests := []struct {
		name   string
		canary functions.Canary
		plan   functions.RoutePlan
	}{
		{name: "at rest", canary: podinfo(), plan: plan(100, 0)},
		{name: "mid analysis", canary: podinfo(), plan: plan(65, 35)},
		{name: "all to canary", canary: podinfo(), plan: plan(0, 100)},
		{
			name:   "mirrored",
			canary: podinfo(func(c *functions.Canary) { c.Spec.Analysis.Mirror = true; c.Spec.Analysis.MirrorWeight = 10 }),
			plan:   functions.RoutePlan{Routing: functions.Routing{Primary: 100, Mirrored: true}},
		},
		{
			name: "A/B during analysis",
			canary: podinfo(func(c *functions.Canary) {
				c.Spec.Analysis = &functions.Analysis{Iterations: 5, Match: json.RawMessage(`[{"headers":{"x-canary":{"exact":"1"}}}]`)}
			}),
			plan: plan(0, 100),
		},
		{
			name:   "session affinity with canary weight",
			canary: podinfo(sessionAffinity),
			plan: functions.RoutePlan{Routing: functions.Routing{Primary: 70, Canary: 30},
				SessionAffinityCookie: "canary-flagger-cookie=AbCdEfGhIj", PrimarySessionAffinityCookie: "primary-flagger-cookie=KlMnOpQrSt"},
		},
		{
			name:   "session affinity expiring the cookie",
			canary: podinfo(sessionAffinity),
			plan:   functions.RoutePlan{Routing: functions.Routing{Primary: 100}, PreviousSessionAffinityCookie: "canary-flagger-cookie=AbCdEfGhIj"},
		},
		{
			name:   "TCP",
			canary: podinfo(func(c *functions.Canary) { c.Spec.Service.AppProtocol = "tcp" }),
			plan:   plan(85, 15),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vs, err := RenderVirtualService(tt.canary, tt.plan)
			if err != nil {
				t.Fatalf("RenderVirtualService: %v", err)
			}
			got, ok := WeightsOf(vs)
			if !ok {
				t.Fatalf("WeightsOf: got ok=false, want the plan's routing %+v", tt.plan.Routing)
			}
			if got != tt.plan.Routing {
				t.Errorf("WeightsOf: got %+v, want %+v", got, tt.plan.Routing)
			}
		})
	}
}

func TestWeightsOfWithoutCanaryRoute(t *testing.T) {
	tests := []struct {
		name string
		spec *istioapi.VirtualService
	}{
		{name: "no routes", spec: &istioapi.VirtualService{Hosts: []string{"podinfo"}}},
		{name: "a VirtualService not taken over yet", spec: &istioapi.VirtualService{
			Http: []*istioapi.HTTPRoute{{Route: []*istioapi.HTTPRouteDestination{{Destination: &istioapi.Destination{Host: "podinfo"}}}}},
		}},
		{name: "both weights 0", spec: &istioapi.VirtualService{
			Http: []*istioapi.HTTPRoute{{Route: []*istioapi.HTTPRouteDestination{dest("podinfo-primary", 0), dest("podinfo-canary", 0)}}},
		}},
		{name: "only sticky routes", spec: &istioapi.VirtualService{
			Http: []*istioapi.HTTPRoute{{Name: "sticky-route", Route: []*istioapi.HTTPRouteDestination{dest("podinfo-primary", 0), dest("podinfo-canary", 100)}}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vs := &networkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: "podinfo", Namespace: "default"}}
			tt.spec.DeepCopyInto(&vs.Spec)
			if got, ok := WeightsOf(vs); ok {
				t.Errorf("WeightsOf: got %+v, ok=true; want ok=false", got)
			}
		})
	}
}
