package main

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/siskin-dev/siskin/functions"
)

// recorded builds a scenario as the demo records it: samples twice a second around a push,
// and the events of its release.
func recorded(key, title, ns, to string, want functions.Phase, pushed time.Time, marks []mark, canaryRate float64) *scenario {
	s := &scenario{key: key, title: title, namespace: ns, name: "podinfo", fromTag: "1.0.0", toTag: to, wantPhase: want,
		pushedAt: pushed, marks: marks}
	s.endAt = marks[len(marks)-1].at
	s.view = functions.CanaryView{Phase: want, MaxWeight: 50, Threshold: 5, PrimaryWeight: 100}
	for t := -8.0; t < s.endAt.Sub(pushed).Seconds()+8; t += 0.5 {
		at := pushed.Add(time.Duration(t * float64(time.Second)))
		w := 0.0
		if at.After(pushed.Add(3*time.Second)) && at.Before(s.endAt) {
			w = 10
		}
		smp := sample{at: at, primaryWeight: 100 - w, canaryWeight: w, primaryRate: 99.8, primaryP99: 48,
			canaryRate: math.NaN(), canaryP99: math.NaN()}
		if w > 0 {
			smp.canaryRate, smp.canaryP99 = canaryRate, 47
		}
		s.samples = append(s.samples, smp)
	}
	return s
}

func TestReportIsWrittenFromTheRecordedReleases(t *testing.T) {
	dir := t.TempDir()
	pushed := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return pushed.Add(time.Duration(s * float64(time.Second))) }
	a := recorded("a", "good version", "demo-good", "1.1.0", functions.PhaseSucceeded, pushed, []mark{
		{at(0), "push 1.1.0", "push"}, {at(0.4), "Progressing", "phase"}, {at(12), "Promoting", "phase"},
		{at(14), "Finalising", "phase"}, {at(16), "Succeeded", "phase"}}, 99.9)
	b := recorded("b", "bad version, alert rule", "demo-alert", "1.1.0-bad", functions.PhaseFailed, pushed, []mark{
		{at(0), "push 1.1.0-bad", "push"}, {at(0.4), "Progressing", "phase"}, {at(5.1), "check failed 1/5", "check"},
		{at(5.3), "alert fires", "alert"}, {at(6.3), "alert -> Siskin", "alert"}, {at(6.49), "aborted", "abort"}}, 70)
	b.alertFiring, b.alertArrived, b.abortedAt, b.abortTook = at(5.3), at(6.3), at(6.49), 190*time.Millisecond
	b.view.Trigger = &functions.Trigger{Kind: "alert", At: at(6.3)}
	c := recorded("c", "bad version, checks only", "demo-checks", "1.1.0-bad", functions.PhaseFailed, pushed, []mark{
		{at(0), "push 1.1.0-bad", "push"}, {at(0.4), "Progressing", "phase"}, {at(5), "check failed 1/5", "check"},
		{at(7), "check failed 2/5", "check"}, {at(9), "check failed 3/5", "check"}, {at(11), "check failed 4/5", "check"},
		{at(13), "check failed 5/5", "check"}, {at(13.01), "Failed", "phase"}}, 70)
	c.checksAtEnd = 5
	d := &demo{o: options{out: dir, interval: 2 * time.Second, pingEvery: 10 * time.Second, tickWindow: 9 * time.Second},
		scenarios: []*scenario{a, b, c}, maxWeight: 50, stepWeight: 5, maxChecks: 5}

	page, png, err := d.writeReport(d.summary(), nil)
	if err != nil {
		t.Fatal(err)
	}
	html, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"<td>time to promote</td><td><b>16.0 s</b></td>",
		"<td>alert -&gt; abort</td><td><b>190 ms</b></td>",
		"<td>time to roll back</td><td><b>13.0 s</b></td>",
		`<img src="data:image/png;base64,`,
		"6.490 s</td><td>aborted</td>",
	} {
		if !strings.Contains(string(html), want) {
			t.Errorf("the report lacks %s", want)
		}
	}
	for _, f := range []string{png, filepath.Join(dir, "canary-a.png"), filepath.Join(dir, "canary-b.png"), filepath.Join(dir, "canary-c.png")} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(b), "\x89PNG") {
			t.Errorf("%s is not a PNG", f)
		}
	}
	if keep := os.Getenv("DEMO_REPORT_KEEP"); keep != "" {
		_ = copyDir(dir, keep)
	}
}

func TestMergeMarks(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return base.Add(time.Duration(s * float64(time.Second))) }
	got := mergeMarks([]mark{{at(6.3), "alert -> Siskin", "alert"}, {at(0), "push", "push"}, {at(0.3), "Progressing", "phase"},
		{at(5), "alert fires", "alert"}, {at(6.5), "aborted", "abort"}, {at(9), "check failed 5/5", "check"}, {at(9.1), "Failed", "phase"}}, 0.5)
	want := []string{"push, Progressing", "alert fires", "alert -> Siskin, aborted", "check failed 5/5, Failed"}
	wantKinds := []string{"push", "alert", "abort", "check"}
	if len(got) != len(want) {
		t.Fatalf("got %d marks %v, want %v", len(got), got, want)
	}
	for i := range want {
		if got[i].label != want[i] {
			t.Errorf("mark %d: got %q, want %q", i, got[i].label, want[i])
		}
	}
	for i := range wantKinds {
		if got[i].kind != wantKinds[i] {
			t.Errorf("mark %d (%s) is drawn as %s, want %s", i, got[i].label, got[i].kind, wantKinds[i])
		}
	}
}
