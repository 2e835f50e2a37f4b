package traffic

import (
	"cmp"
	"regexp"
	"slices"
	"strings"

	istioapi "istio.io/api/networking/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// FromHTTPRoute is the routing of a Gateway API HTTPRoute written as the VirtualService that
// routes the same way, so Split and Plan serve both. Each match of each rule becomes a route of
// its own, ordered as the Gateway API orders matches (an exact path first, then the longest
// path, a method, the most headers, the most query parameters; the rules' order last); a rule
// without matches takes every path. backendRefs become weighted destinations (weight 1 when
// unset, as the schema defaults it) and RequestMirror filters mirrors, with their percent.
func FromHTTPRoute(route *gwv1.HTTPRoute) *istioapi.VirtualService {
	type entry struct {
		match gwv1.HTTPRouteMatch
		rule  int
	}
	var entries []entry
	for i, rule := range route.Spec.Rules {
		if len(rule.Matches) == 0 {
			entries = append(entries, entry{rule: i})
		}
		for _, m := range rule.Matches {
			entries = append(entries, entry{match: m, rule: i})
		}
	}
	slices.SortStableFunc(entries, func(a, b entry) int {
		if c := cmp.Compare(pathRank(b.match), pathRank(a.match)); c != 0 {
			return c
		}
		if c := cmp.Compare(pathLen(b.match), pathLen(a.match)); c != 0 {
			return c
		}
		if c := cmp.Compare(boolRank(b.match.Method != nil), boolRank(a.match.Method != nil)); c != 0 {
			return c
		}
		if c := cmp.Compare(len(b.match.Headers), len(a.match.Headers)); c != 0 {
			return c
		}
		if c := cmp.Compare(len(b.match.QueryParams), len(a.match.QueryParams)); c != 0 {
			return c
		}
		return cmp.Compare(a.rule, b.rule)
	})
	vs := &istioapi.VirtualService{}
	for _, e := range entries {
		rule := route.Spec.Rules[e.rule]
		r := &istioapi.HTTPRoute{Match: []*istioapi.HTTPMatchRequest{istioMatch(e.match)}}
		for _, ref := range rule.BackendRefs {
			w := int32(1)
			if ref.Weight != nil {
				w = *ref.Weight
			}
			r.Route = append(r.Route, &istioapi.HTTPRouteDestination{Destination: &istioapi.Destination{Host: string(ref.Name)}, Weight: w})
		}
		for _, f := range rule.Filters {
			if f.Type != gwv1.HTTPRouteFilterRequestMirror || f.RequestMirror == nil {
				continue
			}
			m := &istioapi.HTTPMirrorPolicy{Destination: &istioapi.Destination{Host: string(f.RequestMirror.BackendRef.Name)}}
			if p := f.RequestMirror.Percent; p != nil {
				m.Percentage = &istioapi.Percent{Value: float64(*p)}
			}
			r.Mirrors = append(r.Mirrors, m)
		}
		vs.Http = append(vs.Http, r)
	}
	return vs
}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
}

func pathRank(m gwv1.HTTPRouteMatch) int {
	if m.Path != nil && m.Path.Type != nil && *m.Path.Type == gwv1.PathMatchExact {
		return 1
	}
	return 0
}

func pathLen(m gwv1.HTTPRouteMatch) int {
	if m.Path == nil || m.Path.Value == nil {
		return 1 // the default, "/"
	}
	return len(*m.Path.Value)
}

func istioMatch(m gwv1.HTTPRouteMatch) *istioapi.HTTPMatchRequest {
	out := &istioapi.HTTPMatchRequest{}
	if p := m.Path; p != nil && p.Value != nil {
		t := gwv1.PathMatchPathPrefix
		if p.Type != nil {
			t = *p.Type
		}
		v := *p.Value
		switch t {
		case gwv1.PathMatchExact:
			out.Uri = &istioapi.StringMatch{MatchType: &istioapi.StringMatch_Exact{Exact: v}}
		case gwv1.PathMatchRegularExpression:
			out.Uri = &istioapi.StringMatch{MatchType: &istioapi.StringMatch_Regex{Regex: v}}
		default:
			// A path prefix matches whole segments: "/api" takes /api and /api/x, not /apix.
			prefix := strings.TrimSuffix(v, "/")
			if prefix != "" {
				out.Uri = &istioapi.StringMatch{MatchType: &istioapi.StringMatch_Regex{Regex: regexp.QuoteMeta(prefix) + "(/.*)?"}}
			}
		}
	}
	if m.Method != nil {
		out.Method = &istioapi.StringMatch{MatchType: &istioapi.StringMatch_Exact{Exact: string(*m.Method)}}
	}
	for _, h := range m.Headers {
		if out.Headers == nil {
			out.Headers = map[string]*istioapi.StringMatch{}
		}
		if h.Type != nil && *h.Type == gwv1.HeaderMatchRegularExpression {
			out.Headers[string(h.Name)] = &istioapi.StringMatch{MatchType: &istioapi.StringMatch_Regex{Regex: h.Value}}
		} else {
			out.Headers[string(h.Name)] = &istioapi.StringMatch{MatchType: &istioapi.StringMatch_Exact{Exact: h.Value}}
		}
	}
	for _, q := range m.QueryParams {
		if out.QueryParams == nil {
			out.QueryParams = map[string]*istioapi.StringMatch{}
		}
		if q.Type != nil && *q.Type == gwv1.QueryParamMatchRegularExpression {
			out.QueryParams[string(q.Name)] = &istioapi.StringMatch{MatchType: &istioapi.StringMatch_Regex{Regex: q.Value}}
		} else {
			out.QueryParams[string(q.Name)] = &istioapi.StringMatch{MatchType: &istioapi.StringMatch_Exact{Exact: q.Value}}
		}
	}
	return out
}
