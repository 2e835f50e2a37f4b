package main

import (
	"fmt"
	"image/color"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/siskin-dev/siskin/test/lab"
)

// result is one system's figures at one fleet size.
type result struct {
	system    string
	n         int
	instances int   // Siskin's processes; 0 for Flagger
	served    []int // Siskin: the requests each process answered through the balancer
	exited    int   // processes that had exited by the end of the release

	applyCanaries    time.Duration
	initialized      time.Duration
	initializedCount int

	idleRequests int64
	idleWindow   time.Duration
	idleByVerb   map[string]int64
	idleByRes    map[string]int64
	idleCPU      float64

	applyImages     time.Duration
	released        time.Duration
	succeededCount  int
	releaseRequests int64
	releaseByVerb   map[string]int64
	releaseByRes    map[string]int64
	releaseCPU      float64
	totalCPU        float64
	rssPeak, rssEnd int64 // summed over the processes
	rssMaxPeak      int64 // the largest one process's peak
	phasesAtEnd     map[string]int

	disturbed neighbours // what else ran on the machine meanwhile

	relStart time.Time
	changes  []weightChange

	// summarise fills these.
	weightChanges int
	gaps          []time.Duration
}

func (r *result) summarise() {
	r.weightChanges = len(r.changes)
	last := map[string]weightChange{}
	for _, c := range r.changes {
		if p, ok := last[c.name]; ok && p.weight > 0 && c.weight > p.weight {
			r.gaps = append(r.gaps, c.at.Sub(p.at))
		}
		last[c.name] = c
	}
}

func (r *result) idleRPS() float64 { return float64(r.idleRequests) / r.idleWindow.Seconds() }

func (r *result) requestsPerStep() float64 {
	if r.weightChanges == 0 {
		return math.NaN()
	}
	return float64(r.releaseRequests) / float64(r.weightChanges)
}

// column is r's name in the table and the plot: Flagger, Siskin, or Siskin ×k once the
// results hold several Siskin runs or one of more than one instance.
func column(r *result, rs []*result) string {
	if r.system != "Siskin" {
		return r.system
	}
	runs := 0
	for _, o := range rs {
		if o.system == "Siskin" {
			runs++
		}
	}
	if runs > 1 || r.instances != 1 {
		return fmt.Sprintf("Siskin ×%d", r.instances)
	}
	return r.system
}

func secs(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }

func mb(b int64) string { return fmt.Sprintf("%.0f MB", float64(b)/(1<<20)) }

// report is every table so far, rewritten to scale.md after each fleet size.
type report struct {
	started time.Time
	sizes   []int
	results map[int][]*result
}

// set records the results for n, replacing earlier ones.
func (rp *report) set(n int, rs []*result) *report {
	if rp.results == nil {
		rp.results = map[int][]*result{}
	}
	if _, ok := rp.results[n]; !ok {
		rp.sizes = append(rp.sizes, n)
	}
	rp.results[n] = slices.Clone(rs)
	return rp
}

func (rp *report) table(n int) string {
	rs := rp.results[n]
	var b strings.Builder
	fmt.Fprintf(&b, "\n### %d canaries, interval 10 s, one system after the other on one lab\n\n", n)
	b.WriteString("| figure |")
	for _, r := range rs {
		fmt.Fprintf(&b, " %s |", column(r, rs))
	}
	b.WriteString("\n| --- |")
	for range rs {
		b.WriteString(" ---: |")
	}
	b.WriteString("\n")
	row := func(name string, cell func(r *result) string) {
		fmt.Fprintf(&b, "| %s |", name)
		for _, r := range rs {
			fmt.Fprintf(&b, " %s |", cell(r))
		}
		b.WriteString("\n")
	}
	row("Canaries applied → all Initialized", func(r *result) string {
		if r.initializedCount < r.n {
			return fmt.Sprintf("%d of %d after %s", r.initializedCount, r.n, secs(r.initialized))
		}
		return secs(r.initialized)
	})
	row("idle requests/s to the apiserver", func(r *result) string {
		return fmt.Sprintf("%.1f (%.3f per canary)", r.idleRPS(), r.idleRPS()/float64(r.n))
	})
	row("requests per step (release requests ÷ weight changes)", func(r *result) string {
		return fmt.Sprintf("%.1f (%d ÷ %d)", r.requestsPerStep(), r.releaseRequests, r.weightChanges)
	})
	row("weight-step gap p50 / p99", func(r *result) string {
		if len(r.gaps) == 0 {
			return "no steps"
		}
		return fmt.Sprintf("%s / %s (%d gaps)", secs(lab.Percentile(r.gaps, 50)), secs(lab.Percentile(r.gaps, 99)), len(r.gaps))
	})
	row("image change on every target → all Succeeded", func(r *result) string {
		if r.succeededCount < r.n {
			return fmt.Sprintf("%d of %d after %s", r.succeededCount, r.n, secs(r.released))
		}
		return secs(r.released)
	})
	row("applying the image changes took", func(r *result) string { return secs(r.applyImages) })
	row("CPU seconds: idle window / release / whole run", func(r *result) string {
		return fmt.Sprintf("%.1f / %.1f / %.1f", r.idleCPU, r.releaseCPU, r.totalCPU)
	})
	row("RSS, summed over the system's processes (its footprint): peak / at the end; largest one process's peak", func(r *result) string {
		return mb(r.rssPeak) + " / " + mb(r.rssEnd) + "; " + mb(r.rssMaxPeak)
	})
	row("another lab beside it (others' tests) / peak load average", func(r *result) string {
		other := "no"
		if r.disturbed.otherLab > 0 {
			other = "for " + secs(r.disturbed.otherLab)
		}
		return fmt.Sprintf("%s / %.1f", other, r.disturbed.maxLoad)
	})
	row("Siskin instances (events each answered through the balancer)", instancesCell)
	b.WriteString("\nRequests by verb (idle window; release):\n\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "- %s: idle %s; release %s; phases at the end %s\n", column(r, rs), verbs(r.idleByVerb), verbs(r.releaseByVerb), verbs(intMap(r.phasesAtEnd)))
	}
	b.WriteString("\nThe most frequent requests (verb and resource), idle window; release:\n\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "- %s: idle %s; release %s\n", column(r, rs), top(r.idleByRes, 6), top(r.releaseByRes, 8))
	}
	fmt.Fprintf(&b, "\n![weight steps, %d canaries](scale-n%d.png)\n", n, n)
	return b.String()
}

