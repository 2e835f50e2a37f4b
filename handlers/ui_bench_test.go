package handlers

import (
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/siskin-dev/siskin/functions"
)

// fleetOf is n canaries over 10 namespaces, in every phase.
func fleetOf(n int) *uiFake {
	f := &uiFake{fakeReleases: &fakeReleases{}, views: map[functions.Key]functions.CanaryView{}}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := range n {
		v := functions.CanaryView{Key: functions.Key{Namespace: fmt.Sprintf("team-%d", i%10), Name: fmt.Sprintf("service-%03d", i)},
			Phase: functions.Phases[i%len(functions.Phases)], Weight: (i * 5) % 55, Threshold: 5, FailedChecks: i % 3, MaxWeight: 50,
			StepWeight: 5, Interval: "1m0s", LastTransitionTime: t0.Add(time.Duration(i) * time.Second),
			LastStepAt: t0.Add(time.Duration(i) * time.Minute), Message: "New revision detected, progressing canary analysis."}
		f.views[v.Key] = v
	}
	return f
}

// BenchmarkDashboardFleet is the fleet of 500 canaries: the page (to the last byte, which an
// in-memory handler writes at once, so it is the time to first byte too), a live update, and
// a live update that finds nothing new. Sizes are reported per request.
func BenchmarkDashboardFleet(b *testing.B) {
	h := New(fleetOf(500), Options{APITokens: []string{apiToken}}, slog.New(slog.DiscardHandler))
	get := func(path, etag string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", path, nil)
		req.Header.Set("Authorization", "Bearer "+apiToken)
		if etag != "" {
			req.Header.Set("If-None-Match", etag)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	etag := get("/ui/api/canaries", "").Header().Get("ETag")
	for _, bc := range []struct{ name, path, etag string }{
		{"page", "/ui/", ""},
		{"update", "/ui/api/canaries", ""},
		{"update-unchanged", "/ui/api/canaries", etag},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var size int
			for b.Loop() {
				rec := get(bc.path, bc.etag)
				if rec.Code != http.StatusOK && rec.Code != http.StatusNotModified {
					b.Fatalf("%s: %d", bc.path, rec.Code)
				}
				size = rec.Body.Len()
			}
			b.ReportMetric(float64(size), "bytes/op")
		})
	}
}

// TestDashboardPageWeight reports what a browser downloads for the pages' own files (the
// data aside), and keeps it small.
func TestDashboardPageWeight(t *testing.T) {
	total := 0
	err := fs.WalkDir(uiFiles, "ui", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := uiFiles.ReadFile(path)
		total += len(b)
		t.Logf("%-28s %6.1f kB", path, float64(len(b))/1024)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("dashboard files: %.1f kB uncompressed", float64(total)/1024)
	if total > 64<<10 {
		t.Errorf("the dashboard's files weigh %.1f kB, past the 64 kB budget", float64(total)/1024)
	}
}
