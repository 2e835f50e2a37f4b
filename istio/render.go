// Package istio renders a Canary's VirtualService and DestinationRules with Flagger's names and
// shapes (networking.istio.io/v1), applies them with istio.io/client-go, and reads the live
// weights back.
package istio

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	istioapi "istio.io/api/networking/v1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/siskin-dev/siskin/functions"
)

const (
	// OriginalConfigAnnotation keeps the spec of a VirtualService that existed before Siskin took
	// it over, so that revertOnDeletion can restore it (Flagger's annotation).
	OriginalConfigAnnotation = "flagger.kubernetes.io/original-configuration"
	// kubectlLastAppliedAnnotation already holds the user's spec; Flagger then stores no copy.
	kubectlLastAppliedAnnotation = "kubectl.kubernetes.io/last-applied-configuration"

	// Flux would otherwise revert the weights Siskin sets (Flagger's filterMetadata).
	fluxReconcileAnnotation      = "kustomize.toolkit.fluxcd.io/reconcile"
	helmDriftDetectionAnnotation = "helm.toolkit.fluxcd.io/driftDetection"
	fluxDisabled                 = "disabled"

	// StickyCanaryRouteName names the session-affinity route that pins the canary cookie
	// (Flagger's name). StickyPrimaryRouteName pins the primary cookie; Flagger leaves that one
	// unnamed, Siskin names it so the weighted route can be told apart from both.
	StickyCanaryRouteName  = "sticky-route"
	StickyPrimaryRouteName = "sticky-primary-route"

	meshGateway     = "mesh"
	cookieHeader    = "Cookie"
	setCookieHeader = "Set-Cookie"

	canaryAPIVersion = "flagger.app/v1beta1"
	canaryKind       = "Canary"
)

