package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/siskin-dev/siskin/functions"
)

// processDot draws the step machine's transition table as Graphviz: one node per phase it
// reaches, one edge per transition, labelled with the events that cause it. Generated from
// functions.Transitions(), so the picture cannot drift from the code.
func processDot(transitions []functions.Transition) string {
	used := map[functions.Phase]bool{}
	for _, t := range transitions {
		used[t.From], used[t.To] = true, true
	}
	var b strings.Builder
	b.WriteString("// Generated from functions.Transitions() by test/demo; do not edit.\n")
	b.WriteString("// Regenerate: go test ./test/demo -run TestProcessDiagram -update\n")
	b.WriteString("digraph canary_process {\n")
	b.WriteString("  graph [rankdir=TB, fontname=\"Helvetica\", nodesep=0.5, ranksep=0.55, label=\"Siskin canary process: phases and what moves a release between them\", labelloc=t, fontsize=16];\n")
	b.WriteString("  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\", fontsize=12, fillcolor=\"#eef3fa\", color=\"#5b7aa6\"];\n")
	b.WriteString("  edge [fontname=\"Helvetica\", fontsize=8, color=\"#555555\", fontcolor=\"#333333\"];\n")
	for _, p := range functions.Phases {
		if !used[p] {
			continue
		}
		attrs := ""
		switch p {
		case functions.PhaseSucceeded:
			attrs = ` [fillcolor="#dcf2dc", color="#3d8b3d"]`
		case functions.PhaseFailed:
			attrs = ` [fillcolor="#f8dcdc", color="#b03a3a"]`
		case functions.PhaseInitializing:
			attrs = ` [fillcolor="#f3f3f3"]`
		}
		fmt.Fprintf(&b, "  %s%s;\n", quoteDot(string(p)), attrs)
	}
	if used[functions.AnyPhase] {
		// Not a phase: what a decision does from, or to, whichever phase the canary is in.
		fmt.Fprintf(&b, "  %s [shape=note, style=\"dashed\", fillcolor=\"#ffffff\", color=\"#888888\"];\n", quoteDot(string(functions.AnyPhase)))
	}
	// Releases end in one of the two final phases: keep them on the last rank.
	b.WriteString("  { rank=same; \"Succeeded\"; \"Failed\"; }\n")
	sorted := slices.Clone(transitions)
	slices.SortStableFunc(sorted, func(x, y functions.Transition) int {
		if c := strings.Compare(string(x.From), string(y.From)); c != 0 {
			return c
		}
		return strings.Compare(string(x.To), string(y.To))
	})
	for _, t := range sorted {
		attrs := []string{"label=" + quoteDot(strings.Join(t.Causes, "\n"))}
		switch t.To {
		case functions.PhaseFailed:
			attrs = append(attrs, `color="#b03a3a"`, `fontcolor="#8a2a2a"`)
		case functions.PhaseSucceeded:
			attrs = append(attrs, `color="#3d8b3d"`, `fontcolor="#2d6b2d"`)
		}
		// Edges back to the start of a new release would pull the final phases up the page.
		if t.From == functions.PhaseSucceeded || t.From == functions.PhaseFailed {
			attrs = append(attrs, "constraint=false", "style=dashed")
		}
		fmt.Fprintf(&b, "  %s -> %s [%s];\n", quoteDot(string(t.From)), quoteDot(string(t.To)), strings.Join(attrs, ", "))
	}
	b.WriteString("}\n")
	return b.String()
}

// quoteDot is a Graphviz quoted string; newlines become centred line breaks.
func quoteDot(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	s = strings.ReplaceAll(s, `"`, `\"`)
	s = strings.ReplaceAll(s, "\n", `\n`)
	return `"` + s + `"`
}
