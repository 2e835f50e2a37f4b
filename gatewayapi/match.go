package gatewayapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// A Canary's matches (spec.service.match, spec.analysis.match) are Istio HTTPMatchRequests.
// They are translated as Flagger's Gateway API router translates them: uri exact, prefix and
// regex become path matches, exact and regex headers and query parameters become header and
// query matches, an exact method becomes the method. What an HTTPRouteMatch has no field for is
// a problem of the Canary's, never dropped.

// stringMatch is Istio's StringMatch: one of exact, prefix, regex.
type stringMatch struct {
	Exact  *string `json:"exact,omitempty"`
	Prefix *string `json:"prefix,omitempty"`
	Regex  *string `json:"regex,omitempty"`
}

// inexpressible are the HTTPMatchRequest fields Istio has and an HTTPRouteMatch does not, with
// why, for the problem's message.
var inexpressible = map[string]string{
	"sourceLabels":    "an HTTPRouteMatch cannot select the client's workload; use an AuthorizationPolicy or a route of its own",
	"sourceNamespace": "an HTTPRouteMatch cannot select the client's namespace",
	"gateways":        "an HTTPRoute is bound to its parents by parentRefs (spec.service.gatewayRefs), not per match",
	"port":            "an HTTPRouteMatch cannot select the port; set sectionName or port on a gatewayRef",
	"authority":       "an HTTPRouteMatch cannot select the authority; list the host in spec.service.hosts",
	"scheme":          "an HTTPRouteMatch cannot select the scheme",
	"ignoreUriCase":   "HTTPRouteMatch paths are case-sensitive",
	"withoutHeaders":  "an HTTPRouteMatch cannot match the absence of a header",
	"statPrefix":      "the Gateway API has no per-match stat prefix",
}

// decodeMatches translates a list of Istio matches; field names the list in problems.
func decodeMatches(field string, raw json.RawMessage) ([]gwv1.HTTPRouteMatch, []string) {
	if !hasJSON(raw) {
		return nil, nil
	}
	var items []map[string]json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, []string{fmt.Sprintf("%s is not a list of matches: %v", field, err)}
	}
	var (
		out      []gwv1.HTTPRouteMatch
		problems []string
	)
	for i, item := range items {
		m, p := decodeMatch(fmt.Sprintf("%s[%d]", field, i), item)
		problems = append(problems, p...)
		if !matchIsEmpty(m) {
			out = append(out, m)
		}
	}
	return out, problems
}

func decodeMatch(field string, item map[string]json.RawMessage) (gwv1.HTTPRouteMatch, []string) {
	var (
		m        gwv1.HTTPRouteMatch
		problems []string
	)
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	for _, key := range slices.Sorted(maps.Keys(item)) {
		raw := item[key]
		at := field + "." + key
		switch key {
		case "name":
			// A route name for Istio's logs; the Gateway API has none per match.
		case "uri":
			sm, err := decodeStringMatch(raw)
			if err != nil {
				add("%s: %v", at, err)
				continue
			}
			path, err := pathMatch(sm)
			if err != nil {
				add("%s: %v", at, err)
				continue
			}
			m.Path = path
		case "method":
			sm, err := decodeStringMatch(raw)
			if err != nil {
				add("%s: %v", at, err)
				continue
			}
			if sm.Exact == nil {
				add("%s: the Gateway API matches a method exactly; prefix and regex cannot be expressed", at)
				continue
			}
			method := gwv1.HTTPMethod(strings.ToUpper(*sm.Exact))
			if !slices.Contains(httpMethods, method) {
				add("%s: %q is not one of the HTTP methods an HTTPRouteMatch takes (%v)", at, *sm.Exact, httpMethods)
				continue
			}
			m.Method = &method
		case "headers":
			headers, p := decodeHeaderMatches(at, raw)
			problems = append(problems, p...)
			m.Headers = headers
		case "queryParams":
			params, p := decodeQueryMatches(at, raw)
			problems = append(problems, p...)
			m.QueryParams = params
		default:
			if why, ok := inexpressible[key]; ok {
				add("%s cannot be expressed with the Gateway API: %s", at, why)
			} else {
				add("%s: unknown field", at)
			}
		}
	}
	return m, problems
}

var httpMethods = []gwv1.HTTPMethod{gwv1.HTTPMethodGet, gwv1.HTTPMethodHead, gwv1.HTTPMethodPost, gwv1.HTTPMethodPut,
	gwv1.HTTPMethodDelete, gwv1.HTTPMethodConnect, gwv1.HTTPMethodOptions, gwv1.HTTPMethodTrace, gwv1.HTTPMethodPatch}

func decodeStringMatch(raw json.RawMessage) (stringMatch, error) {
	var sm stringMatch
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sm); err != nil {
		return sm, fmt.Errorf("not a string match {exact|prefix|regex}: %v", err)
	}
	n := 0
	for _, v := range []*string{sm.Exact, sm.Prefix, sm.Regex} {
		if v != nil {
			n++
		}
	}
	if n != 1 {
		return sm, fmt.Errorf("a string match needs exactly one of exact, prefix, regex")
	}
	return sm, nil
}

