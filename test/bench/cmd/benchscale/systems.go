package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/siskin-dev/siskin/test/lab"
)

const (
	webhookToken = "bench-token"     // the senders'
	apiToken     = "bench-api-token" // the operators'
)

// proc is one system's process, its log in a file.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	log  *os.File
}

func startProc(name, logPath string, env []string, bin string, args ...string) (*proc, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("%s: create log: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// The kernel kills it should the benchmark die first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{}), log: logFile}
	go func() { _ = cmd.Wait(); logFile.Close(); close(p.done) }()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop interrupts the process and kills its group after 10 s.
func (p *proc) stop() {
	if p.exited() {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// usage is what /proc says of a process: CPU seconds (user + system) so far, resident memory
// now and at its peak.
type usage struct {
	cpu       float64
	rss, peak int64 // bytes
	maxPeak   int64 // of several processes, the largest one's peak (sumUsage)
}

const clockTicks = 100 // USER_HZ on Linux

func (p *proc) usage() (usage, error) {
	pid := p.cmd.Process.Pid
	var u usage
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, fmt.Errorf("read /proc/%d/stat: %w", pid, err)
	}
	// The fields after the command's closing parenthesis: state is field 3, utime 14, stime 15.
	s := string(stat)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return u, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(fields))
	}
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	u.cpu = (utime + stime) / clockTicks
	status, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, fmt.Errorf("read /proc/%d/status: %w", pid, err)
	}
	defer status.Close()
	sc := bufio.NewScanner(status)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		kb, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmRSS":
			u.rss = kb << 10
		case "VmHWM":
			u.peak = kb << 10
		}
	}
	return u, nil
}

// system is Flagger or Siskin while it runs.
type system interface {
	name() string
	procs() []*proc
	stop()
}

type flaggerSystem struct{ p *proc }

func (f *flaggerSystem) name() string   { return "Flagger" }
func (f *flaggerSystem) procs() []*proc { return []*proc{f.p} }
func (f *flaggerSystem) stop()          { f.p.stop() }
func (s *siskinSystem) name() string    { return "Siskin" }
func (s *siskinSystem) procs() []*proc  { return s.ps }
func (s *siskinSystem) stop()           { s.stopAll() }
func freePort() (int, error)            { return freePortOn("127.0.0.1:0") }
func freePortOn(addr string) (int, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// startFlagger runs Flagger as its Deployment does, out of cluster: one namespace, a 10 s
// control loop, Istio, the lab's Prometheus, the counting proxy's kubeconfig.
func startFlagger(ctx context.Context, bin, dir, kubeconfig, ns string, l *lab.Lab) (*flaggerSystem, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	p, err := startProc("flagger", filepath.Join(dir, "flagger.log"), nil, bin,
		"-kubeconfig="+kubeconfig, "-namespace="+ns, "-control-loop-interval=10s", "-mesh-provider=istio",
		"-metrics-server="+l.PrometheusURL(), "-port="+strconv.Itoa(port), "-log-level=info")
	if err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, p, "http://127.0.0.1:"+strconv.Itoa(port)+"/healthz", 60*time.Second); err != nil {
		p.stop()
		return nil, fmt.Errorf("flagger (log %s): %w", p.log.Name(), err)
	}
	return &flaggerSystem{p: p}, nil
}

// siskinSystem is `siskin serve` with production cadence, in one or more processes behind the
// lab's balancer (a Knative Service's pods): the stand-in for ApiServerSource POSTs the object
// events, a PingSource-like ping arrives at the top of every minute, and each due step comes
// back as a step event through --step-sink; all three go to the balancer, which spreads them
// round robin over the processes.
type siskinSystem struct {
	ps       []*proc
	backends []string // the processes' base URLs, in the order of ps
	lb       *lab.Balancer
	url      string // the balancer's
	src      *lab.APIServerSource
	cancel   context.CancelFunc
	pings    sync.WaitGroup
}

// siskinLogName is process i's log (of instances): siskin.log for one, siskin-1.log … for more.
func siskinLogName(i, instances int) string {
	if instances == 1 {
		return "siskin.log"
	}
	return fmt.Sprintf("siskin-%d.log", i+1)
}

