//go:build e2e

// Package e2e drives Siskin end to end against the lab: a real control plane whose pods kwok
// simulates, the real Istio CRDs, real Redis, Prometheus, Alertmanager and registry. It talks
// to Siskin only through HTTP and to the cluster only through the Kubernetes API.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	istioclient "istio.io/client-go/pkg/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/siskin-dev/siskin/test/lab"
)

const (
	webhookToken = "e2e-token"     // the senders'
	apiToken     = "e2e-api-token" // the operators'
)

// tokenFor is the token a request to path carries: the API takes the operators'.
func tokenFor(path string) string {
	if strings.HasPrefix(path, "/api/") {
		return apiToken
	}
	return webhookToken
}

func TestMain(m *testing.M) { lab.Main(m, lab.Options{}) }

var canaryGVR = schema.GroupVersionResource{Group: "flagger.app", Version: "v1beta1", Resource: "canaries"}

// env is one test's view of the lab: admin clients and a namespace of its own.
type env struct {
	t     *testing.T
	lab   *lab.Lab
	kube  kubernetes.Interface
	dyn   dynamic.Interface
	istio istioclient.Interface
	gw    gatewayclient.Interface
	ns    string
}

func newEnv(t *testing.T, ns string) *env {
	t.Helper()
	l := lab.Require(t)
	cfg := l.RESTConfig()
	e := &env{t: t, lab: l, ns: ns,
		kube:  kubernetes.NewForConfigOrDie(cfg),
		dyn:   dynamic.NewForConfigOrDie(cfg),
		istio: istioclient.NewForConfigOrDie(cfg),
		gw:    gatewayclient.NewForConfigOrDie(cfg)}
	ctx := context.Background()
	if ns != "default" {
		_, err := e.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create namespace %s: %v", ns, err)
		}
	}
	return e
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// siskinBinary builds Siskin once per test run.
func siskinBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		dir, err := os.MkdirTemp("", "siskin-e2e-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "siskin")
		cmd := exec.Command("go", "build", "-tags", "testhooks", "-o", binPath, ".")
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// siskin is one running `siskin serve` process.
type siskin struct {
	t    testing.TB
	cmd  *exec.Cmd
	url  string
	logs *bytes.Buffer
	done chan struct{}
	mu   sync.Mutex
}

type siskinOpts struct {
	namespace string
	extraEnv  []string
	extraArgs []string // more `siskin serve` flags; a repeated flag's last value wins
	admin     bool     // use the admin kubeconfig instead of the restricted identity
	// kubeconfig, when set, is the identity to run as (a namespaced ServiceAccount, say).
	kubeconfig string
}

// startSiskin runs `siskin serve` against the lab with the restricted identity, so that a
// missing permission shows up as a failing test.
func startSiskin(t testing.TB, l *lab.Lab, o siskinOpts) *siskin {
	t.Helper()
	kubeconfig := l.SiskinKubeconfig()
	switch {
	case o.admin:
		kubeconfig = l.Kubeconfig()
	case o.kubeconfig != "":
		kubeconfig = o.kubeconfig
	}
	cmd := exec.Command(siskinBinary(t), append([]string{"serve", "--listen", "127.0.0.1:0", "--log-format", "text"}, o.extraArgs...)...)
	cmd.Env = append(os.Environ(),
		"KUBECONFIG="+kubeconfig,
		"REDIS_URL="+l.RedisURL(),
		"PROMETHEUS_URL="+l.PrometheusURL(),
		"SISKIN_WEBHOOK_TOKEN="+webhookToken,
		"SISKIN_API_TOKEN="+apiToken,
		"SISKIN_MIN_INTERVAL=1s",
		"SISKIN_TICK_WINDOW=1ms",
		"SISKIN_LEASE_TTL=3s",
		// The tests tick by hand and expect canaries at rest to be checked at their interval;
		// the event tests set a resync of their own.
		"SISKIN_RESYNC=0s",
		"SISKIN_NAMESPACE="+o.namespace,
		"SISKIN_INSECURE_REGISTRIES="+l.Registry(),
	)
	cmd.Env = append(cmd.Env, o.extraEnv...)
	s := &siskin{t: t, cmd: cmd, logs: &bytes.Buffer{}, done: make(chan struct{})}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = lockedWriter{&s.mu, s.logs}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			if i := strings.Index(line, "listening on "); i >= 0 {
				addr <- strings.TrimSpace(line[i+len("listening on "):])
			}
		}
	}()
	go func() { _ = cmd.Wait(); close(s.done) }()
	select {
	case a := <-addr:
		s.url = "http://" + a
	case <-s.done:
		t.Fatalf("siskin exited at start:\n%s", s.Logs())
	case <-time.After(30 * time.Second):
		t.Fatalf("siskin did not start:\n%s", s.Logs())
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("siskin logs (%s):\n%s", s.url, s.Logs())
		}
	})
	return s
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (s *siskin) Logs() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logs.String()
}

func (s *siskin) Stop() {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// Exited reports whether the process is gone.
func (s *siskin) Exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// post sends a request with the token of its route and returns the status and body.
func (s *siskin) post(path string, headers map[string]string, body []byte) (int, []byte) {
	s.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.url+path, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tokenFor(path))
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// tick delivers a PingSource CloudEvent in binary mode, as Knative does.
func (s *siskin) tick(id string) (int, []byte) {
	return s.post("/", map[string]string{
		"Ce-Specversion": "1.0", "Ce-Id": id, "Ce-Type": "dev.knative.sources.ping",
		"Ce-Source": "/apis/v1/namespaces/siskin-system/pingsources/siskin-tick", "Content-Type": "application/json",
	}, []byte(`{"tick":"advance"}`))
}

func (s *siskin) get(path string, out any) {
	s.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+tokenFor(path))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		s.t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, out); err != nil {
		s.t.Fatalf("GET %s: %v: %s", path, err, b)
	}
}
