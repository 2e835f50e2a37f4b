package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/siskin-dev/siskin/functions"
	"github.com/siskin-dev/siskin/test/lab"
)

// buildSiskin compiles the Siskin binary of this checkout.
func buildSiskin(ctx context.Context, root, dir string) (string, error) {
	bin := filepath.Join(dir, "siskin")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build siskin: %w\n%s", err, out)
	}
	return bin, nil
}

// logLine is one of Siskin's JSON log records.
type logLine struct {
	Time   time.Time
	Msg    string
	Fields map[string]any
}

func (l logLine) str(key string) string {
	switch v := l.Fields[key].(type) {
	case string:
		return v
	case nil:
		return ""
	default:
		return fmt.Sprint(v)
	}
}

func (l logLine) num(key string) int {
	if v, ok := l.Fields[key].(float64); ok {
		return int(v)
	}
	return 0
}

// siskin is one `siskin serve` process, run the way Knative would run it: stateless, the
// restricted identity, every trigger reaching it over HTTP.
type siskin struct {
	cmd      *exec.Cmd
	url      string
	token    string // the senders'
	apiToken string // the operators'
	done     chan struct{}
	lines    chan logLine
	http     *http.Client
}

type siskinConfig struct {
	bin         string
	lab         *lab.Lab
	token       string
	apiToken    string
	minInterval time.Duration
	tickWindow  time.Duration
	logPath     string
}

// startSiskin starts `siskin serve` on a free port and returns once it listens. Its JSON log
// is copied to logPath and parsed into lines.
func startSiskin(ctx context.Context, c siskinConfig) (*siskin, error) {
	logFile, err := os.Create(c.logPath)
	if err != nil {
		return nil, fmt.Errorf("create siskin log: %w", err)
	}
	cmd := exec.Command(c.bin, "serve", "--listen", "127.0.0.1:0", "--log-format", "json")
	cmd.Env = append(os.Environ(),
		"KUBECONFIG="+c.lab.SiskinKubeconfig(),
		"REDIS_URL="+c.lab.RedisURL(),
		"PROMETHEUS_URL="+c.lab.PrometheusURL(),
		"SISKIN_WEBHOOK_TOKEN="+c.token,
		"SISKIN_API_TOKEN="+c.apiToken,
		"SISKIN_MIN_INTERVAL="+c.minInterval.String(),
		"SISKIN_TICK_WINDOW="+c.tickWindow.String(),
		"SISKIN_INSECURE_REGISTRIES="+c.lab.Registry(),
		"SISKIN_NAMESPACE=",
	)
	// Its own process group, so that a terminal's Ctrl-C reaches the demo only, which then
	// stops Siskin before the lab; the kernel kills it should the demo die first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		logFile.Close()
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		logFile.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start siskin: %w", err)
	}
	s := &siskin{cmd: cmd, token: c.token, apiToken: c.apiToken, done: make(chan struct{}), lines: make(chan logLine, 1024),
		http: &http.Client{}}
	addr := make(chan string, 1)
	var readers sync.WaitGroup
	readers.Go(func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if _, a, ok := strings.Cut(sc.Text(), "listening on "); ok {
				select {
				case addr <- strings.TrimSpace(a):
				default:
				}
			}
		}
	})
	readers.Go(func() {
		defer close(s.lines)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		for sc.Scan() {
			raw := sc.Bytes()
			logFile.Write(append(bytes.Clone(raw), '\n'))
			if line, ok := parseLogLine(raw); ok {
				s.lines <- line
			}
		}
	})
	go func() {
		_ = cmd.Wait()
		readers.Wait()
		logFile.Close()
		close(s.done)
	}()
	select {
	case a := <-addr:
		s.url = "http://" + a
		return s, nil
	case <-s.done:
		return nil, fmt.Errorf("siskin exited at start; its log is %s", c.logPath)
	case <-time.After(30 * time.Second):
		s.stop()
		return nil, fmt.Errorf("siskin did not listen within 30 s; its log is %s", c.logPath)
	case <-ctx.Done():
		s.stop()
		return nil, ctx.Err()
	}
}

