package knative_test

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/siskin-dev/siskin/functions"
	"github.com/siskin-dev/siskin/handlers"
)

type grafanaTarget struct {
	RefID        string         `json:"refId"`
	Expr         string         `json:"expr"`
	LegendFormat string         `json:"legendFormat"`
	Instant      bool           `json:"instant"`
	Datasource   map[string]any `json:"datasource"`
}

type grafanaPanel struct {
	ID          int                      `json:"id"`
	Type        string                   `json:"type"`
	Title       string                   `json:"title"`
	Description string                   `json:"description"`
	Datasource  map[string]any           `json:"datasource"`
	GridPos     struct{ H, W, X, Y int } `json:"gridPos"`
	Targets     []grafanaTarget          `json:"targets"`
	Collapsed   bool                     `json:"collapsed"`
	Panels      []grafanaPanel           `json:"panels"`
	FieldConfig map[string]any           `json:"fieldConfig"`
	Options     map[string]any           `json:"options"`
}

type grafanaDashboard struct {
	Title         string            `json:"title"`
	UID           string            `json:"uid"`
	Description   string            `json:"description"`
	Tags          []string          `json:"tags"`
	Timezone      string            `json:"timezone"`
	Editable      bool              `json:"editable"`
	GraphTooltip  int               `json:"graphTooltip"`
	Refresh       string            `json:"refresh"`
	SchemaVersion int               `json:"schemaVersion"`
	Version       int               `json:"version"`
	Time          map[string]string `json:"time"`
	Templating    struct {
		List []struct {
			Name       string         `json:"name"`
			Label      string         `json:"label"`
			Type       string         `json:"type"`
			Query      any            `json:"query"`
			Definition string         `json:"definition"`
			Datasource map[string]any `json:"datasource"`
			IncludeAll bool           `json:"includeAll"`
			Multi      bool           `json:"multi"`
			AllValue   string         `json:"allValue"`
			Refresh    int            `json:"refresh"`
			Current    map[string]any `json:"current"`
			Hide       int            `json:"hide"`
		} `json:"list"`
	} `json:"templating"`
	Annotations map[string]any `json:"annotations"`
	Panels      []grafanaPanel `json:"panels"`
}

// exportedFamilies are the metric families Siskin's /metrics serves, by name: handlers.Metrics is
// driven through every observation it offers (a labelled metric has no series, and is not
// exposed, until its first observation), then scraped and parsed as Prometheus does.
func exportedFamilies(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	m := handlers.NewMetrics("test")
	c := functions.Canary{Key: functions.Key{Namespace: "test", Name: "podinfo"}}
	c.Spec.TargetRef.Name = "podinfo"
	progressing := functions.State{Phase: functions.PhaseProgressing}
	m.Stepped(c, functions.State{Phase: functions.PhaseInitialized}, progressing,
		[]functions.MetricResult{{Name: "request-success-rate", Value: 100}}, time.Millisecond, time.Second)
	m.Stepped(c, progressing, functions.State{Phase: functions.PhaseSucceeded}, nil, time.Millisecond, 0)
	m.Stepped(c, progressing, functions.State{Phase: functions.PhaseFailed}, nil, time.Millisecond, 0)
	m.Aborted(c, time.Millisecond)
	m.Counted(map[string]int{"test": 1})
	m.ObserveEvent("tick", "ok", time.Millisecond)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(rec.Body.Bytes()))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

func loadDashboard(t *testing.T) grafanaDashboard {
	t.Helper()
	raw, err := os.ReadFile("grafana/siskin.json")
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var d grafanaDashboard
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("grafana/siskin.json: %v", err)
	}
	return d
}

// selector is one metric selector of a PromQL expression: its name and label matchers.
type selector struct {
	metric string
	labels []string
}

