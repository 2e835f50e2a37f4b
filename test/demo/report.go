package main

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"html/template"
	"image/color"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/siskin-dev/siskin/functions"
)

// result is one scenario's line of the summary.
type result struct {
	Scenario string
	Version  string
	Outcome  string
	Figure   string // the measured figure's name
	Value    string
	Detail   string
	OK       bool
}

func seconds(d time.Duration) string {
	if d < time.Second {
		return fmt.Sprintf("%d ms", d.Milliseconds())
	}
	return fmt.Sprintf("%.1f s", d.Seconds())
}

// results measures each scenario from Siskin's log and API and Prometheus's alert.
func (d *demo) results() []result {
	var out []result
	for _, s := range d.scenarios {
		s.mu.Lock()
		v := s.view
		r := result{Scenario: s.label(), Version: s.fromTag + " -> " + s.toTag, Outcome: string(v.Phase), OK: v.Phase == s.wantPhase}
		sincePush := s.endAt.Sub(s.pushedAt)
		switch s.key {
		case "a", "d":
			r.Figure, r.Value = "time to promote", seconds(sincePush)
			r.Detail = fmt.Sprintf("push -> Succeeded, %d steps of %d%% to %d%%, each after a %s analysis", d.maxWeight/d.stepWeight, d.stepWeight, d.maxWeight, d.o.interval)
		case "b":
			if v.Trigger != nil && v.Trigger.Kind == "alert" {
				s.alertArrived = v.Trigger.At
			}
			r.Figure = "alert -> abort"
			if !s.alertArrived.IsZero() && !s.abortedAt.IsZero() {
				r.Value = seconds(s.abortedAt.Sub(s.alertArrived))
				r.Detail = fmt.Sprintf("Alertmanager's notification -> traffic back on the primary, canary scaled down, status Failed (Siskin's own measure: %s)", seconds(s.abortTook))
				if !s.alertFiring.IsZero() {
					r.Detail += fmt.Sprintf("; the alert fired in Prometheus %s after the push, Alertmanager notified %s later",
						seconds(s.alertFiring.Sub(s.pushedAt)), seconds(s.alertArrived.Sub(s.alertFiring)))
				}
				r.Detail += fmt.Sprintf("; push -> Failed %s", seconds(sincePush))
			} else {
				r.Value = "n/a"
				r.Detail = "no alert abort was seen"
			}
		case "c":
			r.Figure, r.Value = "time to roll back", seconds(sincePush)
			r.Detail = fmt.Sprintf("push -> Failed through %d failed metric checks (threshold %d, interval %s), Flagger's way", s.checksAtEnd, d.maxChecks, d.o.interval)
		}
		if s.endAt.IsZero() {
			r.Value = "n/a"
		}
		s.mu.Unlock()
		out = append(out, r)
	}
	return out
}

// machine names the cores and the load the figures were measured under.
func machine() string {
	load := "unknown"
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			load = f[0]
		}
	}
	return fmt.Sprintf("%d cores, load average %s", runtime.NumCPU(), load)
}

// summary is the printed table.
func (d *demo) summary() []string {
	lines := []string{
		"  measured on " + machine(),
		fmt.Sprintf("  %-30s %-20s %-10s %-18s %s", "scenario", "version", "outcome", "figure", ""),
	}
	for _, r := range d.results() {
		lines = append(lines, fmt.Sprintf("  %-30s %-20s %-10s %-18s %s", r.Scenario, r.Version, r.Outcome, r.Figure, r.Value))
		lines = append(lines, fmt.Sprintf("  %30s %s", "", r.Detail))
	}
	return lines
}

var (
	primaryColor = color.RGBA{R: 31, G: 119, B: 180, A: 255}
	canaryColor  = color.RGBA{R: 230, G: 120, B: 20, A: 255}
	markColors   = map[string]color.Color{
		"push":  color.RGBA{A: 255},
		"phase": color.RGBA{R: 120, G: 120, B: 120, A: 255},
		"check": color.RGBA{R: 200, G: 40, B: 40, A: 255},
		"alert": color.RGBA{R: 140, G: 40, B: 170, A: 255},
		"abort": color.RGBA{R: 200, G: 0, B: 0, A: 255},
	}
)

