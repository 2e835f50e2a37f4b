// Package lab starts a real Kubernetes control plane and the servers Siskin talks to, all on
// 127.0.0.1 with free ports, in a folder of its own: etcd, kube-apiserver (RBAC),
// kube-controller-manager, kube-scheduler, kwok with one simulated node (pods are simulated,
// everything else is real), the Istio and flagger.app CRDs, redis-server, Prometheus,
// Alertmanager and a container registry. Tests start it from TestMain with Main; the shell
// starts it with labctl (make lab-up).
package lab

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/rest"
)

// Options configure a lab. The zero value is a lab in a new temporary folder, with the
// binaries built (or found cached) by test/lab/build.sh.
type Options struct {
	// Dir is the lab's folder (configs, data, logs). Empty: a new temporary folder.
	Dir string
	// KeepDir keeps the folder after Stop, for reading the logs.
	KeepDir bool
	// BinDir holds etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok and
	// kwok-stages.yaml. Empty: $SISKIN_LAB_BIN, else the folder test/lab/build.sh prints.
	BinDir string
	// RepoRoot is the Siskin checkout whose knative/ manifests are loaded. Empty: found
	// upwards from the working directory.
	RepoRoot string
	// Logger receives progress. Nil: discarded.
	Logger *slog.Logger
	// ReadyTimeout bounds the wait for each component. Zero: 90 s.
	ReadyTimeout time.Duration
}

// Timing is when one component became ready, counted from the start of Start.
type Timing struct {
	Component string
	Ready     time.Duration
}

// Lab is a running lab. Its methods are safe for concurrent use.
type Lab struct {
	log     *slog.Logger
	dir     string
	keepDir bool
	bin     string
	root    string
	timeout time.Duration
	began   time.Time
	pki     *pki
	ports   ports

	adminKubeconfig  string
	siskinKubeconfig string
	admin            *rest.Config
	siskin           *rest.Config
	apiClient        *http.Client // admin identity, for /readyz

	applyMu sync.Mutex
	apply   *applier

	mu       sync.Mutex
	procs    map[string]*process
	timings  []Timing
	warnings []string
	stopped  bool

	servicesMu    sync.Mutex // serialises the runtime reconfiguration of the servers below
	scrapeTargets map[string][]string
	webhookURL    string
	webhookToken  string
	notifyURL     string
	notifyToken   string
}

type ports struct {
	etcd, etcdPeer, apiserver, controllerManager, scheduler int
	redis, prometheus, alertmanager, registry               int
}

