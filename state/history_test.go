package state

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/siskin-dev/siskin/functions"
)

func stepAt(at time.Time, from, to functions.Phase, weight int) functions.StepRecord {
	v := 99.5
	return functions.StepRecord{At: at.UTC(), Kind: "step", From: from, To: to, Weight: weight, PrimaryWeight: 100 - weight,
		Threshold: 5, Decision: "hold", Metrics: []functions.MetricCheck{{Name: "request-success-rate", Value: v, Threshold: &v, OK: true}}}
}

func testHistory(t *testing.T, s *Store) {
	ctx := context.Background()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	other := functions.Key{Namespace: "default", Name: "other"}
	appends := []struct {
		k       functions.Key
		release string
		rec     functions.StepRecord
	}{
		{podinfo, "1", stepAt(t0, functions.PhaseInitialized, functions.PhaseProgressing, 0)},
		{podinfo, "1", stepAt(t0.Add(time.Second), functions.PhaseProgressing, functions.PhaseProgressing, 10)},
		{other, "1", stepAt(t0, functions.PhaseInitialized, functions.PhaseProgressing, 0)},
		{podinfo, "2", stepAt(t0.Add(time.Minute), functions.PhaseSucceeded, functions.PhaseProgressing, 0)},
	}
	for _, a := range appends {
		if err := s.AppendStep(ctx, a.k, a.release, a.rec); err != nil {
			t.Fatalf("AppendStep(%s, %s): %v", a.k, a.release, err)
		}
	}
	got, err := s.Releases(ctx, podinfo)
	if err != nil {
		t.Fatal(err)
	}
	want := []functions.Release{
		{ID: "2", Steps: []functions.StepRecord{appends[3].rec}},
		{ID: "1", Steps: []functions.StepRecord{appends[0].rec, appends[1].rec}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Releases (-want +got):\n%s", diff)
	}
	none, err := s.Releases(ctx, functions.Key{Namespace: "default", Name: "never-seen"})
	if err != nil || len(none) != 0 {
		t.Errorf("Releases of an unknown canary = %v, %v; want none, nil", none, err)
	}
	if err := s.AppendStep(ctx, podinfo, "", appends[0].rec); err == nil {
		t.Error("AppendStep with an empty release id: got nil, want an error")
	}
}

func testHistoryCapped(t *testing.T, s *Store) {
	ctx := context.Background()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	n := functions.MaxHistoryReleases + 3
	for i := range n {
		if err := s.AppendStep(ctx, podinfo, strconv.Itoa(1000+i), stepAt(t0.Add(time.Duration(i)*time.Minute), functions.PhaseSucceeded, functions.PhaseProgressing, 0)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range functions.MaxHistorySteps + 5 {
		if err := s.AppendStep(ctx, podinfo, strconv.Itoa(1000+n-1), stepAt(t0.Add(time.Duration(i)*time.Second), functions.PhaseProgressing, functions.PhaseProgressing, i%100)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Releases(ctx, podinfo)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != functions.MaxHistoryReleases {
		t.Fatalf("kept %d releases, want %d", len(got), functions.MaxHistoryReleases)
	}
	if first, last := got[0].ID, got[len(got)-1].ID; first != strconv.Itoa(1000+n-1) || last != strconv.Itoa(1000+n-functions.MaxHistoryReleases) {
		t.Errorf("kept releases %s..%s, want the newest %d", last, first, functions.MaxHistoryReleases)
	}
	if steps := len(got[0].Steps); steps != functions.MaxHistorySteps {
		t.Errorf("newest release kept %d steps, want %d", steps, functions.MaxHistorySteps)
	}
	// The dropped releases' steps are gone too.
	for i := range n - functions.MaxHistoryReleases {
		key := s.releaseKeyPrefix(podinfo) + strconv.Itoa(1000+i)
		if exists, err := s.rdb.Exists(ctx, key).Result(); err != nil || exists != 0 {
			t.Errorf("dropped release %s: exists %d, %v; want 0", key, exists, err)
		}
	}
}

func testDeleteForgetsHistory(t *testing.T, s *Store) {
	ctx := context.Background()
	for i := range 3 {
		if err := s.AppendStep(ctx, podinfo, fmt.Sprint(i+1), stepAt(time.Now(), functions.PhaseProgressing, functions.PhaseProgressing, 10)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Delete(ctx, podinfo); err != nil {
		t.Fatal(err)
	}
	got, err := s.Releases(ctx, podinfo)
	if err != nil || len(got) != 0 {
		t.Errorf("Releases after Delete = %v, %v; want none", got, err)
	}
	keys, err := s.rdb.Keys(ctx, s.prefix+":*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range keys {
		if key != s.canaryKey(podinfo, "fence") {
			t.Errorf("key left after Delete: %s", key)
		}
	}
}