func parseLogLine(raw []byte) (logLine, bool) {
	var fields map[string]any
	if err := json.Unmarshal(raw, &fields); err != nil {
		return logLine{}, false
	}
	l := logLine{Fields: fields}
	l.Msg, _ = fields["msg"].(string)
	if ts, ok := fields["time"].(string); ok {
		l.Time, _ = time.Parse(time.RFC3339Nano, ts)
	}
	return l, true
}

// stop interrupts Siskin (it finishes the requests in flight), kills its process group after
// 10 s, and checks that nothing of it is left.
func (s *siskin) stop() error {
	pgid := s.cmd.Process.Pid
	select {
	case <-s.done:
	default:
		_ = syscall.Kill(-pgid, syscall.SIGINT)
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-s.done
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
			return nil
		}
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		if time.Now().After(deadline) {
			return fmt.Errorf("siskin's process group %d still has members", pgid)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *siskin) request(ctx context.Context, method, path string, headers map[string]string, body []byte, timeout time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, s.url+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	token := s.token
	if strings.HasPrefix(path, "/api/") {
		token = s.apiToken
	}
	req.Header.Set("Authorization", "Bearer "+token)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return b, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
	}
	return b, nil
}

// view is the canary as Siskin's API shows it.
func (s *siskin) view(ctx context.Context, ns, name string) (functions.CanaryView, error) {
	var v functions.CanaryView
	b, err := s.request(ctx, http.MethodGet, "/api/v1/canaries/"+ns+"/"+name, nil, nil, 3*time.Second)
	if err != nil {
		return v, err
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return v, fmt.Errorf("decode canary %s/%s: %w", ns, name, err)
	}
	return v, nil
}

// ping delivers what Knative's PingSource delivers: a CloudEvent in binary mode. The tick
// keeps stepping releases that fall due within Siskin's tick window.
func (s *siskin) ping(ctx context.Context, id string, timeout time.Duration) error {
	_, err := s.request(ctx, http.MethodPost, "/", map[string]string{
		"Ce-Specversion": "1.0", "Ce-Id": id, "Ce-Type": "dev.knative.sources.ping",
		"Ce-Source":    "/apis/v1/namespaces/siskin-system/pingsources/siskin-tick",
		"Content-Type": "application/json",
	}, []byte(`{"tick":"advance"}`), timeout)
	return err
}

// analysisValues reads the last value of each metric check per canary from Siskin's own
// metrics (flagger_canary_metric_analysis), keyed "namespace/name" then metric.
func (s *siskin) analysisValues(ctx context.Context) (map[string]map[string]float64, error) {
	b, err := s.request(ctx, http.MethodGet, "/metrics", nil, nil, 2*time.Second)
	if err != nil {
		return nil, err
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("parse siskin metrics: %w", err)
	}
	out := map[string]map[string]float64{}
	f := families["flagger_canary_metric_analysis"]
	if f == nil {
		return out, nil
	}
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		k := labels["namespace"] + "/" + labels["name"]
		if out[k] == nil {
			out[k] = map[string]float64{}
		}
		out[k][labels["metric"]] = m.GetGauge().GetValue()
	}
	return out, nil
}

// pinger stands for the PingSource: one ping every period until ctx ends, each in its own
// request (a tick may keep working for the whole window).
func pinger(ctx context.Context, s *siskin, period, window time.Duration, out *console) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(period)
		defer t.Stop()
		for n := 1; ; n++ {
			wg.Go(func() {
				if err := s.ping(ctx, fmt.Sprintf("demo-ping-%d", n), window+15*time.Second); err != nil && ctx.Err() == nil {
					out.say("  ping %d: %v", n, err)
				}
			})
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
	return &wg
}
