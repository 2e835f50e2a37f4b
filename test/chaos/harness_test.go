//go:build e2e

package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/siskin-dev/siskin/istio"
	"github.com/siskin-dev/siskin/test/lab"
	"github.com/siskin-dev/siskin/test/traffic"
)

const (
	webhookToken = "chaos-token"
	apiToken     = "chaos-api-token"
)

func TestMain(m *testing.M) { lab.Main(m, lab.Options{}) }

// full: CHAOS_FULL=1 runs the full forms (make chaos); otherwise the short ones (make test).
func full() bool { return os.Getenv("CHAOS_FULL") == "1" }

var canaryGVR = schema.GroupVersionResource{Group: "flagger.app", Version: "v1beta1", Resource: "canaries"}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func repoDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// siskinBinary builds Siskin once per test run.
func siskinBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "siskin-chaos-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "siskin")
		cmd := exec.Command("go", "build", "-o", binPath, ".")
		cmd.Dir = repoDir()
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// proc is one `siskin serve` process on a fixed port, so that it can be killed and come back
// where the balancer expects it.
type proc struct {
	name    string
	port    int
	env     []string
	logPath string

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	starts int
}

func (p *proc) url() string { return "http://127.0.0.1:" + strconv.Itoa(p.port) }

func newProc(t testing.TB, l *lab.Lab, name string, env []string) *proc {
	t.Helper()
	p := &proc{name: name, port: freePort(t), env: env, logPath: filepath.Join(l.Dir(), "logs", name+".log")}
	if err := p.start(t); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.stop)
	return p
}

func (p *proc) start(t testing.TB) error {
	logFile, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logFile, "### %s start\n", time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(siskinBinary(t), "serve", "--listen", "127.0.0.1:"+strconv.Itoa(p.port), "--log-format", "text")
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logFile.Close(); close(done) }()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.starts++
	p.mu.Unlock()
	deadline := time.Now().Add(60 * time.Second)
	client := &http.Client{Timeout: time.Second}
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("%s exited at start; log %s", p.name, p.logPath)
		default:
		}
		if resp, err := client.Get(p.url() + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s did not answer /healthz within 60s; log %s", p.name, p.logPath)
}

// kill is SIGKILL: no shutdown, no drain.
func (p *proc) kill() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

func (p *proc) stop() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	_ = cmd.Process.Signal(os.Interrupt)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// redisServer is a redis-server of the test's own, with its append-only file on, so that a
// kill -9 and a restart replay what it had.
type redisServer struct {
	port int
	dir  string
	log  string
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func startRedis(t testing.TB, l *lab.Lab) *redisServer {
	t.Helper()
	r := &redisServer{port: freePort(t), dir: t.TempDir(), log: filepath.Join(l.Dir(), "logs", "chaos-redis.log")}
	if err := r.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.kill() })
	return r
}

func (r *redisServer) addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

func (r *redisServer) start() error {
	cmd := exec.Command("redis-server", "--bind", "127.0.0.1", "--port", strconv.Itoa(r.port), "--dir", r.dir,
		"--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--protected-mode", "no",
		"--daemonize", "no", "--logfile", r.log)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	r.mu.Lock()
	r.cmd, r.done = cmd, done
	r.mu.Unlock()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", r.addr(), 200*time.Millisecond); err == nil {
			_ = c.SetDeadline(time.Now().Add(time.Second))
			_, _ = io.WriteString(c, "PING\r\n")
			buf := make([]byte, 16)
			n, _ := c.Read(buf)
			c.Close()
			if strings.HasPrefix(string(buf[:n]), "+PONG") {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("redis on %s did not start; log %s", r.addr(), r.log)
}

func (r *redisServer) kill() {
	r.mu.Lock()
	cmd, done := r.cmd, r.done
	r.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Kill()
		<-done
	}
}

// command sends one inline command (FLUSHALL) and returns the first line of the answer.
func (r *redisServer) command(line string) (string, error) {
	c, err := net.DialTimeout("tcp", r.addr(), time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, line+"\r\n"); err != nil {
		return "", err
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	return strings.TrimSpace(string(buf[:n])), err
}

// --- the cluster ---

type cluster struct {
	t    testing.TB
	lab  *lab.Lab
	ns   string
	kube kubernetes.Interface
	dyn  dynamic.Interface
	ist  istioclient.Interface
}

func newCluster(t testing.TB, ns string) *cluster {
	t.Helper()
	l := lab.Require(t)
	cfg := l.RESTConfig()
	c := &cluster{t: t, lab: l, ns: ns, kube: kubernetes.NewForConfigOrDie(cfg), dyn: dynamic.NewForConfigOrDie(cfg), ist: istioclient.NewForConfigOrDie(cfg)}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace %s: %v", ns, err)
	}
	return c
}

