package traffic

import (
	"maps"
	"math"
	"regexp"
	"slices"
	"strings"

	istioapi "istio.io/api/networking/v1"
)

// RequestClass is one kind of synthetic request: what an Istio route match can look at, and
// the share of the traffic it makes up.
type RequestClass struct {
	// Name labels the class in logs.
	Name string
	// Share is its weight in the mix; a mix's shares need not add up to 1.
	Share float64
	// Method is the HTTP method; empty is GET.
	Method string
	// URI is the path with its query; empty is "/".
	URI string
	// Headers are the request's headers (names are matched case-insensitively, as in Envoy).
	Headers map[string]string
}

// DefaultMix is plain GET / requests, which every route without a match takes.
var DefaultMix = []RequestClass{{Name: "default", Share: 1}}

// Load is what one destination host receives.
type Load struct {
	// Served requests are answered by the host.
	Served float64
	// Mirrored requests are copies (Istio's mirror): the host answers and reports them, the
	// client never sees the answer.
	Mirrored float64
}

// Total is every request the host handles.
func (l Load) Total() float64 { return l.Served + l.Mirrored }

// Split is how n requests of the mix are spread over the destination hosts of a
// VirtualService, as Envoy would route them: each request takes the first http route whose
// match it satisfies (a route without a match takes everything), is split between that
// route's destinations by weight, and is copied to its mirrors with their percentages.
// Requests no route takes (Istio answers 404), and routes that redirect, answer directly or
// delegate, reach no host. Hosts are reduced to their short name ("podinfo-canary" for
// "podinfo-canary.test.svc.cluster.local"). Match conditions the simulator cannot see
// (port, source labels, source namespace, gateways) are treated as unmet.
func Split(vs *istioapi.VirtualService, mix []RequestClass, n float64) map[string]Load {
	out := map[string]Load{}
	if vs == nil || n <= 0 {
		return out
	}
	var total float64
	for _, c := range mix {
		total += max(c.Share, 0)
	}
	if total == 0 {
		return out
	}
	for _, c := range mix {
		if c.Share <= 0 {
			continue
		}
		route := firstRoute(vs.GetHttp(), c)
		if route == nil || route.GetRedirect() != nil || route.GetDirectResponse() != nil || route.GetDelegate() != nil {
			continue
		}
		requests := n * c.Share / total
		for host, share := range weightShares(route.GetRoute()) {
			l := out[host]
			l.Served += requests * share
			out[host] = l
		}
		for host, pct := range mirrorShares(route) {
			l := out[host]
			l.Mirrored += requests * pct / 100
			out[host] = l
		}
	}
	return out
}

// Backend is what answers behind one destination host: the Deployment whose pods the host's
// Service selects, and how the version it runs behaves.
type Backend struct {
	Workload  string
	Version   string
	Behaviour Behaviour
	// Ready is false when the Deployment has no available pod: Envoy answers 503 (UH) itself
	// and nothing reaches the workload.
	Ready bool
}

// Tally is what one workload handles: its load, and how many of those requests it answers
// with an error.
type Tally struct {
	Load
	Errors float64
	// Service is the destination host that sent it requests (the first by name when several
	// did), for destination_service.
	Service string
}

// Plan is where n requests of the mix go and how they are answered: Split by the live routes,
// summed per workload (several hosts may select one Deployment), with each workload's error
// rate applied. Hosts without a Backend, or whose Backend is not ready, reach no workload;
// their requests are returned as unavailable.
func Plan(vs *istioapi.VirtualService, mix []RequestClass, n float64, backends map[string]Backend) (map[string]Tally, float64) {
	out := map[string]Tally{}
	var unavailable float64
	loads := Split(vs, mix, n)
	hosts := slices.Sorted(maps.Keys(loads))
	for _, host := range hosts {
		l := loads[host]
		b, ok := backends[host]
		if !ok || !b.Ready {
			unavailable += l.Served
			continue
		}
		t := out[b.Workload]
		t.Served += l.Served
		t.Mirrored += l.Mirrored
		t.Errors += l.Total() * b.Behaviour.ErrorRate
		if t.Service == "" {
			t.Service = host
		}
		out[b.Workload] = t
	}
	return out, unavailable
}

// ShortHost is a destination host without its namespace and domain.
func ShortHost(host string) string {
	short, _, _ := strings.Cut(host, ".")
	return short
}

func firstRoute(routes []*istioapi.HTTPRoute, c RequestClass) *istioapi.HTTPRoute {
	for _, r := range routes {
		if r == nil {
			continue
		}
		if len(r.GetMatch()) == 0 {
			return r
		}
		for _, m := range r.GetMatch() {
			if matches(m, c) {
				return r
			}
		}
	}
	return nil
}

