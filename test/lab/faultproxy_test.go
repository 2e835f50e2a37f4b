package lab

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// upstream is a real HTTP server on loopback that answers "ok <path>" and streams /stream.
func upstream(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stream" {
			for i := range 3 {
				_, _ = io.WriteString(w, "chunk\n")
				http.NewResponseController(w).Flush()
				if i < 2 {
					time.Sleep(50 * time.Millisecond)
				}
			}
			return
		}
		_, _ = io.WriteString(w, "ok "+r.URL.Path)
	}))
	t.Cleanup(srv.Close)
	return srv
}

type httpResult struct {
	status     int
	body       string
	retryAfter string
	err        error
	took       time.Duration
}

func fetchVia(t *testing.T, client *http.Client, url string) httpResult {
	t.Helper()
	start := time.Now()
	resp, err := client.Get(url)
	if err != nil {
		return httpResult{err: err, took: time.Since(start)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return httpResult{status: resp.StatusCode, body: string(b), retryAfter: resp.Header.Get("Retry-After"), err: err, took: time.Since(start)}
}

func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		(err != nil && strings.Contains(err.Error(), "connection reset"))
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestHTTPFaultProxy(t *testing.T) {
	up := upstream(t)
	tests := []struct {
		name   string
		faults []Fault
		path   string
		check  func(t *testing.T, r httpResult)
	}{
		{"no fault forwards", nil, "/a", func(t *testing.T, r httpResult) {
			if r.err != nil || r.status != 200 || r.body != "ok /a" {
				t.Errorf("got %d %q %v, want 200 \"ok /a\"", r.status, r.body, r.err)
			}
		}},
		{"latency delays and forwards", []Fault{{Kind: FaultLatency, Latency: 300 * time.Millisecond}}, "/a", func(t *testing.T, r httpResult) {
			if r.err != nil || r.status != 200 || r.took < 300*time.Millisecond {
				t.Errorf("got %d %v after %v, want 200 after at least 300ms", r.status, r.err, r.took)
			}
		}},
		{"503 with Retry-After", []Fault{{Kind: FaultStatus, Status: 503, RetryAfter: 2 * time.Second}}, "/a", func(t *testing.T, r httpResult) {
			if r.status != 503 || r.retryAfter != "2" {
				t.Errorf("got %d Retry-After %q, want 503 Retry-After \"2\"", r.status, r.retryAfter)
			}
		}},
		{"500", []Fault{{Kind: FaultStatus, Status: 500}}, "/a", func(t *testing.T, r httpResult) {
			if r.status != 500 || r.retryAfter != "" {
				t.Errorf("got %d Retry-After %q, want 500 and none", r.status, r.retryAfter)
			}
		}},
		{"429", []Fault{{Kind: FaultStatus, Status: 429, RetryAfter: time.Second}}, "/a", func(t *testing.T, r httpResult) {
			if r.status != 429 || r.retryAfter != "1" {
				t.Errorf("got %d Retry-After %q, want 429 Retry-After \"1\"", r.status, r.retryAfter)
			}
		}},
		{"timeout: the client gives up", []Fault{{Kind: FaultTimeout}}, "/a", func(t *testing.T, r httpResult) {
			if !isTimeout(r.err) {
				t.Errorf("got %d %v, want a client timeout", r.status, r.err)
			}
		}},
		{"reset", []Fault{{Kind: FaultReset}}, "/a", func(t *testing.T, r httpResult) {
			if !isReset(r.err) {
				t.Errorf("got %d %v, want a reset connection", r.status, r.err)
			}
		}},
		{"outage refuses", []Fault{{Kind: FaultOutage}}, "/a", func(t *testing.T, r httpResult) {
			if !isReset(r.err) {
				t.Errorf("got %d %v, want a reset connection", r.status, r.err)
			}
		}},
		{"path prefix: another path passes", []Fault{{Kind: FaultStatus, Status: 500, PathPrefix: "/apis/"}}, "/api/v1", func(t *testing.T, r httpResult) {
			if r.status != 200 {
				t.Errorf("got %d, want 200", r.status)
			}
		}},
		{"path prefix: a matching path fails", []Fault{{Kind: FaultStatus, Status: 500, PathPrefix: "/apis/"}}, "/apis/x", func(t *testing.T, r httpResult) {
			if r.status != 500 {
				t.Errorf("got %d, want 500", r.status)
			}
		}},
		{"latency then status", []Fault{{Kind: FaultLatency, Latency: 200 * time.Millisecond}, {Kind: FaultStatus, Status: 503}}, "/a", func(t *testing.T, r httpResult) {
			if r.status != 503 || r.took < 200*time.Millisecond {
				t.Errorf("got %d after %v, want 503 after at least 200ms", r.status, r.took)
			}
		}},
		{"stream flushed chunk by chunk", nil, "/stream", func(t *testing.T, r httpResult) {
			if r.body != "chunk\nchunk\nchunk\n" {
				t.Errorf("got %q, want three chunks", r.body)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := StartHTTPFaultProxy("test", up.URL, FaultProxyOptions{Seed: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			p.Set(tt.faults...)
			client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
			tt.check(t, fetchVia(t, client, p.URL+tt.path))
			p.Clear()
			if r := fetchVia(t, client, p.URL+"/healed"); r.status != 200 {
				t.Errorf("after Clear: got %d %v, want 200", r.status, r.err)
			}
		})
	}
}

// A share of the requests fails, as drawn from the seed: the same seed fails the same ones.
func TestHTTPFaultProxyRateIsSeeded(t *testing.T) {
	up := upstream(t)
	run := func(seed uint64) (pattern string, failed int) {
		p, err := StartHTTPFaultProxy("test", up.URL, FaultProxyOptions{Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		p.Set(Fault{Kind: FaultStatus, Status: 500, Rate: 0.3})
		client := &http.Client{Timeout: time.Second}
		var b strings.Builder
		for range 200 {
			if r := fetchVia(t, client, p.URL+"/"); r.status == 500 {
				b.WriteByte('x')
				failed++
			} else {
				b.WriteByte('.')
			}
		}
		if got := p.Counts()[FaultStatus]; got != failed {
			t.Errorf("Counts()[status] = %d, want %d (the requests that failed)", got, failed)
		}
		return b.String(), failed
	}
	a, n := run(7)
	b, _ := run(7)
	c, _ := run(8)
	if a != b {
		t.Errorf("same seed, different failures:\n%s\n%s", a, b)
	}
	if a == c {
		t.Errorf("different seeds, same failures: %s", a)
	}
	if n < 30 || n > 90 {
		t.Errorf("got %d of 200 failed at rate 0.3, want 30..90", n)
	}
}

// An outage cuts a stream that is open (a Kubernetes watch), not only new requests.
func TestHTTPFaultProxyOutageCutsOpenStreams(t *testing.T) {
	hold := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "first\n")
		http.NewResponseController(w).Flush()
		select {
		case <-hold:
		case <-r.Context().Done():
		}
	}))
	defer up.Close()
	defer close(hold)
	p, err := StartHTTPFaultProxy("test", up.URL, FaultProxyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	resp, err := http.Get(p.URL + "/watch")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); line != "first\n" {
		t.Fatalf("got %q %v, want the first line", line, err)
	}
	p.Set(Fault{Kind: FaultOutage})
	done := make(chan error, 1)
	go func() { _, err := br.ReadString('\n'); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Errorf("the stream went on through an outage")
		}
	case <-time.After(3 * time.Second):
		t.Errorf("the stream was not cut by the outage")
	}
	if got := p.Counts()[FaultOutage]; got != 1 {
		t.Errorf("Counts()[outage] = %d, want 1", got)
	}
}

// TLS on both sides, as in front of kube-apiserver: the client verifies the proxy with the
// upstream's own CA and certificate.
func TestHTTPFaultProxyTLS(t *testing.T) {
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "tls "+r.Header.Get("Authorization"))
	}))
	defer up.Close()
	pool := x509.NewCertPool()
	pool.AddCert(up.Certificate())
	p, err := StartHTTPFaultProxy("test", up.URL, FaultProxyOptions{
		TLS:      &tls.Config{Certificates: up.TLS.Certificates},
		Upstream: &tls.Config{RootCAs: pool},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if !strings.HasPrefix(p.URL, "https://") {
		t.Fatalf("URL %s, want https", p.URL)
	}
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	req, _ := http.NewRequest("GET", p.URL+"/", nil)
	req.Header.Set("Authorization", "Bearer x")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if got, want := string(b), "tls Bearer x"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	p.Set(Fault{Kind: FaultReset})
	if r := fetchVia(t, client, p.URL+"/"); !isReset(r.err) {
		t.Errorf("reset over TLS: got %d %v, want a reset", r.status, r.err)
	}
}

func TestFaultProxySchedule(t *testing.T) {
	up := upstream(t)
	p, err := StartHTTPFaultProxy("test", up.URL, FaultProxyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	done := p.Schedule(context.Background(), []FaultStep{
		{After: 200 * time.Millisecond, Faults: []Fault{{Kind: FaultStatus, Status: 503}}},
		{After: 600 * time.Millisecond},
	})
	client := &http.Client{Timeout: time.Second}
	steps := []struct {
		at   time.Duration
		want int
	}{{0, 200}, {400 * time.Millisecond, 503}, {900 * time.Millisecond, 200}}
	start := time.Now()
	for _, s := range steps {
		time.Sleep(time.Until(start.Add(s.at)))
		if r := fetchVia(t, client, p.URL+"/"); r.status != s.want {
			t.Errorf("at %v: got %d %v, want %d", s.at, r.status, r.err, s.want)
		}
	}
	<-done
}

func TestFaultProxyRandomFaultsIsSeeded(t *testing.T) {
	up := upstream(t)
	run := func() []string {
		p, err := StartHTTPFaultProxy("test", up.URL, FaultProxyOptions{Seed: 3})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		ctx, cancel := context.WithCancel(context.Background())
		// a period long enough that only the draw at each Set matters
		var seen []string
		done := p.RandomFaults(ctx, time.Hour, 0.3, Fault{Kind: FaultStatus, Status: 500}, Fault{Kind: FaultStatus, Status: 503})
		time.Sleep(50 * time.Millisecond)
		seen = append(seen, faultsString(p.Faults()))
		cancel()
		<-done
		if f := p.Faults(); len(f) != 0 {
			t.Errorf("after the context ended: faults %v, want none", f)
		}
		return seen
	}
	if a, b := run(), run(); strings.Join(a, ",") != strings.Join(b, ",") {
		t.Errorf("same seed, different draws: %v vs %v", a, b)
	}
}

func faultsString(fs []Fault) string {
	var parts []string
	for _, f := range fs {
		parts = append(parts, f.String())
	}
	return strings.Join(parts, "+")
}

// echo is a real TCP server on loopback that echoes every line.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

// roundTrip writes a line and reads it back within timeout.
func roundTrip(c net.Conn, line string, timeout time.Duration) (string, error) {
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "", err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSuffix(got, "\n"), err
}

func TestTCPFaultProxy(t *testing.T) {
	target := echo(t)
	tests := []struct {
		name string
		// before is set before the connection is made, during after it is open.
		before, during []Fault
		check          func(t *testing.T, got string, err error, took time.Duration)
	}{
		{"forwards", nil, nil, func(t *testing.T, got string, err error, _ time.Duration) {
			if err != nil || got != "PING" {
				t.Errorf("got %q %v, want PING", got, err)
			}
		}},
		{"latency on each chunk", []Fault{{Kind: FaultLatency, Latency: 150 * time.Millisecond}}, nil, func(t *testing.T, got string, err error, took time.Duration) {
			// one chunk each way
			if err != nil || got != "PING" || took < 300*time.Millisecond {
				t.Errorf("got %q %v after %v, want PING after at least 300ms", got, err, took)
			}
		}},
		{"reset on connect", []Fault{{Kind: FaultReset}}, nil, func(t *testing.T, got string, err error, _ time.Duration) {
			if !isReset(err) {
				t.Errorf("got %q %v, want a reset", got, err)
			}
		}},
		{"reset of an open connection", nil, []Fault{{Kind: FaultReset}}, func(t *testing.T, got string, err error, _ time.Duration) {
			if !isReset(err) {
				t.Errorf("got %q %v, want a reset", got, err)
			}
		}},
		{"outage cuts an open connection", nil, []Fault{{Kind: FaultOutage}}, func(t *testing.T, got string, err error, _ time.Duration) {
			if !isReset(err) {
				t.Errorf("got %q %v, want a reset", got, err)
			}
		}},
		{"outage refuses a new connection", []Fault{{Kind: FaultOutage}}, nil, func(t *testing.T, got string, err error, _ time.Duration) {
			if !isReset(err) {
				t.Errorf("got %q %v, want a reset", got, err)
			}
		}},
		{"blackhole: no answer", nil, []Fault{{Kind: FaultBlackhole}}, func(t *testing.T, got string, err error, _ time.Duration) {
			if !isTimeout(err) {
				t.Errorf("got %q %v, want a timeout", got, err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := StartTCPFaultProxy("redis", target, FaultProxyOptions{Seed: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			p.Set(tt.before...)
			c, err := net.DialTimeout("tcp", p.Addr, time.Second)
			if err != nil {
				tt.check(t, "", err, 0)
				return
			}
			defer c.Close()
			if tt.during != nil {
				if got, err := roundTrip(c, "HELLO", time.Second); err != nil || got != "HELLO" {
					t.Fatalf("before the fault: got %q %v, want HELLO", got, err)
				}
				p.Set(tt.during...)
				time.Sleep(20 * time.Millisecond)
			}
			start := time.Now()
			got, err := roundTrip(c, "PING", 700*time.Millisecond)
			tt.check(t, got, err, time.Since(start))
			p.Clear()
			c2, err := net.DialTimeout("tcp", p.Addr, time.Second)
			if err != nil {
				t.Fatalf("after Clear: %v", err)
			}
			defer c2.Close()
			if got, err := roundTrip(c2, "AGAIN", time.Second); err != nil || got != "AGAIN" {
				t.Errorf("after Clear: got %q %v, want AGAIN", got, err)
			}
		})
	}
}

// The kubeconfig written for a proxy names the proxy and keeps the identity and the CA.
func TestSiskinKubeconfigVia(t *testing.T) {
	dir := t.TempDir()
	p, err := newPKI(filepath.Join(dir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	l := &Lab{dir: dir, pki: p}
	path, err := l.SiskinKubeconfigVia("via-proxy", "https://127.0.0.1:4321")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"server: https://127.0.0.1:4321", "token: " + p.siskinToken, "certificate-authority-data:"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("kubeconfig lacks %q:\n%s", want, b)
		}
	}
}