// Start starts every component and returns once all are ready. On error, whatever was started
// is stopped again.
func Start(ctx context.Context, opts Options) (_ *Lab, err error) {
	l := &Lab{
		log:           opts.Logger,
		keepDir:       opts.KeepDir,
		timeout:       opts.ReadyTimeout,
		began:         time.Now(),
		procs:         map[string]*process{},
		scrapeTargets: map[string][]string{},
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	if l.timeout == 0 {
		l.timeout = 90 * time.Second
	}
	defer func() {
		if err != nil {
			if l.dir == "" {
				err = fmt.Errorf("start lab: %w", err)
				return
			}
			l.keepDir = true // the logs explain the failure
			if stopErr := l.Stop(); stopErr != nil {
				err = errors.Join(err, stopErr)
			}
			err = fmt.Errorf("start lab (logs in %s): %w", l.dir, err)
		}
	}()

	if l.root, err = repoRoot(opts.RepoRoot); err != nil {
		return nil, err
	}
	if l.bin, err = binDir(ctx, opts.BinDir, l.root); err != nil {
		return nil, err
	}
	if err := checkBinaries(l.bin); err != nil {
		return nil, err
	}
	l.dir = opts.Dir
	if l.dir == "" {
		if l.dir, err = os.MkdirTemp("", "siskin-lab-"); err != nil {
			return nil, fmt.Errorf("create lab dir: %w", err)
		}
	} else if err := os.MkdirAll(l.dir, 0o755); err != nil {
		return nil, fmt.Errorf("create lab dir: %w", err)
	}
	l.log.Info("starting lab", "dir", l.dir, "bin", l.bin)

	free, err := freePorts(9)
	if err != nil {
		return nil, err
	}
	l.ports = ports{free[0], free[1], free[2], free[3], free[4], free[5], free[6], free[7], free[8]}
	if l.pki, err = newPKI(filepath.Join(l.dir, "pki")); err != nil {
		return nil, err
	}
	if err := l.writeKubeconfigs(); err != nil {
		return nil, err
	}
	if err := l.writeServiceConfigs(); err != nil {
		return nil, err
	}

	// Everything that does not need the apiserver starts at once, next to etcd.
	starts := []func() error{l.startEtcd, l.startRedis, l.startPrometheus, l.startAlertmanager, l.startRegistry}
	for _, start := range starts {
		if err := start(); err != nil {
			return nil, err
		}
	}
	var g errgroup.Group
	g.Go(func() error { return l.waitRedis(ctx) })
	g.Go(func() error { return l.waitPrometheus(ctx) })
	g.Go(func() error { return l.waitAlertmanager(ctx) })
	g.Go(func() error { return l.waitRegistry(ctx) })
	g.Go(func() error { return l.startKubernetes(ctx) })
	if err := g.Wait(); err != nil {
		return nil, err
	}
	l.ready("lab")
	return l, nil
}

// Stop stops every process, kube-apiserver before etcd, checks that none is left and removes
// the folder unless Options.KeepDir. It may be called more than once.
func (l *Lab) Stop() error {
	l.servicesMu.Lock() // waits for a registry restart in flight
	defer l.servicesMu.Unlock()
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return nil
	}
	l.stopped = true
	procs := make(map[string]*process, len(l.procs))
	for name, p := range l.procs {
		procs[name] = p
	}
	l.mu.Unlock()

	var errs []error
	stopAll := func(grace time.Duration, names ...string) {
		var g errgroup.Group
		for _, name := range names {
			if p := procs[name]; p != nil {
				g.Go(func() error { return p.stop(grace) })
			}
		}
		if err := g.Wait(); err != nil {
			errs = append(errs, err)
		}
	}
	stopAll(5*time.Second, "kwok", "kube-scheduler", "kube-controller-manager", "redis", "prometheus", "alertmanager", "registry")
	stopAll(10*time.Second, "kube-apiserver")
	stopAll(5*time.Second, "etcd")
	if len(errs) == 0 && !l.keepDir && l.dir != "" {
		if err := os.RemoveAll(l.dir); err != nil {
			errs = append(errs, fmt.Errorf("remove lab dir: %w", err))
		}
	}
	l.log.Info("lab stopped", "dir", l.dir, "kept", l.keepDir)
	return errors.Join(errs...)
}

// Dir is the lab's folder; logs are in Dir()/logs.
func (l *Lab) Dir() string { return l.dir }

// Kubeconfig is the admin kubeconfig (system:masters).
func (l *Lab) Kubeconfig() string { return l.adminKubeconfig }

// SiskinKubeconfig is the kubeconfig of the restricted identity (user "siskin", bound to the
// ClusterRole "siskin" from knative/rbac.yaml).
func (l *Lab) SiskinKubeconfig() string { return l.siskinKubeconfig }

// RESTConfig returns a copy of the admin client config.
func (l *Lab) RESTConfig() *rest.Config { return rest.CopyConfig(l.admin) }

// SiskinRESTConfig returns a copy of the restricted identity's client config.
func (l *Lab) SiskinRESTConfig() *rest.Config { return rest.CopyConfig(l.siskin) }

// APIServerURL is the https URL of kube-apiserver.
func (l *Lab) APIServerURL() string { return "https://127.0.0.1:" + strconv.Itoa(l.ports.apiserver) }

// RedisAddr is host:port of redis-server.
func (l *Lab) RedisAddr() string { return hostport(l.ports.redis) }

// RedisURL is redis://host:port/0.
func (l *Lab) RedisURL() string { return "redis://" + l.RedisAddr() + "/0" }

// PrometheusURL is Prometheus' base URL.
func (l *Lab) PrometheusURL() string { return "http://" + hostport(l.ports.prometheus) }

// AlertmanagerURL is Alertmanager's base URL.
func (l *Lab) AlertmanagerURL() string { return "http://" + hostport(l.ports.alertmanager) }

// Registry is host:port of the container registry (plain HTTP).
func (l *Lab) Registry() string { return hostport(l.ports.registry) }

// Env is the lab as environment variables, KEY=VALUE.
func (l *Lab) Env() []string {
	return []string{
		"KUBECONFIG=" + l.adminKubeconfig,
		"SISKIN_KUBECONFIG=" + l.siskinKubeconfig,
		"REDIS_URL=" + l.RedisURL(),
		"PROMETHEUS_URL=" + l.PrometheusURL(),
		"ALERTMANAGER_URL=" + l.AlertmanagerURL(),
		"REGISTRY=" + l.Registry(),
		"LAB_DIR=" + l.dir,
	}
}

// Timings lists when each component became ready, in that order.
func (l *Lab) Timings() []Timing {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Timing(nil), l.timings...)
}

