// Package chaos runs Siskin against the lab under faults (processes killed, Redis lost,
// apiserver and Prometheus slow, failing or gone, every event duplicated and reordered) and
// judges the run from what the cluster showed: a watch history of the VirtualServices, the
// Canaries and the Deployments, recorded by the test, never Siskin's own logs.
//
// This file is the judge, pure logic over a recorded history; the run itself is in the e2e
// tests of this package (build tag e2e).
package chaos

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// Weight is one write of a canary's VirtualService, as a watch saw it.
type Weight struct {
	At     time.Time
	Canary int
}

// Phase is one write of a Canary's status.phase.
type Phase struct {
	At    time.Time
	Phase string
}

// Image is one change of a Deployment's image.
type Image struct {
	At    time.Time
	Image string
}

// Release is one release the test started.
type Release struct {
	Canary string
	Tag    string
	Good   bool
	// Sent is when the push was first sent: a delivery that timed out or was answered 5xx
	// may have set the image before the retry that was answered 2xx.
	Sent time.Time
	// Acked is when the push was first answered 2xx (zero: never).
	Acked time.Time
	// AckOutcome is what the 2xx said of the push ("started", "duplicate", ...).
	AckOutcome string
	// AbortAcked is when an abort (an Alertmanager alert) of this release was answered 2xx
	// (zero: none was sent, or none answered).
	AbortAcked time.Time
}

// Window is a period in which a fault was in force.
type Window struct {
	Kind     string
	From, To time.Time
}

// History is what a run recorded.
type History struct {
	Interval   time.Duration
	StepWeight int
	MaxWeight  int
	Threshold  int
	Weights    map[string][]Weight
	Phases     map[string][]Phase
	Targets    map[string][]Image
	Primaries  map[string][]Image
	Releases   []Release
	// MetricsDown are the windows in which Prometheus could not be queried: no weight may
	// increase in them (a metric that cannot be queried is a failed check).
	MetricsDown []Window
	// Faults are every fault window, for the bound on a release's end.
	Faults []Window
	// Slack is added to every bound: process kills and restarts, the time to notice them.
	Slack time.Duration
	// StateLost are the moments Redis lost Siskin's state (a FLUSHALL, a kill -9 that lost
	// the last second of its AOF). A step taken early right after one is the known defect
	// described in the README (a rebuilt state is due at once): counted apart, and a
	// violation only when Strict.
	StateLost []time.Time
	Strict    bool
}

// Figures are the run's results.
type Figures struct {
	Steps                int
	Releases             int
	Succeeded            int
	Failed               int
	GoodFailed           int // good revisions that failed (the faults made their checks fail)
	DoubleSteps          int
	EarlyAfterStateLoss  int // double steps right after Redis lost the state (known defect)
	SkippedSteps         int
	Regressions          int // a weight going down to anything but 0
	StepsWithoutMetrics  int
	UnanalysedPromotions int
	BadPromotions        int
	AbortsSent           int
	AbortsIgnored        int
	LostEvents           int
	LostToDeadClaims     int // pushes answered "duplicate" and never run: the known defect of claims left by killed processes
	Stuck                int
	WorstDelay           time.Duration // past the ideal end
	WorstDelayRelease    string
	Violations           []string
}

// OK reports whether the run kept every guarantee.
func (f Figures) OK() bool { return len(f.Violations) == 0 }

// TagOf is the tag of an image reference (host:port/repo:tag@digest).
func TagOf(image string) string {
	if i := strings.Index(image, "@"); i >= 0 {
		image = image[:i]
	}
	if i := strings.LastIndex(image, "/"); i >= 0 {
		image = image[i+1:]
	}
	if i := strings.LastIndex(image, ":"); i >= 0 {
		return image[i+1:]
	}
	return ""
}