func startSiskin(ctx context.Context, bin, dir, kubeconfig, ns string, l *lab.Lab, instances int, log *slog.Logger) (*siskinSystem, error) {
	s := &siskinSystem{}
	ports := make([]int, instances)
	for i := range ports {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		ports[i] = port
		s.backends = append(s.backends, "http://127.0.0.1:"+strconv.Itoa(port))
	}
	var err error
	if s.lb, err = lab.StartBalancer(lab.BalancerOptions{}, s.backends...); err != nil {
		return nil, err
	}
	s.url = s.lb.URL
	for i, port := range ports {
		p, err := startProc(fmt.Sprintf("siskin-%d", i+1), filepath.Join(dir, siskinLogName(i, instances)), []string{
			"KUBECONFIG=" + kubeconfig,
			"REDIS_URL=" + l.RedisURL(),
			"PROMETHEUS_URL=" + l.PrometheusURL(),
			"SISKIN_WEBHOOK_TOKEN=" + webhookToken,
			"SISKIN_API_TOKEN=" + apiToken,
			"SISKIN_NAMESPACE=" + ns,
			"SISKIN_STEP_SINK=" + s.url + "/",
			"SISKIN_INSECURE_REGISTRIES=" + l.Registry(),
		}, bin, "serve", "--listen", "127.0.0.1:"+strconv.Itoa(port), "--log-format", "json", "--log-level", "warn")
		if err != nil {
			s.stopAll()
			return nil, err
		}
		s.ps = append(s.ps, p)
	}
	for i, p := range s.ps {
		if err := waitHTTP(ctx, p, s.backends[i]+"/healthz", 60*time.Second); err != nil {
			s.stopAll()
			return nil, fmt.Errorf("siskin (log %s): %w", p.log.Name(), err)
		}
	}
	s.src, err = l.StartAPIServerSource(ctx, lab.APIServerSourceOptions{Namespace: ns, Sink: s.url + "/", Token: webhookToken})
	if err != nil {
		s.stopAll()
		return nil, fmt.Errorf("apiserversource stand-in: %w", err)
	}
	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	s.pings.Go(func() { s.pingEveryMinute(pctx, log) })
	return s, nil
}

// served is how many requests (pings, object and step events) each process answered through
// the balancer, in the order of the processes.
func (s *siskinSystem) served() []int {
	perBackend, _ := s.lb.Served()
	out := make([]int, len(s.backends))
	for i, b := range s.backends {
		out[i] = perBackend[b]
	}
	return out
}

// pingEveryMinute is PingSource's `* * * * *`: a CloudEvent at the top of each minute, each
// in a request of its own that stays open while the dispatcher works.
func (s *siskinSystem) pingEveryMinute(ctx context.Context, log *slog.Logger) {
	client := &http.Client{Timeout: 150 * time.Second}
	for i := 0; ; i++ {
		next := time.Now().Truncate(time.Minute).Add(time.Minute)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(next)):
		}
		s.pings.Go(func() {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url+"/", strings.NewReader(`{"tick":"advance"}`))
			if err != nil {
				return
			}
			for k, v := range map[string]string{
				"Ce-Specversion": "1.0", "Ce-Id": fmt.Sprintf("bench-ping-%d-%d", next.Unix(), i), "Ce-Type": "dev.knative.sources.ping",
				"Ce-Source": "/apis/v1/namespaces/siskin-system/pingsources/siskin-tick", "Content-Type": "application/json",
				"Authorization": "Bearer " + webhookToken,
			} {
				req.Header.Set(k, v)
			}
			resp, err := client.Do(req)
			if err != nil {
				if ctx.Err() == nil {
					log.Warn("ping failed", "err", err)
				}
				return
			}
			resp.Body.Close()
			if resp.StatusCode >= 300 {
				log.Warn("ping refused", "status", resp.Status)
			}
		})
	}
}

func (s *siskinSystem) stopAll() {
	if s.cancel != nil {
		s.cancel()
	}
	if s.src != nil {
		s.src.Stop()
	}
	if s.lb != nil {
		s.lb.Close()
	}
	for _, p := range s.ps {
		p.stop()
	}
	s.pings.Wait()
}

// waitHTTP polls url until it answers 200, the process exits or the timeout passes.
func waitHTTP(ctx context.Context, p *proc, url string, timeout time.Duration) error {
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(timeout)
	for {
		if p.exited() {
			return errors.New("exited at start")
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v", url, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
