//go:build e2e

package chaos

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/siskin-dev/siskin/test/traffic"
)

// A defect the chaos run found, and its fix: when Redis loses a releasing canary's state
// (FLUSHALL, a failover, a restart without persistence), the state rebuilt from the cluster
// had no next-step time, so the very next tick stepped the canary at once. Now the rebuilt
// release waits one interval. Here: a 10 s interval, the step to 5 %, a FLUSHALL, pings every
// half second; the step to 10 % must not come before half an interval.
func TestRedisLossDoesNotStepEarly(t *testing.T) {
	const interval = 10 * time.Second
	c := newCluster(t, "redis-loss")
	l := c.lab
	reg := l.Registry()
	ctx := context.Background()
	rds := startRedis(t, l)
	ex := c.exporter("chaos-redis-loss")
	ex.Set(c.ns, "app", traffic.Behaviour{RPS: 50, LatencyMs: 40})
	ex.Set(c.ns, "app-primary", traffic.Behaviour{RPS: 50, LatencyMs: 40})
	for _, tag := range []string{"1.0.0", "1.1.0"} {
		if err := pushImage(ctx, reg, "lab/app", tag); err != nil {
			t.Fatal(err)
		}
	}
	c.createCanary("app", reg+"/lab/app:1.0.0", interval.String())
	p := newProc(t, l, "siskin-redis-loss", siskinEnv(c.ns, l.SiskinKubeconfig(), "redis://"+rds.addr()+"/0", l.PrometheusURL(), reg,
		"SISKIN_TICK_WINDOW=1ms", "SISKIN_RESYNC=0s"))
	rec := c.record()
	defer rec.close()
	client := &http.Client{Timeout: 30 * time.Second}
	ping := func(i int) { postOnce(ctx, client, p.url()+"/", pingHeaders(fmt.Sprintf("loss-%d", i)), []byte(`{}`)) }
	i := 0
	until := func(what string, timeout time.Duration, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for ; !cond(); i++ {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			ping(i)
			time.Sleep(500 * time.Millisecond)
		}
	}
	until("Initialized", 2*time.Minute, func() bool { return rec.phase("app") == "Initialized" })
	s := sender{client: client, url: p.url()}
	if at, code := s.deliver(ctx, "/?namespace="+c.ns, ceHeaders("push-1.1.0", "dev.siskin.image.pushed.v1", "chaos/ci"), pushEvent(reg, "lab/app", "1.1.0")); at.IsZero() {
		t.Fatalf("push: %d", code)
	}
	until("the step to 5 %", 2*time.Minute, func() bool { return rec.weight("app") == 5 })
	stepped := time.Now()
	if os.Getenv("CHAOS_CONTROL") != "1" { // CHAOS_CONTROL=1: the same without the loss, which passes
		if got, err := rds.command("FLUSHALL"); err != nil || got != "+OK" {
			t.Fatalf("FLUSHALL: %q %v", got, err)
		}
	}
	for time.Since(stepped) < interval/2 {
		ping(i)
		i++
		time.Sleep(500 * time.Millisecond)
	}
	if got := rec.weight("app"); got != 5 {
		t.Errorf("%v after the step to 5 %% (interval %v) and a FLUSHALL: weight %d, want still 5", time.Since(stepped).Round(100*time.Millisecond), interval, got)
	}
}
