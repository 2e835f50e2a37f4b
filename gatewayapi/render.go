// Package gatewayapi renders a Canary's HTTPRoute (gateway.networking.k8s.io/v1) with the names
// and shapes of Flagger's Gateway API router, applies it with the typed clients of
// sigs.k8s.io/gateway-api, and reads the live weights back. It is the router of the providers
// gatewayapi:v1 and gatewayapi:v1beta1. It creates no DestinationRules: on this path the
// HTTPRoute is the only routing object.
package gatewayapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/siskin-dev/siskin/functions"
)

const (
	// OriginalConfigAnnotation keeps the spec of an HTTPRoute that existed before Siskin took it
	// over, so that revertOnDeletion can restore it (the annotation Flagger uses for its other
	// routers).
	OriginalConfigAnnotation     = "flagger.kubernetes.io/original-configuration"
	kubectlLastAppliedAnnotation = "kubectl.kubernetes.io/last-applied-configuration"

	// Flux and Helm would otherwise put back the weights Siskin sets (Flagger's filterMetadata).
	fluxReconcileAnnotation      = "kustomize.toolkit.fluxcd.io/reconcile"
	helmDriftDetectionAnnotation = "helm.toolkit.fluxcd.io/driftDetection"
	fluxDisabled                 = "disabled"

	cookieHeader    = "Cookie"
	setCookieHeader = "Set-Cookie"

	canaryAPIVersion = "flagger.app/v1beta1"
	canaryKind       = "Canary"
)

// Providers are the spec.provider values this router serves: Flagger's names. Flagger picks its
// router by prefix, so gatewayapi:v1alpha2 (its older documentation's name) is the v1 router too.
// Siskin writes gateway.networking.k8s.io/v1 for all of them: v1beta1 HTTPRoutes are the same
// objects, served by the same CRD.
var Providers = []string{"gatewayapi:v1", "gatewayapi:v1beta1", "gatewayapi:v1alpha2"}

// IsProvider reports whether provider selects the Gateway API, as Flagger's factories do.
func IsProvider(provider string) bool { return strings.HasPrefix(provider, "gatewayapi") }

// spec is what the HTTPRoute copies from the Canary, decoded once.
type spec struct {
	parentRefs     []gwv1.ParentReference
	hostnames      []gwv1.Hostname
	serviceMatches []gwv1.HTTPRouteMatch // as written; nil when there are none
	abMatches      []gwv1.HTTPRouteMatch
	filters        []gwv1.HTTPRouteFilter
	timeouts       *gwv1.HTTPRouteTimeouts
}

// durationRE is the Gateway API's duration format (GEP-2257), as the HTTPRoute schema checks it.
var durationRE = regexp.MustCompile(`^([0-9]{1,5}(h|m|s|ms)){1,4}$`)

// Problems lists why the Canary cannot be routed with the Gateway API, in words for its status:
// what Flagger does with Istio that an HTTPRoute cannot express, what an HTTPRoute needs that
// the Canary lacks, and fields that do not decode. Nothing is silently dropped.
func Problems(c functions.Canary) []string {
	_, problems := decodeSpec(c)
	return problems
}

