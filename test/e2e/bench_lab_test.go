//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/redis/go-redis/v9"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/siskin-dev/siskin/istio"
	"github.com/siskin-dev/siskin/test/lab"
	"github.com/siskin-dev/siskin/test/traffic"
)

// This file holds what the trigger tests and the benchmarks share. The harness's env needs a
// *testing.T; benchmarks have a *testing.B, so labNS is env's testing.TB counterpart.

// labNS is one namespace of the lab with admin clients.
type labNS struct {
	tb    testing.TB
	lab   *lab.Lab
	kube  kubernetes.Interface
	dyn   dynamic.Interface
	istio istioclient.Interface
	ns    string
}

func newLabNS(tb testing.TB, ns string) *labNS {
	tb.Helper()
	l := lab.Require(tb)
	cfg := l.RESTConfig()
	cfg.QPS, cfg.Burst = 200, 400
	n := &labNS{tb: tb, lab: l, ns: ns,
		kube:  kubernetes.NewForConfigOrDie(cfg),
		dyn:   dynamic.NewForConfigOrDie(cfg),
		istio: istioclient.NewForConfigOrDie(cfg)}
	n.create(ns)
	return n
}

// create creates a namespace, deleted again when the test or benchmark ends.
func (n *labNS) create(ns string) {
	n.tb.Helper()
	_, err := n.kube.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil {
		n.tb.Fatalf("create namespace %s: %v", ns, err)
	}
	n.tb.Cleanup(func() { _ = n.kube.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
}

// at is the same clients in another namespace.
func (n *labNS) at(ns string) *labNS {
	c := *n
	c.ns = ns
	return &c
}

func (n *labNS) createDeployment(name, image string, replicas int32) {
	n.tb.Helper()
	if _, err := n.kube.AppsV1().Deployments(n.ns).Create(context.Background(), lab.PodinfoDeployment(n.ns, name, image, replicas), metav1.CreateOptions{}); err != nil {
		n.tb.Fatal(err)
	}
}

func (n *labNS) apply(manifest []byte) {
	n.tb.Helper()
	if _, err := n.lab.Apply(context.Background(), manifest); err != nil {
		n.tb.Fatalf("apply: %v\n%s", err, manifest)
	}
}

// routes reads the VirtualService's primary and canary weights.
func (n *labNS) routes(name string) (primary, canary int) {
	n.tb.Helper()
	vs, err := n.istio.NetworkingV1().VirtualServices(n.ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		n.tb.Fatalf("get VirtualService %s/%s: %v", n.ns, name, err)
	}
	r, ok := istio.WeightsOf(vs)
	if !ok {
		n.tb.Fatalf("VirtualService %s/%s has no primary/canary route", n.ns, name)
	}
	return r.Primary, r.Canary
}

func (n *labNS) image(deployment string) string {
	n.tb.Helper()
	d, err := n.kube.AppsV1().Deployments(n.ns).Get(context.Background(), deployment, metav1.GetOptions{})
	if err != nil {
		n.tb.Fatal(err)
	}
	return d.Spec.Template.Spec.Containers[0].Image
}

// canaryManifest is issue 3's seed Canary for ns/name with the given interval; edit, when not
// nil, rewrites the YAML further (e.g. the step weights).
func canaryManifest(tb testing.TB, ns, name, interval string, edit func(string) string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(repoDir(), "knative", "testdata", "canary-seed.yaml"))
	if err != nil {
		tb.Fatal(err)
	}
	s := string(b)
	s = strings.Replace(s, "    interval: 1m\n    threshold", "    interval: "+interval+"\n    threshold", 1)
	s = strings.ReplaceAll(s, "namespace: default", "namespace: "+ns)
	s = strings.ReplaceAll(s, ".default.svc", "."+ns+".svc")
	s = strings.ReplaceAll(s, "podinfo", name)
	if edit != nil {
		s = edit(s)
	}
	return []byte(s)
}

func repoDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// makeDue is forceDue for any testing.TB. The saved state's due time is the truth and the
// schedule only its index, so both are moved.
func makeDue(tb testing.TB, rdb *redis.Client, ns string, names ...string) {
	tb.Helper()
	ctx := context.Background()
	for _, n := range names {
		stateKey := "siskin:{" + ns + "/" + n + "}:state"
		err := rdb.Watch(ctx, func(tx *redis.Tx) error {
			raw, err := tx.Get(ctx, stateKey).Bytes()
			if errors.Is(err, redis.Nil) {
				return nil
			}
			if err != nil {
				return err
			}
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.UseNumber()
			var st map[string]any
			if err := dec.Decode(&st); err != nil {
				return err
			}
			delete(st, "nextStepAt")
			out, err := json.Marshal(st)
			if err != nil {
				return err
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error { return p.Set(ctx, stateKey, out, 0).Err() })
			return err
		}, stateKey)
		if err != nil && !errors.Is(err, redis.TxFailedErr) {
			tb.Fatal(err)
		}
		if err := rdb.ZAdd(ctx, "{siskin}:due", redis.Z{Score: 0, Member: ns + "/" + n}).Err(); err != nil {
			tb.Fatal(err)
		}
	}
}

// serveTraffic is startExporter for any testing.TB.
func serveTraffic(tb testing.TB, l *lab.Lab, job string) *traffic.Exporter {
	tb.Helper()
	ex := traffic.NewExporter(0)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http.Server{Handler: ex.Handler()}
	go func() { _ = srv.Serve(ln) }()
	if err := l.AddScrapeTarget(context.Background(), job, ln.Addr().String()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = l.RemoveScrapeTarget(context.Background(), job, ln.Addr().String())
		_ = srv.Close()
		ex.Close()
	})
	return ex
}