// panels are one scenario's three plots: weights, success rate and latency over the seconds
// since its push, with the events marked.
func (d *demo) panels(s *scenario) []*plot.Plot {
	s.mu.Lock()
	samples := append([]sample(nil), s.samples...)
	marks := append([]mark(nil), s.marks...)
	origin, end := s.pushedAt, s.endAt
	s.mu.Unlock()
	if end.IsZero() && len(samples) > 0 {
		end = samples[len(samples)-1].at
	}
	from, to := -6.0, end.Sub(origin).Seconds()+5
	x := func(t time.Time) float64 { return t.Sub(origin).Seconds() }
	var kept []sample
	for _, smp := range samples {
		if t := x(smp.at); t >= from && t <= to {
			kept = append(kept, smp)
		}
	}
	series := func(get func(sample) float64) plotter.XYs {
		xys := make(plotter.XYs, 0, len(kept))
		for _, smp := range kept {
			xys = append(xys, plotter.XY{X: x(smp.at), Y: get(smp)})
		}
		return xys
	}

	weights := newPanel(fmt.Sprintf("%s: %s -> %s", s.label(), s.fromTag, s.toTag), "traffic weight (%)", from, to, -2, 105)
	addSeries(weights, series(func(smp sample) float64 { return smp.primaryWeight }), primaryColor, "primary "+s.fromTag)
	addSeries(weights, series(func(smp sample) float64 { return smp.canaryWeight }), canaryColor, "canary "+s.toTag)
	// Before the push the left of the panel is empty between the two lines.
	weights.Legend.Left, weights.Legend.YOffs, weights.Legend.XOffs = true, vg.Points(35), vg.Points(4)

	rates := newPanel("", "success rate, last 5 s (%)", from, to, 50, 102)
	addThreshold(rates, from, to, 99, "check: >= 99%")
	addSeries(rates, series(func(smp sample) float64 { return smp.primaryRate }), primaryColor, "")
	addSeries(rates, series(func(smp sample) float64 { return smp.canaryRate }), canaryColor, "")

	latency := newPanel("", "latency p99, last 5 s (ms)", from, to, 0, 600)
	latency.X.Label.Text = "seconds since the push"
	addThreshold(latency, from, to, 500, "check: <= 500 ms")
	addSeries(latency, series(func(smp sample) float64 { return smp.primaryP99 }), primaryColor, "")
	addSeries(latency, series(func(smp sample) float64 { return smp.canaryP99 }), canaryColor, "")
	for _, smp := range kept {
		latency.Y.Max = math.Max(latency.Y.Max, 1.1*math.Max(nanZero(smp.primaryP99), nanZero(smp.canaryP99)))
	}

	for _, m := range mergeMarks(marks, 0.025*(to-from)) {
		mx := x(m.at)
		if mx < from || mx > to {
			continue
		}
		for _, p := range []*plot.Plot{weights, rates, latency} {
			addVertical(p, mx, markColors[m.kind])
		}
		addMarkLabel(weights, mx, weights.Y.Max, m.label, markColors[m.kind])
	}
	return []*plot.Plot{weights, rates, latency}
}

// markWeight orders the kinds of marks by what a reader must not miss.
var markWeight = map[string]int{"phase": 0, "push": 1, "alert": 2, "check": 3, "abort": 4}

// mergeMarks sorts the marks and joins those closer than within seconds into one, so that
// their labels do not overlap; a joined mark takes the colour of its weightiest event.
func mergeMarks(marks []mark, within float64) []mark {
	sorted := slices.Clone(marks)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].at.Before(sorted[j].at) })
	var out []mark
	for _, m := range sorted {
		if n := len(out); n > 0 && m.at.Sub(out[n-1].at).Seconds() < within {
			out[n-1].label += ", " + m.label
			if markWeight[m.kind] > markWeight[out[n-1].kind] {
				out[n-1].kind = m.kind
			}
			continue
		}
		out = append(out, m)
	}
	return out
}

func nanZero(v float64) float64 {
	if math.IsNaN(v) {
		return 0
	}
	return v
}

func newPanel(title, ylabel string, xmin, xmax, ymin, ymax float64) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.Title.TextStyle.Font.Size = vg.Points(11)
	p.Y.Label.Text = ylabel
	p.X.Min, p.X.Max, p.Y.Min, p.Y.Max = xmin, xmax, ymin, ymax
	p.Add(plotter.NewGrid())
	p.Y.Tick.Marker = plainTicks{}
	p.Legend.Top = false
	p.Legend.Left = false
	p.Legend.TextStyle.Font.Size = vg.Points(8)
	return p
}

// plainTicks are the default ticks labelled without trailing zeros ("100", not "100.00").
type plainTicks struct{}

func (plainTicks) Ticks(min, max float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(min, max)
	for i := range ticks {
		if ticks[i].Label != "" {
			ticks[i].Label = strconv.FormatFloat(ticks[i].Value, 'f', -1, 64)
		}
	}
	return ticks
}

// addSeries draws a line, broken where the value is unknown (NaN).
func addSeries(p *plot.Plot, xys plotter.XYs, c color.Color, legend string) {
	var segment plotter.XYs
	first := true
	flush := func() {
		if len(segment) == 0 {
			return
		}
		l, err := plotter.NewLine(segment)
		if err != nil {
			segment = nil
			return
		}
		l.LineStyle.Color, l.LineStyle.Width = c, vg.Points(1.6)
		p.Add(l)
		if legend != "" && first {
			p.Legend.Add(legend, l)
			first = false
		}
		segment = nil
	}
	for _, xy := range xys {
		if math.IsNaN(xy.Y) {
			flush()
			continue
		}
		segment = append(segment, xy)
	}
	flush()
}

