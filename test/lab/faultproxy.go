package lab

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// FaultKind is one way a dependency misbehaves.
type FaultKind string

const (
	// FaultLatency delays each HTTP request before it is forwarded, or each chunk a TCP
	// connection carries (both ways), by Fault.Latency.
	FaultLatency FaultKind = "latency"
	// FaultStatus answers an HTTP request with Fault.Status (500, 503, 429, ...) and, if
	// Fault.RetryAfter is set, a Retry-After header, without forwarding it.
	FaultStatus FaultKind = "status"
	// FaultTimeout holds an HTTP request without an answer until the client gives up (or
	// Fault.Latency passes, if set, after which the connection is closed).
	FaultTimeout FaultKind = "timeout"
	// FaultReset resets the client's connection (TCP RST): an HTTP request or a TCP
	// connection, when it arrives; for TCP, connections open when the fault is set too.
	FaultReset FaultKind = "reset"
	// FaultOutage makes the dependency unreachable: every open connection is reset and every
	// new one is reset as soon as it is accepted.
	FaultOutage FaultKind = "outage"
	// FaultBlackhole accepts connections and never answers: clients see timeouts. Open
	// connections stop carrying data.
	FaultBlackhole FaultKind = "blackhole"
	// FaultRefused is no fault to set: Counts uses it for the connections reset on arrival
	// during an outage.
	FaultRefused FaultKind = "refused"
)

// Fault is one fault to inject.
type Fault struct {
	Kind       FaultKind
	Latency    time.Duration // FaultLatency: the delay; FaultTimeout: how long to hold (0: until the client gives up)
	Status     int           // FaultStatus
	RetryAfter time.Duration // FaultStatus: sent as Retry-After (whole seconds) when > 0
	// Rate is the share of requests (HTTP) or connections (TCP) affected, drawn from the
	// proxy's seeded generator; 0 means all of them.
	Rate float64
	// PathPrefix limits an HTTP fault to requests whose path starts with it; empty: all.
	PathPrefix string
}

func (f Fault) String() string {
	var b strings.Builder
	b.WriteString(string(f.Kind))
	switch f.Kind {
	case FaultLatency, FaultTimeout:
		if f.Latency > 0 {
			fmt.Fprintf(&b, " %v", f.Latency)
		}
	case FaultStatus:
		fmt.Fprintf(&b, " %d", f.Status)
	}
	if f.Rate > 0 {
		fmt.Fprintf(&b, " at %.0f%%", f.Rate*100)
	}
	if f.PathPrefix != "" {
		fmt.Fprintf(&b, " on %s", f.PathPrefix)
	}
	return b.String()
}

// FaultStep is one entry of a schedule: from After (counted from the schedule's start) the
// proxy injects Faults (none: it heals).
type FaultStep struct {
	After  time.Duration
	Faults []Fault
}

// FaultProxyOptions configure a fault proxy.
type FaultProxyOptions struct {
	// Seed makes the random draws (Rate, RandomFaults) reproducible.
	Seed uint64
	// TLS, when set, serves the proxy's listener with TLS (for the kube-apiserver, with the
	// apiserver's own serving certificate, so clients keep verifying the lab's CA).
	TLS *tls.Config
	// Upstream is the TLS configuration towards an https target.
	Upstream *tls.Config
	// Logger receives every change of faults. Nil: discarded.
	Logger *slog.Logger
}

// FaultProxy sits between Siskin and one dependency. It forwards faithfully until faults are
// set, with Set, a schedule (Schedule) or at random (RandomFaults). Its methods are safe for
// concurrent use.
type FaultProxy struct {
	// URL is the proxy's base URL for an HTTP target (http:// or https://); Addr its host:port.
	URL, Addr string

	name   string
	target *url.URL // nil for a TCP proxy
	tcp    string   // the TCP target's host:port
	log    *slog.Logger
	ln     net.Listener
	srv    *http.Server

	mu      sync.Mutex
	rng     *rand.Rand
	faults  []Fault
	changed chan struct{} // closed and replaced on every change of faults
	conns   map[*trackedConn]struct{}
	counts  map[FaultKind]int
	closed  bool
	wg      sync.WaitGroup
}

