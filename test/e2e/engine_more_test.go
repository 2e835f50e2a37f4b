//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/siskin-dev/siskin/functions"
	"github.com/siskin-dev/siskin/test/traffic"
)

// releaseTo brings a fresh canary through initialization and a new revision to Progressing at
// the given weight.
func releaseTo(t *testing.T, e *env, s *siskin, name string, weight int) {
	t.Helper()
	stepThrough(t, e, s, name, time.Second, []observed{{Phase: "Initializing"}, {Phase: "Initialized", Primary: 100}}, 20)
	e.setImage(name, e.lab.Registry()+"/lab/"+name+":2.0.0")
	want := []observed{{Phase: "Initialized", Primary: 100}, {Phase: "Progressing", Primary: 100}}
	for w := 5; w <= weight; w += 5 {
		want = append(want, observed{Phase: "Progressing", CanaryWeight: int64(w), Primary: int32(100 - w), Canary: int32(w)})
	}
	stepThrough(t, e, s, name, time.Second, want, 40)
}

// seedSetup is a namespace with a healthy podinfo-like target, the seed Canary at the given
// interval, its traffic and a running Siskin scoped to the namespace.
func seedSetup(t *testing.T, ns, interval string, extraEnv ...string) (*env, *traffic.Exporter, *siskin) {
	t.Helper()
	e := newEnv(t, ns)
	ex := startExporter(t, e)
	ex.Set(e.ns, "podinfo", traffic.Behaviour{RPS: 50, LatencyMs: 40})
	e.createDeployment("podinfo", e.lab.Registry()+"/lab/podinfo:1.0.0", 1)
	e.apply(seedCanary(t, e.ns, "podinfo", interval))
	return e, ex, startSiskin(t, e.lab, siskinOpts{namespace: e.ns, extraEnv: extraEnv})
}

func TestFailingSuccessRateRollsBack(t *testing.T) {
	t.Parallel()
	e, ex, s := seedSetup(t, "failing", "1s")
	releaseTo(t, e, s, "podinfo", 5)
	ex.Set(e.ns, "podinfo", traffic.Behaviour{RPS: 50, LatencyMs: 40, ErrorRate: 0.6})
	// The seed's threshold is 5: four failed checks hold the weight, the fifth rolls back in
	// the same step (Flagger would need a sixth).
	want := []observed{{Phase: "Progressing", CanaryWeight: 5, Primary: 95, Canary: 5}}
	for f := int64(1); f <= 4; f++ {
		want = append(want, observed{Phase: "Progressing", CanaryWeight: 5, FailedChecks: f, Primary: 95, Canary: 5})
	}
	want = append(want, observed{Phase: "Failed", Primary: 100})
	// The success rate is over the last minute: the first checks may still pass and advance.
	waitForRate(t, e, "podinfo", 99)
	stepThrough(t, e, s, "podinfo", time.Second, want, 30)
	if _, replicas := e.deployment("podinfo"); replicas != 0 {
		t.Errorf("canary has %d replicas after the rollback, want 0", replicas)
	}
	if img, _ := e.deployment("podinfo-primary"); img != e.lab.Registry()+"/lab/podinfo:1.0.0" {
		t.Errorf("primary runs %s, want the old image", img)
	}
}

// waitForRate waits until Prometheus's 1m success rate of the workload drops below pct, so a
// test's steps see the failure it set up.
func waitForRate(t *testing.T, e *env, workload string, pct float64) {
	t.Helper()
	q := fmt.Sprintf(`sum(rate(istio_requests_total{destination_workload_namespace=%q,destination_workload=%q,response_code!~"5.*"}[1m])) / sum(rate(istio_requests_total{destination_workload_namespace=%q,destination_workload=%q}[1m])) * 100`,
		e.ns, workload, e.ns, workload)
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if v, ok := promQuery(t, e.lab.PrometheusURL(), q); ok && v < pct {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("success rate of %s never dropped below %v%%", workload, pct)
}

func TestNewRevisionDuringAnalysisRestartsAtZero(t *testing.T) {
	t.Parallel()
	e, _, s := seedSetup(t, "revision", "1s")
	releaseTo(t, e, s, "podinfo", 15)
	e.setImage("podinfo", e.lab.Registry()+"/lab/podinfo:3.0.0")
	stepThrough(t, e, s, "podinfo", time.Second, []observed{
		{Phase: "Progressing", CanaryWeight: 15, Primary: 85, Canary: 15},
		{Phase: "Progressing", Primary: 100},
		{Phase: "Progressing", CanaryWeight: 5, Primary: 95, Canary: 5},
	}, 20)
}

// forceDue makes canaries due now, as if their interval had passed, without waiting for it.
func forceDue(t *testing.T, e *env, names ...string) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: e.lab.RedisAddr()})
	defer rdb.Close()
	makeDue(t, rdb, e.ns, names...)
}

func (s *siskin) view(ns, name string) functions.CanaryView {
	var v functions.CanaryView
	s.get("/api/v1/canaries/"+ns+"/"+name, &v)
	return v
}