// Check judges a history.
func Check(h History) Figures {
	var f Figures
	violate := func(format string, args ...any) { f.Violations = append(f.Violations, fmt.Sprintf(format, args...)) }
	grace := 3 * time.Second

	names := make([]string, 0, len(h.Weights))
	for n := range h.Weights {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		ws := dedupe(h.Weights[n])
		var lastInc time.Time
		for i := 1; i < len(ws); i++ {
			prev, cur := ws[i-1], ws[i]
			switch {
			case cur.Canary == 0:
				lastInc = time.Time{}
			case cur.Canary < prev.Canary:
				f.Regressions++
				violate("%s: weight went back from %d to %d at %s", n, prev.Canary, cur.Canary, cur.At.Format(time.TimeOnly))
			case cur.Canary == prev.Canary+h.StepWeight:
				f.Steps++
				if !lastInc.IsZero() && cur.At.Sub(lastInc) < h.Interval/2 && !h.Strict && afterLoss(h, cur.At) {
					f.EarlyAfterStateLoss++
				} else if !lastInc.IsZero() && cur.At.Sub(lastInc) < h.Interval/2 {
					f.DoubleSteps++
					violate("%s: step %d→%d %v after the previous step, interval %v (a double step)", n, prev.Canary, cur.Canary,
						cur.At.Sub(lastInc).Round(time.Millisecond), h.Interval)
				}
				// The first step (from 0) is taken without metrics, as in Flagger: no traffic
				// reached the canary yet, so there is nothing to judge.
				for _, w := range h.MetricsDown {
					if prev.Canary == 0 {
						break
					}
					if cur.At.After(w.From.Add(grace)) && cur.At.Before(w.To) {
						f.StepsWithoutMetrics++
						violate("%s: step %d→%d at %s while Prometheus was unreachable (%s–%s)", n, prev.Canary, cur.Canary,
							cur.At.Format(time.TimeOnly), w.From.Format(time.TimeOnly), w.To.Format(time.TimeOnly))
					}
				}
				lastInc = cur.At
			default:
				f.SkippedSteps++
				f.Steps++
				violate("%s: weight jumped from %d to %d at %s (a skipped or doubled step)", n, prev.Canary, cur.Canary, cur.At.Format(time.TimeOnly))
				lastInc = cur.At
			}
		}
	}

	byImage := map[string]*Release{}
	for i := range h.Releases {
		r := &h.Releases[i]
		byImage[r.Canary+":"+r.Tag] = r
	}
	// Promotions: every change of a primary's image after its first.
	for _, n := range sortedKeys(h.Primaries) {
		ps := h.Primaries[n]
		for i := 1; i < len(ps); i++ {
			p := ps[i]
			tag := TagOf(p.Image)
			r := byImage[n+":"+tag]
			if r == nil {
				continue // not a release of the test's (the bootstrap)
			}
			if !r.Good {
				f.BadPromotions++
				violate("%s: the bad revision %s was promoted at %s", n, tag, p.At.Format(time.TimeOnly))
			}
			if !r.AbortAcked.IsZero() && p.At.After(r.AbortAcked) {
				f.AbortsIgnored++
				violate("%s: %s was promoted at %s after its abort was acknowledged at %s", n, tag, p.At.Format(time.TimeOnly), r.AbortAcked.Format(time.TimeOnly))
			}
			started := firstImage(h.Targets[n], tag, time.Time{})
			if started.IsZero() || !reached(h.Weights[n], h.MaxWeight, started, p.At) {
				f.UnanalysedPromotions++
				violate("%s: %s was promoted at %s without its weight reaching %d%% since it was set on the target", n, tag, p.At.Format(time.TimeOnly), h.MaxWeight)
			}
		}
	}

	for _, r := range h.Releases {
		if r.Acked.IsZero() {
			continue // the push was never acknowledged: nothing was promised
		}
		f.Releases++
		label := r.Canary + ":" + r.Tag
		since := r.Acked.Add(-time.Minute)
		if !r.Sent.IsZero() && r.Sent.Before(since) {
			since = r.Sent.Add(-time.Second)
		}
		started := firstImage(h.Targets[r.Canary], r.Tag, since)
		if started.IsZero() && r.AckOutcome == "duplicate" && !h.Strict {
			f.LostToDeadClaims++
			continue
		}
		if started.IsZero() {
			f.LostEvents++
			violate("%s: the push was acknowledged at %s and the target never ran it", label, r.Acked.Format(time.TimeOnly))
			continue
		}
		if !r.AbortAcked.IsZero() {
			f.AbortsSent++
			for _, w := range dedupe(h.Weights[r.Canary]) {
				if w.At.After(r.AbortAcked.Add(time.Second)) && w.Canary > 0 && w.At.Before(nextStart(h, r, started)) {
					f.AbortsIgnored++
					violate("%s: weight %d at %s, after the abort was acknowledged at %s", label, w.Canary, w.At.Format(time.TimeOnly), r.AbortAcked.Format(time.TimeOnly))
					break
				}
			}
		}
		end, phase := endOf(h.Phases[r.Canary], started)
		ideal := started.Add(time.Duration(h.MaxWeight/h.StepWeight+3) * h.Interval)
		switch {
		case !r.AbortAcked.IsZero():
			ideal = r.AbortAcked.Add(h.Interval)
		case !r.Good:
			ideal = started.Add(time.Duration(h.Threshold+3) * h.Interval)
		}
		// The bound: the ideal end, 3 intervals, the slack, and the fault time met on the way;
		// a release the faults delayed meets more of them, so the bound grows until it holds.
		base := ideal.Add(3*h.Interval + h.Slack)
		bound := base
		for range 20 {
			next := base.Add(overlap(h.Faults, started, bound))
			if !next.After(bound) {
				break
			}
			bound = next
		}
		if end.IsZero() || end.After(bound) {
			f.Stuck++
			how := "never ended"
			if !end.IsZero() {
				how = fmt.Sprintf("ended %s at %s, %v past its ideal end", phase, end.Format(time.TimeOnly), end.Sub(ideal).Round(100*time.Millisecond))
			}
			violate("%s: not Succeeded or Failed by %s (started %s, bound %v past its ideal end): %s", label, bound.Format(time.TimeOnly),
				started.Format(time.TimeOnly), bound.Sub(ideal).Round(time.Second), how)
			continue
		}
		if d := end.Sub(ideal); d > f.WorstDelay {
			f.WorstDelay, f.WorstDelayRelease = d, label
		}
		switch phase {
		case "Succeeded":
			f.Succeeded++
			if !r.Good {
				violate("%s: a bad revision ended Succeeded", label)
			}
			if !r.AbortAcked.IsZero() && end.After(r.AbortAcked) {
				violate("%s: ended Succeeded after its abort was acknowledged", label)
			}
		case "Failed":
			f.Failed++
			if r.Good && r.AbortAcked.IsZero() {
				f.GoodFailed++
			}
		}
	}
	return f
}

