//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/siskin-dev/siskin/istio"
	"github.com/siskin-dev/siskin/test/traffic"
)

// The lab tests of the guarantees a review found broken. Each reproduces what the reviewer saw.

// trafficWatch records, from watches of the VirtualService and the target Deployment, every
// moment at which the canary was sent traffic while it had no replicas.
type trafficWatch struct {
	mu        sync.Mutex
	weight    int32
	replicas  int32
	violation []string
	stop      context.CancelFunc
	done      sync.WaitGroup
}

func watchTrafficToScaledDown(t *testing.T, e *env, name string) *trafficWatch {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &trafficWatch{stop: cancel, replicas: 1}
	vsw, err := e.istio.NetworkingV1().VirtualServices(e.ns).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + name})
	if err != nil {
		t.Fatal(err)
	}
	dw, err := e.kube.AppsV1().Deployments(e.ns).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + name})
	if err != nil {
		t.Fatal(err)
	}
	check := func(what string) {
		if w.weight > 0 && w.replicas == 0 {
			w.violation = append(w.violation, fmt.Sprintf("%s: canary weight %d with 0 replicas", what, w.weight))
		}
	}
	w.done.Go(func() {
		for ev := range vsw.ResultChan() {
			vs, ok := ev.Object.(*networkingv1.VirtualService)
			if !ok || ev.Type == watch.Error {
				continue
			}
			if r, ok := istio.WeightsOf(vs); ok {
				w.mu.Lock()
				w.weight = int32(r.Canary)
				check("VirtualService update")
				w.mu.Unlock()
			}
		}
	})
	w.done.Go(func() {
		for ev := range dw.ResultChan() {
			if d, ok := ev.Object.(*appsv1.Deployment); ok && d.Spec.Replicas != nil {
				w.mu.Lock()
				w.replicas = *d.Spec.Replicas
				check("Deployment update")
				w.mu.Unlock()
			}
		}
	})
	t.Cleanup(func() { w.stop(); w.done.Wait() })
	return w
}

func (w *trafficWatch) violations() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.violation...)
}

// The reviewer's interleaving, on the lab: process A's step waits on a slow pre-rollout
// webhook and stalls (SIGSTOP) past its lease; process B takes the canary and rolls it back,
// scaling the canary to zero; A resumes and its webhook answers. A must write nothing: no
// weight may ever send traffic to the scaled-down canary.
func TestStalledStepLosesItsLeaseAndWritesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "lease-stall")
	hooks := newHookRecorder(t)
	hooks.set("/rollback", http.StatusNotFound) // no rollback asked, yet
	ex := startExporter(t, e)
	ex.Set(e.ns, "podinfo", traffic.Behaviour{RPS: 50, LatencyMs: 40})
	e.createDeployment("podinfo", e.lab.Registry()+"/lab/podinfo:1.0.0", 1)
	e.apply(seedCanaryWith(t, e.ns, "podinfo", "1s", fmt.Sprintf(`    webhooks:
      - name: slow-smoke
        type: pre-rollout
        url: %[1]s/pre-rollout
        timeout: 30s
      - name: rollback
        type: rollback
        url: %[1]s/rollback
`, hooks.srv.URL)))
	a := startSiskin(t, e.lab, siskinOpts{namespace: e.ns})
	b := startSiskin(t, e.lab, siskinOpts{namespace: e.ns})
	stepThrough(t, e, a, "podinfo", time.Second, []observed{{Phase: "Initializing"}, {Phase: "Initialized", Primary: 100}}, 20)
	e.setImage("podinfo", e.lab.Registry()+"/lab/podinfo:2.0.0")
	stepThrough(t, e, a, "podinfo", time.Second, []observed{{Phase: "Initialized", Primary: 100}, {Phase: "Progressing", Primary: 100}}, 20)
	e.waitReady("podinfo")
	watcher := watchTrafficToScaledDown(t, e, "podinfo")

	hooks.holdCalls("/pre-rollout")
	called := make(chan struct{}, 1)
	hooks.mu.Lock()
	hooks.onCall = func(c hookCall) {
		if c.Path == "/pre-rollout" {
			select {
			case called <- struct{}{}:
			default:
			}
		}
	}
	hooks.mu.Unlock()
	forceDue(t, e, "podinfo")
	stepA := make(chan int, 1)
	go func() { code, _ := a.tick("stall-a"); stepA <- code }()
	select {
	case <-called:
	case <-time.After(30 * time.Second):
		t.Fatal("A's step never called the pre-rollout webhook")
	}
	if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	defer func() {
		if !resumed {
			_ = a.cmd.Process.Signal(syscall.SIGCONT)
		}
	}()
	time.Sleep(4 * time.Second) // past the lab's 3 s lease

	hooks.set("/rollback", http.StatusOK)
	forceDue(t, e, "podinfo")
	if code, body := b.tick("stall-b"); code != http.StatusOK {
		t.Fatalf("B's tick: %d %s", code, body)
	}
	if got := e.observe("podinfo"); got.Phase != "Failed" || got.Primary != 100 {
		t.Fatalf("after B's rollback: got %v, want Failed at 100/0", got)
	}
	waitUntil(t, 30*time.Second, "the canary scaled to zero", func() bool { _, r := e.deployment("podinfo"); return r == 0 })

	hooks.mu.Lock()
	close(hooks.hold["/pre-rollout"])
	delete(hooks.hold, "/pre-rollout")
	hooks.mu.Unlock()
	if err := a.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	resumed = true
	select {
	case code := <-stepA:
		t.Logf("A's tick answered %d", code)
	case <-time.After(30 * time.Second):
		t.Fatal("A's tick never answered")
	}
	time.Sleep(time.Second) // anything A still had to write would land by now
	if got := e.observe("podinfo"); got.Phase != "Failed" || got.Primary != 100 || got.Canary != 0 {
		t.Errorf("after A resumed: got %v, want Failed at 100/0", got)
	}
	if v := watcher.violations(); len(v) > 0 {
		t.Errorf("traffic went to a scaled-down canary: %v", v)
	}
	if logs := a.Logs(); !strings.Contains(logs, "lease lost") {
		t.Errorf("A's logs do not say it lost its lease:\n%s", logs)
	}
}