// Warnings lists what the lab could not load but started without (for example knative/
// manifests not written yet).
func (l *Lab) Warnings() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.warnings...)
}

// PIDs are the lab's server processes, by component.
func (l *Lab) PIDs() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	pids := map[string]int{}
	for name, p := range l.procs {
		pids[name] = p.pid()
	}
	return pids
}

func (l *Lab) spawn(name, bin string, args ...string) (*process, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return nil, fmt.Errorf("start %s: lab is stopping", name)
	}
	p, err := spawn(l.dir, name, bin, args...)
	if err != nil {
		return nil, err
	}
	l.procs[name] = p
	return p, nil
}

func (l *Lab) proc(name string) *process {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.procs[name]
}

func (l *Lab) ready(component string) {
	d := time.Since(l.began)
	l.mu.Lock()
	l.timings = append(l.timings, Timing{Component: component, Ready: d})
	l.mu.Unlock()
	l.log.Info("ready", "component", component, "after", d.Round(time.Millisecond))
}

func (l *Lab) warn(msg string) {
	l.mu.Lock()
	l.warnings = append(l.warnings, msg)
	l.mu.Unlock()
	l.log.Warn(msg)
}

// waitFor polls check until it succeeds, p exits, ctx ends or the lab's timeout passes.
func (l *Lab) waitFor(ctx context.Context, p *process, component string, check func(ctx context.Context) error) error {
	deadline := time.Now().Add(l.timeout)
	for {
		if gone, _ := p.exited(); gone {
			return p.failure(errors.New("exited before ready"))
		}
		attempt, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := check(attempt)
		cancel()
		if err == nil {
			l.ready(component)
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", component, ctx.Err())
		}
		if time.Now().After(deadline) {
			return p.failure(fmt.Errorf("not ready after %s: %w", l.timeout, err))
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// httpOK is a check that GET url answers 200.
func httpOK(client *http.Client, url string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
		}
		return nil
	}
}

// plainClient talks to the plain-HTTP servers; every request has its own context deadline.
var plainClient = &http.Client{}

// insecureClient talks to the components' self-signed health endpoints.
var insecureClient = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}

func (l *Lab) newAPIClient() (*http.Client, error) {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(l.pki.caPEM)
	cert, err := tls.X509KeyPair(l.pki.adminCertPEM, l.pki.adminKeyPEM)
	if err != nil {
		return nil, fmt.Errorf("load admin certificate: %w", err)
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}}, nil
}

func hostport(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// freePorts reserves n distinct free ports on 127.0.0.1 (all listeners open at once, so they
// differ) and releases them for the servers to bind.
func freePorts(n int) ([]int, error) {
	var listeners []net.Listener
	defer func() {
		for _, ln := range listeners {
			ln.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		listeners = append(listeners, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// RepoRoot finds the Siskin checkout upwards from the working directory, as a lab does.
func RepoRoot() (string, error) { return repoRoot("") }

// repoRoot finds the Siskin checkout: explicit, else upwards from the working directory.
func repoRoot(explicit string) (string, error) {
	if explicit != "" {
		return filepath.Abs(explicit)
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find repository root: %w", err)
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil &&
			strings.Contains(string(b), "module github.com/siskin-dev/siskin\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find repository root: no go.mod of github.com/siskin-dev/siskin above the working directory (set Options.RepoRoot)")
		}
		dir = parent
	}
}

// binDir finds the control-plane binaries; test/lab/build.sh builds them when missing (minutes,
// once per machine) and prints their cached folder otherwise (milliseconds).
func binDir(ctx context.Context, explicit, root string) (string, error) {
	if explicit != "" {
		return explicit, nil
	}
	if env := os.Getenv("SISKIN_LAB_BIN"); env != "" {
		return env, nil
	}
	script := filepath.Join(root, "test", "lab", "build.sh")
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("build lab binaries with %s: %w", script, err)
	}
	return strings.TrimSpace(string(out)), nil
}

func checkBinaries(bin string) error {
	var missing []string
	for _, name := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "kwok-stages.yaml"} {
		if _, err := os.Stat(filepath.Join(bin, name)); err != nil {
			missing = append(missing, name)
		}
	}
	for _, name := range []string{"redis-server", "prometheus", "prometheus-alertmanager", "docker-registry"} {
		if _, err := exec.LookPath(name); err != nil {
			missing = append(missing, name+" (Debian package; run test/lab/deps.sh)")
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("lab binaries missing in %s: %s (run make lab-build)", bin, strings.Join(missing, ", "))
	}
	return nil
}