// StartHTTPFaultProxy proxies HTTP(S) to target (a base URL: scheme and host), on loopback.
// Streams (Kubernetes watches) are flushed as they arrive.
func StartHTTPFaultProxy(name string, target string, opts FaultProxyOptions) (*FaultProxy, error) {
	u, err := url.Parse(target)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("fault proxy %s: bad target %q: %v", name, target, err)
	}
	p, err := newFaultProxy(name, opts)
	if err != nil {
		return nil, err
	}
	p.target = u
	scheme := "http"
	ln := p.ln
	if opts.TLS != nil {
		scheme = "https"
		ln = tls.NewListener(p.ln, opts.TLS)
	}
	p.URL = scheme + "://" + p.Addr
	transport := &http.Transport{
		TLSClientConfig:       opts.Upstream,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: 2 * time.Minute,
		MaxIdleConnsPerHost:   64,
		ForceAttemptHTTP2:     false,
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = u.Host
		},
		Transport:     transport,
		FlushInterval: -1,
		ErrorLog:      nil,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() == nil {
				http.Error(w, "fault proxy "+name+": upstream: "+err.Error(), http.StatusBadGateway)
			}
		},
	}
	p.srv = &http.Server{Handler: p.httpHandler(rp), ReadHeaderTimeout: 10 * time.Second}
	p.wg.Go(func() { _ = p.srv.Serve(ln) })
	return p, nil
}

// StartTCPFaultProxy proxies raw TCP (Redis) to target host:port, on loopback.
func StartTCPFaultProxy(name, target string, opts FaultProxyOptions) (*FaultProxy, error) {
	p, err := newFaultProxy(name, opts)
	if err != nil {
		return nil, err
	}
	p.tcp = target
	p.URL = "tcp://" + p.Addr
	p.wg.Go(p.serveTCP)
	return p, nil
}

func newFaultProxy(name string, opts FaultProxyOptions) (*FaultProxy, error) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("fault proxy %s: %w", name, err)
	}
	p := &FaultProxy{
		Addr:    raw.Addr().String(),
		name:    name,
		log:     opts.Logger,
		rng:     rand.New(rand.NewPCG(opts.Seed, opts.Seed^0xfa17)),
		changed: make(chan struct{}),
		conns:   map[*trackedConn]struct{}{},
		counts:  map[FaultKind]int{},
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	p.ln = &faultListener{Listener: raw, p: p}
	return p, nil
}

// Close stops the proxy and cuts every connection.
func (p *FaultProxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	close(p.changed)
	p.changed = make(chan struct{})
	conns := p.takeConns(func(*trackedConn) bool { return true })
	p.mu.Unlock()
	_ = p.ln.Close()
	if p.srv != nil {
		_ = p.srv.Close()
	}
	for _, c := range conns {
		c.reset()
	}
	p.wg.Wait()
}

// Set replaces the faults in force (none: forward faithfully). An outage or blackhole, and a
// TCP reset, act on the connections already open as well.
func (p *FaultProxy) Set(faults ...Fault) {
	p.mu.Lock()
	p.faults = slices.Clone(faults)
	close(p.changed)
	p.changed = make(chan struct{})
	var cut []*trackedConn
	for _, f := range faults {
		switch {
		case f.Kind == FaultOutage:
			cut = append(cut, p.takeConns(func(*trackedConn) bool { return true })...)
			p.counts[FaultOutage]++
		case f.Kind == FaultReset && p.tcp != "":
			cut = append(cut, p.takeConns(func(*trackedConn) bool { return p.drawLocked(f.Rate) })...)
		}
	}
	if n := len(cut); n > 0 && !hasKind(faults, FaultOutage) {
		p.counts[FaultReset] += n
	}
	p.mu.Unlock()
	for _, c := range cut {
		c.reset()
	}
	p.log.Info("fault proxy", "proxy", p.name, "faults", fmt.Sprint(faults), "cut", len(cut))
}

// Clear heals the proxy.
func (p *FaultProxy) Clear() { p.Set() }

