//go:build e2e

package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/siskin-dev/siskin/test/traffic"
)

// volumeEvent is one delivery of the duplicated-event test.
type volumeEvent struct {
	at      time.Duration
	kind    string // tick, step, push
	id      string
	canary  string
	tag     string
	proc    int
	isCopy  bool
	release int // index in releases, for pushes
}

// Ticks, step events and pushes at volume, 30 % of them duplicates, shuffled (a copy may come
// first, late, or at the same moment to another process), over three processes. Every
// canary's weights, as the VirtualService watch saw them, must climb one step at a time at
// most once per interval, and every acknowledged push must release. The short form
// (make test) sends 1,500 events, the full one (CHAOS_FULL=1, make chaos) 10,000.
func TestDuplicatedEventsAtVolume(t *testing.T) {
	total, canaries, span := 1500, 4, 45*time.Second
	if full() {
		total, canaries, span = 10000, 8, 170*time.Second
	}
	const interval = 2 * time.Second
	seed := uint64(20261203)
	rng := rand.New(rand.NewPCG(seed, 1))
	c := newCluster(t, "dup-volume")
	l := c.lab
	reg := l.Registry()
	ex := c.exporter("chaos-dup-volume")
	ctx := context.Background()

	var names []string
	for i := range canaries {
		n := fmt.Sprintf("v%02d", i)
		names = append(names, n)
		ex.Set(c.ns, n, traffic.Behaviour{RPS: 50, LatencyMs: 40})
		ex.Set(c.ns, n+"-primary", traffic.Behaviour{RPS: 50, LatencyMs: 40})
		if err := pushImage(ctx, reg, "lab/"+n, "1.0.0"); err != nil {
			t.Fatal(err)
		}
		c.createCanary(n, reg+"/lab/"+n+":1.0.0", interval.String())
	}
	env := siskinEnv(c.ns, l.SiskinKubeconfig(), l.RedisURL(), l.PrometheusURL(), reg,
		"SISKIN_TICK_WINDOW=1ms", "SISKIN_RESYNC=0s")
	var procs []*proc
	for i := range 3 {
		procs = append(procs, newProc(t, l, fmt.Sprintf("siskin-dup-%d", i), env))
	}
	rec := c.record()
	defer rec.close()
	client := &http.Client{Timeout: 30 * time.Second}

	waitAll := func(what string, timeout time.Duration, done func(n string) bool) {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for i := 0; time.Now().Before(deadline); i++ {
			all := true
			for _, n := range names {
				all = all && done(n)
			}
			if all {
				return
			}
			s := sender{client: client, url: procs[i%3].url()}
			go s.deliver(ctx, "/", pingHeaders(fmt.Sprintf("wait-%s-%d", what, i)), []byte(`{}`))
			time.Sleep(time.Second)
		}
		t.Fatalf("not every canary %s within %v", what, timeout)
	}
	waitAll("Initialized", 2*time.Minute, func(n string) bool { return rec.phase(n) == "Initialized" })

	// The schedule: pushes in waves, one release per canary per wave; ticks and step events
	// spread over the span; then 30 % copies.
	const wave = 45 * time.Second
	var releases []Release
	var events []volumeEvent
	for w := 0; time.Duration(w)*wave+35*time.Second <= span || w == 0; w++ {
		for i, n := range names {
			tag := fmt.Sprintf("1.%d.0", w+1)
			releases = append(releases, Release{Canary: n, Tag: tag, Good: true})
			events = append(events, volumeEvent{at: time.Duration(w)*wave + time.Duration(i)*time.Second, kind: "push",
				id: fmt.Sprintf("push-%s-%s", n, tag), canary: n, tag: tag, release: len(releases) - 1})
		}
	}
	unique := int(float64(total) / 1.3)
	for i := len(events); i < unique; i++ {
		ev := volumeEvent{at: time.Duration(rng.Int64N(int64(span)))}
		if rng.Float64() < 0.55 {
			ev.kind, ev.id = "tick", fmt.Sprintf("tick-%d", i)
		} else {
			ev.kind, ev.canary = "step", names[rng.IntN(len(names))]
			ev.id = fmt.Sprintf("step-%s-%d", ev.canary, i)
		}
		events = append(events, ev)
	}
	for i := range events {
		events[i].proc = rng.IntN(3)
	}
	// Every push is copied twice (once at the same moment to another process, once late);
	// the other copies are drawn among all events until 30 % of the deliveries are copies.
	copyOf := func(ev volumeEvent, sameMoment bool) volumeEvent {
		ev.isCopy = true
		if sameMoment {
			ev.proc = (ev.proc + 1 + rng.IntN(2)) % 3
		} else { // earlier or later, anywhere
			ev.at = max(0, ev.at+time.Duration(rng.Int64N(int64(4*time.Second)))-2*time.Second)
			ev.proc = rng.IntN(3)
		}
		return ev
	}
	for i := range len(releases) {
		events = append(events, copyOf(events[i], true), copyOf(events[i], false))
	}
	for len(events) < total {
		events = append(events, copyOf(events[rng.IntN(unique)], rng.IntN(3) == 0))
	}
	sort.SliceStable(events, func(i, j int) bool { return events[i].at < events[j].at })
	for _, r := range releases {
		if err := pushImage(ctx, reg, "lab/"+r.Canary, r.Tag); err != nil {
			t.Fatal(err)
		}
	}

	var (
		mu      sync.Mutex
		codes   = map[string]map[int]int{}
		copies  int
		acked   = make([]time.Time, len(releases))
		wg      sync.WaitGroup
		sem     = make(chan struct{}, 48)
		started = time.Now()
	)
	for _, ev := range events {
		time.Sleep(time.Until(started.Add(ev.at)))
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			s := sender{client: client, url: procs[ev.proc].url()}
			var (
				at   time.Time
				code int
			)
			switch ev.kind {
			case "tick":
				code = postOnce(ctx, client, s.url+"/", pingHeaders(ev.id), []byte(`{"tick":"advance"}`))
			case "step":
				code = postOnce(ctx, client, s.url+"/", ceHeaders(ev.id, "dev.siskin.canary.step", "/siskin/dispatcher"),
					stepEvent(c.ns, ev.canary, time.Now()))
			case "push":
				dctx, cancel := context.WithTimeout(ctx, 60*time.Second)
				at, code = s.deliver(dctx, "/?namespace="+c.ns, ceHeaders(ev.id, "dev.siskin.image.pushed.v1", "chaos/ci"),
					pushEvent(reg, "lab/"+ev.canary, ev.tag))
				cancel()
			}
			mu.Lock()
			defer mu.Unlock()
			if codes[ev.kind] == nil {
				codes[ev.kind] = map[int]int{}
			}
			codes[ev.kind][code]++
			if ev.isCopy {
				copies++
			}
			if !at.IsZero() && (acked[ev.release].IsZero() || at.Before(acked[ev.release])) {
				acked[ev.release] = at
			}
		})
	}
	wg.Wait()
	sendTook := time.Since(started)
	for i := range releases {
		releases[i].Acked = acked[i]
	}
	waitAll("ended its last release", 3*time.Minute, func(n string) bool {
		_, ok := rec.ended(n, releases[len(releases)-1].Tag)
		return ok
	})

	h := History{Interval: interval, StepWeight: 5, MaxWeight: 50, Threshold: 5, Releases: releases, Slack: 20 * time.Second}
	rec.history(&h)
	f := Check(h)
	var extra [][2]string
	extra = append(extra, [2]string{"watches restarted after an error (history gaps)", fmt.Sprint(rec.restarts.Load())})
	extra = append(extra, [2]string{"events sent", fmt.Sprintf("%d in %v (%d copies)", len(events), sendTook.Round(time.Second), copies)})
	for _, k := range []string{"tick", "step", "push"} {
		extra = append(extra, [2]string{"answers to " + k + " deliveries", fmtCodes(codes[k])})
	}
	writeFigures(t, l, "dup-volume.md", fmt.Sprintf("Duplicated events at volume (%d events, %d canaries, 3 processes, seed %d)", len(events), canaries, seed),
		Table(f, nil, time.Since(started), extra), f.Violations)
	for _, v := range f.Violations {
		t.Errorf("violation: %s", v)
	}
	if f.Steps == 0 {
		t.Errorf("no weight step was observed; the test proved nothing")
	}
	if got, want := f.Releases, len(releases); got != want {
		t.Errorf("got %d pushes acknowledged, want %d", got, want)
	}
}

func postOnce(ctx context.Context, client *http.Client, url string, headers map[string]string, body []byte) int {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytesReader(body))
	if err != nil {
		return 0
	}
	req.Header.Set("Authorization", "Bearer "+webhookToken)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func fmtCodes(m map[int]int) string {
	var ks []int
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	s := ""
	for _, k := range ks {
		if s != "" {
			s += ", "
		}
		name := fmt.Sprint(k)
		if k == 0 {
			name = "no answer"
		}
		s += fmt.Sprintf("%s×%d", name, m[k])
	}
	return s
}
