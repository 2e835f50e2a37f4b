package main

import (
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/siskin-dev/siskin/functions"
)

var update = flag.Bool("update", false, "rewrite docs/canary-process.dot and render its SVG and PNG with Graphviz")

const committedDot = "../../docs/canary-process.dot"

// The committed diagram must be the one the step machine's transition table draws today.
func TestProcessDiagramMatchesTheStepMachine(t *testing.T) {
	got := processDot(functions.Transitions())
	if *update {
		if err := os.MkdirAll(filepath.Dir(committedDot), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(committedDot, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := exec.LookPath("dot"); err != nil {
			t.Fatalf("rendering the diagram needs Graphviz's dot (Debian: graphviz; test/lab/deps.sh installs it): %v", err)
		}
		for _, format := range []string{"svg", "png"} {
			if _, err := renderDot(committedDot, format); err != nil {
				t.Fatal(err)
			}
		}
	}
	want, err := os.ReadFile(committedDot)
	if err != nil {
		t.Fatalf("read the committed diagram: %v (generate it: go test ./test/demo -run TestProcessDiagram -update)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("docs/canary-process.dot is not what functions.Transitions() draws (-committed +generated):\n%s\n"+
			"regenerate it: go test ./test/demo -run TestProcessDiagram -update", diff)
	}
}

func TestProcessDotDrawsEveryTransition(t *testing.T) {
	transitions := []functions.Transition{
		{From: functions.PhaseInitializing, To: functions.PhaseInitialized, Causes: []string{"Initialization done! NAME"}},
		{From: functions.PhaseProgressing, To: functions.PhaseFailed, Causes: []string{"Alertmanager alert or manual abort", `say "why"`}},
		{From: functions.PhaseFailed, To: functions.PhaseProgressing, Causes: []string{"New revision detected! Scaling up NAME"}},
		{From: functions.PhaseProgressing, To: functions.PhaseSucceeded, Causes: []string{"skipped"}},
	}
	got := processDot(transitions)
	for _, want := range []string{
		`"Initializing" -> "Initialized" [label="Initialization done! NAME"];`,
		`"Progressing" -> "Failed" [label="Alertmanager alert or manual abort\nsay \"why\"", color="#b03a3a", fontcolor="#8a2a2a"];`,
		`"Failed" -> "Progressing" [label="New revision detected! Scaling up NAME", constraint=false, style=dashed];`,
		`"Progressing" -> "Succeeded" [label="skipped", color="#3d8b3d", fontcolor="#2d6b2d"];`,
		`"Failed" [fillcolor="#f8dcdc", color="#b03a3a"];`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the diagram lacks %s; got:\n%s", want, got)
		}
	}
	if strings.Contains(got, `"Waiting";`) {
		t.Errorf("a phase no transition reaches is drawn:\n%s", got)
	}
}
