//go:build e2e

package chaos

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/siskin-dev/siskin/test/traffic"
)

// A defect the chaos run found, and its fix: a push was claimed in Redis for the whole dedupe
// window before it was acted on, so a process SIGKILLed in between left a claim behind and
// the sender's retry was answered 2xx as a "duplicate": the push was lost. Now the claim lasts
// as long as handling may take, a retry meanwhile is answered 503, and the push is marked done
// only once applied. Here the dead process's claim is written by hand, the push is delivered
// (retried on 503), and the target must come to run it.
func TestPushClaimedByAProcessThatDiedIsNotLost(t *testing.T) {
	c := newCluster(t, "push-loss")
	l := c.lab
	reg := l.Registry()
	ctx := context.Background()
	rds := startRedis(t, l)
	ex := c.exporter("chaos-push-loss")
	ex.Set(c.ns, "app", traffic.Behaviour{RPS: 50, LatencyMs: 40})
	for _, tag := range []string{"1.0.0", "1.1.0"} {
		if err := pushImage(ctx, reg, "lab/app", tag); err != nil {
			t.Fatal(err)
		}
	}
	ref, _ := name.ParseReference(reg+"/lab/app:1.1.0", name.Insecure)
	desc, err := remote.Head(ref, remote.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	c.createCanary("app", reg+"/lab/app:1.0.0", "2s")
	p := newProc(t, l, "siskin-push-loss", siskinEnv(c.ns, l.SiskinKubeconfig(), "redis://"+rds.addr()+"/0", l.PrometheusURL(), reg,
		"SISKIN_TICK_WINDOW=1ms", "SISKIN_RESYNC=0s"))
	rec := c.record()
	defer rec.close()
	client := &http.Client{Timeout: 30 * time.Second}
	for i := 0; rec.phase("app") != "Initialized"; i++ {
		if i > 240 {
			t.Fatal("the canary never Initialized")
		}
		postOnce(ctx, client, p.url()+"/", pingHeaders(fmt.Sprintf("init-%d", i)), []byte(`{}`))
		time.Sleep(500 * time.Millisecond)
	}
	// What a process killed right after its claim leaves in Redis: a claim that runs out.
	key := fmt.Sprintf("siskin:event:push:%s/lab/app:1.1.0@%s:namespace %s", reg, desc.Digest, c.ns)
	if os.Getenv("CHAOS_CONTROL") != "1" { // CHAOS_CONTROL=1: the same without the claim, which passes
		if got, err := rds.command(fmt.Sprintf("SET %q 1 EX 5", key)); err != nil || got != "+OK" {
			t.Fatalf("SET the claim: %q %v", got, err)
		}
	}
	s := sender{client: client, url: p.url()}
	if at, code := s.deliver(ctx, "/?namespace="+c.ns, ceHeaders("push-1.1.0-retry", "dev.siskin.image.pushed.v1", "chaos/ci"), pushEvent(reg, "lab/app", "1.1.0")); at.IsZero() {
		t.Fatalf("push: %d", code)
	}
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		if _, ok := rec.ended("app", "1.1.0"); ok || firstImage(rec.snapshotTargets("app"), "1.1.0", time.Time{}) != (time.Time{}) {
			return
		}
		postOnce(ctx, client, p.url()+"/", pingHeaders(fmt.Sprintf("after-%d", i)), []byte(`{}`))
		time.Sleep(500 * time.Millisecond)
	}
	t.Errorf("the push of 1.1.0 was answered 2xx and the target never ran it (a claim left by a process that died made it a duplicate)")
}