// instancesCell is the number of Siskin processes, the requests each answered, and how many
// had exited by the end.
func instancesCell(r *result) string {
	if r.system == "Flagger" {
		return "–"
	}
	out := fmt.Sprint(r.instances)
	if len(r.served) > 0 {
		parts := make([]string, len(r.served))
		for i, v := range r.served {
			parts[i] = fmt.Sprint(v)
		}
		out += " (" + strings.Join(parts, " / ") + ")"
	}
	if r.exited > 0 {
		out += fmt.Sprintf(", %d exited", r.exited)
	}
	return out
}

// intMap converts the phase counts; a Canary with no status yet has phase "", named here.
func intMap(m map[string]int) map[string]int64 {
	out := map[string]int64{}
	for k, v := range m {
		if k == "" {
			k = "(no status yet)"
		}
		out[k] = int64(v)
	}
	return out
}

func verbs(m map[string]int64) string {
	keys := slices.Sorted(maps.Keys(m))
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// top is the k largest entries of m, largest first.
func top(m map[string]int64, k int) string {
	keys := slices.Sorted(maps.Keys(m))
	sort.SliceStable(keys, func(i, j int) bool { return m[keys[i]] > m[keys[j]] })
	parts := []string{}
	for _, key := range keys[:min(k, len(keys))] {
		parts = append(parts, fmt.Sprintf("%s %d", key, m[key]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func (rp *report) write(dir string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# make bench-scale, %s\n\nSiskin beside Flagger v1.36.1, %s. See test/bench/README.md for what each figure measures.\n",
		rp.started.UTC().Format(time.RFC3339), machine())
	for _, n := range rp.sizes {
		b.WriteString(rp.table(n))
	}
	path := filepath.Join(dir, "scale.md")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func machine() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown machine"
	}
	cores := strings.Count(string(b), "\nprocessor") + 1
	return fmt.Sprintf("%d cores", cores)
}

// plotStyle is a run's dots: Flagger red just below the weight, each Siskin run (counted in
// siskins) another blue a little further above it.
func plotStyle(r *result, siskins *int) struct {
	color  color.Color
	offset float64
} {
	type style = struct {
		color  color.Color
		offset float64
	}
	if r.system != "Siskin" {
		return style{color.RGBA{R: 200, G: 60, B: 40, A: 255}, -0.8}
	}
	blues := []color.Color{
		color.RGBA{R: 30, G: 90, B: 200, A: 255}, color.RGBA{R: 20, G: 160, B: 190, A: 255},
		color.RGBA{R: 110, G: 50, B: 180, A: 255}, color.RGBA{R: 40, G: 140, B: 70, A: 255},
	}
	i := *siskins
	*siskins++
	return style{blues[i%len(blues)], 0.8 + 0.8*float64(i)}
}

// plotSteps draws every weight change after the image change, one dot per change, Flagger's
// just below the weight and Siskin's just above it so that both ladders show.
func plotSteps(path string, n int, rs []*result) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Canary weight changes after the image change, %d canaries, interval 10 s", n)
	p.X.Label.Text = "seconds since the image change"
	p.Y.Label.Text = "canary weight (%)"
	p.Legend.Top = true
	sort.SliceStable(rs, func(i, j int) bool { return rs[i].system < rs[j].system })
	siskins := 0
	for _, r := range rs {
		pts := make(plotter.XYs, 0, len(r.changes))
		style := plotStyle(r, &siskins)
		for _, c := range r.changes {
			pts = append(pts, plotter.XY{X: c.at.Sub(r.relStart).Seconds(), Y: float64(c.weight) + style.offset})
		}
		if len(pts) == 0 {
			continue
		}
		sc, err := plotter.NewScatter(pts)
		if err != nil {
			return fmt.Errorf("plot %s: %w", r.system, err)
		}
		sc.GlyphStyle.Color = style.color
		sc.GlyphStyle.Radius = vg.Points(1.2)
		sc.GlyphStyle.Shape = draw.CircleGlyph{}
		p.Add(sc)
		p.Legend.Add(column(r, rs), sc)
	}
	p.X.Min, p.Y.Min, p.Y.Max = 0, -2, 55
	if err := p.Save(24*vg.Centimeter, 13*vg.Centimeter, path); err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	return nil
}