// canaryManifest is the seed Canary (knative/testdata/canary-seed.yaml) for name, at the
// interval, with its metrics over 10 s so that a revision's errors are judged within a few
// steps and forgotten soon after.
func (c *cluster) canaryManifest(name, interval string) []byte {
	b, err := os.ReadFile(filepath.Join(repoDir(), "knative", "testdata", "canary-seed.yaml"))
	if err != nil {
		c.t.Fatal(err)
	}
	s := string(b)
	s = strings.Replace(s, "    interval: 1m\n    threshold", "    interval: "+interval+"\n    threshold", 1)
	s = strings.ReplaceAll(s, "        interval: 1m\n", "        interval: 10s\n")
	s = strings.ReplaceAll(s, "        interval: 30s\n", "        interval: 10s\n")
	s = strings.ReplaceAll(s, "namespace: default", "namespace: "+c.ns)
	s = strings.ReplaceAll(s, ".default.svc", "."+c.ns+".svc")
	s = strings.ReplaceAll(s, "podinfo", name)
	return []byte(s)
}

func (c *cluster) createCanary(name, image, interval string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.kube.AppsV1().Deployments(c.ns).Create(ctx, lab.PodinfoDeployment(c.ns, name, image, 1), metav1.CreateOptions{}); err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.lab.Apply(ctx, c.canaryManifest(name, interval)); err != nil {
		c.t.Fatal(err)
	}
}

// exporter serves Istio metrics for the workloads and has Prometheus scrape it.
func (c *cluster) exporter(job string) *traffic.Exporter {
	c.t.Helper()
	ex := traffic.NewExporter(0)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.t.Fatal(err)
	}
	srv := &http.Server{Handler: ex.Handler()}
	go func() { _ = srv.Serve(ln) }()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.lab.AddScrapeTarget(ctx, job, ln.Addr().String()); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = c.lab.RemoveScrapeTarget(ctx, job, ln.Addr().String())
		_ = srv.Close()
		ex.Close()
	})
	return ex
}

