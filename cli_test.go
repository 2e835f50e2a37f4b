package main

import (
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/siskin-dev/siskin/functions"
)

func TestParseInterspersed(t *testing.T) {
	tests := []struct {
		args      []string
		wantPos   []string
		wantWatch bool
		wantURL   string
	}{
		{[]string{"test/podinfo", "--watch"}, []string{"test/podinfo"}, true, "http://127.0.0.1:8080"},
		{[]string{"--watch", "test/podinfo"}, []string{"test/podinfo"}, true, "http://127.0.0.1:8080"},
		{[]string{"test/podinfo", "--server", "http://x", "--watch"}, []string{"test/podinfo"}, true, "http://x"},
		{[]string{"a", "b"}, []string{"a", "b"}, false, "http://127.0.0.1:8080"},
		{nil, nil, false, "http://127.0.0.1:8080"},
	}
	for _, tt := range tests {
		fs, server, _ := cliFlags("status", func(string) string { return "" }, io.Discard)
		watch := fs.Bool("watch", false, "")
		pos, err := parseInterspersed(fs, tt.args)
		if err != nil {
			t.Fatalf("%q: %v", tt.args, err)
		}
		if diff := cmp.Diff(tt.wantPos, pos); diff != "" {
			t.Errorf("%q: positional (-want +got):\n%s", tt.args, diff)
		}
		if *watch != tt.wantWatch || *server != tt.wantURL {
			t.Errorf("%q: got watch=%v server=%s, want %v %s", tt.args, *watch, *server, tt.wantWatch, tt.wantURL)
		}
	}
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if _, err := parseInterspersed(fs, []string{"a", "--nope"}); err == nil {
		t.Error("an unknown flag after an argument: got no error")
	}
}

func TestPrintHistory(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	rs := []functions.Release{{ID: "1", Start: t0, End: t0.Add(time.Minute), Duration: time.Minute, Outcome: functions.PhaseFailed,
		Trigger: &functions.Trigger{Kind: "alert", Detail: "HighErrorRate abc"},
		Steps: []functions.StepRecord{
			{At: t0, To: functions.PhaseProgressing, Weight: 10, FailedChecks: 1, Threshold: 5, Decision: "failed check 1", Reason: "success rate 90%",
				Metrics: []functions.MetricCheck{{Name: "request-success-rate", Value: 90, OK: false}, {Name: "request-duration", NoData: true}}},
			{At: t0.Add(time.Minute), To: functions.PhaseFailed, Threshold: 5, Decision: "Progressing → Failed"},
		}}}
	var b strings.Builder
	printHistory(&b, rs)
	for _, want := range []string{"release 1: Failed, 2026-01-02T03:04:05Z → 2026-01-02T03:05:05Z (1m0s), trigger alert HighErrorRate abc",
		"request-success-rate=90.00!", "request-duration=no data!", "1/5", "Progressing → Failed"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("history output lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	printHistory(&b, nil)
	if got := b.String(); got != "no history\n" {
		t.Errorf("empty history: got %q", got)
	}
}

func TestHistoryEventsOldestFirst(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	rs := []functions.Release{ // newest first, as the API gives them
		{ID: "2", Steps: []functions.StepRecord{{At: t0.Add(time.Hour), Events: []functions.EventNote{{Warning: true, Message: "Rolling back"}}}}},
		{ID: "1", Steps: []functions.StepRecord{{At: t0, Events: []functions.EventNote{{Message: "New revision detected"}}}}},
	}
	got := historyEvents(rs)
	want := []functions.EventRecord{
		{Time: t0, Type: "Normal", Reason: "Synced", Message: "New revision detected", Count: 1},
		{Time: t0.Add(time.Hour), Type: "Warning", Reason: "Synced", Message: "Rolling back", Count: 1},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