var (
	promQLStrings   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	promQLRanges    = regexp.MustCompile(`\[[^\]]*\]`)
	promQLGrouping  = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)
	promQLSelector  = regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?\s*(\()?`)
	promQLMatcher   = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)`)
	promQLKeywords  = []string{"and", "or", "unless", "offset", "bool", "by", "without", "on", "ignoring", "group_left", "group_right", "inf", "nan"}
	grafanaVariable = regexp.MustCompile(`\$\{?([a-zA-Z_][a-zA-Z0-9_]*)`)
)

// selectors lists the metric selectors of a PromQL expression (functions, keywords, grouping
// labels, strings and ranges left out) and the label names grouped by.
func selectors(expr string) (sels []selector, grouped []string) {
	for _, m := range promQLGrouping.FindAllStringSubmatch(expr, -1) {
		for _, l := range strings.Split(m[2], ",") {
			if l = strings.TrimSpace(l); l != "" {
				grouped = append(grouped, l)
			}
		}
	}
	e := promQLGrouping.ReplaceAllString(expr, " ")
	e = promQLRanges.ReplaceAllString(e, " ")
	for _, m := range promQLSelector.FindAllStringSubmatch(e, -1) {
		name, matchers, call := m[1], m[2], m[3]
		if call != "" && matchers == "" || slices.Contains(promQLKeywords, strings.ToLower(name)) {
			continue // a function, or a keyword
		}
		s := selector{metric: name}
		for _, lm := range promQLMatcher.FindAllStringSubmatch(promQLStrings.ReplaceAllString(matchers, `""`), -1) {
			s.labels = append(s.labels, lm[1])
		}
		sels = append(sels, s)
	}
	return sels, grouped
}

func TestSelectorsOfPromQL(t *testing.T) {
	sels, grouped := selectors(`histogram_quantile(0.99, sum by (le, kind) (rate(siskin_event_duration_seconds_bucket{kind="tick", x=~"a|b"}[5m]))) / on (kind) flagger_info`)
	want := []selector{{"siskin_event_duration_seconds_bucket", []string{"kind", "x"}}, {"flagger_info", nil}}
	if len(sels) != len(want) {
		t.Fatalf("got %+v, want %+v", sels, want)
	}
	for i := range want {
		if sels[i].metric != want[i].metric || !slices.Equal(sels[i].labels, want[i].labels) {
			t.Errorf("selector %d: got %+v, want %+v", i, sels[i], want[i])
		}
	}
	if !slices.Equal(grouped, []string{"le", "kind", "kind"}) {
		t.Errorf("grouped by: got %v", grouped)
	}
}