// pushImage pushes a fresh random image to reg/repo:tag with go-containerregistry and returns
// the image and the digest the registry reports for the tag.
func pushImage(tb testing.TB, reg, repo, tag string) (v1.Image, string) {
	tb.Helper()
	img, err := random.Image(512, 1)
	if err != nil {
		tb.Fatal(err)
	}
	ref, err := name.ParseReference(reg+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := remote.Write(ref, img, remote.WithContext(ctx)); err != nil {
		tb.Fatalf("push %s: %v", ref, err)
	}
	return img, registryDigest(tb, reg+"/"+repo+":"+tag)
}

// registryDigest HEADs a manifest and returns the digest the registry has for it.
func registryDigest(tb testing.TB, ref string) string {
	tb.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	desc, err := remote.Head(r, remote.WithContext(ctx))
	if err != nil {
		tb.Fatalf("HEAD %s: %v", ref, err)
	}
	return desc.Digest.String()
}

func readTestdata(tb testing.TB, parts ...string) map[string]any {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(append([]string{repoDir(), "handlers", "testdata"}, parts...)...))
	if err != nil {
		tb.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		tb.Fatal(err)
	}
	return m
}

// distributionPush is the body a registry 2.8 sends for a tagged manifest push: the captured
// one, with its repository, tag, digest, host and event id replaced.
func distributionPush(tb testing.TB, host, repo, tag, digest, id string) []byte {
	tb.Helper()
	m := readTestdata(tb, "distribution", "registry-2.8.2-push-manifest-oci.json")
	ev := m["events"].([]any)[0].(map[string]any)
	ev["id"] = id
	ev["timestamp"] = time.Now().UTC().Format(time.RFC3339Nano)
	target := ev["target"].(map[string]any)
	target["repository"], target["tag"], target["digest"] = repo, tag, digest
	target["url"] = "http://" + host + "/v2/" + repo + "/manifests/" + digest
	ev["request"].(map[string]any)["host"] = host
	b, err := json.Marshal(m)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// distributionHeaders are the captured registry's headers that matter.
var distributionHeaders = map[string]string{"Content-Type": "application/vnd.docker.distribution.events.v1+json"}

// alertmanagerBody is the body Alertmanager 0.25 sends for one alert: the captured one, with
// its status, labels, fingerprint and group key replaced.
func alertmanagerBody(tb testing.TB, status, fingerprint string, labels map[string]string) []byte {
	tb.Helper()
	m := readTestdata(tb, "alertmanager", "alertmanager-0.25-firing.json")
	a := m["alerts"].([]any)[0].(map[string]any)
	a["status"], a["labels"], a["fingerprint"] = status, labels, fingerprint
	a["startsAt"] = time.Now().UTC().Add(-2 * time.Second).Format(time.RFC3339Nano)
	a["annotations"] = map[string]string{"summary": labels["alertname"] + " on " + labels["canary"]}
	a["generatorURL"] = "http://prometheus.lab/graph?g0.expr=up&g0.tab=1"
	m["status"] = status
	m["groupLabels"] = map[string]string{"alertname": labels["alertname"], "canary": labels["canary"]}
	m["commonLabels"] = labels
	m["commonAnnotations"] = a["annotations"]
	m["groupKey"] = fmt.Sprintf("{}:{alertname=%q, canary=%q}", labels["alertname"], labels["canary"])
	b, err := json.Marshal(m)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// eventCount reads siskin_events_total{kind,outcome} from Siskin's /metrics.
func eventCount(tb testing.TB, s *siskin, kind, outcome string) float64 {
	tb.Helper()
	resp, err := http.Get(s.url + "/metrics")
	if err != nil {
		tb.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "siskin_events_total{") ||
			!strings.Contains(line, `kind="`+kind+`"`) || !strings.Contains(line, `outcome="`+outcome+`"`) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			tb.Fatalf("metrics line %q: %v", line, err)
		}
		return v
	}
	return 0
}

// waitUntil polls cond every 100 ms until it holds or the timeout passes.
func waitUntil(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 2, 64)
}

// latencies are named samples, printed as a Markdown table the README can quote.
type latencies struct {
	names   []string
	samples map[string][]time.Duration
}

func (l *latencies) add(name string, d time.Duration) {
	if l.samples == nil {
		l.samples = map[string][]time.Duration{}
	}
	if _, ok := l.samples[name]; !ok {
		l.names = append(l.names, name)
	}
	l.samples[name] = append(l.samples[name], d)
}

func (l *latencies) p(name string, pct float64) time.Duration {
	return lab.Percentile(l.samples[name], pct)
}

func (l *latencies) table(title string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n%s\n\n| measurement | n | p50 ms | p99 ms | max ms |\n| --- | ---: | ---: | ---: | ---: |\n", title)
	for _, n := range l.names {
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s |\n", n, len(l.samples[n]), ms(l.p(n, 50)), ms(l.p(n, 99)), ms(l.p(n, 100)))
	}
	return b.String()
}
