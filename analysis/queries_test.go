package analysis

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/siskin-dev/siskin/functions"
)

// The exact strings Flagger sends for the seed canary (its istio_test.go expects the same).
const (
	wantSuccessRate1m = ` sum( rate( istio_requests_total{ reporter="destination", destination_workload_namespace="default", destination_workload=~"podinfo", response_code!~"5.*" }[1m] ) ) / sum( rate( istio_requests_total{ reporter="destination", destination_workload_namespace="default", destination_workload=~"podinfo" }[1m] ) ) * 100`
	wantDuration30s   = ` histogram_quantile( 0.99, sum( rate( istio_request_duration_milliseconds_bucket{ reporter="destination", destination_workload_namespace="default", destination_workload=~"podinfo" }[30s] ) ) by (le) )`
)

func TestBuiltinQuery(t *testing.T) {
	c := seedCanary()
	tests := []struct {
		name   string
		c      functions.Canary
		metric functions.Metric
		want   string
		wantOK bool
	}{
		{"success rate", c, c.Spec.Analysis.Metrics[0], wantSuccessRate1m, true},
		{"duration", c, c.Spec.Analysis.Metrics[1], wantDuration30s, true},
		{"interval defaults to 1m", c, functions.Metric{Name: MetricRequestDuration},
			strings.Replace(wantDuration30s, "[30s]", "[1m]", 1), true},
		{"target and namespace of the canary", func() functions.Canary {
			c := seedCanary()
			c.Namespace = "shop"
			c.Spec.TargetRef.Name = "checkout"
			c.Spec.Service.Name = "checkout-svc" // the built-ins measure the workload, not the service
			return c
		}(), functions.Metric{Name: MetricRequestSuccessRate, Interval: "2m"},
			strings.NewReplacer(`"default"`, `"shop"`, `"podinfo"`, `"checkout"`, "[1m]", "[2m]").Replace(wantSuccessRate1m), true},
		{"not a built-in", c, functions.Metric{Name: "error-rate"}, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok, err := BuiltinQuery(tt.c, tt.metric)
			if err != nil {
				t.Fatalf("BuiltinQuery() error = %v", err)
			}
			if ok != tt.wantOK || got != tt.want {
				t.Errorf("BuiltinQuery() = (%q, %v), want (%q, %v)", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

// Flagger's HTTP observer queries for the seed canary, as its Prometheus provider sends them
// (whitespace collapsed), copied from pkg/metrics/observers/http.go of v1.36.1.
const (
	wantHTTPSuccessRate1m = ` sum( rate( http_request_duration_seconds_count{ kubernetes_namespace="default", kubernetes_pod_name=~"podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)", status!~"5.*" }[1m] ) ) / sum( rate( http_request_duration_seconds_count{ kubernetes_namespace="default", kubernetes_pod_name=~"podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)" }[1m] ) ) * 100`
	wantHTTPDuration30s   = ` histogram_quantile( 0.99, sum( rate( http_request_duration_seconds_bucket{ kubernetes_namespace="default", kubernetes_pod_name=~"podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)" }[30s] ) ) by (le) )`
)

func TestBuiltinQueryWithTheGatewayAPI(t *testing.T) {
	tests := []struct {
		provider string
		metric   int
		want     string
	}{
		{"gatewayapi:v1", 0, wantHTTPSuccessRate1m},
		// Flagger turns seconds into milliseconds in Go; Siskin in the query.
		{"gatewayapi:v1", 1, "(" + wantHTTPDuration30s + ") * 1000"},
		{"gatewayapi:v1beta1", 0, wantHTTPSuccessRate1m},
		{"istio", 0, wantSuccessRate1m},
		{"", 1, wantDuration30s},
	}
	for _, tt := range tests {
		t.Run(tt.provider+"/"+fmt.Sprint(tt.metric), func(t *testing.T) {
			c := seedCanary()
			c.Spec.Provider = tt.provider
			got, ok, err := BuiltinQuery(c, c.Spec.Analysis.Metrics[tt.metric])
			if err != nil || !ok {
				t.Fatalf("BuiltinQuery: ok=%v err=%v", ok, err)
			}
			if got != tt.want {
				t.Errorf("BuiltinQuery:\ngot  %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestNewTemplateModel(t *testing.T) {
	c := seedCanary()
	m := functions.Metric{Name: "x", TemplateVariables: map[string]string{"k": "v"}}
	want := TemplateModel{Name: "podinfo", Namespace: "default", Target: "podinfo", Service: "podinfo",
		Ingress: "podinfo", Route: "podinfo", Interval: "1m", Variables: map[string]string{"k": "v"}}
	if diff := cmp.Diff(want, NewTemplateModel(c, m)); diff != "" {
		t.Errorf("NewTemplateModel() mismatch (-want +got):\n%s", diff)
	}

	c.Name = "podinfo-canary-resource"
	c.Spec.Service.Name = "frontend"
	m.Interval = "5m"
	got := NewTemplateModel(c, m)
	if got.Name != "podinfo-canary-resource" || got.Service != "frontend" || got.Target != "podinfo" || got.Interval != "5m" {
		t.Errorf("NewTemplateModel() = %+v, want name podinfo-canary-resource, service frontend, target podinfo, interval 5m", got)
	}
}

func TestRenderQuery(t *testing.T) {
	model := TemplateModel{Name: "pi", Namespace: "ns", Target: "tgt", Service: "svc", Ingress: "ing", Route: "rt",
		Interval: "30s", Variables: map[string]string{"code": "5..", "app": "x"}}
	tests := []struct {
		name    string
		query   string
		want    string
		wantErr string
	}{
		{"every function", `{{ name }} {{ namespace }} {{ target }} {{ service }} {{ ingress }} {{ route }} {{ interval }}`,
			"pi ns tgt svc ing rt 30s", ""},
		{"variables", `rate(http{code=~"{{ variables.code }}",app="{{ variables.app }}"}[{{ interval }}])`,
			`rate(http{code=~"5..",app="x"}[30s])`, ""},
		{"whitespace kept for the provider to collapse", "a\n\t{{ target }}", "a\n\ttgt", ""},
		{"missing variable", `{{ variables.missing }}`, "", `map has no entry for key "missing"`},
		{"field on nil data", `{{ .Target }}`, "", `nil data; no entry for key "Target"`},
		{"unknown function", `{{ canary }}`, "", `function "canary" not defined`},
		{"syntax error", `{{ target `, "", "parse query template"},
	}
	hostile := model
	hostile.Variables = map[string]string{"code": `5.."} or vector(1) or up{x="`, "app": `x\" or on() vector(1) #`}
	injection := []struct {
		name    string
		model   TemplateModel
		query   string
		want    string
		wantErr string
	}{
		{"a variable cannot close its string", hostile, `rate(http{code=~"{{ variables.code }}"}[1m])`,
			`rate(http{code=~"5..\"} or vector(1) or up{x=\""}[1m])`, ""},
		{"nor with a backslash of its own", hostile, `up{app="{{ variables.app }}"}`, `up{app="x\\\" or on() vector(1) #"}`, ""},
		{"nor a single-quoted one", hostile, `up{app='{{ variables.code }}'}`, `up{app='5.."} or vector(1) or up{x="'}`, ""},
		{"a single quote in double quotes stays as it is", TemplateModel{Variables: map[string]string{"v": "it's"}}, `up{v="{{ variables.v }}"}`, `up{v="it's"}`, ""},
		{"a single quote closing a single-quoted string is escaped", TemplateModel{Variables: map[string]string{"v": `x'} or vector(1) #`}}, `up{v='{{ variables.v }}'}`,
			`up{v='x\'} or vector(1) #'}`, ""},
		{"an escaped quote in the template keeps the string open", TemplateModel{Variables: map[string]string{"v": `"`}}, `up{v="a\"{{ variables.v }}"}`, `up{v="a\"\""}`, ""},
		{"a value in a raw string is kept", TemplateModel{Variables: map[string]string{"v": `a"'\b`}}, "up{v=`{{ variables.v }}`}", "up{v=`a\"'\\b`}", ""},
		{"a plain word outside a string", TemplateModel{Variables: map[string]string{"v": "0.99"}}, `histogram_quantile({{ variables.v }}, x)`, `histogram_quantile(0.99, x)`, ""},
		{"PromQL outside a string is refused", TemplateModel{Variables: map[string]string{"v": "1) or vector(1"}}, `histogram_quantile({{ variables.v }}, x)`, "", "outside a string literal"},
		{"a value cut by the template is refused", TemplateModel{Name: "podinfo"}, `{{ slice name 0 2 }}`, "", "cut or changed"},
		{"a NUL in the template is refused", TemplateModel{}, "up\x00", "", "NUL"},
		{"a backtick is refused", TemplateModel{Variables: map[string]string{"v": "a`b"}}, "up{v=`{{ variables.v }}`}", "", "backtick"},
		{"a line break is refused", TemplateModel{Variables: map[string]string{"v": "a\nb"}}, `up`, "", "line break"},
		{"an interval that is not a duration", TemplateModel{Interval: "1m]) or vector(1"}, `rate(x[{{ interval }}])`, "", "not a Prometheus duration"},
	}
	for _, tt := range injection {
		t.Run(tt.name, func(t *testing.T) {
			got, err := RenderQuery(tt.query, tt.model)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("RenderQuery() error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("RenderQuery() = (%q, %v), want (%q, nil)", got, err, tt.want)
			}
		})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := RenderQuery(tt.query, model)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("RenderQuery() error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("RenderQuery() = (%q, %v), want (%q, nil)", got, err, tt.want)
			}
		})
	}

	t.Run("missing variable with no variables at all", func(t *testing.T) {
		_, err := RenderQuery(`{{ variables.code }}`, TemplateModel{})
		if err == nil || !strings.Contains(err.Error(), `map has no entry for key "code"`) {
			t.Errorf("RenderQuery() error = %v, want a missing key error", err)
		}
	})
}

func TestCollapseWhitespace(t *testing.T) {
	got := collapseWhitespace("\n  sum(rate(x[1m]))\n\t>  0 ")
	if want := " sum(rate(x[1m])) > 0 "; got != want {
		t.Errorf("collapseWhitespace() = %q, want %q", got, want)
	}
}