// The dashboard is valid Grafana JSON whose every query names metrics and labels Siskin
// exports, and it has the panels issue 5 asks for.
func TestGrafanaDashboard(t *testing.T) {
	d := loadDashboard(t)
	fams := exportedFamilies(t)
	if d.Title == "" || d.UID == "" || d.SchemaVersion < 30 || len(d.Panels) == 0 {
		t.Fatalf("dashboard: title %q uid %q schemaVersion %d, %d panels", d.Title, d.UID, d.SchemaVersion, len(d.Panels))
	}
	vars := map[string]bool{"__rate_interval": true, "__interval": true, "__range": true}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
	}
	if !vars["datasource"] {
		t.Error("no datasource variable: the dashboard would be bound to one Prometheus")
	}

	labelsOf := func(fam *dto.MetricFamily) []string {
		var out []string
		for _, m := range fam.GetMetric() {
			for _, l := range m.GetLabel() {
				if !slices.Contains(out, l.GetName()) {
					out = append(out, l.GetName())
				}
			}
		}
		return out
	}
	family := func(metric string) (*dto.MetricFamily, []string) {
		if f, ok := fams[metric]; ok && f.GetType() != dto.MetricType_HISTOGRAM {
			return f, labelsOf(f)
		}
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(metric, suffix); ok {
				if f, ok := fams[base]; ok && f.GetType() == dto.MetricType_HISTOGRAM {
					ls := labelsOf(f)
					if suffix == "_bucket" {
						ls = append(ls, "le")
					}
					return f, ls
				}
			}
		}
		return nil, nil
	}

	used := map[string][]string{} // metric family -> panels
	ids := map[int]bool{}
	var exprs []string
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel %q: duplicate id %d", p.Title, p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.W <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside the 24 columns", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if !slices.Contains([]string{"timeseries", "stat", "state-timeline", "table", "bargauge", "gauge"}, p.Type) || p.Title == "" || len(p.Targets) == 0 {
			t.Errorf("panel %q: type %q with %d targets", p.Title, p.Type, len(p.Targets))
		}
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
			for _, v := range grafanaVariable.FindAllStringSubmatch(tg.Expr, -1) {
				if !vars[v[1]] {
					t.Errorf("panel %q: $%s is not a dashboard variable", p.Title, v[1])
				}
			}
			sels, grouped := selectors(tg.Expr)
			if len(sels) == 0 {
				t.Errorf("panel %q: no metric in %q", p.Title, tg.Expr)
			}
			var allLabels []string
			for _, s := range sels {
				fam, labels := family(s.metric)
				if fam == nil {
					t.Errorf("panel %q: %s is not a metric Siskin exports", p.Title, s.metric)
					continue
				}
				used[fam.GetName()] = append(used[fam.GetName()], p.Title)
				allLabels = append(allLabels, labels...)
				for _, l := range s.labels {
					if !slices.Contains(labels, l) {
						t.Errorf("panel %q: %s has no label %q (it has %v)", p.Title, s.metric, l, labels)
					}
				}
			}
			for _, l := range grouped {
				if !slices.Contains(allLabels, l) {
					t.Errorf("panel %q: grouped by %q, a label none of its metrics has", p.Title, l)
				}
			}
			for _, l := range regexp.MustCompile(`\{\{\s*([a-zA-Z_]+)\s*\}\}`).FindAllStringSubmatch(tg.LegendFormat, -1) {
				if !slices.Contains(allLabels, l[1]) || (len(grouped) > 0 && !slices.Contains(grouped, l[1])) {
					t.Errorf("panel %q: legend {{%s}} is not a label of the result", p.Title, l[1])
				}
			}
		}
	}
	for _, v := range d.Templating.List {
		q, ok := v.Query.(map[string]any)
		if !ok {
			continue
		}
		m := regexp.MustCompile(`^label_values\((.+),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)$`).FindStringSubmatch(q["query"].(string))
		if m == nil {
			t.Errorf("variable %s: query %v is not label_values(selector, label)", v.Name, q["query"])
			continue
		}
		sels, _ := selectors(m[1])
		if len(sels) != 1 {
			t.Errorf("variable %s: want one metric in %q", v.Name, m[1])
			continue
		}
		if _, labels := family(sels[0].metric); !slices.Contains(labels, m[2]) {
			t.Errorf("variable %s: %s is not exported, or has no label %s", v.Name, sels[0].metric, m[2])
		}
	}

	for _, want := range []string{"flagger_canary_weight", "flagger_canary_status", "flagger_canary_metric_analysis",
		"flagger_canary_successes_total", "flagger_canary_failures_total", "siskin_step_duration_seconds", "siskin_events_total",
		"siskin_abort_latency_seconds", "siskin_step_lateness_seconds"} {
		if len(used[want]) == 0 {
			t.Errorf("no panel shows %s", want)
		}
	}
	for _, q := range []string{"0.5", "0.99"} {
		if !slices.ContainsFunc(exprs, func(e string) bool {
			return strings.Contains(e, "histogram_quantile("+q) && strings.Contains(e, "siskin_step_duration_seconds_bucket")
		}) {
			t.Errorf("no p%s of siskin_step_duration_seconds", strings.TrimPrefix(q, "0."))
		}
	}
	if !slices.ContainsFunc(exprs, func(e string) bool {
		return strings.Contains(e, "by (kind, outcome)") && strings.Contains(e, "siskin_events_total")
	}) {
		t.Error("no panel of siskin_events_total by kind and outcome")
	}
}