// weightShares is each destination's fraction of a route's requests. A lone destination takes
// everything whatever its weight; otherwise weights are normalised by their sum (Istio
// requires 100).
func weightShares(dests []*istioapi.HTTPRouteDestination) map[string]float64 {
	out := map[string]float64{}
	if len(dests) == 1 {
		out[ShortHost(dests[0].GetDestination().GetHost())] = 1
		return out
	}
	var sum float64
	for _, d := range dests {
		sum += float64(max(d.GetWeight(), 0))
	}
	if sum == 0 {
		return out
	}
	for _, d := range dests {
		if w := d.GetWeight(); w > 0 {
			out[ShortHost(d.GetDestination().GetHost())] += float64(w) / sum
		}
	}
	return out
}

// mirrorShares is the percentage of a route's requests copied to each mirror host: the
// deprecated mirror (with mirrorPercentage, or the older mirrorPercent; 100 when neither is
// set) and the mirrors list.
func mirrorShares(r *istioapi.HTTPRoute) map[string]float64 {
	out := map[string]float64{}
	if m := r.GetMirror(); m.GetHost() != "" {
		pct := 100.0
		switch {
		case r.GetMirrorPercentage() != nil:
			pct = r.GetMirrorPercentage().GetValue()
		case r.GetMirrorPercent() != nil:
			pct = float64(r.GetMirrorPercent().GetValue())
		}
		out[ShortHost(m.GetHost())] += clampPercent(pct)
	}
	for _, m := range r.GetMirrors() {
		if m.GetDestination().GetHost() == "" {
			continue
		}
		pct := 100.0
		if m.GetPercentage() != nil {
			pct = m.GetPercentage().GetValue()
		}
		out[ShortHost(m.GetDestination().GetHost())] += clampPercent(pct)
	}
	return out
}

func clampPercent(p float64) float64 { return math.Min(math.Max(p, 0), 100) }

// matches is one HTTPMatchRequest: every condition it sets must hold.
func matches(m *istioapi.HTTPMatchRequest, c RequestClass) bool {
	if m.GetPort() != 0 || len(m.GetSourceLabels()) > 0 || m.GetSourceNamespace() != "" || len(m.GetGateways()) > 0 {
		return false
	}
	method := c.Method
	if method == "" {
		method = "GET"
	}
	uri := c.URI
	if uri == "" {
		uri = "/"
	}
	path, query, _ := strings.Cut(uri, "?")
	if m.GetUri() != nil {
		p, match := path, m.GetUri()
		if m.GetIgnoreUriCase() {
			p = strings.ToLower(p)
			match = lowerMatch(match)
		}
		if !stringMatches(match, p) {
			return false
		}
	}
	if m.GetMethod() != nil && !stringMatches(m.GetMethod(), method) {
		return false
	}
	if m.GetScheme() != nil && !stringMatches(m.GetScheme(), "http") {
		return false
	}
	if m.GetAuthority() != nil && !stringMatches(m.GetAuthority(), c.header("host")) {
		return false
	}
	for name, want := range m.GetHeaders() {
		v, ok := c.lookup(name)
		if !ok || !stringMatches(want, v) {
			return false
		}
	}
	for name, unwanted := range m.GetWithoutHeaders() {
		if v, ok := c.lookup(name); ok && stringMatches(unwanted, v) {
			return false
		}
	}
	params := queryParams(query)
	for name, want := range m.GetQueryParams() {
		v, ok := params[name]
		if !ok || !stringMatches(want, v) {
			return false
		}
	}
	return true
}

func (c RequestClass) lookup(name string) (string, bool) {
	for k, v := range c.Headers {
		if strings.EqualFold(k, name) {
			return v, true
		}
	}
	return "", false
}

func (c RequestClass) header(name string) string {
	v, _ := c.lookup(name)
	return v
}

func queryParams(q string) map[string]string {
	out := map[string]string{}
	for _, kv := range strings.Split(q, "&") {
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		out[k] = v
	}
	return out
}

// stringMatches is Istio's StringMatch: exact, prefix, or an RE2 regex that must match the
// whole value. A StringMatch with none of them set only asks for presence.
func stringMatches(m *istioapi.StringMatch, v string) bool {
	switch t := m.GetMatchType().(type) {
	case *istioapi.StringMatch_Exact:
		return v == t.Exact
	case *istioapi.StringMatch_Prefix:
		return strings.HasPrefix(v, t.Prefix)
	case *istioapi.StringMatch_Regex:
		re, err := regexp.Compile(`^(?:` + t.Regex + `)$`)
		return err == nil && re.MatchString(v)
	default:
		return true
	}
}

func lowerMatch(m *istioapi.StringMatch) *istioapi.StringMatch {
	switch t := m.GetMatchType().(type) {
	case *istioapi.StringMatch_Exact:
		return &istioapi.StringMatch{MatchType: &istioapi.StringMatch_Exact{Exact: strings.ToLower(t.Exact)}}
	case *istioapi.StringMatch_Prefix:
		return &istioapi.StringMatch{MatchType: &istioapi.StringMatch_Prefix{Prefix: strings.ToLower(t.Prefix)}}
	case *istioapi.StringMatch_Regex:
		return &istioapi.StringMatch{MatchType: &istioapi.StringMatch_Regex{Regex: "(?i)" + t.Regex}}
	}
	return m
}
