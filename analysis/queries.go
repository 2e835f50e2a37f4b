package analysis

import (
	"fmt"
	"regexp"
	"strings"
	"text/template"

	"github.com/prometheus/common/model"

	"github.com/siskin-dev/siskin/functions"
)

// The built-in Istio metrics, with Flagger's PromQL (pkg/metrics/observers/istio.go). Only the
// canary workload is measured: the anchored regex on destination_workload does not match
// "<target>-primary".
const (
	MetricRequestSuccessRate = "request-success-rate"
	MetricRequestDuration    = "request-duration"
)

var builtinQueries = map[string]string{
	MetricRequestSuccessRate: `
	sum(
		rate(
			istio_requests_total{
				reporter="destination",
				destination_workload_namespace="{{ namespace }}",
				destination_workload=~"{{ target }}",
				response_code!~"5.*"
			}[{{ interval }}]
		)
	)
	/
	sum(
		rate(
			istio_requests_total{
				reporter="destination",
				destination_workload_namespace="{{ namespace }}",
				destination_workload=~"{{ target }}"
			}[{{ interval }}]
		)
	)
	* 100`,
	MetricRequestDuration: `
	histogram_quantile(
		0.99,
		sum(
			rate(
				istio_request_duration_milliseconds_bucket{
					reporter="destination",
					destination_workload_namespace="{{ namespace }}",
					destination_workload=~"{{ target }}"
				}[{{ interval }}]
			)
		) by (le)
	)`,
}

// httpQueries are Flagger's HTTP observer (pkg/metrics/observers/http.go), which Flagger uses for
// the built-ins with the Gateway API (and the kubernetes provider): the app's own
// http_request_duration_seconds histogram (podinfo exports it), by namespace and by the pod
// names of the target's ReplicaSets, which leave "<target>-primary-..." out.
var httpQueries = map[string]string{
	MetricRequestSuccessRate: `
	sum(
		rate(
			http_request_duration_seconds_count{
				kubernetes_namespace="{{ namespace }}",
				kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)",
				status!~"5.*"
			}[{{ interval }}]
		)
	)
	/
	sum(
		rate(
			http_request_duration_seconds_count{
				kubernetes_namespace="{{ namespace }}",
				kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"
			}[{{ interval }}]
		)
	)
	* 100`,
	MetricRequestDuration: `
	histogram_quantile(
		0.99,
		sum(
			rate(
				http_request_duration_seconds_bucket{
					kubernetes_namespace="{{ namespace }}",
					kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"
				}[{{ interval }}]
			)
		) by (le)
	)`,
}

// usesHTTPObserver is Flagger's observer choice: the Gateway API providers measure with the
// HTTP observer, not Istio's telemetry.
func usesHTTPObserver(provider string) bool { return strings.HasPrefix(provider, "gatewayapi") }

// TemplateModel is what a query template can refer to: {{ name }}, {{ namespace }},
// {{ target }}, {{ service }}, {{ ingress }}, {{ route }}, {{ interval }} and
// {{ variables.key }}.
type TemplateModel struct {
	Name      string
	Namespace string
	Target    string
	Service   string
	Ingress   string
	Route     string
	Interval  string
	Variables map[string]string
}

// NewTemplateModel fills the model as Flagger's toMetricModel does. Siskin's Canary has no
// ingressRef or routeRef, so ingress and route are the target's name.
func NewTemplateModel(c functions.Canary, m functions.Metric) TemplateModel {
	service := c.Spec.Service.Name
	if service == "" {
		service = c.Spec.TargetRef.Name
	}
	return TemplateModel{
		Name:      c.Name,
		Namespace: c.Namespace,
		Target:    c.Spec.TargetRef.Name,
		Service:   service,
		Ingress:   c.Spec.TargetRef.Name,
		Route:     c.Spec.TargetRef.Name,
		Interval:  metricInterval(m),
		Variables: m.TemplateVariables,
	}
}

func metricInterval(m functions.Metric) string {
	if m.Interval == "" {
		return functions.DefaultMetricInterval
	}
	return m.Interval
}

// RenderQuery renders a query template with Go's text/template. A key that is missing (an
// unknown variable, a field on the nil data) is an error, not an empty string.
//
// The values come from the Canary, whose author may not be the template's: each is escaped
// for a PromQL string literal (the place templates put them, "{{ namespace }}"), so a value
// cannot close its string and add PromQL of its own; a value with a backtick (which a raw
// string cannot escape) or a newline is refused, and the interval must be a duration.
func RenderQuery(query string, model TemplateModel) (string, error) {
	if model.Interval != "" {
		if _, err := promDuration(model.Interval); err != nil {
			return "", fmt.Errorf("render query template: interval %q is not a Prometheus duration", model.Interval)
		}
	}
	vars := make(map[string]string, len(model.Variables))
	for k, v := range model.Variables {
		if strings.ContainsAny(v, "`\n\r") {
			return "", fmt.Errorf("render query template: variable %s holds a backtick or a line break", k)
		}
		vars[k] = promEscape(v)
	}
	funcs := template.FuncMap{
		"name":      func() string { return promEscape(model.Name) },
		"namespace": func() string { return promEscape(model.Namespace) },
		"target":    func() string { return promEscape(model.Target) },
		"service":   func() string { return promEscape(model.Service) },
		"ingress":   func() string { return promEscape(model.Ingress) },
		"route":     func() string { return promEscape(model.Route) },
		"interval":  func() string { return model.Interval },
		"variables": func() map[string]string { return vars },
	}
	t, err := template.New("query").Option("missingkey=error").Funcs(funcs).Parse(query)
	if err != nil {
		return "", fmt.Errorf("parse query template: %w", err)
	}
	var b strings.Builder
	if err := t.Execute(&b, nil); err != nil {
		return "", fmt.Errorf("render query template: %w", err)
	}
	return b.String(), nil
}

// promEscape escapes s for a PromQL string literal in double or single quotes (Go's escapes).
var promEscape = strings.NewReplacer(`\`, `\\`, `"`, `\"`, `'`, `\'`).Replace

// promDuration parses a Prometheus duration ("30s", "1m30s", "1h").
func promDuration(s string) (model.Duration, error) { return model.ParseDuration(s) }

var whitespace = regexp.MustCompile(`\s+`)

// collapseWhitespace turns every run of whitespace into one space, as Flagger's Prometheus
// provider does before sending a query. It does not trim: Flagger's built-in queries start with
// a space, and the exact string is what shows up in Prometheus' query log.
func collapseWhitespace(q string) string { return whitespace.ReplaceAllString(q, " ") }

// BuiltinQuery is the PromQL that Flagger sends for a built-in metric of the canary, with its
// whitespace collapsed; ok is false for any other metric name.
//
// With a gatewayapi provider they are Flagger's HTTP observer queries. Its request duration is
// in seconds, which Flagger turns into milliseconds in Go before comparing with the threshold:
// here the query does it (`(...) * 1000`), so a threshold means the same on both paths.
func BuiltinQuery(c functions.Canary, m functions.Metric) (query string, ok bool, err error) {
	queries := builtinQueries
	http := usesHTTPObserver(c.Spec.Provider)
	if http {
		queries = httpQueries
	}
	tmpl, ok := queries[m.Name]
	if !ok {
		return "", false, nil
	}
	q, err := RenderQuery(tmpl, NewTemplateModel(c, m))
	if err != nil {
		return "", true, err
	}
	q = collapseWhitespace(q)
	if http && m.Name == MetricRequestDuration {
		q = "(" + q + ") * 1000"
	}
	return q, true, nil
}
