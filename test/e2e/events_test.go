//go:build e2e

package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"github.com/siskin-dev/siskin/test/lab"
	"github.com/siskin-dev/siskin/test/traffic"
)

// Every change is an event, acted on at once: with the ApiServerSource stand-in and no ping at
// all, a Canary applied is initialised, a `kubectl set image` starts its release, a hand edit
// of the VirtualService is put back, and a deleted Canary is forgotten.
func TestEventsActWithoutAnyPing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "events")
	ctx := context.Background()
	ex := startExporter(t, e)
	ex.Set(e.ns, "podinfo", traffic.Behaviour{RPS: 50, LatencyMs: 40})
	e.createDeployment("podinfo", e.lab.Registry()+"/lab/podinfo:1.0.0", 1)
	s := startSiskin(t, e.lab, siskinOpts{namespace: e.ns, extraEnv: []string{"SISKIN_RESYNC=5m"}})
	src, err := e.lab.StartAPIServerSource(ctx, lab.APIServerSourceOptions{Namespace: e.ns, Sink: s.url + "/", Token: webhookToken})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Stop)

	start := time.Now()
	e.apply(seedCanary(t, e.ns, "podinfo", "1m"))
	waitUntil(t, 60*time.Second, "the Canary Initialized by its events", func() bool { return e.observe("podinfo").Phase == "Initialized" })
	t.Logf("applied -> Initialized in %v, no ping", time.Since(start).Round(10*time.Millisecond))

	start = time.Now()
	e.setImage("podinfo", e.lab.Registry()+"/lab/podinfo:2.0.0")
	waitUntil(t, 30*time.Second, "the release started by the Deployment's event", func() bool { return e.observe("podinfo").Phase == "Progressing" })
	t.Logf("set image -> Progressing in %v, no ping", time.Since(start).Round(10*time.Millisecond))

	// A hand edit of the weights: the VirtualService's event puts it back.
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		vs, err := e.istio.NetworkingV1().VirtualServices(e.ns).Get(ctx, "podinfo", metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, route := range vs.Spec.Http {
			for _, d := range route.Route {
				d.Weight = 50
			}
		}
		_, err = e.istio.NetworkingV1().VirtualServices(e.ns).Update(ctx, vs, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	waitUntil(t, 30*time.Second, "the hand edit put back", func() bool {
		o := e.observe("podinfo")
		return o.Primary == 100 && o.Canary == 0
	})
	t.Logf("hand edit -> corrected in %v, no ping", time.Since(start).Round(10*time.Millisecond))
	if got := e.observe("podinfo"); got.Phase != "Progressing" || got.CanaryWeight != 0 {
		t.Errorf("the correction stepped the release: got %v, want Progressing at 0", got)
	}

	// Deleted: the Canary's event makes Siskin forget it.
	if err := e.dyn.Resource(canaryGVR).Namespace(e.ns).Delete(ctx, "podinfo", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: e.lab.RedisAddr()})
	defer rdb.Close()
	waitUntil(t, 30*time.Second, "the deleted Canary's state forgotten", func() bool {
		n, err := rdb.Exists(ctx, "siskin:{"+e.ns+"/podinfo}:state").Result()
		return err == nil && n == 0
	})
	if _, err := rdb.ZScore(ctx, "{siskin}:due", e.ns+"/podinfo").Result(); err != redis.Nil {
		t.Errorf("the deleted Canary is still scheduled (%v)", err)
	}
	if ok, failed := src.Delivered(); failed > 0 {
		t.Errorf("the stand-in delivered %d events and gave up on %d", ok, failed)
	}
}

// A Secret the target references, changed with the Deployment untouched, is a new revision:
// its event starts the release without any ping. The stand-in sends references only (Reference
// mode), as the bundle's ApiServerSource does, so no Secret data travels.
func TestATrackedSecretChangeStartsAReleaseWithoutAnyPing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "events-config")
	ctx := context.Background()
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "app-secret", Namespace: e.ns}, Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{"token": []byte("one")}}
	if _, err := e.kube.CoreV1().Secrets(e.ns).Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	d := lab.PodinfoDeployment(e.ns, "podinfo", e.lab.Registry()+"/lab/podinfo:1.0.0", 1)
	d.Spec.Template.Spec.Volumes = []corev1.Volume{{Name: "secret", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "app-secret"}}}}
	if _, err := e.kube.AppsV1().Deployments(e.ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	s := startSiskin(t, e.lab, siskinOpts{namespace: e.ns, extraEnv: []string{"SISKIN_RESYNC=5m"}})
	src, err := e.lab.StartAPIServerSource(ctx, lab.APIServerSourceOptions{Namespace: e.ns, Sink: s.url + "/", Token: webhookToken})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Stop)
	e.apply(seedCanary(t, e.ns, "podinfo", "1m"))
	waitUntil(t, 60*time.Second, "the Canary Initialized by its events", func() bool { return e.observe("podinfo").Phase == "Initialized" })

	sec.Data["token"] = []byte("two")
	start := time.Now()
	if _, err := e.kube.CoreV1().Secrets(e.ns).Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "the release started by the Secret's event", func() bool { return e.observe("podinfo").Phase == "Progressing" })
	t.Logf("secret changed -> Progressing in %v, no ping", time.Since(start).Round(10*time.Millisecond))
	if got := s.Logs(); !strings.Contains(got, "New revision detected") {
		t.Errorf("no \"New revision detected\" in the logs:\n%s", got)
	}
}
