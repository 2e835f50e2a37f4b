//go:build e2e

package chaos

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/siskin-dev/siskin/test/lab"
)

// loadRoute is one kind of request of the mix.
type loadRoute struct {
	name    string
	share   float64
	path    string
	headers map[string]string
	body    func(i int) []byte
	bad     bool // bad input: a 4xx is its right answer
}

// loadResult is what one route got.
type loadResult struct {
	latencies []time.Duration
	codes     map[int]int
	noRetry   int // 503 or 429 without Retry-After
	errors    int // transport errors (no answer)
	samples   map[int]string
}

// BenchmarkWebhookLoad sends the mixed webhooks (registry, Alertmanager, CloudEvents, some bad
// input) at LOAD_RPS (default 1,000) requests per second for LOAD_FOR (30 s), open loop, spread
// over two `siskin serve` processes, with three bursts of LOAD_BURST (2,000) requests at once,
// and prints the throughput held, p50/p99/p999 per route, the status codes, and each process's
// RSS and goroutines before, right after, and 15 s after the load. A figure, never a pass/fail:
// only answers outside the allowed set (2xx, 4xx for bad input, 503/429 with Retry-After) fail.
//
//	go test -tags e2e -run '^$' -bench BenchmarkWebhookLoad -benchtime 1x ./test/chaos/   (make bench-load)
func BenchmarkWebhookLoad(b *testing.B) {
	rps := envInt("LOAD_RPS", 1000)
	dur := time.Duration(envInt("LOAD_FOR", 30)) * time.Second
	burst := envInt("LOAD_BURST", 2000)
	c := newCluster(b, fmt.Sprintf("load-%d", time.Now().UnixNano()%100000))
	l := c.lab
	env := siskinEnv(c.ns, l.SiskinKubeconfig(), l.RedisURL(), l.PrometheusURL(), l.Registry(),
		"SISKIN_TICK_WINDOW=1ms", "SISKIN_RESYNC=0s", "SISKIN_LOG_LEVEL=warn")
	procs := []*proc{newProc(b, l, "siskin-load-0", env), newProc(b, l, "siskin-load-1", env)}
	distribution, err := os.ReadFile(filepath.Join(repoDir(), "handlers", "testdata", "distribution", "registry-2.8.2-push-manifest-oci.json"))
	if err != nil {
		b.Fatal(err)
	}
	alert := alertBody(b, c.ns, "nobody", "load")
	routes := []loadRoute{
		{name: "POST / ping", share: 0.30, path: "/", headers: pingHeaders("x"), body: func(int) []byte { return []byte(`{}`) }},
		{name: "POST / push CloudEvent", share: 0.15, path: "/?namespace=" + c.ns, headers: ceHeaders("x", "dev.siskin.image.pushed.v1", "load/ci"),
			body: func(i int) []byte { return pushEvent(l.Registry(), "lab/nobody", fmt.Sprintf("1.0.%d", i)) }},
		{name: "POST /webhooks/registry", share: 0.25, path: "/webhooks/registry?namespace=" + c.ns,
			headers: map[string]string{"Content-Type": "application/vnd.docker.distribution.events.v1+json"}, body: func(int) []byte { return distribution }},
		{name: "POST /webhooks/alertmanager", share: 0.20, path: "/webhooks/alertmanager", headers: map[string]string{"Content-Type": "application/json"},
			body: func(int) []byte { return alert }},
		{name: "bad input (400)", share: 0.10, path: "/webhooks/alertmanager", headers: map[string]string{"Content-Type": "application/json"},
			body: func(int) []byte { return []byte(`{"version":"4","alerts":[{"status":7}]}`) }, bad: true},
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 512, MaxConnsPerHost: 0}}
	var (
		mu      sync.Mutex
		results = map[string]*loadResult{}
		sent    atomic.Int64
		dropped atomic.Int64
	)
	for _, r := range routes {
		results[r.name] = &loadResult{codes: map[int]int{}, samples: map[int]string{}}
	}
	inflight := make(chan struct{}, 4096)
	var wg sync.WaitGroup
	fire := func(ctx context.Context, i int) {
		select {
		case inflight <- struct{}{}:
		default:
			dropped.Add(1) // the generator's own bound: more than 4,096 unanswered
			return
		}
		sent.Add(1)
		r := routes[pick(routes, i)]
		p := procs[i%len(procs)]
		wg.Go(func() {
			defer func() { <-inflight }()
			headers := maps(r.headers)
			if _, ok := headers["Ce-Id"]; ok {
				headers["Ce-Id"] = fmt.Sprintf("load-%d", i)
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, p.url()+r.path, bytes.NewReader(r.body(i)))
			req.Header.Set("Authorization", "Bearer "+webhookToken)
			for k, v := range headers {
				req.Header.Set(k, v)
			}
			start := time.Now()
			resp, err := client.Do(req)
			took := time.Since(start)
			mu.Lock()
			defer mu.Unlock()
			res := results[r.name]
			if err != nil {
				res.errors++
				return
			}
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if _, ok := res.samples[resp.StatusCode]; !ok && resp.StatusCode/100 != 2 {
				res.samples[resp.StatusCode] = strings.TrimSpace(string(body))
			}
			res.latencies = append(res.latencies, took)
			res.codes[resp.StatusCode]++
			if (resp.StatusCode == 503 || resp.StatusCode == 429) && resp.Header.Get("Retry-After") == "" {
				res.noRetry++
			}
		})
	}
	time.Sleep(2 * time.Second)
	before := snapshot(procs)
	ctx := context.Background()
	b.ResetTimer()
	start := time.Now()
	period := time.Second / time.Duration(rps)
	bursts := map[int]bool{int(dur / 4 / period): true, int(dur / 2 / period): true, int(3 * dur / 4 / period): true}
	i := 0
	for n := 0; time.Since(start) < dur; n++ {
		// Open loop: requests are due at n*period whatever the answers; a late generator
		// catches up.
		for ; time.Duration(i)*period <= time.Since(start); i++ {
			fire(ctx, i)
			if bursts[i] {
				for j := range burst {
					fire(ctx, 1_000_000+i*burst+j)
				}
			}
		}
		time.Sleep(period)
	}
	sendTook := time.Since(start)
	wg.Wait()
	took := time.Since(start)
	b.StopTimer()
	client.CloseIdleConnections() // the senders' keep-alive connections hold server goroutines
	right := snapshot(procs)
	// Long enough for the forced collection (every 2 min) to run: the heap then shows what
	// the load left behind, not garbage nobody collected yet.
	settle := time.Duration(envInt("LOAD_SETTLE", 130)) * time.Second
	time.Sleep(settle)
	after := snapshot(procs)

	var out strings.Builder
	total := 0
	for _, r := range results {
		total += len(r.latencies)
	}
	fmt.Fprintf(&out, "\nLoad: %d req/s for %v plus 3 bursts of %d, over 2 processes: %d sent in %v, %d answered in %v (%.0f answers/s), %d not sent (generator bound)\n\n",
		rps, dur, burst, sent.Load(), sendTook.Round(time.Millisecond), total, took.Round(time.Millisecond), float64(total)/took.Seconds(), dropped.Load())
	out.WriteString("| route | answers | p50 | p99 | p999 | max | status codes | no answer | 503/429 without Retry-After |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	bad := 0
	for _, r := range routes {
		res := results[r.name]
		slices.Sort(res.latencies)
		fmt.Fprintf(&out, "| %s | %d | %v | %v | %v | %v | %s | %d | %d |\n", r.name, len(res.latencies),
			q(res.latencies, 0.5), q(res.latencies, 0.99), q(res.latencies, 0.999), q(res.latencies, 1), fmtCodes(res.codes), res.errors, res.noRetry)
		for code, n := range res.codes {
			ok := code/100 == 2 || ((code == 503 || code == 429) && res.noRetry == 0) || (r.bad && code/100 == 4)
			if !ok {
				bad += n
			}
		}
		bad += res.noRetry
	}
	out.WriteString("\nAnswers other than 2xx, one of each:\n\n")
	for _, r := range routes {
		for code, body := range results[r.name].samples {
			fmt.Fprintf(&out, "- %s → %d: `%s`\n", r.name, code, body)
		}
	}
	fmt.Fprintf(&out, "\n| process (before / right after / %v after) | RSS | heap in use | goroutines |\n| --- | --- | --- | --- |\n", settle)
	for i, p := range procs {
		fmt.Fprintf(&out, "| %s | %s / %s / %s | %s / %s / %s | %d / %d / %d |\n", p.name, mib(before[i].rss), mib(right[i].rss), mib(after[i].rss),
			mib(before[i].heap), mib(right[i].heap), mib(after[i].heap), before[i].goroutines, right[i].goroutines, after[i].goroutines)
	}
	b.Log(out.String())
	writeFigures(b, l, "load.md", "Webhook load", out.String(), nil)
	if bad > 0 {
		b.Errorf("%d answers outside 2xx, 4xx for bad input, and 503/429 with Retry-After", bad)
	}
}