// RenderVirtualService renders the apex VirtualService that routes the plan's weights, with
// Flagger's shape (pkg/router/istio.go): hosts, gateways, one weighted http route carrying
// spec.service's match, rewrite, timeout, retries, corsPolicy and headers, plus the A/B,
// mirroring, session-affinity and TCP variants.
func RenderVirtualService(c functions.Canary, p functions.RoutePlan) (*networkingv1.VirtualService, error) {
	svc := c.Spec.Service
	if svc.Delegation && (len(svc.Hosts) > 0 || len(svc.Gateways) > 0) {
		return nil, fmt.Errorf("%w: spec.service: a delegate VirtualService cannot have hosts or gateways", functions.ErrInvalid)
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
	vs := &networkingv1.VirtualService{
		ObjectMeta: metav1.ObjectMeta{
			Name:            names.Apex,
			Namespace:       c.Namespace,
			Labels:          apexLabels(svc.Apex),
			Annotations:     apexAnnotations(svc.Apex),
			OwnerReferences: []metav1.OwnerReference{owner},
		},
	}
	vs.Spec.Hosts = virtualServiceHosts(svc, names.Apex)
	vs.Spec.Gateways = virtualServiceGateways(svc)

	d := destinations{svc: svc, primary: names.PrimarySvc, canary: names.CanarySvc}
	if c.Spec.IsTCP() {
		vs.Spec.Tcp, err = tcpRoutes(svc, d, primaryWeight, canaryWeight)
		if err != nil {
			return nil, err
		}
		return vs, nil
	}

	base, err := decodeRouteBase(svc)
	if err != nil {
		return nil, err
	}
	vs.Spec.Http, err = httpRoutes(c, p, base, d, primaryWeight, canaryWeight)
	if err != nil {
		return nil, err
	}
	return vs, nil
}

// RenderDestinationRules renders `<apex>-primary` and `<apex>-canary`: short host names, no
// subsets, spec.service.trafficPolicy on both.
func RenderDestinationRules(c functions.Canary) (primary, canary *networkingv1.DestinationRule, err error) {
	owner, err := ownerRef(c)
	if err != nil {
		return nil, nil, err
	}
	var policy *istioapi.TrafficPolicy
	if hasJSON(c.Spec.Service.TrafficPolicy) {
		policy = &istioapi.TrafficPolicy{}
		if err := decodeMessage("spec.service.trafficPolicy", c.Spec.Service.TrafficPolicy, policy); err != nil {
			return nil, nil, err
		}
	}
	names := c.Names()
	rule := func(host string) *networkingv1.DestinationRule {
		dr := &networkingv1.DestinationRule{
			ObjectMeta: metav1.ObjectMeta{
				Name:            host,
				Namespace:       c.Namespace,
				OwnerReferences: []metav1.OwnerReference{owner},
			},
		}
		dr.Spec.Host = host
		dr.Spec.TrafficPolicy = cloneMessage(policy)
		return dr
	}
	return rule(names.PrimarySvc), rule(names.CanarySvc), nil
}

// WeightsOf reads the routing a VirtualService applies, as Flagger's GetRoutes does: the first
// route (http, else tcp) that has a destination on `<apex>-canary`, skipping the
// session-affinity sticky routes so the weighted route is the one read. ok is false when no
// route sends to the canary or when both weights are 0.
func WeightsOf(vs *networkingv1.VirtualService) (functions.Routing, bool) {
	if vs == nil {
		return functions.Routing{}, false
	}
	primaryHost, canaryHost := vs.Name+"-primary", vs.Name+"-canary"
	for _, route := range vs.Spec.Http {
		if route == nil || route.Name == StickyCanaryRouteName || route.Name == StickyPrimaryRouteName {
			continue
		}
		dests := make([]weightedHost, 0, len(route.Route))
		for _, d := range route.Route {
			dests = append(dests, weightedHost{host: d.GetDestination().GetHost(), weight: d.GetWeight()})
		}
		if r, ok := routingOf(dests, primaryHost, canaryHost); ok {
			r.Mirrored = route.GetMirror().GetHost() != ""
			return r, r.Primary != 0 || r.Canary != 0
		}
	}
	for _, route := range vs.Spec.Tcp {
		dests := make([]weightedHost, 0, len(route.GetRoute()))
		for _, d := range route.GetRoute() {
			dests = append(dests, weightedHost{host: d.GetDestination().GetHost(), weight: d.GetWeight()})
		}
		if r, ok := routingOf(dests, primaryHost, canaryHost); ok {
			return r, r.Primary != 0 || r.Canary != 0
		}
	}
	return functions.Routing{}, false
}

type weightedHost struct {
	host   string
	weight int32
}

func routingOf(dests []weightedHost, primaryHost, canaryHost string) (functions.Routing, bool) {
	if !slices.ContainsFunc(dests, func(d weightedHost) bool { return d.host == canaryHost }) {
		return functions.Routing{}, false
	}
	var r functions.Routing
	for _, d := range dests {
		switch d.host {
		case primaryHost:
			r.Primary = int(d.weight)
		case canaryHost:
			r.Canary = int(d.weight)
		}
	}
	return r, true
}

// ownerRef makes the Canary the controller of what Siskin generates, so it is garbage
// collected with the Canary.
func ownerRef(c functions.Canary) (metav1.OwnerReference, error) {
	if c.UID == "" {
		return metav1.OwnerReference{}, fmt.Errorf("%w: canary %s has no uid to own its routing objects", functions.ErrInvalid, c.Key)
	}
	yes := true
	return metav1.OwnerReference{
		APIVersion:         canaryAPIVersion,
		Kind:               canaryKind,
		Name:               c.Name,
		UID:                types.UID(c.UID),
		Controller:         &yes,
		BlockOwnerDeletion: &yes,
	}, nil
}

// planWeights checks the plan before it reaches Istio: weights are percentages, and a route
// whose destinations all weigh 0 is rejected by Istio.
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

func virtualServiceHosts(svc functions.ServiceSpec, apex string) []string {
	if svc.Delegation {
		return nil
	}
	hosts := slices.Clone(svc.Hosts)
	if !slices.Contains(hosts, apex) && !slices.Contains(hosts, "*") {
		hosts = append(hosts, apex)
	}
	return hosts
}

func virtualServiceGateways(svc functions.ServiceSpec) []string {
	switch {
	case svc.Delegation:
		return nil
	case len(svc.Gateways) == 0:
		return []string{meshGateway}
	}
	return slices.Clone(svc.Gateways)
}

// destinations builds route destinations as Flagger's makeDestination does: the port is named
// only with portDiscovery behind a non-mesh gateway or a delegating VirtualService, where Istio
// cannot infer it from the Service.
type destinations struct {
	svc             functions.ServiceSpec
	primary, canary string
}

func (d destinations) destination(host string) (*istioapi.Destination, error) {
	dest := &istioapi.Destination{Host: host}
	gw := d.svc.Gateways
	if d.svc.PortDiscovery && ((len(gw) > 0 && gw[0] != meshGateway) || d.svc.Delegation) {
		if d.svc.Port <= 0 {
			return nil, fmt.Errorf("%w: spec.service.port %d is not a port number", functions.ErrInvalid, d.svc.Port)
		}
		dest.Port = &istioapi.PortSelector{Number: uint32(d.svc.Port)}
	}
	return dest, nil
}

func (d destinations) http(host string, weight int32) (*istioapi.HTTPRouteDestination, error) {
	dest, err := d.destination(host)
	if err != nil {
		return nil, err
	}
	return &istioapi.HTTPRouteDestination{Destination: dest, Weight: weight}, nil
}

// pair is the weighted primary/canary destination list.
func (d destinations) pair(primaryWeight, canaryWeight int32) ([]*istioapi.HTTPRouteDestination, error) {
	p, err := d.http(d.primary, primaryWeight)
	if err != nil {
		return nil, err
	}
	c, err := d.http(d.canary, canaryWeight)
	if err != nil {
		return nil, err
	}
	return []*istioapi.HTTPRouteDestination{p, c}, nil
}

// routeBase is what every http route copies from spec.service.
type routeBase struct {
	match      []*istioapi.HTTPMatchRequest
	rewrite    *istioapi.HTTPRewrite
	timeout    *durationpb.Duration
	retries    *istioapi.HTTPRetry
	corsPolicy *istioapi.CorsPolicy
	headers    *istioapi.Headers
}

// route builds one http route. Every route gets its own copies so that adding a Set-Cookie
// header to one never leaks into another (Flagger shares the headers pointer).
func (b routeBase) route(name string, match []*istioapi.HTTPMatchRequest, dests []*istioapi.HTTPRouteDestination) *istioapi.HTTPRoute {
	return &istioapi.HTTPRoute{
		Name:       name,
		Match:      match,
		Rewrite:    cloneMessage(b.rewrite),
		Timeout:    cloneMessage(b.timeout),
		Retries:    cloneMessage(b.retries),
		CorsPolicy: cloneMessage(b.corsPolicy),
		Headers:    cloneMessage(b.headers),
		Route:      dests,
	}
}

func decodeRouteBase(svc functions.ServiceSpec) (routeBase, error) {
	var b routeBase
	var err error
	if b.match, err = decodeMatches("spec.service.match", svc.Match); err != nil {
		return b, err
	}
	if b.rewrite, err = decodeRewrite(svc.Rewrite); err != nil {
		return b, err
	}
	if svc.Timeout != "" {
		d, err := time.ParseDuration(svc.Timeout)
		if err != nil || d <= 0 {
			return b, fmt.Errorf("%w: spec.service.timeout %q is not a positive duration", functions.ErrInvalid, svc.Timeout)
		}
		b.timeout = durationpb.New(d)
	}
	if hasJSON(svc.Retries) {
		b.retries = &istioapi.HTTPRetry{}
		if err := decodeMessage("spec.service.retries", svc.Retries, b.retries); err != nil {
			return b, err
		}
	}
	if hasJSON(svc.CorsPolicy) {
		b.corsPolicy = &istioapi.CorsPolicy{}
		if err := decodeMessage("spec.service.corsPolicy", svc.CorsPolicy, b.corsPolicy); err != nil {
			return b, err
		}
	}
	if hasJSON(svc.Headers) {
		b.headers = &istioapi.Headers{}
		if err := decodeMessage("spec.service.headers", svc.Headers, b.headers); err != nil {
			return b, err
		}
	}
	return b, nil
}

// decodeRewrite reads Flagger's rewrite {uri, authority, type}. `type` only matters to the
// Gateway API router, so Istio gets uri and authority (Flagger's GetIstioRewrite).
func decodeRewrite(raw json.RawMessage) (*istioapi.HTTPRewrite, error) {
	if !hasJSON(raw) {
		return nil, nil
	}
	var rw struct {
		URI       string `json:"uri"`
		Authority string `json:"authority"`
		Type      string `json:"type"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rw); err != nil {
		return nil, fmt.Errorf("%w: spec.service.rewrite: %v", functions.ErrInvalid, err)
	}
	return &istioapi.HTTPRewrite{Uri: rw.URI, Authority: rw.Authority}, nil
}

func httpRoutes(c functions.Canary, p functions.RoutePlan, base routeBase, d destinations, primaryWeight, canaryWeight int32) ([]*istioapi.HTTPRoute, error) {
	analysis := functions.Analysis{}
	if c.Spec.Analysis != nil {
		analysis = *c.Spec.Analysis
	}
	weightedDests, err := d.pair(primaryWeight, canaryWeight)
	if err != nil {
		return nil, err
	}

	if c.Spec.Strategy() == functions.StrategyABTesting {
		abMatch, err := decodeMatches("spec.analysis.match", analysis.Match)
		if err != nil {
			return nil, err
		}
		weighted := base.route("", mergeMatchConditions(abMatch, base.match), weightedDests)
		mirror(weighted, p.Routing, analysis, d)
		// A departure from Flagger (README, "Where Siskin departs from Flagger"): Flagger writes the plan's primary weight (0 while the canary takes the
		// matching requests) on the default route's lone destination. It always carries 100.
		primaryOnly, err := d.http(d.primary, 100)
		if err != nil {
			return nil, err
		}
		return []*istioapi.HTTPRoute{weighted, base.route("", cloneMatches(base.match), []*istioapi.HTTPRouteDestination{primaryOnly})}, nil
	}

	weighted := base.route("", cloneMatches(base.match), weightedDests)
	// The mirror goes on the weighted route, the one that carries the plan; Flagger puts it on
	// http[0], which with session affinity is a sticky route.
	mirror(weighted, p.Routing, analysis, d)
	if analysis.SessionAffinity == nil {
		return []*istioapi.HTTPRoute{weighted}, nil
	}
	return sessionAffinityRoutes(c, p, base, d, weighted, primaryWeight, canaryWeight)
}

func mirror(route *istioapi.HTTPRoute, r functions.Routing, a functions.Analysis, d destinations) {
	if !r.Mirrored {
		return
	}
	route.Mirror = &istioapi.Destination{Host: d.canary}
	if a.MirrorWeight > 0 {
		route.MirrorPercentage = &istioapi.Percent{Value: float64(a.MirrorWeight)}
	}
}

// sessionAffinityRoutes follows Flagger's session-affinity routing, with the cookies taken from
// the plan (Siskin saves them explicitly; Flagger mutates the in-memory status):
//   - canary weight > 0: a sticky route sends requests carrying the canary cookie to the canary,
//     an optional sticky route sends the primary cookie to the primary, and the weighted route
//     sets the cookies on the responses of each side;
//   - canary weight 0: a route matching the previous canary cookie expires it, then the weighted
//     route.
func sessionAffinityRoutes(c functions.Canary, p functions.RoutePlan, base routeBase, d destinations,
	weighted *istioapi.HTTPRoute, primaryWeight, canaryWeight int32) ([]*istioapi.HTTPRoute, error) {
	sa := *c.Spec.Analysis.SessionAffinity
	if canaryWeight == 0 {
		previous := p.PreviousSessionAffinityCookie
		if p.SessionAffinityCookie != "" {
			// As in Flagger, a cookie still current at weight 0 belongs to the run that ended.
			previous = p.SessionAffinityCookie
		}
		if previous == "" {
			return []*istioapi.HTTPRoute{weighted}, nil
		}
		match, err := cookieMatch(previous, base.match)
		if err != nil {
			return nil, err
		}
		dests, err := d.pair(primaryWeight, canaryWeight)
		if err != nil {
			return nil, err
		}
		expire := base.route(StickyCanaryRouteName, match, dests)
		addResponseHeader(&expire.Headers, setCookieHeader, expiredCookie(sa, previous))
		return []*istioapi.HTTPRoute{expire, weighted}, nil
	}

	if p.SessionAffinityCookie == "" {
		return nil, fmt.Errorf("%w: session affinity: the route plan has no canary cookie for canary weight %d", functions.ErrInvalid, canaryWeight)
	}
	maxAge := sa.MaxAge
	if maxAge <= 0 {
		maxAge = functions.DefaultSessionMaxAge
	}
	addResponseHeader(&weighted.Route[1].Headers, setCookieHeader, buildCookie(sa, p.SessionAffinityCookie, maxAge))
	match, err := cookieMatch(p.SessionAffinityCookie, base.match)
	if err != nil {
		return nil, err
	}
	dests, err := d.pair(0, 100)
	if err != nil {
		return nil, err
	}
	routes := []*istioapi.HTTPRoute{base.route(StickyCanaryRouteName, match, dests)}

	if sa.PrimaryCookieName != "" {
		if p.PrimarySessionAffinityCookie == "" {
			return nil, fmt.Errorf("%w: session affinity: the route plan has no primary cookie although primaryCookieName is set", functions.ErrInvalid)
		}
		// The primary cookie lives one analysis interval: a client that hit the primary stays
		// there until the next step may move it.
		interval := int(c.Spec.Interval(functions.MinAnalysisInterval) / time.Second)
		addResponseHeader(&weighted.Route[0].Headers, setCookieHeader, buildCookie(sa, p.PrimarySessionAffinityCookie, interval))
		match, err := cookieMatch(p.PrimarySessionAffinityCookie, base.match)
		if err != nil {
			return nil, err
		}
		dests, err := d.pair(100, 0)
		if err != nil {
			return nil, err
		}
		routes = append(routes, base.route(StickyPrimaryRouteName, match, dests))
	}
	return append(routes, weighted), nil
}

// cookieMatch matches requests carrying cookie ("name=value") on top of each service match.
func cookieMatch(cookie string, serviceMatch []*istioapi.HTTPMatchRequest) ([]*istioapi.HTTPMatchRequest, error) {
	name, value, ok := strings.Cut(cookie, "=")
	if !ok || name == "" || value == "" {
		return nil, fmt.Errorf("%w: session affinity cookie %q is not name=value", functions.ErrInvalid, cookie)
	}
	m := &istioapi.HTTPMatchRequest{Headers: map[string]*istioapi.StringMatch{
		cookieHeader: {MatchType: &istioapi.StringMatch_Regex{
			Regex: fmt.Sprintf(".*%s.*%s.*", regexp.QuoteMeta(name), regexp.QuoteMeta(value)),
		}},
	}}
	return mergeMatchConditions([]*istioapi.HTTPMatchRequest{m}, serviceMatch), nil
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

// expiredCookie deletes cookie in the browser. It repeats Domain and Path, without which a
// browser treats it as another cookie and keeps the old one (Flagger sends Max-Age only).
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

func addResponseHeader(h **istioapi.Headers, name, value string) {
	if *h == nil {
		*h = &istioapi.Headers{}
	}
	if (*h).Response == nil {
		(*h).Response = &istioapi.Headers_HeaderOperations{}
	}
	if (*h).Response.Add == nil {
		(*h).Response.Add = map[string]string{}
	}
	(*h).Response.Add[name] = value
}

// mergeMatchConditions is Flagger's merge of canary conditions into the service's: the cross
// product, each service condition overridden by the canary's headers and sourceLabels. Siskin
// also carries the canary's queryParams over: Flagger drops them, which routes every request
// of the service match to the canary.
func mergeMatchConditions(canary, service []*istioapi.HTTPMatchRequest) []*istioapi.HTTPMatchRequest {
	if len(service) == 0 {
		return cloneMatches(canary)
	}
	merged := make([]*istioapi.HTTPMatchRequest, 0, len(canary)*len(service))
	for _, c := range canary {
		for _, s := range service {
			m := cloneMessage(s)
			if len(c.Headers) > 0 {
				m.Headers = cloneMessage(c).Headers
			}
			if len(c.SourceLabels) > 0 {
				m.SourceLabels = maps.Clone(c.SourceLabels)
			}
			if len(c.QueryParams) > 0 {
				m.QueryParams = cloneMessage(c).QueryParams
			}
			merged = append(merged, m)
		}
	}
	return merged
}

func tcpRoutes(svc functions.ServiceSpec, d destinations, primaryWeight, canaryWeight int32) ([]*istioapi.TCPRoute, error) {
	matches, err := decodeMatches("spec.service.match", svc.Match)
	if err != nil {
		return nil, err
	}
	var l4 []*istioapi.L4MatchAttributes
	for _, m := range matches {
		if m.Port != 0 {
			l4 = append(l4, &istioapi.L4MatchAttributes{Port: m.Port})
		}
	}
	primary, err := d.destination(d.primary)
	if err != nil {
		return nil, err
	}
	canary, err := d.destination(d.canary)
	if err != nil {
		return nil, err
	}
	return []*istioapi.TCPRoute{{
		Match: l4,
		Route: []*istioapi.RouteDestination{
			{Destination: primary, Weight: primaryWeight},
			{Destination: canary, Weight: canaryWeight},
		},
	}}, nil
}

func decodeMatches(field string, raw json.RawMessage) ([]*istioapi.HTTPMatchRequest, error) {
	if !hasJSON(raw) {
		return nil, nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, fmt.Errorf("%w: %s is not a list: %v", functions.ErrInvalid, field, err)
	}
	out := make([]*istioapi.HTTPMatchRequest, 0, len(items))
	for i, item := range items {
		m := &istioapi.HTTPMatchRequest{}
		if err := decodeMessage(fmt.Sprintf("%s[%d]", field, i), item, m); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

func hasJSON(raw json.RawMessage) bool {
	s := strings.TrimSpace(string(raw))
	return s != "" && s != "null"
}

func cloneMatches(ms []*istioapi.HTTPMatchRequest) []*istioapi.HTTPMatchRequest {
	if ms == nil {
		return nil
	}
	out := make([]*istioapi.HTTPMatchRequest, len(ms))
	for i, m := range ms {
		out[i] = cloneMessage(m)
	}
	return out
}

// cloneMessage deep-copies a proto message, keeping nil as nil.
func cloneMessage[M any, P interface {
	*M
	proto.Message
}](m P) P {
	if m == nil {
		return nil
	}
	return proto.Clone(m).(P)
}