func TestConcurrentTicksAdvanceEachCanaryOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "concurrent")
	ex := startExporter(t, e)
	var names []string
	for i := range 5 {
		n := fmt.Sprintf("app%d", i)
		names = append(names, n)
		ex.Set(e.ns, n, traffic.Behaviour{RPS: 20, LatencyMs: 30})
		e.createDeployment(n, e.lab.Registry()+"/lab/"+n+":1.0.0", 1)
		e.apply(seedCanary(t, e.ns, n, "30s"))
	}
	var fleet []*siskin
	for range 3 {
		fleet = append(fleet, startSiskin(t, e.lab, siskinOpts{namespace: e.ns}))
	}
	s := fleet[0]
	advanceAll := func(want string) {
		t.Helper()
		for try := 0; try < 30; try++ {
			forceDue(t, e, names...)
			s.tick(fmt.Sprintf("setup-%d", try))
			done := true
			for _, n := range names {
				if e.observe(n).Phase != want {
					done = false
				}
			}
			if done {
				return
			}
			time.Sleep(300 * time.Millisecond)
		}
		t.Fatalf("canaries never reached %s", want)
	}
	advanceAll("Initialized")
	for _, n := range names {
		e.setImage(n, e.lab.Registry()+"/lab/"+n+":2.0.0")
	}
	advanceAll("Progressing")
	// Wait for the canaries' pods, so the next step is a weight step for each of them.
	for _, n := range names {
		e.waitReady(n)
	}
	before := map[string]functions.CanaryView{}
	for _, n := range names {
		before[n] = s.view(e.ns, n)
	}
	forceDue(t, e, names...)
	var wg sync.WaitGroup
	codes := make([]int, 10)
	for i := range 10 {
		wg.Go(func() {
			// The same delivery, ten times, at three instances.
			codes[i], _ = fleet[i%3].tick("the-same-ping")
		})
	}
	wg.Wait()
	for i, c := range codes {
		if c != http.StatusOK {
			t.Errorf("delivery %d: got %d, want 200", i, c)
		}
	}
	for _, n := range names {
		after := s.view(e.ns, n)
		if after.Steps != before[n].Steps+1 {
			t.Errorf("%s: got %d steps from 10 deliveries, want exactly 1 (was %d)", n, after.Steps-before[n].Steps, before[n].Steps)
		}
		if after.Weight != before[n].Weight+5 {
			t.Errorf("%s: weight went %d -> %d, want one step of 5", n, before[n].Weight, after.Weight)
		}
	}
}

func TestCrashBetweenActAndSave(t *testing.T) {
	t.Parallel()
	crashFile := filepath.Join(t.TempDir(), "crash-now")
	e, _, s := seedSetup(t, "crash", "1s", "SISKIN_TEST_CRASH_FILE="+crashFile)
	releaseTo(t, e, s, "podinfo", 10)

	if err := os.WriteFile(crashFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	forceDue(t, e, "podinfo")
	req, _ := http.NewRequest(http.MethodPost, s.url+"/", nil)
	req.Header.Set("Authorization", "Bearer "+webhookToken)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("the tick answered %d; want the process to die mid-step", resp.StatusCode)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !s.Exited() && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if !s.Exited() {
		t.Fatal("siskin did not exit between act and save")
	}
	got := e.observe("podinfo")
	if got.Primary != 85 || got.Canary != 15 || got.CanaryWeight != 10 {
		t.Fatalf("after the crash: got %v, want the VirtualService acted (85/15) and the status not saved (10)", got)
	}

	// A new instance repairs it after the dead one's lease expires, without a double step.
	s2 := startSiskin(t, e.lab, siskinOpts{namespace: e.ns})
	time.Sleep(3 * time.Second) // SISKIN_LEASE_TTL
	forceDue(t, e, "podinfo")
	if code, body := s2.tick("after-crash"); code != http.StatusOK {
		t.Fatalf("tick: %d %s", code, body)
	}
	got = e.observe("podinfo")
	if want := (observed{Phase: "Progressing", CanaryWeight: 15, Primary: 85, Canary: 15}); got != want {
		t.Errorf("after the repair: got %v, want %v (one step from 10, not two)", got, want)
	}
}

// Not parallel: FLUSHALL takes every other test's state with it (Go runs the tests that are not
// parallel first, alone).
func TestRedisLosesEverythingMidRelease(t *testing.T) {
	e, _, s := seedSetup(t, "flushall", "1s")
	releaseTo(t, e, s, "podinfo", 15)

	rdb := redis.NewClient(&redis.Options{Addr: e.lab.RedisAddr()})
	defer rdb.Close()
	if err := rdb.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	stepThrough(t, e, s, "podinfo", time.Second, []observed{
		{Phase: "Progressing", CanaryWeight: 15, Primary: 85, Canary: 15},
		{Phase: "Progressing", CanaryWeight: 20, Primary: 80, Canary: 20},
	}, 5)
}