func pick(routes []loadRoute, i int) int {
	// a deterministic spread by share: i's position in a cycle of 100
	x := float64((i*37)%100) / 100
	for j, r := range routes {
		if x < r.share {
			return j
		}
		x -= r.share
	}
	return len(routes) - 1
}

func maps(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func q(ds []time.Duration, p float64) string {
	if len(ds) == 0 {
		return "-"
	}
	return lab.Percentile(ds, p*100).Round(100 * time.Microsecond).String()
}

type procStats struct {
	rss        int64
	heap       int64 // go_memstats_heap_inuse_bytes
	goroutines int
}

func snapshot(procs []*proc) []procStats {
	out := make([]procStats, len(procs))
	for i, p := range procs {
		p.mu.Lock()
		pid := p.cmd.Process.Pid
		p.mu.Unlock()
		if f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
					kb, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
					out[i].rss = kb << 10
				}
			}
			f.Close()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.url()+"/metrics", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			for sc.Scan() {
				if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
					out[i].goroutines, _ = strconv.Atoi(strings.TrimSpace(v))
				}
				if v, ok := strings.CutPrefix(sc.Text(), "go_memstats_heap_inuse_bytes "); ok {
					f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
					out[i].heap = int64(f)
				}
			}
			resp.Body.Close()
		}
		cancel()
	}
	return out
}

func mib(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }

func envInt(k string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil && v > 0 {
		return v
	}
	return def
}