func addThreshold(p *plot.Plot, from, to, y float64, legend string) {
	l, err := plotter.NewLine(plotter.XYs{{X: from, Y: y}, {X: to, Y: y}})
	if err != nil {
		return
	}
	l.LineStyle.Color = color.RGBA{R: 90, G: 160, B: 90, A: 255}
	l.LineStyle.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	p.Add(l)
	p.Legend.Add(legend, l)
}

func addVertical(p *plot.Plot, x float64, c color.Color) {
	l, err := plotter.NewLine(plotter.XYs{{X: x, Y: p.Y.Min}, {X: x, Y: p.Y.Max}})
	if err != nil {
		return
	}
	l.LineStyle.Color, l.LineStyle.Width = c, vg.Points(0.7)
	l.LineStyle.Dashes = []vg.Length{vg.Points(2), vg.Points(2)}
	p.Add(l)
}

func addMarkLabel(p *plot.Plot, x, y float64, label string, c color.Color) {
	labels, err := plotter.NewLabels(plotter.XYLabels{XYs: plotter.XYs{{X: x, Y: y}}, Labels: []string{label}})
	if err != nil {
		return
	}
	for i := range labels.TextStyle {
		st := labels.TextStyle[i]
		st.Color = c
		st.Font.Size = vg.Points(7)
		st.Rotation = -math.Pi / 2
		st.XAlign = draw.XLeft
		st.YAlign = draw.YBottom
		labels.TextStyle[i] = st
	}
	labels.Offset = vg.Point{X: vg.Points(4), Y: -vg.Points(2)}
	p.Add(labels)
}