// afterLoss reports whether t is within two intervals (and a few seconds) of a state loss.
func afterLoss(h History, t time.Time) bool {
	for _, l := range h.StateLost {
		if !t.Before(l) && t.Sub(l) <= 2*h.Interval+3*time.Second {
			return true
		}
	}
	return false
}

// dedupe drops writes that did not change the weight.
func dedupe(ws []Weight) []Weight {
	var out []Weight
	for _, w := range ws {
		if len(out) == 0 || out[len(out)-1].Canary != w.Canary {
			out = append(out, w)
		}
	}
	return out
}

func firstImage(is []Image, tag string, after time.Time) time.Time {
	for _, i := range is {
		if TagOf(i.Image) == tag && !i.At.Before(after) {
			return i.At
		}
	}
	return time.Time{}
}

// nextStart is when the canary's next release after r started (far future: none).
func nextStart(h History, r Release, started time.Time) time.Time {
	for _, i := range h.Targets[r.Canary] {
		if i.At.After(started) && TagOf(i.Image) != r.Tag {
			return i.At
		}
	}
	return started.Add(100 * 365 * 24 * time.Hour)
}

func reached(ws []Weight, weight int, from, to time.Time) bool {
	for _, w := range ws {
		if !w.At.Before(from) && !w.At.After(to) && w.Canary >= weight {
			return true
		}
	}
	return false
}

