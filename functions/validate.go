package functions

import (
	"fmt"
	"slices"
	"strings"
)

// Validate lists why a Canary cannot be honoured, in words for its status. An empty list means
// it is fine. It never fails on anything Flagger would accept and run the same way. The
// provider must be one of routers, whose own rules apply too (RouteValidator).
func Validate(c Canary, routers Routers) []string {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if c.DecodeError != "" {
		add("%s", c.DecodeError)
	}
	s := c.Spec
	problems = append(problems, routers.validate(c)...)
	if s.TargetRef.Name == "" {
		add("spec.targetRef.name is required")
	}
	if k := s.TargetRef.kind(); k != "Deployment" {
		add("spec.targetRef.kind %s is not supported: Siskin releases Deployments", k)
	}
	if s.Service.Port <= 0 {
		add("spec.service.port is required")
	}
	n := c.Names()
	for _, h := range []struct {
		field string
		meta  *ServiceMeta
		svc   string
	}{
		{"spec.service.primary.host", s.Service.Primary, n.PrimarySvc},
		{"spec.service.canary.host", s.Service.Canary, n.CanarySvc},
		{"spec.service.apex.host", s.Service.Apex, n.Apex},
	} {
		if h.meta == nil || h.meta.Host == "" {
			continue
		}
		if !hostNamesService(h.meta.Host, h.svc, c.Namespace) {
			add("%s %q does not match the generated Service %s.%s (expected %s.%s.svc.cluster.local or a shorter form of it)",
				h.field, h.meta.Host, h.svc, c.Namespace, h.svc, c.Namespace)
		}
	}
	if s.Service.Delegation && (len(s.Service.Hosts) > 0 || len(s.Service.Gateways) > 0) {
		add("spec.service.delegation cannot be used with spec.service.hosts or spec.service.gateways")
	}
	if s.Analysis == nil {
		return problems
	}
	a := *s.Analysis
	if !s.SkipAnalysis && a.StepWeight <= 0 && len(a.StepWeights) == 0 && a.Iterations <= 0 {
		add("spec.analysis needs stepWeight, stepWeights or iterations")
	}
	for i, w := range a.StepWeights {
		if w <= 0 || w > 100 || (i > 0 && w <= a.StepWeights[i-1]) {
			add("spec.analysis.stepWeights must rise strictly within 1..100, got %v", a.StepWeights)
			break
		}
	}
	if sa := a.SessionAffinity; sa != nil {
		if sa.CookieName == "" {
			add("spec.analysis.sessionAffinity.cookieName is required")
		} else if sa.CookieName == sa.PrimaryCookieName {
			add("spec.analysis.sessionAffinity.cookieName and primaryCookieName must differ")
		}
	}
	for i, m := range a.Metrics {
		builtin := m.Name == MetricRequestSuccessRate || m.Name == MetricRequestDuration
		if m.Name == "" {
			add("spec.analysis.metrics[%d].name is required", i)
		} else if !builtin && m.TemplateRef == nil && m.Query == "" {
			add("spec.analysis.metrics[%d] %s: no usable metrics template and query were configured", i, m.Name)
		}
	}
	for i, w := range a.Webhooks {
		if !slices.Contains(hookTypes, w.EffectiveType()) {
			add("spec.analysis.webhooks[%d].type %q is not one of %v", i, w.Type, hookTypes)
		}
		if w.URL == "" {
			add("spec.analysis.webhooks[%d].url is required", i)
		}
	}
	for i, al := range a.Alerts {
		switch al.Severity {
		case "", SeverityInfo, SeverityWarn, SeverityError:
		default:
			add("spec.analysis.alerts[%d].severity %q is not info, warn or error", i, al.Severity)
		}
	}
	return problems
}

// hostNamesService accepts the Service's name in any of its in-cluster forms.
func hostNamesService(host, svc, ns string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == svc || host == svc+"."+ns || host == svc+"."+ns+".svc" {
		return true
	}
	rest, ok := strings.CutPrefix(host, svc+"."+ns+".svc.")
	return ok && rest != ""
}