// renderGrid draws plots (rows of columns) into one PNG.
func renderGrid(plots [][]*plot.Plot, width, height vg.Length, path string) error {
	img := vgimg.NewWith(vgimg.UseWH(width, height), vgimg.UseDPI(110), vgimg.UseBackgroundColor(color.White))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: len(plots), Cols: len(plots[0]), PadX: vg.Millimeter * 4, PadY: vg.Millimeter * 2,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 3}
	canvases := plot.Align(plots, tiles, dc)
	for j := range plots {
		for i := range plots[j] {
			if plots[j][i] != nil {
				plots[j][i].Draw(canvases[j][i])
			}
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer f.Close()
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// writeReport writes a PNG per canary, the three side by side (demo.png), the process diagram
// and demo-report.html, which embeds them with the summary and the events.
func (d *demo) writeReport(rows []string, problems []error) (string, string, error) {
	cols := make([][]*plot.Plot, len(d.scenarios))
	type section struct {
		Title, Expect, PNG string
		Events             []struct{ At, Label string }
	}
	var sections []section
	for i, s := range d.scenarios {
		cols[i] = d.panels(s)
		one := filepath.Join(d.o.out, "canary-"+s.key+".png")
		own := d.panels(s)
		if err := renderGrid([][]*plot.Plot{{own[0]}, {own[1]}, {own[2]}}, 7*vg.Inch, 7*vg.Inch, one); err != nil {
			return "", "", err
		}
		png, err := dataURI(one, "image/png")
		if err != nil {
			return "", "", err
		}
		sec := section{Title: s.label(), Expect: s.expect, PNG: png}
		s.mu.Lock()
		marks := append([]mark(nil), s.marks...)
		origin := s.pushedAt
		s.mu.Unlock()
		sort.Slice(marks, func(i, j int) bool { return marks[i].at.Before(marks[j].at) })
		for _, m := range marks {
			if m.at.Before(origin) {
				continue
			}
			sec.Events = append(sec.Events, struct{ At, Label string }{fmt.Sprintf("+%.3f s", m.at.Sub(origin).Seconds()), m.label})
		}
		sections = append(sections, sec)
	}
	grid := make([][]*plot.Plot, 3)
	for row := range grid {
		for i := range d.scenarios {
			grid[row] = append(grid[row], cols[i][row])
		}
	}
	combined := filepath.Join(d.o.out, "demo.png")
	if err := renderGrid(grid, 16*vg.Inch, 8*vg.Inch, combined); err != nil {
		return "", "", err
	}
	combinedURI, err := dataURI(combined, "image/png")
	if err != nil {
		return "", "", err
	}

	var diagram template.HTML
	dot := processDot(functions.Transitions())
	dotPath := filepath.Join(d.o.out, "canary-process.dot")
	if err := os.WriteFile(dotPath, []byte(dot), 0o644); err != nil {
		return "", "", err
	}
	if svg, err := renderDot(dotPath, "svg"); err == nil {
		if i := bytes.Index(svg, []byte("<svg")); i >= 0 {
			svg = svg[i:] // inline: without the XML declaration and doctype
		}
		diagram = template.HTML(svg) // Graphviz's output from our own labels, escaped by processDot
	}

	var problemText []string
	for _, p := range problems {
		problemText = append(problemText, p.Error())
	}
	page := filepath.Join(d.o.out, "demo-report.html")
	var buf bytes.Buffer
	err = reportTemplate.Execute(&buf, map[string]any{
		"Generated": time.Now().Format(time.RFC1123), "Short": d.o.short, "Interval": d.o.interval.String(),
		"MaxWeight": d.maxWeight, "StepWeight": d.stepWeight, "Ping": d.o.pingEvery.String(), "Window": d.o.tickWindow.String(),
		"Results": d.results(), "Combined": template.URL(combinedURI), "Sections": sections, "Diagram": diagram,
		"Problems": problemText, "LabTook": seconds(d.labTook.Round(100 * time.Millisecond)),
		"Machine": machine(),
	})
	if err != nil {
		return "", "", fmt.Errorf("render report: %w", err)
	}
	if err := os.WriteFile(page, buf.Bytes(), 0o644); err != nil {
		return "", "", fmt.Errorf("write report: %w", err)
	}
	return page, combined, nil
}

func dataURI(path, mime string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return "data:" + mime + ";base64," + base64.StdEncoding.EncodeToString(b), nil
}

// renderDot runs Graphviz on a .dot file and returns what it wrote (path with the format's
// extension).
func renderDot(dotPath, format string) ([]byte, error) {
	out := dotPath[:len(dotPath)-len(filepath.Ext(dotPath))] + "." + format
	cmd := exec.Command("dot", "-T"+format, "-o", out, dotPath)
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("dot -T%s %s: %w: %s", format, dotPath, err, b)
	}
	return os.ReadFile(out)
}

var reportTemplate = template.Must(template.New("report").Funcs(template.FuncMap{
	"src": func(s string) template.URL { return template.URL(s) },
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Siskin demo report</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 1400px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: .35em .7em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.bad { color: #b00; font-weight: bold; }
.ok { color: #060; font-weight: bold; }
img { max-width: 100%; }
.scenario { display: inline-block; vertical-align: top; width: 32%; min-width: 420px; margin-right: 1%; }
.note { color: #555; }
</style></head><body>
<h1>Siskin demo: three releases, side by side</h1>
<p class="note">Generated {{.Generated}}{{if .Short}} by the short demo (CI){{end}}. A real Kubernetes control plane
(pods simulated by kwok), real Redis, Prometheus, Alertmanager and registry, started in {{.LabTook}} on {{.Machine}}; Siskin ran as
<code>siskin serve</code> with the restricted identity. Traffic is simulated: requests are split as each live
VirtualService says, and each version answers as its image tag says.</p>
<p class="note">The seed Canary's analysis interval was shortened from 1m to {{.Interval}}; maxWeight {{.MaxWeight}},
stepWeight {{.StepWeight}}. A ping every {{.Ping}} stood for the PingSource's once a minute, each stepping due
releases for {{.Window}}.</p>
{{if .Problems}}<h2 class="bad">Problems</h2><ul>{{range .Problems}}<li class="bad">{{.}}</li>{{end}}</ul>{{end}}
<h2>Summary</h2>
<table><tr><th>scenario</th><th>version</th><th>outcome</th><th>figure</th><th>value</th><th>how it was measured</th></tr>
{{range .Results}}<tr><td>{{.Scenario}}</td><td>{{.Version}}</td><td class="{{if .OK}}ok{{else}}bad{{end}}">{{.Outcome}}</td>
<td>{{.Figure}}</td><td><b>{{.Value}}</b></td><td>{{.Detail}}</td></tr>
{{end}}</table>
<h2>Timelines</h2>
<p><img src="{{.Combined}}" alt="weights, success rate and latency of the three canaries"></p>
{{range .Sections}}<div class="scenario"><h3>{{.Title}}</h3><p>Expected: {{.Expect}}.</p>
<img src="{{src .PNG}}" alt="{{.Title}}">
<table><tr><th>since the push</th><th>event</th></tr>{{range .Events}}<tr><td>{{.At}}</td><td>{{.Label}}</td></tr>{{end}}</table>
</div>{{end}}
{{if .Diagram}}<h2>The canary process</h2>
<p class="note">Drawn by Graphviz from <code>functions.Transitions()</code>: the edges the step machine itself takes,
explored over every phase and a grid of observations, with the events that cause them.</p>
{{.Diagram}}{{end}}
</body></html>
`))
