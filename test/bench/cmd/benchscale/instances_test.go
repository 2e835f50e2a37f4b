package main

import (
	"slices"
	"testing"
)

func TestInstancesFlag(t *testing.T) {
	t.Setenv("BENCH_INSTANCES", "")
	c, err := parseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.instances, []int{1}) {
		t.Errorf("default instances %v, want [1]", c.instances)
	}
	c, err = parseFlags([]string{"-instances", "1, 2,3", "-n", "100"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.instances, []int{1, 2, 3}) || !slices.Equal(c.sizes, []int{100}) {
		t.Errorf("instances %v, sizes %v", c.instances, c.sizes)
	}
	t.Setenv("BENCH_INSTANCES", "4")
	if c, err = parseFlags(nil); err != nil || !slices.Equal(c.instances, []int{4}) {
		t.Errorf("BENCH_INSTANCES=4: %v, %v", c.instances, err)
	}
	for _, bad := range []string{"0", "-1", "1,,2", "two", ""} {
		if _, err := parseFlags([]string{"-instances", bad}); err == nil {
			t.Errorf("-instances %q accepted", bad)
		}
	}
}

func TestRunsOfRunsSiskinOncePerInstanceCount(t *testing.T) {
	got := runsOf([]string{"flagger", "siskin"}, []int{1, 3})
	want := []runSpec{{"flagger", 0}, {"siskin", 1}, {"siskin", 3}}
	if !slices.Equal(got, want) {
		t.Fatalf("runs %v, want %v", got, want)
	}
	var labels []string
	for _, r := range got {
		labels = append(labels, r.label())
	}
	// One instance keeps today's namespace and folder; more get their own, fresh ones.
	if want := []string{"flagger", "siskin", "siskin-x3"}; !slices.Equal(labels, want) {
		t.Errorf("labels %v, want %v", labels, want)
	}
	if got := runsOf([]string{"siskin"}, []int{2}); !slices.Equal(got, []runSpec{{"siskin", 2}}) {
		t.Errorf("siskin ×2: %v", got)
	}
}

func TestColumnNamesTheInstancesWhenTheyDiffer(t *testing.T) {
	fl, s1, s3 := &result{system: "Flagger"}, &result{system: "Siskin", instances: 1}, &result{system: "Siskin", instances: 3}
	for _, c := range []struct {
		rs   []*result
		want []string
	}{
		{[]*result{fl, s1}, []string{"Flagger", "Siskin"}},
		{[]*result{fl, s1, s3}, []string{"Flagger", "Siskin ×1", "Siskin ×3"}},
		{[]*result{s3}, []string{"Siskin ×3"}},
	} {
		var got []string
		for _, r := range c.rs {
			got = append(got, column(r, c.rs))
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("columns %v, want %v", got, c.want)
		}
	}
}

func TestSumUsageSumsCPUAndRSSAndKeepsTheLargestPeak(t *testing.T) {
	got := sumUsage([]usage{{cpu: 1.5, rss: 100, peak: 150}, {cpu: 2, rss: 80, peak: 200}, {cpu: 0.5, rss: 90, peak: 120}})
	want := usage{cpu: 4, rss: 270, peak: 470, maxPeak: 200}
	if got != want {
		t.Errorf("sum %+v, want %+v", got, want)
	}
	if got := sumUsage(nil); got != (usage{}) {
		t.Errorf("sum of none %+v", got)
	}
}

func TestInstancesCellAndLogNames(t *testing.T) {
	if got := instancesCell(&result{system: "Flagger"}); got != "–" {
		t.Errorf("Flagger: %q", got)
	}
	if got := instancesCell(&result{system: "Siskin", instances: 3, served: []int{10, 11, 9}, exited: 1}); got != "3 (10 / 11 / 9), 1 exited" {
		t.Errorf("Siskin ×3: %q", got)
	}
	if siskinLogName(0, 1) != "siskin.log" || siskinLogName(0, 3) != "siskin-1.log" || siskinLogName(2, 3) != "siskin-3.log" {
		t.Error("log names")
	}
}

func TestPhasesWithoutStatusAreNamed(t *testing.T) {
	if got := verbs(intMap(map[string]int{"": 178, "Promoting": 302})); got != "(no status yet) 178, Promoting 302" {
		t.Errorf("phases %q", got)
	}
}