// Faults are the faults in force.
func (p *FaultProxy) Faults() []Fault {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.faults)
}

// Counts is how many times each kind of fault was injected: requests or connections
// affected, and one per outage set.
func (p *FaultProxy) Counts() map[FaultKind]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[FaultKind]int, len(p.counts))
	for k, v := range p.counts {
		out[k] = v
	}
	return out
}

// Schedule runs steps in the background, each at its offset from now; a step's faults stay in
// force until the next step (end with a step of no faults to heal). If ctx ends first the
// proxy is healed. The returned channel closes once the last step was applied or ctx ended.
func (p *FaultProxy) Schedule(ctx context.Context, steps []FaultStep) <-chan struct{} {
	done := make(chan struct{})
	start := time.Now()
	steps = slices.Clone(steps)
	slices.SortStableFunc(steps, func(a, b FaultStep) int { return int(a.After - b.After) })
	go func() {
		defer close(done)
		for _, s := range steps {
			select {
			case <-ctx.Done():
				p.Clear()
				return
			case <-time.After(time.Until(start.Add(s.After))):
			}
			p.Set(s.Faults...)
		}
	}()
	return done
}

// RandomFaults injects, every period until ctx ends, one of choices drawn with the proxy's
// seed, or none with probability quiet; it heals the proxy when ctx ends.
func (p *FaultProxy) RandomFaults(ctx context.Context, period time.Duration, quiet float64, choices ...Fault) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer p.Clear()
		for {
			p.mu.Lock()
			var pick []Fault
			if len(choices) > 0 && p.rng.Float64() >= quiet {
				pick = []Fault{choices[p.rng.IntN(len(choices))]}
			}
			p.mu.Unlock()
			p.Set(pick...)
			select {
			case <-ctx.Done():
				return
			case <-time.After(period):
			}
		}
	}()
	return done
}

// drawLocked reports whether an event is affected at rate (0: always).
func (p *FaultProxy) drawLocked(rate float64) bool {
	return rate <= 0 || rate >= 1 || p.rng.Float64() < rate
}

// pick chooses the fault that applies to one request (HTTP) or connection (TCP, path ""), and
// counts it. Latency combines with a later fault of another kind: it is returned apart.
func (p *FaultProxy) pick(path string) (latency time.Duration, f Fault, ok bool, changed <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	changed = p.changed
	for _, c := range p.faults {
		if c.PathPrefix != "" && !strings.HasPrefix(path, c.PathPrefix) {
			continue
		}
		if !p.drawLocked(c.Rate) {
			continue
		}
		if c.Kind == FaultLatency {
			latency += c.Latency
			p.counts[FaultLatency]++
			continue
		}
		if !ok {
			f, ok = c, true
			if c.Kind != FaultOutage { // an outage is counted once, when set
				p.counts[c.Kind]++
			}
		}
	}
	return latency, f, ok, changed
}

func (p *FaultProxy) httpHandler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		latency, f, ok, _ := p.pick(r.URL.Path)
		if latency > 0 {
			select {
			case <-r.Context().Done():
				return
			case <-time.After(latency):
			}
		}
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		switch f.Kind {
		case FaultStatus:
			if f.RetryAfter > 0 {
				w.Header().Set("Retry-After", strconv.Itoa(int(max(f.RetryAfter.Seconds(), 1))))
			}
			http.Error(w, fmt.Sprintf("fault proxy %s: injected %d", p.name, f.Status), f.Status)
		case FaultTimeout, FaultBlackhole:
			var hold <-chan time.Time
			if f.Latency > 0 {
				hold = time.After(f.Latency)
			}
			select {
			case <-r.Context().Done():
			case <-hold:
			}
			p.hijackReset(w)
		case FaultReset, FaultOutage:
			p.hijackReset(w)
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// hijackReset resets the connection of an HTTP request.
func (p *FaultProxy) hijackReset(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler) // the server closes the connection
	}
	resetConn(conn)
}

// --- connections ---

type faultListener struct {
	net.Listener
	p *FaultProxy
}

// Accept resets connections during an outage and tracks the others, so that a later outage
// can cut them.
func (l *faultListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.p.mu.Lock()
		out := hasKind(l.p.faults, FaultOutage)
		if out {
			l.p.counts[FaultRefused]++
		}
		l.p.mu.Unlock()
		if out {
			resetConn(c)
			continue
		}
		return l.p.track(c), nil
	}
}

type trackedConn struct {
	net.Conn
	p    *FaultProxy
	once sync.Once
}

func (p *FaultProxy) track(c net.Conn) *trackedConn {
	tc := &trackedConn{Conn: c, p: p}
	p.mu.Lock()
	p.conns[tc] = struct{}{}
	p.mu.Unlock()
	return tc
}

func (c *trackedConn) Close() error {
	c.p.mu.Lock()
	delete(c.p.conns, c)
	c.p.mu.Unlock()
	return c.Conn.Close()
}

func (c *trackedConn) reset() {
	c.once.Do(func() { resetConn(c.Conn) })
}

// takeConns removes and returns the tracked connections that match; the caller holds mu.
func (p *FaultProxy) takeConns(match func(*trackedConn) bool) []*trackedConn {
	var out []*trackedConn
	for c := range p.conns {
		if match(c) {
			out = append(out, c)
			delete(p.conns, c)
		}
	}
	return out
}

// resetConn closes with SO_LINGER 0: the peer sees ECONNRESET, not an orderly end.
func resetConn(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if tc, ok := c.(*trackedConn); ok {
		c = tc.Conn
	}
	if tcp, ok := c.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	_ = c.Close()
}

// --- TCP ---

func (p *FaultProxy) serveTCP() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Go(func() { p.pipe(c.(*trackedConn)) })
	}
}

func (p *FaultProxy) pipe(client *trackedConn) {
	defer client.Close()
	_, f, ok, _ := p.pick("")
	if ok {
		switch f.Kind {
		case FaultReset, FaultOutage:
			client.reset()
			return
		case FaultBlackhole:
			p.blackhole(client)
			return
		}
	}
	upstream, err := net.DialTimeout("tcp", p.tcp, 5*time.Second)
	if err != nil {
		client.reset()
		return
	}
	defer upstream.Close()
	var wg sync.WaitGroup
	copyDir := func(dst, src net.Conn) {
		defer wg.Done()
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				if !p.tcpChunk(client) {
					client.reset()
					_ = upstream.Close()
					return
				}
				if _, werr := dst.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		// One side ended: end both, so the other copy returns.
		_ = dst.Close()
		_ = src.Close()
	}
	wg.Add(2)
	go copyDir(upstream, client)
	go copyDir(client, upstream)
	wg.Wait()
}

// tcpChunk applies the faults in force to one chunk of a connection: a latency is slept, a
// blackhole holds the chunk until it is lifted. It reports false if the connection must end.
func (p *FaultProxy) tcpChunk(c *trackedConn) bool {
	for {
		p.mu.Lock()
		var latency time.Duration
		hole := false
		for _, f := range p.faults {
			switch f.Kind {
			case FaultLatency:
				latency += f.Latency
			case FaultBlackhole:
				hole = true
			}
		}
		_, open := p.conns[c]
		changed := p.changed
		if latency > 0 {
			p.counts[FaultLatency]++
		}
		p.mu.Unlock()
		if !open {
			return false // cut by an outage or a reset
		}
		if !hole {
			if latency > 0 {
				time.Sleep(latency)
			}
			return true
		}
		<-changed
	}
}

// blackhole reads and drops what the client sends until the blackhole is lifted or the
// connection is cut; then it closes.
func (p *FaultProxy) blackhole(c *trackedConn) {
	go func() { _, _ = io.Copy(io.Discard, c) }()
	for {
		p.mu.Lock()
		hole := hasKind(p.faults, FaultBlackhole)
		_, open := p.conns[c]
		changed := p.changed
		p.mu.Unlock()
		if !hole || !open {
			c.reset()
			return
		}
		<-changed
	}
}

func hasKind(fs []Fault, k FaultKind) bool {
	return slices.ContainsFunc(fs, func(f Fault) bool { return f.Kind == k })
}
