package lab

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"
)

// BalancerOptions shape how a Balancer misdelivers, as a Broker and a Knative Service's
// activator may: at least once, out of order, to any pod.
type BalancerOptions struct {
	// Duplicate is the share of requests that are also sent, a second time, to the next
	// backend in turn.
	Duplicate float64
	// MaxDelay delays each copy by a random time up to it, so copies arrive late and out of
	// order (the first copy is never delayed more than the second).
	MaxDelay time.Duration
	// Seed makes the misdelivery reproducible.
	Seed uint64
}

// Balancer stands in for a Knative Service in front of several `siskin serve` processes: it
// spreads requests round robin, skips a backend whose connection is refused (a pod that died),
// and, as configured, duplicates and delays them.
type Balancer struct {
	URL string

	opts     BalancerOptions
	srv      *http.Server
	client   *http.Client
	mu       sync.Mutex
	rng      *rand.Rand
	backends []string
	next     int
	served   map[string]int
	copies   int
	inflight sync.WaitGroup
}

// StartBalancer listens on loopback in front of the backends (base URLs).
func StartBalancer(opts BalancerOptions, backends ...string) (*Balancer, error) {
	if len(backends) == 0 {
		return nil, fmt.Errorf("balancer: no backends")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("balancer: %w", err)
	}
	b := &Balancer{
		URL:      "http://" + ln.Addr().String(),
		opts:     opts,
		client:   &http.Client{Timeout: 3 * time.Minute},
		rng:      rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x5eed)),
		backends: append([]string(nil), backends...),
		served:   map[string]int{},
	}
	b.srv = &http.Server{Handler: http.HandlerFunc(b.serve), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = b.srv.Serve(ln) }()
	return b, nil
}

// Close stops listening and waits for the copies still being delivered.
func (b *Balancer) Close() {
	_ = b.srv.Close()
	b.inflight.Wait()
}

// Served is how many requests each backend answered, and how many of them were extra copies.
func (b *Balancer) Served() (perBackend map[string]int, copies int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string]int, len(b.served))
	for k, v := range b.served {
		out[k] = v
	}
	return out, b.copies
}

// plan picks the backend of a request, whether it is duplicated, and the delays of both copies.
func (b *Balancer) plan() (first int, duplicate bool, delays [2]time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	first = b.next
	b.next = (b.next + 1) % max(len(b.backends), 1)
	duplicate = b.rng.Float64() < b.opts.Duplicate
	if b.opts.MaxDelay > 0 {
		d1 := time.Duration(b.rng.Int64N(int64(b.opts.MaxDelay)))
		d2 := time.Duration(b.rng.Int64N(int64(b.opts.MaxDelay)))
		delays = [2]time.Duration{min(d1, d2), max(d1, d2)}
		if !duplicate {
			delays[0] = d1
		}
	}
	return first, duplicate, delays
}

func (b *Balancer) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	first, duplicate, delays := b.plan()
	if duplicate {
		b.inflight.Add(1)
		go func() {
			defer b.inflight.Done()
			time.Sleep(delays[1])
			if resp, _, err := b.forward(r, body, first+1, true); err == nil {
				resp.Body.Close()
			}
		}()
	}
	time.Sleep(delays[0])
	resp, _, err := b.forward(r, body, first, false)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

// forward sends the request to backend start, or the next that accepts a connection.
func (b *Balancer) forward(r *http.Request, body []byte, start int, isCopy bool) (*http.Response, string, error) {
	b.mu.Lock()
	backends := slices.Clone(b.backends)
	b.mu.Unlock()
	var lastErr error
	for i := range len(backends) {
		backend := backends[(start+i)%len(backends)]
		req, err := http.NewRequestWithContext(r.Context(), r.Method, backend+r.URL.RequestURI(), bytes.NewReader(body))
		if isCopy {
			req, err = http.NewRequest(r.Method, backend+r.URL.RequestURI(), bytes.NewReader(body))
		}
		if err != nil {
			return nil, "", err
		}
		req.Header = r.Header.Clone()
		resp, err := b.client.Do(req)
		if err != nil {
			lastErr = err
			continue // a dead pod: the next one takes it
		}
		b.mu.Lock()
		b.served[backend]++
		if isCopy {
			b.copies++
		}
		b.mu.Unlock()
		return resp, backend, nil
	}
	return nil, "", fmt.Errorf("balancer: no backend answered: %w", lastErr)
}

// SetBackends replaces the backends: processes that listen only after the balancer's address
// was handed to them.
func (b *Balancer) SetBackends(backends ...string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.backends = append([]string(nil), backends...)
	b.next = 0
}
