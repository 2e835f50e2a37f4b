package analysis

import (
	"fmt"
	"regexp"
	"strconv"
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
// The values come from the Canary, whose author may not be the template's, so none can add
// PromQL of its own. Each is escaped for the place the template puts it: inside "…" its
// backslashes and double quotes, inside '…' its backslashes and single quotes, as PromQL's
// lexer reads them. A value with a backtick (which a raw string cannot escape) or a line break
// is refused, as is one placed outside a string literal that is not a plain word (a name, a
// number, a duration: letters, digits and _ : . -); the interval must be a duration.
func RenderQuery(query string, model TemplateModel) (string, error) {
	if model.Interval != "" {
		if _, err := promDuration(model.Interval); err != nil {
			return "", fmt.Errorf("render query template: interval %q is not a Prometheus duration", model.Interval)
		}
	}
	if strings.ContainsRune(query, placeholderMark) {
		return "", fmt.Errorf("render query template: the template holds a NUL byte")
	}
	var values []placed
	place := func(what, v string) string {
		values = append(values, placed{what: what, value: v})
		return string(placeholderMark) + strconv.Itoa(len(values)-1) + string(placeholderMark)
	}
	vars := make(map[string]string, len(model.Variables))
	for k, v := range model.Variables {
		if strings.ContainsAny(v, "`\n\r") {
			return "", fmt.Errorf("render query template: variable %s holds a backtick or a line break", k)
		}
		vars[k] = place("variable "+k, v)
	}
	funcs := template.FuncMap{
		"name":      func() string { return place("name", model.Name) },
		"namespace": func() string { return place("namespace", model.Namespace) },
		"target":    func() string { return place("target", model.Target) },
		"service":   func() string { return place("service", model.Service) },
		"ingress":   func() string { return place("ingress", model.Ingress) },
		"route":     func() string { return place("route", model.Route) },
		"interval":  func() string { return place("interval", model.Interval) },
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
	out, err := substitute(b.String(), values)
	if err != nil {
		return "", fmt.Errorf("render query template: %w", err)
	}
	return out, nil
}

// placeholderMark brackets the index of a value in a rendered template until substitute puts
// the value, escaped for where it landed, in its place.
const placeholderMark = '\x00'

type placed struct{ what, value string }

// plainWord is what a value may be outside a string literal.
var plainWord = regexp.MustCompile(`^[A-Za-z0-9_:.\-]*$`)

// substitute replaces the placeholders of rendered with their values, reading rendered as
// PromQL's lexer does to know, for each, whether it is inside "…", '…', `…`, a comment, or
// none of these.
func substitute(rendered string, values []placed) (string, error) {
	var (
		b     strings.Builder
		quote byte // the open literal's quote, 0 outside one, '#' in a comment
	)
	for i := 0; i < len(rendered); i++ {
		ch := rendered[i]
		if ch == byte(placeholderMark) {
			end := strings.IndexByte(rendered[i+1:], byte(placeholderMark))
			n, err := strconv.Atoi(rendered[i+1 : i+1+max(end, 0)])
			if end < 0 || err != nil || n < 0 || n >= len(values) {
				return "", fmt.Errorf("a value was cut or changed by the template")
			}
			v, err := escapeFor(quote, values[n])
			if err != nil {
				return "", err
			}
			b.WriteString(v)
			i += end + 1
			continue
		}
		b.WriteByte(ch)
		switch {
		case quote == 0 && (ch == '"' || ch == '\'' || ch == '`'):
			quote = ch
		case quote == 0 && ch == '#':
			quote = '#'
		case quote == '#' && ch == '\n':
			quote = 0
		case (quote == '"' || quote == '\'') && ch == '\\' && i+1 < len(rendered) && rendered[i+1] != byte(placeholderMark):
			b.WriteByte(rendered[i+1])
			i++
		case quote != '#' && ch == quote:
			quote = 0
		}
	}
	return b.String(), nil
}

func escapeFor(quote byte, p placed) (string, error) {
	switch quote {
	case '"':
		return strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(p.value), nil
	case '\'':
		return strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(p.value), nil
	case '`':
		return p.value, nil // a backtick was refused above
	}
	if !plainWord.MatchString(p.value) {
		return "", fmt.Errorf("%s %q is placed outside a string literal and is not a plain word (letters, digits, _ : . -)", p.what, p.value)
	}
	return p.value, nil
}

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
