package analysis

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// literals lists the PromQL string literals of q in order, unquoted, as PromQL's lexer reads
// them: "…" and '…' with Go's escapes, `…` raw. ok is false if one is left open.
func literals(q string) (out []string, ok bool) {
	for i := 0; i < len(q); i++ {
		quote := q[i]
		if quote != '"' && quote != '\'' && quote != '`' {
			continue
		}
		j := i + 1
		for ; j < len(q) && q[j] != quote; j++ {
			if q[j] == '\\' && quote != '`' {
				j++
			}
		}
		if j >= len(q) {
			return out, false
		}
		s, err := unquote(q[i : j+1])
		if err != nil {
			s = q[i : j+1] // an escape Go does not know: kept as it is
		}
		out = append(out, s)
		i = j
	}
	return out, true
}

// unquote reads a PromQL string literal: "…" and '…' with Go's escapes, each quote escaped only
// in its own kind of literal (RenderQuery writes no \' inside "…", which Prometheus refuses).
func unquote(lit string) (string, error) {
	if lit[0] == '`' {
		return lit[1 : len(lit)-1], nil
	}
	body := lit[1 : len(lit)-1]
	var b strings.Builder
	for i := 0; i < len(body); i++ {
		if body[i] == '\\' && i+1 < len(body) {
			switch {
			case body[i+1] == lit[0] && lit[0] == '\'':
				b.WriteByte('\'')
			case body[i+1] == '\'' || body[i+1] == '"' && lit[0] == '\'':
				return "", fmt.Errorf("%s: an escape PromQL refuses in this literal", lit)
			default:
				b.WriteString(body[i : i+2])
			}
			i++
			continue
		}
		switch body[i] {
		case '"':
			b.WriteString(`\"`)
			continue
		case '\n', '\r': // PromQL refuses a raw line break in a string: a failed query, not an injection
			b.WriteString(strconv.Quote(string(body[i]))[1:3])
			continue
		}
		b.WriteByte(body[i])
	}
	return strconv.Unquote(`"` + b.String() + `"`)
}

// A query template's values cannot inject PromQL: whatever the Canary's names and variables
// hold, the rendered query has exactly the template's string literals, each holding the value
// put in it, or the render is refused.
func FuzzRenderQueryCannotInject(f *testing.F) {
	f.Add("app", "ns", "5..", "30s")
	f.Add(`x"} or vector(1) or up{x="`, `a\`, `5.."} or vector(1) #`, "1m")
	f.Add("a'b", "n\"s", "`", "1m]) or vector(1")
	f.Add("it's", "n\"s", `'"\`, "1m") // each quote inside the other kind of literal
	f.Fuzz(func(t *testing.T, name, namespace, variable, interval string) {
		if !utf8.ValidString(name) || !utf8.ValidString(namespace) || !utf8.ValidString(variable) || !utf8.ValidString(interval) {
			return // a Kubernetes object (JSON) holds valid UTF-8 only
		}
		const tmpl = `sum(rate(http{namespace="{{ namespace }}",pod=~"{{ target }}-[0-9a-z]+",code=~'{{ variables.code }}'}[{{ interval }}])) / sum(rate(http{app="{{ name }}"}[{{ interval }}]))`
		model := TemplateModel{Name: name, Namespace: namespace, Target: name, Interval: interval, Variables: map[string]string{"code": variable}}
		got, err := RenderQuery(tmpl, model)
		if err != nil {
			return // refused: nothing reaches Prometheus
		}
		lits, ok := literals(got)
		if !ok {
			t.Fatalf("a string literal is left open in %q", got)
		}
		want := []string{namespace, name + "-[0-9a-z]+", variable, name}
		if len(lits) != len(want) {
			t.Fatalf("got %d string literals in %q, want %d: %q", len(lits), got, len(want), lits)
		}
		for i := range want {
			if lits[i] != want[i] {
				t.Fatalf("literal %d: got %q, want %q (query %q)", i, lits[i], want[i], got)
			}
		}
		if rest := strings.NewReplacer(`"{{ namespace }}"`, "", `"{{ target }}-[0-9a-z]+"`, "", `'{{ variables.code }}'`, "", `"{{ name }}"`, "", "{{ interval }}", interval).Replace(tmpl); rest != stripLiterals(got) {
			t.Fatalf("outside its literals the query changed:\n got %q\nwant %q", stripLiterals(got), rest)
		}
	})
}

// stripLiterals removes the string literals of q.
func stripLiterals(q string) string {
	var b strings.Builder
	for i := 0; i < len(q); i++ {
		quote := q[i]
		if quote != '"' && quote != '\'' && quote != '`' {
			b.WriteByte(q[i])
			continue
		}
		j := i + 1
		for ; j < len(q) && q[j] != quote; j++ {
			if q[j] == '\\' && quote != '`' {
				j++
			}
		}
		i = j
	}
	return b.String()
}