// A second `kubectl set image` lands while the last step of an analysis waits on its
// confirm-promotion gate. The primary must never run the revision that no check saw: the
// analysis restarts on it, and only once that analysis passes does it reach the primary.
func TestUnanalysedRevisionNeverReachesThePrimary(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "unanalysed")
	hooks := newHookRecorder(t)
	ex := startExporter(t, e)
	ex.Set(e.ns, "podinfo", traffic.Behaviour{RPS: 50, LatencyMs: 40})
	reg := e.lab.Registry()
	e.createDeployment("podinfo", reg+"/lab/podinfo:1.0.0", 1)
	e.apply(seedCanaryWith(t, e.ns, "podinfo", "1s", fmt.Sprintf(`    webhooks:
      - name: promotion
        type: confirm-promotion
        url: %s/promotion
`, hooks.srv.URL), func(s string) string {
		return strings.NewReplacer("maxWeight: 50", "maxWeight: 10", "stepWeight: 5", "stepWeight: 10").Replace(s)
	}))
	s := startSiskin(t, e.lab, siskinOpts{namespace: e.ns})

	var (
		mu        sync.Mutex
		primaries []string
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pw, err := e.kube.AppsV1().Deployments(e.ns).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=podinfo-primary"})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for ev := range pw.ResultChan() {
			if d, ok := ev.Object.(*appsv1.Deployment); ok {
				img := d.Spec.Template.Spec.Containers[0].Image
				mu.Lock()
				if len(primaries) == 0 || primaries[len(primaries)-1] != img {
					primaries = append(primaries, img)
				}
				mu.Unlock()
			}
		}
	}()

	stepThrough(t, e, s, "podinfo", time.Second, []observed{{Phase: "Initializing"}, {Phase: "Initialized", Primary: 100}}, 20)
	e.setImage("podinfo", reg+"/lab/podinfo:2.0.0")
	var once sync.Once
	hooks.mu.Lock()
	hooks.onCall = func(c hookCall) {
		if c.Path == "/promotion" {
			once.Do(func() { e.setImage("podinfo", reg+"/lab/podinfo:3.0.0") })
		}
	}
	hooks.mu.Unlock()
	stepThrough(t, e, s, "podinfo", time.Second, []observed{
		{Phase: "Initialized", Primary: 100},
		{Phase: "Progressing", Primary: 100},
		{Phase: "Progressing", CanaryWeight: 10, Primary: 90, Canary: 10},
		// The promotion step: the gate changed the target, so the analysis restarts.
		{Phase: "Progressing", Primary: 100},
	}, 40)
	if img, _ := e.deployment("podinfo-primary"); img != reg+"/lab/podinfo:1.0.0" {
		t.Fatalf("primary runs %s right after the target changed under the promotion, want 1.0.0", img)
	}
	if e.countEvents("podinfo", "New revision detected! Restarting analysis") == 0 {
		t.Errorf("no Event says the analysis restarted")
	}
	stepThrough(t, e, s, "podinfo", time.Second, []observed{
		{Phase: "Progressing", Primary: 100},
		{Phase: "Progressing", CanaryWeight: 10, Primary: 90, Canary: 10},
		{Phase: "Promoting", CanaryWeight: 10, Primary: 90, Canary: 10},
		{Phase: "Finalising", Primary: 100},
		{Phase: "Succeeded", Primary: 100},
	}, 60)
	mu.Lock()
	defer mu.Unlock()
	for _, img := range primaries {
		if strings.HasSuffix(img, ":2.0.0") {
			t.Errorf("the primary ran %s, a revision whose analysis never finished; primary images: %v", img, primaries)
		}
	}
	if last := primaries[len(primaries)-1]; last != reg+"/lab/podinfo:3.0.0" {
		t.Errorf("primary ends on %s, want the analysed 3.0.0", last)
	}
}

