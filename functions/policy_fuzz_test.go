package functions

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

// The image policy with a user's tag pattern and semver constraint: never a panic, and a tag
// taken always satisfies the pattern that the annotation holds.
func FuzzDecidePush(f *testing.F) {
	for _, s := range [][4]string{
		{`^v\d+$`, "", "v1", "v2"},
		{"", "~1.4", "1.4.0", "1.4.7"},
		{`^main-`, ">= 1.0, < 2", "1.2.0", "main-3f2a1c"},
		{`(a+)+$`, "^1", "1.0.0", strings.Repeat("a", 100) + "!"},
		{`[`, "1.x || >=2.5.0 || 5.0.0 - 7.2.3", "latest", "2.6.0"},
		{"", "", "1.0.0-rc.1+build.5", "1.0.0"},
	} {
		f.Add(s[0], s[1], s[2], s[3], "sha256:a", "sha256:b")
	}
	f.Fuzz(func(t *testing.T, pattern, constraint, running, pushed, runningDigest, pushedDigest string) {
		ann := map[string]string{}
		if pattern != "" {
			ann[AnnotationTagPattern] = pattern
		}
		if constraint != "" {
			ann[AnnotationSemver] = constraint
		}
		next, ok, reason := DecidePush(ann,
			ImageRef{Registry: "r:5000", Repository: "lab/app", Tag: running, Digest: runningDigest},
			ImageRef{Registry: "r:5000", Repository: "lab/app", Tag: pushed, Digest: pushedDigest})
		if ok == (reason != "") {
			t.Fatalf("DecidePush = (%q, %v, %q): taken and a reason, or neither", next, ok, reason)
		}
		if ok && pattern != "" && !regexp.MustCompile(pattern).MatchString(pushed) {
			t.Fatalf("took %q against the pattern %q", pushed, pattern)
		}
	})
}

// The alert selector (siskin.dev/abort-on) and the matching rule: never a panic, an empty
// selector matches every alert that names the canary, and an alert of another namespace never
// matches.
func FuzzAlertMatches(f *testing.F) {
	f.Add("severity=critical,team!=x", "severity", "critical", "chaos", "app")
	f.Add("a==b, c , !=", "a", "b", "ns", "app")
	f.Add(",,,=", "", "", "", "")
	f.Fuzz(func(t *testing.T, sel, key, value, ns, name string) {
		c := Canary{Key: Key{Namespace: "ns", Name: "app"}}
		c.Spec.TargetRef.Name = "app"
		labels := map[string]string{"namespace": ns, "canary": name, key: value}
		with := c
		with.Annotations = map[string]string{AnnotationAbortOn: sel}
		got := AlertMatches(with, labels)
		plain := AlertMatches(c, labels)
		if got && !plain {
			t.Fatalf("the selector %q made a match that the plain rule refuses (labels %v)", sel, labels)
		}
		if strings.TrimSpace(strings.ReplaceAll(sel, ",", "")) == "" && got != plain {
			t.Fatalf("the empty selector %q changed the match: %v, want %v", sel, got, plain)
		}
		if labels["namespace"] != "ns" && got {
			t.Fatalf("an alert of namespace %q matched a canary of ns", labels["namespace"])
		}
	})
}

// A user's tag pattern cannot hang the push: Go's regexp (RE2) runs in time linear in the
// tag, so the patterns that make backtracking engines take exponential time answer at once,
// and a pattern Go cannot compile is refused with a reason.
func TestTagPatternCannotHang(t *testing.T) {
	evil := strings.Repeat("a", 128) // the longest tag a push may carry
	tests := []struct {
		name, pattern, tag string
		wantOK             bool
		wantReason         string
	}{
		{"nested quantifiers", `^(a+)+$`, evil + "!", false, "does not match"},
		{"alternation blow-up", `^(a|a)*$`, evil + "!", false, "does not match"},
		{"overlapping groups", `^(a|aa)+$`, evil, true, ""},
		{"a backreference is not Go's", `^(a)\1$`, "aa", false, "bad siskin.dev/tag-pattern"},
		{"a lookahead is not Go's", `^(?=a)a$`, "a", false, "bad siskin.dev/tag-pattern"},
		{"a repetition past RE2's limit", `^a{1001}$`, "a", false, "bad siskin.dev/tag-pattern"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			done := make(chan struct{})
			var (
				ok     bool
				reason string
			)
			go func() {
				defer close(done)
				_, ok, reason = DecidePush(map[string]string{AnnotationTagPattern: tt.pattern},
					ImageRef{Registry: "r", Repository: "app", Tag: "0"}, ImageRef{Registry: "r", Repository: "app", Tag: tt.tag, Digest: "sha256:b"})
			}()
			select {
			case <-done:
			case <-time.After(10 * time.Second): // a hang, not a slow answer: RE2 answers in microseconds
				t.Fatalf("DecidePush with %q did not answer", tt.pattern)
			}
			if ok != tt.wantOK || !strings.Contains(reason, tt.wantReason) {
				t.Errorf("got (%v, %q), want (%v, a reason containing %q)", ok, reason, tt.wantOK, tt.wantReason)
			}
		})
	}
}

// BenchmarkTagPatternWorstCase prints what the worst patterns cost on the longest tag.
func BenchmarkTagPatternWorstCase(b *testing.B) {
	ann := map[string]string{AnnotationTagPattern: `^(a+)+$`}
	pushed := ImageRef{Registry: "r", Repository: "app", Tag: strings.Repeat("a", 128) + "!", Digest: "sha256:b"}
	for b.Loop() {
		DecidePush(ann, ImageRef{Registry: "r", Repository: "app", Tag: "0"}, pushed)
	}
}
