package state

import (
	"context"
	"testing"
	"time"
)

func testDependents(t *testing.T, s *Store) {
	ctx := context.Background()
	read := func(ns, obj string) (string, bool) {
		t.Helper()
		entry, current, err := s.Dependents(ctx, ns, obj)
		if err != nil {
			t.Fatalf("Dependents(%s, %s): %v", ns, obj, err)
		}
		return entry, current
	}
	replace := func(ns string, epoch int64, entries map[string]string, ttl time.Duration) bool {
		t.Helper()
		ok, err := s.ReplaceDependents(ctx, ns, epoch, entries, ttl)
		if err != nil {
			t.Fatalf("ReplaceDependents(%s, %d): %v", ns, epoch, err)
		}
		return ok
	}
	epochOf := func(ns string) int64 {
		t.Helper()
		e, err := s.DependentsEpoch(ctx, ns)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}

	if _, current := read("a", "apps/Deployment/podinfo"); current {
		t.Fatal("an index never built is current")
	}
	e := epochOf("a")
	if !replace("a", e, map[string]string{"apps/Deployment/podinfo": "podinfo=1", "apps/Deployment/podinfo-primary": "podinfo=2"}, time.Minute) {
		t.Fatal("a rebuild at the current epoch was refused")
	}
	tests := []struct {
		ns, obj, want string
		wantCurrent   bool
	}{
		{"a", "apps/Deployment/podinfo", "podinfo=1", true},
		{"a", "apps/Deployment/podinfo-primary", "podinfo=2", true},
		{"a", "apps/Deployment/unrelated", "", true},
		{"b", "apps/Deployment/podinfo", "", false},
	}
	for _, tt := range tests {
		if got, current := read(tt.ns, tt.obj); got != tt.want || current != tt.wantCurrent {
			t.Errorf("Dependents(%s, %s) = %q, %v; want %q, %v", tt.ns, tt.obj, got, current, tt.want, tt.wantCurrent)
		}
	}

	// A Canary changed while a rebuild listed: the rebuild from the older list is refused.
	stale := epochOf("a")
	if err := s.InvalidateDependents(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, current := read("a", "apps/Deployment/podinfo"); current {
		t.Error("the index is current after an invalidation")
	}
	if replace("a", stale, map[string]string{}, time.Minute) {
		t.Error("a rebuild from a list older than the invalidation was accepted")
	}
	if !replace("a", epochOf("a"), map[string]string{"apps/Deployment/other": "other=1"}, time.Minute) {
		t.Fatal("a rebuild after the invalidation was refused")
	}
	if got, current := read("a", "apps/Deployment/podinfo"); got != "" || !current {
		t.Errorf("after a rebuild without it, podinfo's entry = %q, %v; want \"\", true", got, current)
	}
	if got, _ := read("a", "apps/Deployment/other"); got != "other=1" {
		t.Errorf("the rebuilt entry = %q, want other=1", got)
	}

	// An empty namespace is indexed too, so its objects' events list nothing.
	if !replace("empty", epochOf("empty"), nil, 150*time.Millisecond) {
		t.Fatal("an empty index was refused")
	}
	if _, current := read("empty", "apps/Deployment/x"); !current {
		t.Error("an empty index is not current")
	}
	time.Sleep(300 * time.Millisecond)
	if _, current := read("empty", "apps/Deployment/x"); current {
		t.Error("the index is current past its time to live")
	}
	if _, err := s.ReplaceDependents(ctx, "a", 0, nil, 0); err == nil {
		t.Error("a zero time to live was accepted")
	}
}