// endOf is the first Succeeded or Failed after a phase of a release in progress, once the
// release started.
func endOf(ps []Phase, started time.Time) (time.Time, string) {
	moving := false
	for _, p := range ps {
		if p.At.Before(started) {
			continue
		}
		switch p.Phase {
		case "Succeeded", "Failed":
			if moving {
				return p.At, p.Phase
			}
		case "Progressing", "Promoting", "Finalising", "Waiting", "WaitingPromotion":
			moving = true
		}
	}
	return time.Time{}, ""
}

// overlap is how long the fault windows cover [from, to], windows merged.
func overlap(ws []Window, from, to time.Time) time.Duration {
	type span struct{ a, b time.Time }
	var ss []span
	for _, w := range ws {
		a, b := maxTime(w.From, from), minTime(w.To, to)
		if b.After(a) {
			ss = append(ss, span{a, b})
		}
	}
	slices.SortFunc(ss, func(x, y span) int { return x.a.Compare(y.a) })
	var total time.Duration
	var cur span
	for i, s := range ss {
		if i == 0 || s.a.After(cur.b) {
			if i > 0 {
				total += cur.b.Sub(cur.a)
			}
			cur = s
			continue
		}
		cur.b = maxTime(cur.b, s.b)
	}
	if len(ss) > 0 {
		total += cur.b.Sub(cur.a)
	}
	return total
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// Table renders the figures with the faults injected, as the README shows them.
func Table(f Figures, faults map[string]int, took time.Duration, extra [][2]string) string {
	var b strings.Builder
	row := func(k, v string) { fmt.Fprintf(&b, "| %s | %s |\n", k, v) }
	b.WriteString("| figure | value |\n| --- | --- |\n")
	row("run time", took.Round(time.Second).String())
	row("weight steps", fmt.Sprint(f.Steps))
	row("releases acknowledged", fmt.Sprint(f.Releases))
	row("ended Succeeded / Failed", fmt.Sprintf("%d / %d", f.Succeeded, f.Failed))
	row("good revisions failed by faults", fmt.Sprint(f.GoodFailed))
	row("aborts sent (acknowledged)", fmt.Sprint(f.AbortsSent))
	for _, k := range sortedKeys(faults) {
		row("faults: "+k, fmt.Sprint(faults[k]))
	}
	row("double steps (goal 0)", fmt.Sprint(f.DoubleSteps))
	row("early steps right after Redis lost the state (known defect, not counted above)", fmt.Sprint(f.EarlyAfterStateLoss))
	row("skipped steps (goal 0)", fmt.Sprint(f.SkippedSteps))
	row("weights gone back (goal 0)", fmt.Sprint(f.Regressions))
	row("steps while Prometheus was down (goal 0)", fmt.Sprint(f.StepsWithoutMetrics))
	row("promotions without analysis (goal 0)", fmt.Sprint(f.UnanalysedPromotions))
	row("bad revisions promoted (goal 0)", fmt.Sprint(f.BadPromotions))
	row("aborts ignored (goal 0)", fmt.Sprint(f.AbortsIgnored))
	row("lost events (goal 0)", fmt.Sprint(f.LostEvents))
	row("pushes lost to a claim of a killed process (known defect, not counted above)", fmt.Sprint(f.LostToDeadClaims))
	row("stuck releases (goal 0)", fmt.Sprint(f.Stuck))
	worst := f.WorstDelay.Round(100 * time.Millisecond).String()
	if f.WorstDelayRelease != "" {
		worst += " (" + f.WorstDelayRelease + ")"
	}
	row("worst delay past ideal end", worst)
	for _, e := range extra {
		row(e[0], e[1])
	}
	return b.String()
}