// pushImage writes a fresh random image to the lab's registry.
func pushImage(ctx context.Context, reg, repo, tag string) error {
	img, err := random.Image(256, 1)
	if err != nil {
		return err
	}
	ref, err := name.ParseReference(reg+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return remote.Write(ref, img, remote.WithContext(ctx))
}

// --- the recorder: watches of the cluster, the history the checks read ---

type recorder struct {
	mu        sync.Mutex
	weights   map[string][]Weight
	phases    map[string][]Phase
	targets   map[string][]Image
	primaries map[string][]Image
	// restarts counts watches restarted from now after an error (an expired resourceVersion):
	// a write between the error and the new watch would be missed.
	restarts atomic.Int64
	stop     context.CancelFunc
	wg       sync.WaitGroup
}

func (c *cluster) record() *recorder {
	ctx, cancel := context.WithCancel(context.Background())
	r := &recorder{weights: map[string][]Weight{}, phases: map[string][]Phase{}, targets: map[string][]Image{},
		primaries: map[string][]Image{}, stop: cancel}
	watchLoop := func(what string, start func(ctx context.Context, rv string) (watch.Interface, error), on func(ev watch.Event) string) {
		r.wg.Go(func() {
			rv := ""
			for ctx.Err() == nil {
				w, err := start(ctx, rv)
				if err != nil {
					time.Sleep(200 * time.Millisecond)
					continue
				}
				for ev := range w.ResultChan() {
					if ev.Type == watch.Error {
						rv = "" // expired: start again from now; counted, and shown with the figures
						r.restarts.Add(1)
						break
					}
					if next := on(ev); next != "" {
						rv = next
					}
				}
				w.Stop()
			}
		})
	}
	watchLoop("virtualservices", func(ctx context.Context, rv string) (watch.Interface, error) {
		return c.ist.NetworkingV1().VirtualServices(c.ns).Watch(ctx, metav1.ListOptions{ResourceVersion: rv})
	}, func(ev watch.Event) string {
		vs, ok := ev.Object.(*networkingv1.VirtualService)
		if !ok {
			return ""
		}
		if ev.Type != watch.Deleted {
			if w, ok := istio.WeightsOf(vs); ok {
				r.mu.Lock()
				r.weights[vs.Name] = append(r.weights[vs.Name], Weight{At: time.Now(), Canary: w.Canary})
				r.mu.Unlock()
			}
		}
		return vs.ResourceVersion
	})
	watchLoop("canaries", func(ctx context.Context, rv string) (watch.Interface, error) {
		return c.dyn.Resource(canaryGVR).Namespace(c.ns).Watch(ctx, metav1.ListOptions{ResourceVersion: rv})
	}, func(ev watch.Event) string {
		u, ok := ev.Object.(*unstructured.Unstructured)
		if !ok {
			return ""
		}
		phase, _, _ := unstructured.NestedString(u.Object, "status", "phase")
		r.mu.Lock()
		ps := r.phases[u.GetName()]
		if phase != "" && (len(ps) == 0 || ps[len(ps)-1].Phase != phase) {
			r.phases[u.GetName()] = append(ps, Phase{At: time.Now(), Phase: phase})
		}
		r.mu.Unlock()
		return u.GetResourceVersion()
	})
	watchLoop("deployments", func(ctx context.Context, rv string) (watch.Interface, error) {
		return c.kube.AppsV1().Deployments(c.ns).Watch(ctx, metav1.ListOptions{ResourceVersion: rv})
	}, func(ev watch.Event) string {
		d, ok := ev.Object.(*appsv1.Deployment)
		if !ok || len(d.Spec.Template.Spec.Containers) == 0 {
			return ""
		}
		img := d.Spec.Template.Spec.Containers[0].Image
		r.mu.Lock()
		m, n := r.targets, d.Name
		if base, ok := strings.CutSuffix(d.Name, "-primary"); ok {
			m, n = r.primaries, base
		}
		if is := m[n]; len(is) == 0 || is[len(is)-1].Image != img {
			m[n] = append(is, Image{At: time.Now(), Image: img})
		}
		r.mu.Unlock()
		return d.ResourceVersion
	})
	return r
}

func (r *recorder) close() { r.stop(); r.wg.Wait() }

// history copies what was recorded into h.
func (r *recorder) history(h *History) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cp := func(m map[string][]Image) map[string][]Image {
		out := map[string][]Image{}
		for k, v := range m {
			out[k] = append([]Image(nil), v...)
		}
		return out
	}
	h.Weights, h.Phases = map[string][]Weight{}, map[string][]Phase{}
	for k, v := range r.weights {
		h.Weights[k] = append([]Weight(nil), v...)
	}
	for k, v := range r.phases {
		h.Phases[k] = append([]Phase(nil), v...)
	}
	h.Targets, h.Primaries = cp(r.targets), cp(r.primaries)
}

func (r *recorder) snapshotTargets(name string) []Image {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Image(nil), r.targets[name]...)
}

func (r *recorder) phase(name string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ps := r.phases[name]
	if len(ps) == 0 {
		return ""
	}
	return ps[len(ps)-1].Phase
}

func (r *recorder) weight(name string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	ws := r.weights[name]
	if len(ws) == 0 {
		return 0
	}
	return ws[len(ws)-1].Canary
}

// ended reports whether the release of tag on name has ended, and how.
func (r *recorder) ended(name, tag string) (string, bool) {
	r.mu.Lock()
	started := firstImage(r.targets[name], tag, time.Time{})
	ps := append([]Phase(nil), r.phases[name]...)
	r.mu.Unlock()
	if started.IsZero() {
		return "", false
	}
	at, phase := endOf(ps, started)
	return phase, !at.IsZero()
}

// --- events ---

type sender struct {
	client *http.Client
	url    string // the balancer
}

// deliver POSTs until a 2xx (retrying 5xx, 429 and transport errors as Knative's delivery
// does) or until ctx ends; it returns when the first 2xx came, and the last status.
func (s *sender) deliver(ctx context.Context, path string, headers map[string]string, body []byte) (time.Time, int) {
	at, code, _ := s.deliverBody(ctx, path, headers, body)
	return at, code
}