func decodeSpec(c functions.Canary) (spec, []string) {
	var (
		out      spec
		problems []string
	)
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	svc := c.Spec.Service

	if !hasJSON(svc.GatewayRefs) {
		add("spec.service.gatewayRefs is required with provider %s: name the Gateway (ingress), or the Service itself (mesh: sidecars and ambient waypoints) the HTTPRoute attaches to", c.Spec.Provider)
	} else if err := strictDecode(svc.GatewayRefs, &out.parentRefs); err != nil {
		out.parentRefs = nil
		add("spec.service.gatewayRefs: %v", err)
	} else if len(out.parentRefs) == 0 {
		add("spec.service.gatewayRefs is empty: an HTTPRoute needs at least one parent")
	} else if len(out.parentRefs) > 32 {
		add("spec.service.gatewayRefs has %d entries; an HTTPRoute takes at most 32", len(out.parentRefs))
	}
	for i, ref := range out.parentRefs {
		if ref.Name == "" {
			add("spec.service.gatewayRefs[%d].name is required", i)
		}
	}
	for _, h := range svc.Hosts {
		if h == "*" || strings.Contains(h, ":") || strings.Contains(h, "/") {
			add("spec.service.hosts: %q is not an HTTPRoute hostname (no bare *, port or path; a wildcard is *.example.com)", h)
			continue
		}
		out.hostnames = append(out.hostnames, gwv1.Hostname(h))
	}

	var p []string
	out.serviceMatches, p = decodeMatches("spec.service.match", svc.Match)
	problems = append(problems, p...)
	if c.Spec.Strategy() == functions.StrategyABTesting {
		out.abMatches, p = decodeMatches("spec.analysis.match", c.Spec.Analysis.Match)
		problems = append(problems, p...)
	}

	filters, p := decodeFilters(svc)
	problems = append(problems, p...)
	out.filters = filters

	if svc.Timeout != "" || svc.BackendTimeout != "" {
		out.timeouts = &gwv1.HTTPRouteTimeouts{}
		var request, backend time.Duration
		if svc.Timeout != "" {
			if d, ok := gatewayDuration(svc.Timeout); !ok {
				add("spec.service.timeout %q is not a Gateway API duration (for example 30s, 1m30s or 500ms; no fractions)", svc.Timeout)
			} else {
				request = d
				v := gwv1.Duration(svc.Timeout)
				out.timeouts.Request = &v
			}
		}
		if svc.BackendTimeout != "" {
			if d, ok := gatewayDuration(svc.BackendTimeout); !ok {
				add("spec.service.backendTimeout %q is not a Gateway API duration (for example 30s, 1m30s or 500ms; no fractions)", svc.BackendTimeout)
			} else {
				backend = d
				v := gwv1.Duration(svc.BackendTimeout)
				out.timeouts.BackendRequest = &v
			}
		}
		if request > 0 && backend > request {
			add("spec.service.backendTimeout %s is longer than spec.service.timeout %s: the HTTPRoute schema refuses it", svc.BackendTimeout, svc.Timeout)
		}
	}

	// What Flagger does with Istio and an HTTPRoute cannot.
	if svc.Delegation {
		add("spec.service.delegation is an Istio VirtualService feature: an HTTPRoute cannot be a delegate")
	}
	if len(svc.Gateways) > 0 {
		add("spec.service.gateways names Istio Gateways; with provider %s the HTTPRoute's parents are spec.service.gatewayRefs", c.Spec.Provider)
	}
	if hasJSON(svc.TrafficPolicy) {
		add("spec.service.trafficPolicy goes into DestinationRules, which the Gateway API path does not create; write a DestinationRule (or a BackendTLSPolicy) of your own for %s-primary and %s-canary", c.Names().Apex, c.Names().Apex)
	}
	if hasJSON(svc.Retries) {
		add("spec.service.retries cannot be expressed with the standard channel HTTPRoute (retry is experimental in the Gateway API); remove it or configure retries in the Gateway's implementation")
	}
	if hasJSON(svc.CorsPolicy) {
		add("spec.service.corsPolicy cannot be expressed with the standard channel HTTPRoute (the CORS filter is experimental in the Gateway API)")
	}
	if c.Spec.IsTCP() {
		add("spec.service.appProtocol tcp: the Gateway API router writes HTTPRoutes; TCP routing is not supported")
	}
	if a := c.Spec.Analysis; a != nil && a.Mirror && a.MirrorWeight > 100 {
		add("spec.analysis.mirrorWeight %d is over 100", a.MirrorWeight)
	}
	return out, problems
}

// gatewayDuration parses a Gateway API duration.
func gatewayDuration(s string) (time.Duration, bool) {
	if !durationRE.MatchString(s) {
		return 0, false
	}
	d, err := time.ParseDuration(s)
	return d, err == nil
}

// headerOps is Istio's Headers_HeaderOperations, as the Canary writes it.
type headerOps struct {
	Set    map[string]string `json:"set,omitempty"`
	Add    map[string]string `json:"add,omitempty"`
	Remove []string          `json:"remove,omitempty"`
}

// decodeFilters renders spec.service's headers, rewrite and mirror as the filters of every
// rule, in Flagger's order.
func decodeFilters(svc functions.ServiceSpec) ([]gwv1.HTTPRouteFilter, []string) {
	var (
		filters  []gwv1.HTTPRouteFilter
		problems []string
	)
	if hasJSON(svc.Headers) {
		var h struct {
			Request  *headerOps `json:"request,omitempty"`
			Response *headerOps `json:"response,omitempty"`
		}
		if err := strictDecode(svc.Headers, &h); err != nil {
			problems = append(problems, fmt.Sprintf("spec.service.headers: %v", err))
		} else {
			if h.Request != nil {
				filters = append(filters, gwv1.HTTPRouteFilter{Type: gwv1.HTTPRouteFilterRequestHeaderModifier, RequestHeaderModifier: headerFilter(*h.Request)})
			}
			if h.Response != nil {
				filters = append(filters, gwv1.HTTPRouteFilter{Type: gwv1.HTTPRouteFilterResponseHeaderModifier, ResponseHeaderModifier: headerFilter(*h.Response)})
			}
		}
	}
	if hasJSON(svc.Rewrite) {
		var rw struct {
			URI       string `json:"uri"`
			Authority string `json:"authority"`
			Type      string `json:"type"`
		}
		if err := strictDecode(svc.Rewrite, &rw); err != nil {
			problems = append(problems, fmt.Sprintf("spec.service.rewrite: %v", err))
		} else {
			f := gwv1.HTTPRouteFilter{Type: gwv1.HTTPRouteFilterURLRewrite, URLRewrite: &gwv1.HTTPURLRewriteFilter{}}
			if rw.Authority != "" {
				host := gwv1.PreciseHostname(rw.Authority)
				f.URLRewrite.Hostname = &host
			}
			if rw.URI != "" {
				uri := rw.URI
				// Flagger's GetType: a prefix replacement when asked for, else the full path.
				if rw.Type == string(gwv1.PrefixMatchHTTPPathModifier) {
					f.URLRewrite.Path = &gwv1.HTTPPathModifier{Type: gwv1.PrefixMatchHTTPPathModifier, ReplacePrefixMatch: &uri}
				} else {
					f.URLRewrite.Path = &gwv1.HTTPPathModifier{Type: gwv1.FullPathHTTPPathModifier, ReplaceFullPath: &uri}
				}
			}
			filters = append(filters, f)
		}
	}
	if hasJSON(svc.Mirror) {
		var mirrors []gwv1.HTTPRequestMirrorFilter
		if err := strictDecode(svc.Mirror, &mirrors); err != nil {
			problems = append(problems, fmt.Sprintf("spec.service.mirror: %v", err))
		}
		for i := range mirrors {
			filters = append(filters, gwv1.HTTPRouteFilter{Type: gwv1.HTTPRouteFilterRequestMirror, RequestMirror: &mirrors[i]})
		}
	}
	return filters, problems
}

// headerFilter turns Istio's header operations into a header modifier, names sorted so that
// the rendering is the same every time.
func headerFilter(ops headerOps) *gwv1.HTTPHeaderFilter {
	f := &gwv1.HTTPHeaderFilter{}
	for _, name := range slices.Sorted(maps.Keys(ops.Set)) {
		f.Set = append(f.Set, gwv1.HTTPHeader{Name: gwv1.HTTPHeaderName(name), Value: ops.Set[name]})
	}
	for _, name := range slices.Sorted(maps.Keys(ops.Add)) {
		f.Add = append(f.Add, gwv1.HTTPHeader{Name: gwv1.HTTPHeaderName(name), Value: ops.Add[name]})
	}
	f.Remove = slices.Clone(ops.Remove)
	return f
}

func strictDecode(raw json.RawMessage, out any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	return dec.Decode(out)
}

// RenderHTTPRoute renders the apex HTTPRoute that routes the plan, with Flagger's shape
// (pkg/router/gateway_api.go): parentRefs from gatewayRefs, hostnames from hosts, one rule
// sending to <apex>-primary and <apex>-canary by weight, with spec.service's matches (or
// every path), filters and timeouts; plus the A/B, mirroring and session-affinity variants.
// A timeout is written only when the Canary sets one: the schema refuses an empty one.
func RenderHTTPRoute(c functions.Canary, p functions.RoutePlan) (*gwv1.HTTPRoute, error) {
	s, problems := decodeSpec(c)
	if len(problems) > 0 {
		return nil, fmt.Errorf("%w: %s", functions.ErrInvalid, strings.Join(problems, "; "))
	}
	owner, err := ownerRef(c)
	if err != nil {
		return nil, err
	}
	primaryWeight, canaryWeight, err := planWeights(p.Routing)
	if err != nil {
		return nil, err
	}
	names := c.Names()
	route := &gwv1.HTTPRoute{
		TypeMeta: metav1.TypeMeta{APIVersion: gwv1.GroupVersion.String(), Kind: "HTTPRoute"},
		ObjectMeta: metav1.ObjectMeta{
			Name:            names.Apex,
			Namespace:       c.Namespace,
			Labels:          apexLabels(c.Spec.Service.Apex),
			Annotations:     apexAnnotations(c.Spec.Service.Apex),
			OwnerReferences: []metav1.OwnerReference{owner},
		},
	}
	route.Spec.ParentRefs = s.parentRefs
	route.Spec.Hostnames = s.hostnames

	b := builder{s: s, port: c.Spec.Service.Port, primary: names.PrimarySvc, canary: names.CanarySvc}
	matches := s.serviceMatches
	if len(matches) == 0 {
		matches = []gwv1.HTTPRouteMatch{everyPath()}
	}
	a := functions.Analysis{}
	if c.Spec.Analysis != nil {
		a = *c.Spec.Analysis
	}

	if c.Spec.Strategy() == functions.StrategyABTesting {
		weighted := b.rule(mergeMatches(s.abMatches, matches), b.pair(primaryWeight, canaryWeight))
		b.mirror(&weighted, p.Routing, a)
		// Flagger writes 100 on the fallback rule's lone backend, whatever the plan.
		fallback := b.rule(cloneMatches(matches), []gwv1.HTTPBackendRef{b.backend(b.primary, 100)})
		route.Spec.Rules = []gwv1.HTTPRouteRule{weighted, fallback}
		return route, nil
	}

	weighted := b.rule(cloneMatches(matches), b.pair(primaryWeight, canaryWeight))
	b.mirror(&weighted, p.Routing, a)
	if a.SessionAffinity == nil {
		route.Spec.Rules = []gwv1.HTTPRouteRule{weighted}
		return route, nil
	}
	rules, err := b.sessionAffinity(c, p, weighted, canaryWeight)
	if err != nil {
		return nil, err
	}
	route.Spec.Rules = rules
	return route, nil
}

func everyPath() gwv1.HTTPRouteMatch {
	t, v := gwv1.PathMatchPathPrefix, "/"
	return gwv1.HTTPRouteMatch{Path: &gwv1.HTTPPathMatch{Type: &t, Value: &v}}
}

// builder makes the rules of one HTTPRoute; every rule gets its own copies.
type builder struct {
	s               spec
	port            int32
	primary, canary string
}

func (b builder) rule(matches []gwv1.HTTPRouteMatch, backends []gwv1.HTTPBackendRef) gwv1.HTTPRouteRule {
	r := gwv1.HTTPRouteRule{Matches: matches, BackendRefs: backends}
	for i := range b.s.filters {
		r.Filters = append(r.Filters, *b.s.filters[i].DeepCopy())
	}
	if b.s.timeouts != nil {
		r.Timeouts = b.s.timeouts.DeepCopy()
	}
	return r
}

// backend is a backendRef to a Service of the canary, with Flagger's explicit group and kind.
func (b builder) backend(name string, weight int32) gwv1.HTTPBackendRef {
	group, kind, port := gwv1.Group(""), gwv1.Kind("Service"), gwv1.PortNumber(b.port)
	return gwv1.HTTPBackendRef{BackendRef: gwv1.BackendRef{
		BackendObjectReference: gwv1.BackendObjectReference{Group: &group, Kind: &kind, Name: gwv1.ObjectName(name), Port: &port},
		Weight:                 &weight,
	}}
}

func (b builder) pair(primaryWeight, canaryWeight int32) []gwv1.HTTPBackendRef {
	return []gwv1.HTTPBackendRef{b.backend(b.primary, primaryWeight), b.backend(b.canary, canaryWeight)}
}

// mirror adds a RequestMirror filter to the canary when the plan mirrors. Flagger's Gateway API
// router mirrors only blue/green; the canary strategy's mirroring (with mirrorWeight as the
// filter's percent) is expressible too, so Siskin writes it.
func (b builder) mirror(r *gwv1.HTTPRouteRule, routing functions.Routing, a functions.Analysis) {
	if !routing.Mirrored {
		return
	}
	group, kind, port := gwv1.Group(""), gwv1.Kind("Service"), gwv1.PortNumber(b.port)
	m := &gwv1.HTTPRequestMirrorFilter{BackendRef: gwv1.BackendObjectReference{Group: &group, Kind: &kind, Name: gwv1.ObjectName(b.canary), Port: &port}}
	if a.MirrorWeight > 0 && a.MirrorWeight < 100 {
		pct := int32(a.MirrorWeight)
		m.Percent = &pct
	}
	r.Filters = append(r.Filters, gwv1.HTTPRouteFilter{Type: gwv1.HTTPRouteFilterRequestMirror, RequestMirror: m})
}

// sessionAffinity follows Flagger's session-affinity rules, with the cookies from the plan:
//   - canary weight > 0: a rule sends requests carrying the canary cookie to the canary, an
//     optional one sends the primary cookie to the primary, and the weighted rule sets each
//     side's cookie on its responses (a filter on each backendRef);
//   - canary weight 0: a rule matching the previous canary cookie expires it, then the weighted
//     rule. With no previous cookie the weighted rule is alone (Flagger writes it twice).
func (b builder) sessionAffinity(c functions.Canary, p functions.RoutePlan, weighted gwv1.HTTPRouteRule, canaryWeight int32) ([]gwv1.HTTPRouteRule, error) {
	sa := *c.Spec.Analysis.SessionAffinity
	if canaryWeight == 0 {
		previous := p.PreviousSessionAffinityCookie
		if p.SessionAffinityCookie != "" {
			previous = p.SessionAffinityCookie // a cookie still current at weight 0 belongs to the run that ended
		}
		if previous == "" {
			return []gwv1.HTTPRouteRule{weighted}, nil
		}
		match, err := cookieMatch(previous, b.s.serviceMatches)
		if err != nil {
			return nil, err
		}
		expire := b.rule(match, slices.Clone(weighted.BackendRefs))
		for i := range expire.BackendRefs {
			weighted.BackendRefs[i].DeepCopyInto(&expire.BackendRefs[i])
		}
		expire.Filters = addResponseHeader(expire.Filters, setCookieHeader, expiredCookie(sa, previous))
		return []gwv1.HTTPRouteRule{expire, weighted}, nil
	}
	if p.SessionAffinityCookie == "" {
		return nil, fmt.Errorf("%w: session affinity: the route plan has no canary cookie for canary weight %d", functions.ErrInvalid, canaryWeight)
	}
	maxAge := sa.MaxAge
	if maxAge <= 0 {
		maxAge = functions.DefaultSessionMaxAge
	}
	weighted.BackendRefs[1].Filters = addResponseHeader(weighted.BackendRefs[1].Filters, setCookieHeader, buildCookie(sa, p.SessionAffinityCookie, maxAge))
	match, err := cookieMatch(p.SessionAffinityCookie, b.s.serviceMatches)
	if err != nil {
		return nil, err
	}
	rules := []gwv1.HTTPRouteRule{b.rule(match, b.pair(0, 100))}
	if sa.PrimaryCookieName != "" {
		if p.PrimarySessionAffinityCookie == "" {
			return nil, fmt.Errorf("%w: session affinity: the route plan has no primary cookie although primaryCookieName is set", functions.ErrInvalid)
		}
		// The primary cookie lives one analysis interval: a client that hit the primary stays
		// there until the next step may move it.
		interval := int(c.Spec.Interval(functions.MinAnalysisInterval) / time.Second)
		weighted.BackendRefs[0].Filters = addResponseHeader(weighted.BackendRefs[0].Filters, setCookieHeader, buildCookie(sa, p.PrimarySessionAffinityCookie, interval))
		match, err := cookieMatch(p.PrimarySessionAffinityCookie, b.s.serviceMatches)
		if err != nil {
			return nil, err
		}
		rules = append(rules, b.rule(match, b.pair(100, 0)))
	}
	return append(rules, weighted), nil
}