// The reviewer's observation: right after a release's first step to 5 % (interval 1m), sixteen
// ApiServerSource update events for the target (five copies of one event and three others, each
// sent to two processes) moved the weight to 10 % within 3 s. They must not step it at all.
func TestDeploymentEventsDoNotStepAReleaseEarly(t *testing.T) {
	t.Parallel()
	e, _, a := seedSetup(t, "deploy-events", "1m")
	b := startSiskin(t, e.lab, siskinOpts{namespace: e.ns})
	stepThrough(t, e, a, "podinfo", time.Second, []observed{{Phase: "Initializing"}, {Phase: "Initialized", Primary: 100}}, 20)
	e.setImage("podinfo", e.lab.Registry()+"/lab/podinfo:2.0.0")
	forceDue(t, e, "podinfo")
	stepThrough(t, e, a, "podinfo", time.Second, []observed{{Phase: "Initialized", Primary: 100}, {Phase: "Progressing", Primary: 100}}, 20)
	e.waitReady("podinfo")
	forceDue(t, e, "podinfo")
	stepThrough(t, e, a, "podinfo", 500*time.Millisecond, []observed{{Phase: "Progressing", Primary: 100},
		{Phase: "Progressing", CanaryWeight: 5, Primary: 95, Canary: 5}}, 20)

	ids := []string{"ev-1", "ev-1", "ev-2", "ev-1", "ev-3", "ev-1", "ev-4", "ev-1"}
	var wg sync.WaitGroup
	for i, id := range ids {
		for _, s := range []*siskin{a, b} {
			wg.Go(func() {
				for attempt := 0; attempt < 20; attempt++ {
					code, _ := s.post("/", apiServerEventHeaders(id, i), apiServerRefBody(e.ns, "podinfo"))
					if code < 500 {
						return
					}
					time.Sleep(100 * time.Millisecond) // ApiServerSource retries a 5xx
				}
			})
		}
	}
	wg.Wait()
	if got := e.observe("podinfo"); got.CanaryWeight != 5 || got.Canary != 5 {
		t.Errorf("after 16 Deployment events within the interval: got %v, want still at 5 %%", got)
	}

	// A new revision is different: it restarts the analysis at once, exactly once.
	e.setImage("podinfo", e.lab.Registry()+"/lab/podinfo:3.0.0")
	for i, id := range ids {
		for _, s := range []*siskin{a, b} {
			wg.Go(func() {
				for attempt := 0; attempt < 20; attempt++ {
					code, _ := s.post("/", apiServerEventHeaders("rollout-"+id, i), apiServerRefBody(e.ns, "podinfo"))
					if code < 500 {
						return
					}
					time.Sleep(100 * time.Millisecond)
				}
			})
		}
	}
	wg.Wait()
	if got := e.observe("podinfo"); got.Phase != "Progressing" || got.CanaryWeight != 0 || got.Primary != 100 {
		t.Errorf("after the events of a new revision: got %v, want the analysis restarted at 100/0", got)
	}
	if n := e.countEvents("podinfo", "New revision detected! Restarting analysis"); n != 1 {
		t.Errorf("got %d restarts, want exactly 1", n)
	}
}

// apiServerEventHeaders are the binary-mode attributes an ApiServerSource in Reference mode
// sends for a Deployment update.
func apiServerEventHeaders(id string, i int) map[string]string {
	return map[string]string{
		"Ce-Specversion": "1.0", "Ce-Id": id, "Ce-Type": "dev.knative.apiserver.ref.update",
		"Ce-Source": "https://10.96.0.1:443", "Ce-Subject": fmt.Sprintf("/apis/apps/v1/namespaces/x/deployments/podinfo#%d", i),
		"Content-Type": "application/json",
	}
}