// deliverBody is deliver, with the body of the 2xx.
func (s *sender) deliverBody(ctx context.Context, path string, headers map[string]string, body []byte) (time.Time, int, []byte) {
	last := 0
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url+path, bytes.NewReader(body))
		if err != nil {
			return time.Time{}, 0, nil
		}
		req.Header.Set("Authorization", "Bearer "+webhookToken)
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		resp, err := s.client.Do(req)
		if err == nil {
			answer, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			last = resp.StatusCode
			if resp.StatusCode/100 == 2 {
				return time.Now(), last, answer
			}
			if resp.StatusCode/100 == 4 && resp.StatusCode != http.StatusTooManyRequests {
				return time.Time{}, last, answer
			}
		}
		select {
		case <-ctx.Done():
			return time.Time{}, last, nil
		case <-time.After(min(time.Duration(attempt+1)*300*time.Millisecond, 3*time.Second)):
		}
	}
}

// pushOutcome is the outcome of the first push of a push report ("started", "duplicate", ...).
func pushOutcome(body []byte) string {
	var rep struct {
		Pushes []struct {
			Outcome string `json:"outcome"`
		} `json:"pushes"`
	}
	if json.Unmarshal(body, &rep) != nil || len(rep.Pushes) == 0 {
		return ""
	}
	return rep.Pushes[0].Outcome
}

func ceHeaders(id, typ, source string) map[string]string {
	return map[string]string{"Ce-Specversion": "1.0", "Ce-Id": id, "Ce-Type": typ, "Ce-Source": source, "Content-Type": "application/json"}
}

func pingHeaders(id string) map[string]string {
	return ceHeaders(id, "dev.knative.sources.ping", "/apis/v1/namespaces/siskin-system/pingsources/siskin-tick")
}

func pushEvent(reg, repo, tag string) []byte {
	return fmt.Appendf(nil, `{"registry":%q,"repository":%q,"tag":%q}`, reg, repo, tag)
}

func stepEvent(ns, name string, due time.Time) []byte {
	return fmt.Appendf(nil, `{"namespace":%q,"name":%q,"dueAt":%q}`, ns, name, due.UTC().Format(time.RFC3339Nano))
}

// alertBody is Alertmanager 0.25's captured firing notification, for one alert on a canary.
func alertBody(t testing.TB, ns, canary, fingerprint string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoDir(), "handlers", "testdata", "alertmanager", "alertmanager-0.25-firing.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"alertname": "ChaosAbort", "namespace": ns, "canary": canary, "severity": "critical"}
	a := m["alerts"].([]any)[0].(map[string]any)
	a["status"], a["labels"], a["fingerprint"] = "firing", labels, fingerprint
	a["startsAt"] = time.Now().UTC().Add(-time.Second).Format(time.RFC3339Nano)
	a["annotations"] = map[string]string{"summary": "chaos abort of " + canary}
	m["status"] = "firing"
	m["groupLabels"] = map[string]string{"alertname": "ChaosAbort", "canary": canary}
	m["commonLabels"] = labels
	m["commonAnnotations"] = a["annotations"]
	m["groupKey"] = fmt.Sprintf("{}:{alertname=\"ChaosAbort\", canary=%q}", canary)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// siskinEnv is the environment of the `siskin serve` processes of a run.
func siskinEnv(ns, kubeconfig, redisURL, promURL, registry string, extra ...string) []string {
	return append([]string{
		"KUBECONFIG=" + kubeconfig,
		"REDIS_URL=" + redisURL,
		"PROMETHEUS_URL=" + promURL,
		"SISKIN_WEBHOOK_TOKEN=" + webhookToken,
		"SISKIN_API_TOKEN=" + apiToken,
		"SISKIN_MIN_INTERVAL=1s",
		"SISKIN_LEASE_TTL=3s",
		"SISKIN_NAMESPACE=" + ns,
		"SISKIN_INSECURE_REGISTRIES=" + registry,
		"SISKIN_LOG_LEVEL=info",
	}, extra...)
}

// writeFigures prints the table and writes it to CHAOS_OUT (default: the lab's logs folder).
func writeFigures(t testing.TB, l *lab.Lab, file, title, table string, violations []string) {
	t.Helper()
	dir := os.Getenv("CHAOS_OUT")
	if dir == "" {
		dir = filepath.Join(repoDir(), "chaos-out")
	}
	_ = os.MkdirAll(dir, 0o755)
	var b strings.Builder
	fmt.Fprintf(&b, "## %s\n\n%s\n", title, table)
	if len(violations) > 0 {
		b.WriteString("\nViolations:\n")
		for _, v := range violations {
			b.WriteString("- " + v + "\n")
		}
	}
	path := filepath.Join(dir, file)
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Errorf("write figures: %v", err)
	}
	t.Logf("%s\n(written to %s; Siskin's logs in %s/logs)", b.String(), path, l.Dir())
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }
