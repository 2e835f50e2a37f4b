package main

import (
	"testing"
	"time"

	"github.com/siskin-dev/siskin/test/lab"
)

func TestResourceOf(t *testing.T) {
	for path, want := range map[string]string{
		"/apis/apps/v1/namespaces/x/deployments/y/status":                "deployments/status",
		"/apis/apps/v1/namespaces/x/deployments/y":                       "deployments",
		"/apis/apps/v1/namespaces/x/deployments":                         "deployments",
		"/api/v1/namespaces/x/events":                                    "events",
		"/api/v1/namespaces/x":                                           "namespaces",
		"/apis/networking.istio.io/v1beta1/namespaces/x/virtualservices": "virtualservices",
		"/apis/flagger.app/v1beta1/canaries":                             "canaries",
		"/api":                                                           "/api",
		"/apis/apps/v1":                                                  "discovery",
	} {
		if got := resourceOf(path); got != want {
			t.Errorf("resourceOf(%q) = %q, want %q", path, got, want)
		}
	}
}

// A gap is the time between two weight increases of one canary: neither the first step from 0
// nor the return to 0 after the promotion counts.
func TestGapsAreBetweenIncreasesOfOneCanary(t *testing.T) {
	t0 := time.Unix(0, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	r := &result{changes: []weightChange{
		{at(1), "a", 5}, {at(2), "b", 5}, {at(11), "a", 10}, {at(13), "b", 10},
		{at(21), "a", 15}, {at(40), "a", 0}, {at(41), "b", 0},
	}}
	r.summarise()
	want := []time.Duration{10 * time.Second, 11 * time.Second, 10 * time.Second}
	if len(r.gaps) != len(want) {
		t.Fatalf("gaps %v, want %v", r.gaps, want)
	}
	for i := range want {
		if r.gaps[i] != want[i] {
			t.Errorf("gap %d = %v, want %v", i, r.gaps[i], want[i])
		}
	}
	if r.weightChanges != 7 {
		t.Errorf("weight changes %d, want 7", r.weightChanges)
	}
	if got := lab.Percentile(r.gaps, 50); got != 10*time.Second {
		t.Errorf("p50 %v, want 10s", got)
	}
}