func apiServerRefBody(ns, name string) []byte {
	return fmt.Appendf(nil, `{"kind":"Deployment","namespace":%q,"name":%q,"apiVersion":"apps/v1"}`, ns, name)
}

// seedCanaryWith is the seed Canary with webhooks under its analysis, and any edits.
func seedCanaryWith(t *testing.T, ns, name, interval, webhooks string, edits ...func(string) string) []byte {
	t.Helper()
	s := string(seedCanary(t, ns, name, interval))
	s = strings.Replace(s, "    metrics:\n", webhooks+"    metrics:\n", 1)
	for _, edit := range edits {
		s = edit(s)
	}
	return []byte(s)
}

// countEvents sums the counts of the canary's Events whose message contains msg.
func (e *env) countEvents(name, msg string) int32 {
	e.t.Helper()
	list, err := e.kube.CoreV1().Events(e.ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	var n int32
	for _, ev := range list.Items {
		if ev.InvolvedObject.Kind == "Canary" && ev.InvolvedObject.Name == name && strings.Contains(ev.Message, msg) {
			n += max(ev.Count, 1)
		}
	}
	return n
}

// Anyone who may write a Canary names the URLs Siskin calls. A webhook on the cloud metadata
// address is refused before any connection is made, and the check fails saying why.
func TestWebhookToTheMetadataAddressIsRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "egress")
	ex := startExporter(t, e)
	ex.Set(e.ns, "podinfo", traffic.Behaviour{RPS: 50, LatencyMs: 40})
	e.createDeployment("podinfo", e.lab.Registry()+"/lab/podinfo:1.0.0", 1)
	e.apply(seedCanaryWith(t, e.ns, "podinfo", "1s", `    webhooks:
      - name: steal-credentials
        type: pre-rollout
        url: http://169.254.169.254/latest/meta-data/iam/security-credentials/
`))
	s := startSiskin(t, e.lab, siskinOpts{namespace: e.ns})
	stepThrough(t, e, s, "podinfo", time.Second, []observed{{Phase: "Initializing"}, {Phase: "Initialized", Primary: 100}}, 20)
	e.setImage("podinfo", e.lab.Registry()+"/lab/podinfo:2.0.0")
	stepThrough(t, e, s, "podinfo", time.Second, []observed{{Phase: "Initialized", Primary: 100}, {Phase: "Progressing", Primary: 100},
		{Phase: "Progressing", FailedChecks: 1, Primary: 100}}, 30)
	if n := e.countEvents("podinfo", "egress denied: 169.254.169.254 is a link-local or metadata address"); n == 0 {
		t.Errorf("no Event says the metadata address was refused; events: %v", e.canaryEvents("podinfo"))
	}
}

// An abort acknowledged just before Redis loses it: restarted without persistence (all gone),
// or failed over to a replica that never got the abort's save (the release still in flight).
// Either way the next steps keep the release aborted, from the Canary's status.
func TestAbortSurvivesRedisLosingIt(t *testing.T) {
	t.Parallel()
	e, _, s := seedSetup(t, "abort-durable", "1s")
	releaseTo(t, e, s, "podinfo", 10)
	rdb := redis.NewClient(&redis.Options{Addr: e.lab.RedisAddr()})
	defer rdb.Close()
	ctx := context.Background()
	stateKey := "siskin:{" + e.ns + "/podinfo}:state"
	before, err := rdb.Get(ctx, stateKey).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if code, body := s.post("/api/v1/canaries/"+e.ns+"/podinfo/abort?reason=bad+release", nil, nil); code != http.StatusOK {
		t.Fatalf("abort: %d %s", code, body)
	}
	for _, loss := range []struct {
		name string
		lose func() error
	}{
		{"failed over to a replica without the abort", func() error { return rdb.Set(ctx, stateKey, before, 0).Err() }},
		// Everything Redis held for this canary (a FLUSHALL would take the other tests' state,
		// which run alongside; TestRedisLosesEverythingMidRelease runs one alone).
		{"restarted without persistence", func() error {
			k := e.ns + "/podinfo"
			return errors.Join(rdb.Del(ctx, stateKey, "siskin:{"+k+"}:lease").Err(),
				rdb.ZRem(ctx, "{siskin}:due", k).Err(), rdb.ZRem(ctx, "{siskin}:due:releasing", k).Err())
		}},
	} {
		if err := loss.lose(); err != nil {
			t.Fatal(err)
		}
		for step := range 3 {
			forceDue(t, e, "podinfo")
			if code, body := s.tick(fmt.Sprintf("after-loss-%s-%d", loss.name, step)); code != http.StatusOK {
				t.Fatalf("%s: tick: %d %s", loss.name, code, body)
			}
			if got := e.observe("podinfo"); got.Phase != "Failed" || got.Primary != 100 || got.Canary != 0 {
				t.Fatalf("%s, step %d: got %v, want the release still aborted (Failed at 100/0)", loss.name, step, got)
			}
		}
	}
	if _, replicas := e.deployment("podinfo"); replicas != 0 {
		t.Errorf("the aborted canary has %d replicas, want 0", replicas)
	}
}

