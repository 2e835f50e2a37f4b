package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/rest"
)

// countingProxy stands between one system and kube-apiserver: the system's kubeconfig points
// at it (plain HTTP on 127.0.0.1, no credentials) and it forwards every request over TLS with
// the identity it was given. It counts each request, watches included (a watch is one request
// however long it streams), so the counts are exactly the system's own load on the apiserver,
// nothing of the benchmark's, the stand-in's or the control plane's.
type countingProxy struct {
	srv        *http.Server
	addr       string
	kubeconfig string

	mu         sync.Mutex
	total      int64
	byVerb     map[string]int64
	byResource map[string]int64
}

// startCountingProxy forwards to the apiserver of cfg with cfg's identity and writes a
// kubeconfig that points at the proxy into dir.
func startCountingProxy(cfg *rest.Config, dir, name string, log *slog.Logger) (*countingProxy, error) {
	target, err := url.Parse(cfg.Host)
	if err != nil {
		return nil, fmt.Errorf("proxy %s: apiserver URL: %w", name, err)
	}
	transport, err := rest.TransportFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("proxy %s: transport: %w", name, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("proxy %s: listen: %w", name, err)
	}
	p := &countingProxy{addr: ln.Addr().String(), byVerb: map[string]int64{}, byResource: map[string]int64{}}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = target.Host
		},
		Transport:     transport,
		FlushInterval: -1, // watches stream
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	p.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		verb := r.Method
		if r.URL.Query().Get("watch") == "true" || r.URL.Query().Get("watch") == "1" {
			verb = "WATCH"
		}
		p.mu.Lock()
		p.total++
		p.byVerb[verb]++
		p.byResource[verb+" "+resourceOf(r.URL.Path)]++
		p.mu.Unlock()
		rp.ServeHTTP(w, r)
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := p.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("counting proxy stopped", "proxy", name, "err", err)
		}
	}()
	p.kubeconfig = filepath.Join(dir, name+".kubeconfig")
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster:
    server: http://%s
users:
- name: %s
  user: {}
contexts:
- name: lab
  context:
    cluster: lab
    user: %s
current-context: lab
`, p.addr, name, name)
	if err := os.WriteFile(p.kubeconfig, []byte(kc), 0o600); err != nil {
		p.close()
		return nil, fmt.Errorf("proxy %s: write kubeconfig: %w", name, err)
	}
	return p, nil
}

// counts is a copy of the request counters.
type counts struct {
	total      int64
	byVerb     map[string]int64
	byResource map[string]int64
}

func (p *countingProxy) counts() counts {
	p.mu.Lock()
	defer p.mu.Unlock()
	return counts{total: p.total, byVerb: maps.Clone(p.byVerb), byResource: maps.Clone(p.byResource)}
}

// sub is the requests made between b and c.
func (c counts) sub(b counts) counts {
	return counts{total: c.total - b.total, byVerb: subMap(c.byVerb, b.byVerb), byResource: subMap(c.byResource, b.byResource)}
}

func subMap(c, b map[string]int64) map[string]int64 {
	d := map[string]int64{}
	for k, v := range c {
		if n := v - b[k]; n != 0 {
			d[k] = n
		}
	}
	return d
}

// resourceOf is the resource (and subresource) a request path names:
// /apis/apps/v1/namespaces/x/deployments/y/status is "deployments/status", /api/v1/namespaces/x/events is "events".
func resourceOf(path string) string {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	switch {
	case len(parts) >= 2 && parts[0] == "api":
		parts = parts[2:]
	case len(parts) >= 3 && parts[0] == "apis":
		parts = parts[3:]
	default:
		return path
	}
	if len(parts) >= 2 && parts[0] == "namespaces" {
		if len(parts) == 2 {
			return "namespaces"
		}
		parts = parts[2:]
	}
	switch len(parts) {
	case 0:
		return "discovery"
	case 1, 2:
		return parts[0]
	default:
		return parts[0] + "/" + parts[2]
	}
}

func (p *countingProxy) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := p.srv.Shutdown(ctx); err != nil {
		_ = p.srv.Close() // watches never end by themselves
	}
}