// cookieMatch matches requests carrying cookie ("name=value") on top of each service match.
func cookieMatch(cookie string, serviceMatches []gwv1.HTTPRouteMatch) ([]gwv1.HTTPRouteMatch, error) {
	name, value, ok := strings.Cut(cookie, "=")
	if !ok || name == "" || value == "" {
		return nil, fmt.Errorf("%w: session affinity cookie %q is not name=value", functions.ErrInvalid, cookie)
	}
	t := gwv1.HeaderMatchRegularExpression
	m := gwv1.HTTPRouteMatch{Headers: []gwv1.HTTPHeaderMatch{{
		Type: &t, Name: cookieHeader,
		Value: fmt.Sprintf(".*%s.*%s.*", regexp.QuoteMeta(name), regexp.QuoteMeta(value)),
	}}}
	return mergeMatches([]gwv1.HTTPRouteMatch{m}, serviceMatches), nil
}

// addResponseHeader adds a header to the filters' response header modifier, creating it if
// there is none: the schema refuses a second ResponseHeaderModifier in one list.
func addResponseHeader(filters []gwv1.HTTPRouteFilter, name, value string) []gwv1.HTTPRouteFilter {
	h := gwv1.HTTPHeader{Name: gwv1.HTTPHeaderName(name), Value: value}
	for i := range filters {
		if filters[i].Type == gwv1.HTTPRouteFilterResponseHeaderModifier && filters[i].ResponseHeaderModifier != nil {
			filters[i].ResponseHeaderModifier.Add = append(filters[i].ResponseHeaderModifier.Add, h)
			return filters
		}
	}
	return append(filters, gwv1.HTTPRouteFilter{
		Type:                   gwv1.HTTPRouteFilterResponseHeaderModifier,
		ResponseHeaderModifier: &gwv1.HTTPHeaderFilter{Add: []gwv1.HTTPHeader{h}},
	})
}

// buildCookie renders a Set-Cookie value with the sessionAffinity attributes.
func buildCookie(sa functions.SessionAffinity, cookie string, maxAge int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s; Max-Age=%d", cookie, maxAge)
	if sa.Domain != "" {
		b.WriteString("; Domain=" + sa.Domain)
	}
	if sa.Path != "" {
		b.WriteString("; Path=" + sa.Path)
	}
	if sa.SameSite != "" {
		b.WriteString("; SameSite=" + sa.SameSite)
	}
	if sa.Secure {
		b.WriteString("; Secure")
	}
	if sa.HTTPOnly {
		b.WriteString("; HttpOnly")
	}
	if sa.Partitioned {
		b.WriteString("; Partitioned")
	}
	return b.String()
}