// The namespaced install (knative/overlays/namespaced): Siskin as a ServiceAccount whose only
// grants are the overlay's Role in one namespace runs a whole release there, and can touch
// nothing elsewhere.
func TestNamespacedIdentityRunsARelease(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "namespaced")
	ctx := context.Background()
	ex := startExporter(t, e)
	ex.Set(e.ns, "podinfo", traffic.Behaviour{RPS: 50, LatencyMs: 40})
	e.createDeployment("podinfo", e.lab.Registry()+"/lab/podinfo:1.0.0", 1)
	e.apply(seedCanary(t, e.ns, "podinfo", "1s"))

	if _, err := e.kube.CoreV1().ServiceAccounts(e.ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "siskin"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	role, err := os.ReadFile(filepath.Join(repoDir(), "knative", "overlays", "namespaced", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// The overlay's Role, for this namespace, bound to the test's ServiceAccount.
	e.apply([]byte(strings.NewReplacer("namespace: apps", "namespace: "+e.ns, "namespace: siskin-system", "namespace: "+e.ns).Replace(string(role))))
	tr, err := e.kube.CoreV1().ServiceAccounts(e.ns).CreateToken(ctx, "siskin", &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptrTo(int64(3600))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := e.lab.KubeconfigForToken("siskin-namespaced", tr.Status.Token)
	if err != nil {
		t.Fatal(err)
	}
	s := startSiskin(t, e.lab, siskinOpts{namespace: e.ns, kubeconfig: kubeconfig})

	stepThrough(t, e, s, "podinfo", time.Second, []observed{{Phase: "Initializing"}, {Phase: "Initialized", Primary: 100}}, 20)
	e.setImage("podinfo", e.lab.Registry()+"/lab/podinfo:1.1.0")
	want := []observed{{Phase: "Initialized", Primary: 100}, {Phase: "Progressing", Primary: 100}}
	for w := int64(5); w <= 50; w += 5 {
		want = append(want, observed{Phase: "Progressing", CanaryWeight: w, Primary: int32(100 - w), Canary: int32(w)})
	}
	want = append(want, observed{Phase: "Promoting", CanaryWeight: 50, Primary: 50, Canary: 50},
		observed{Phase: "Finalising", Primary: 100}, observed{Phase: "Succeeded", Primary: 100})
	stepThrough(t, e, s, "podinfo", time.Second, want, 60)
	if img, _ := e.deployment("podinfo-primary"); img != e.lab.Registry()+"/lab/podinfo:1.1.0" {
		t.Errorf("primary runs %s, want the new image", img)
	}
	if logs := s.Logs(); strings.Contains(logs, "forbidden") {
		t.Errorf("Siskin was refused something it needs:\n%s", logs)
	}

	cfg := e.lab.RESTConfig()
	cfg.CertData, cfg.KeyData, cfg.BearerToken = nil, nil, tr.Status.Token
	as := kubernetes.NewForConfigOrDie(cfg)
	for _, probe := range []struct {
		what string
		call func() error
	}{
		{"list Deployments in another namespace", func() error {
			_, err := as.AppsV1().Deployments("default").List(ctx, metav1.ListOptions{})
			return err
		}},
		{"list Secrets in its own namespace", func() error {
			_, err := as.CoreV1().Secrets(e.ns).List(ctx, metav1.ListOptions{})
			return err
		}},
		{"delete a Deployment", func() error {
			return as.AppsV1().Deployments(e.ns).Delete(ctx, "podinfo", metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}})
		}},
	} {
		if err := probe.call(); !apierrors.IsForbidden(err) {
			t.Errorf("%s: got %v, want Forbidden", probe.what, err)
		}
	}
}