func pathMatch(sm stringMatch) (*gwv1.HTTPPathMatch, error) {
	var (
		t gwv1.PathMatchType
		v string
	)
	switch {
	case sm.Regex != nil:
		t, v = gwv1.PathMatchRegularExpression, *sm.Regex
	case sm.Exact != nil:
		t, v = gwv1.PathMatchExact, *sm.Exact
	default:
		t, v = gwv1.PathMatchPathPrefix, *sm.Prefix
	}
	// The HTTPRoute schema refuses exact and prefix paths that are not absolute.
	if t != gwv1.PathMatchRegularExpression && !strings.HasPrefix(v, "/") {
		return nil, fmt.Errorf("an HTTPRoute path %q must start with /", v)
	}
	return &gwv1.HTTPPathMatch{Type: &t, Value: &v}, nil
}

func decodeHeaderMatches(field string, raw json.RawMessage) ([]gwv1.HTTPHeaderMatch, []string) {
	byName, problems := decodeNamedMatches(field, raw)
	var out []gwv1.HTTPHeaderMatch
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		sm := byName[name]
		t := gwv1.HeaderMatchExact
		v := ""
		switch {
		case sm.Exact != nil:
			v = *sm.Exact
		case sm.Regex != nil:
			t, v = gwv1.HeaderMatchRegularExpression, *sm.Regex
		default:
			problems = append(problems, fmt.Sprintf("%s.%s: the Gateway API matches headers exactly or by regex; a prefix cannot be expressed (write it as a regex, for example \"^value.*\")", field, name))
			continue
		}
		out = append(out, gwv1.HTTPHeaderMatch{Type: &t, Name: gwv1.HTTPHeaderName(name), Value: v})
	}
	return out, problems
}

func decodeQueryMatches(field string, raw json.RawMessage) ([]gwv1.HTTPQueryParamMatch, []string) {
	byName, problems := decodeNamedMatches(field, raw)
	var out []gwv1.HTTPQueryParamMatch
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		sm := byName[name]
		t := gwv1.QueryParamMatchExact
		v := ""
		switch {
		case sm.Exact != nil:
			v = *sm.Exact
		case sm.Regex != nil:
			t, v = gwv1.QueryParamMatchRegularExpression, *sm.Regex
		default:
			problems = append(problems, fmt.Sprintf("%s.%s: the Gateway API matches query parameters exactly or by regex; a prefix cannot be expressed", field, name))
			continue
		}
		out = append(out, gwv1.HTTPQueryParamMatch{Type: &t, Name: gwv1.HTTPHeaderName(name), Value: v})
	}
	return out, problems
}

func decodeNamedMatches(field string, raw json.RawMessage) (map[string]stringMatch, []string) {
	var named map[string]json.RawMessage
	if err := json.Unmarshal(raw, &named); err != nil {
		return nil, []string{fmt.Sprintf("%s is not a map of string matches: %v", field, err)}
	}
	out := make(map[string]stringMatch, len(named))
	var problems []string
	for _, name := range slices.Sorted(maps.Keys(named)) {
		sm, err := decodeStringMatch(named[name])
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s.%s: %v", field, name, err))
			continue
		}
		out[name] = sm
	}
	return out, problems
}

func matchIsEmpty(m gwv1.HTTPRouteMatch) bool {
	return m.Path == nil && m.Method == nil && len(m.Headers) == 0 && len(m.QueryParams) == 0
}

// mergeMatches is Flagger's merge of the analysis matches into the service matches: the cross
// product, each service match taking the analysis match's headers and query parameters when it
// has any (its path and method stay the service's).
func mergeMatches(analysis, service []gwv1.HTTPRouteMatch) []gwv1.HTTPRouteMatch {
	if len(analysis) == 0 {
		return cloneMatches(service)
	}
	if len(service) == 0 {
		return cloneMatches(analysis)
	}
	merged := make([]gwv1.HTTPRouteMatch, 0, len(analysis)*len(service))
	for _, a := range analysis {
		for _, s := range service {
			m := *s.DeepCopy()
			if len(a.Headers) > 0 {
				m.Headers = slices.Clone(a.DeepCopy().Headers)
			}
			if len(a.QueryParams) > 0 {
				m.QueryParams = slices.Clone(a.DeepCopy().QueryParams)
			}
			merged = append(merged, m)
		}
	}
	return merged
}

func cloneMatches(ms []gwv1.HTTPRouteMatch) []gwv1.HTTPRouteMatch {
	if ms == nil {
		return nil
	}
	out := make([]gwv1.HTTPRouteMatch, len(ms))
	for i := range ms {
		ms[i].DeepCopyInto(&out[i])
	}
	return out
}

func hasJSON(raw json.RawMessage) bool {
	s := strings.TrimSpace(string(raw))
	return s != "" && s != "null"
}