// expiredCookie deletes cookie in the browser; Domain and Path are repeated, without which a
// browser keeps the old cookie.
func expiredCookie(sa functions.SessionAffinity, cookie string) string {
	var b strings.Builder
	b.WriteString(cookie + "; Max-Age=-1")
	if sa.Domain != "" {
		b.WriteString("; Domain=" + sa.Domain)
	}
	if sa.Path != "" {
		b.WriteString("; Path=" + sa.Path)
	}
	return b.String()
}

// WeightsOf reads the routing an HTTPRoute applies, as Flagger's GetRoutes does: the rule that
// sends to both <apex>-primary and <apex>-canary (with session affinity, the last such rule:
// the sticky rules come first), and whether any rule mirrors to the canary. ok is false when
// no rule sends to the canary, or when both weights are 0.
func WeightsOf(route *gwv1.HTTPRoute, stickyFirst bool) (functions.Routing, bool) {
	if route == nil {
		return functions.Routing{}, false
	}
	primary, canary := route.Name+"-primary", route.Name+"-canary"
	var (
		r     functions.Routing
		found bool
	)
	for _, rule := range route.Spec.Rules {
		for _, f := range rule.Filters {
			if f.Type == gwv1.HTTPRouteFilterRequestMirror && f.RequestMirror != nil && string(f.RequestMirror.BackendRef.Name) == canary {
				r.Mirrored = true
			}
		}
		if found && !stickyFirst {
			continue
		}
		var w functions.Routing
		hasCanary := false
		for _, ref := range rule.BackendRefs {
			weight := 1 // the schema's default
			if ref.Weight != nil {
				weight = int(*ref.Weight)
			}
			switch string(ref.Name) {
			case primary:
				w.Primary = weight
			case canary:
				w.Canary, hasCanary = weight, true
			}
		}
		if hasCanary {
			r.Primary, r.Canary, found = w.Primary, w.Canary, true
		}
	}
	return r, found && (r.Primary != 0 || r.Canary != 0)
}

// ownerRef makes the Canary the controller of its HTTPRoute, so it is garbage collected with
// the Canary, as Flagger's is.
func ownerRef(c functions.Canary) (metav1.OwnerReference, error) {
	if c.UID == "" {
		return metav1.OwnerReference{}, fmt.Errorf("%w: canary %s has no uid to own its HTTPRoute", functions.ErrInvalid, c.Key)
	}
	yes := true
	return metav1.OwnerReference{APIVersion: canaryAPIVersion, Kind: canaryKind, Name: c.Name, UID: types.UID(c.UID),
		Controller: &yes, BlockOwnerDeletion: &yes}, nil
}

// planWeights checks the plan: weights are percentages and some traffic goes somewhere.
func planWeights(r functions.Routing) (primary, canary int32, err error) {
	if r.Primary < 0 || r.Primary > 100 || r.Canary < 0 || r.Canary > 100 {
		return 0, 0, fmt.Errorf("%w: route plan weights primary=%d canary=%d are not percentages", functions.ErrInvalid, r.Primary, r.Canary)
	}
	if r.Primary == 0 && r.Canary == 0 {
		return 0, 0, fmt.Errorf("%w: route plan sends no traffic (primary=0 canary=0)", functions.ErrInvalid)
	}
	return int32(r.Primary), int32(r.Canary), nil
}

func apexLabels(m *functions.ServiceMeta) map[string]string {
	if m == nil || len(m.Labels) == 0 {
		return nil
	}
	return maps.Clone(m.Labels)
}

func apexAnnotations(m *functions.ServiceMeta) map[string]string {
	out := map[string]string{}
	if m != nil {
		maps.Copy(out, m.Annotations)
	}
	out[fluxReconcileAnnotation] = fluxDisabled
	out[helmDriftDetectionAnnotation] = fluxDisabled
	return out
}
