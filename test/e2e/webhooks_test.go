//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Webhooks of every type against receivers run by the test (Flagger's webhook contract):
// Flagger's payload, the phase each type is told, the checksum of the revision, and each type's
// failure semantics.

const hooksSpec = `service:
  port: 9898
analysis:
  interval: 10s
  threshold: 2
  stepWeight: 50
  maxWeight: 50
  webhooks:
    - name: gate
      type: confirm-rollout
      url: %[1]s/confirm-rollout
      metadata:
        gate: rollout
    - name: smoke
      type: pre-rollout
      url: %[1]s/pre-rollout
      timeout: 5s
      metadata:
        type: bash
        cmd: curl -s http://hooks-canary/token
    - name: load
      type: rollout
      url: %[1]s/rollout
      metadata:
        cmd: hey -z 1m -q 10 -c 2 http://hooks-canary/
    - name: untyped
      url: %[1]s/untyped
    - name: traffic
      type: confirm-traffic-increase
      url: %[1]s/traffic
    - name: promotion
      type: confirm-promotion
      url: %[1]s/promotion
    - name: notify
      type: post-rollout
      url: %[1]s/post-rollout
      metadata:
        channel: releases
    - name: rollback
      type: rollback
      url: %[1]s/rollback
    - name: events
      type: event
      url: %[1]s/events
      metadata:
        team: web
        eventType: must-not-override
`

var hookMetadata = map[string]map[string]string{
	"/confirm-rollout": {"gate": "rollout"},
	"/pre-rollout":     {"type": "bash", "cmd": "curl -s http://hooks-canary/token"},
	"/rollout":         {"cmd": "hey -z 1m -q 10 -c 2 http://hooks-canary/"},
	"/post-rollout":    {"channel": "releases"},
}

// hookStep is one step seen through its webhook calls.
type hookStep struct {
	snap  snap
	calls []hookCall // every call but the event webhook's
}

// stepHooks ticks until the canary shows want, and returns the calls of the step that got it
// there. Events are kept aside in *events.
func (r *rel) stepHooks(h *hookRecorder, events *[]hookCall, want stage, maxSteps int) hookStep {
	r.t.Helper()
	prev := r.snap()
	for step := 1; step <= maxSteps; step++ {
		keepEvents(h.take(), events)
		stepped := r.tick()
		got := r.snap()
		calls := keepEvents(h.take(), events)
		r.checkInvariants(step, got)
		if want.diff(got) == "" && stepped {
			r.t.Logf("%v; hooks %v", got, paths(calls))
			return hookStep{snap: got, calls: calls}
		}
		if !got.same(prev) {
			r.t.Fatalf("step %d: got %v, want %v:\n%s", step, got, want, want.diff(got))
		}
		prev = got
		time.Sleep(250 * time.Millisecond)
	}
	r.t.Fatalf("after %d steps the canary is at %v, want %v", maxSteps, prev, want)
	return hookStep{}
}

func keepEvents(calls []hookCall, events *[]hookCall) []hookCall {
	var rest []hookCall
	for _, c := range calls {
		if c.Path == "/events" {
			*events = append(*events, c)
		} else {
			rest = append(rest, c)
		}
	}
	return rest
}

// checkCalls asserts which hooks a step called (in any order: types are asked concurrently) and
// each body, and returns the checksums by path.
func checkCalls(t *testing.T, ns, name string, got hookStep, phases map[string]string) map[string]string {
	t.Helper()
	return checkCallsWith(t, ns, name, got, phases, hookMetadata)
}

func checkCallsWith(t *testing.T, ns, name string, got hookStep, phases map[string]string, metadata map[string]map[string]string) map[string]string {
	t.Helper()
	want := make([]string, 0, len(phases))
	for p := range phases {
		want = append(want, p)
	}
	sort.Strings(want)
	have := paths(got.calls)
	sort.Strings(have)
	if !slices.Equal(have, want) {
		t.Errorf("at %s: hooks called %v, want %v", got.snap.Phase, have, want)
	}
	sums := map[string]string{}
	for _, c := range got.calls {
		if phase, ok := phases[c.Path]; ok {
			sums[c.Path] = checkHookBody(t, c, ns, name, phase, metadata[c.Path])
		}
	}
	return sums
}

// sameChecksum asserts that every checksum of a set is want.
func sameChecksum(t *testing.T, what string, sums map[string]string, want string) {
	t.Helper()
	for p, s := range sums {
		if s != want {
			t.Errorf("%s: %s sent checksum %s, want %s (the revision's)", what, p, s, want)
		}
	}
}

func TestWebhooksEveryTypeThroughAReleaseAndARollback(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "hooks-all")
	h := newHookRecorder(t)
	var events []hookCall
	start := time.Now()
	e.createDeployment("hooks", e.lab.Registry()+"/lab/hooks:1.0.0", 1)
	e.apply(specCanary(e.ns, "hooks", fmt.Sprintf(hooksSpec, h.srv.URL)))
	s := startSiskin(t, e.lab, siskinOpts{namespace: e.ns})
	r := newRel(t, e, s, "hooks")
	r.initialize(weighted("hooks", 100, 0))
	keepEvents(h.take(), &events)
	for _, p := range []string{"/confirm-rollout", "/traffic", "/promotion", "/rollback"} {
		h.set(p, http.StatusForbidden) // closed gates; a rollback hook that answers 403 asks for nothing
	}
	h.set("/pre-rollout", http.StatusInternalServerError)
	e.setImage("hooks", e.lab.Registry()+"/lab/hooks:2.0.0")
	ns := e.ns

	// confirm-rollout closed: Waiting, the traffic stays on the primary. The gate is told the
	// phase the canary is in; while Waiting, the rollback hook is consulted too, as Flagger's docs promise.
	st := r.stepHooks(h, &events, stage{Phase: "Waiting", Routes: weighted("hooks", 100, 0)}, 5)
	before := checkCalls(t, ns, "hooks", st, map[string]string{"/confirm-rollout": "Initialized"})["/confirm-rollout"]
	for range 2 {
		st = r.stepHooks(h, &events, stage{Phase: "Waiting", Routes: weighted("hooks", 100, 0)}, 1)
		sameChecksum(t, "Waiting", checkCalls(t, ns, "hooks", st, map[string]string{"/confirm-rollout": "Waiting", "/rollback": "Waiting"}), before)
	}
	// Opened: Progressing.
	h.set("/confirm-rollout", http.StatusOK)
	st = r.stepHooks(h, &events, stage{Phase: "Progressing", Routes: weighted("hooks", 100, 0)}, 1)
	checkCalls(t, ns, "hooks", st, map[string]string{"/confirm-rollout": "Waiting", "/rollback": "Waiting"})

	// pre-rollout fails: one failed check, no weight.
	st = r.stepHooks(h, &events, stage{Phase: "Progressing", FailedChecks: 1, Routes: weighted("hooks", 100, 0)}, 20)
	release := checkCalls(t, ns, "hooks", st, map[string]string{"/rollback": "Progressing", "/pre-rollout": "Progressing"})["/pre-rollout"]
	if release == before {
		t.Errorf("the new revision has the old revision's checksum %s", release)
	}
	// pre-rollout passes, confirm-traffic-increase is closed: the weight holds, no failed check.
	h.set("/pre-rollout", http.StatusOK)
	for range 2 {
		st = r.stepHooks(h, &events, stage{Phase: "Progressing", FailedChecks: 1, Routes: weighted("hooks", 100, 0)}, 1)
		sameChecksum(t, "traffic held", checkCalls(t, ns, "hooks", st, map[string]string{
			"/rollback": "Progressing", "/pre-rollout": "Progressing", "/traffic": "Progressing"}), release)
	}
	h.set("/traffic", http.StatusOK)
	st = r.stepHooks(h, &events, stage{Phase: "Progressing", Weight: 50, FailedChecks: 1, Routes: weighted("hooks", 50, 50)}, 1)
	sameChecksum(t, "traffic opened", checkCalls(t, ns, "hooks", st, map[string]string{
		"/rollback": "Progressing", "/pre-rollout": "Progressing", "/traffic": "Progressing"}), release)

	// At maxWeight: the rollout hooks (typed and untyped) run, confirm-promotion is closed.
	rollout := map[string]string{"/rollback": "Progressing", "/rollout": "Progressing", "/untyped": "Progressing", "/promotion": "Progressing"}
	st = r.stepHooks(h, &events, stage{Phase: "WaitingPromotion", Weight: 50, FailedChecks: 1, Routes: weighted("hooks", 50, 50)}, 1)
	sameChecksum(t, "confirm-promotion", checkCalls(t, ns, "hooks", st, rollout), release)
	rollout["/rollback"] = "WaitingPromotion"
	st = r.stepHooks(h, &events, stage{Phase: "WaitingPromotion", Weight: 50, FailedChecks: 1, Routes: weighted("hooks", 50, 50)}, 1)
	sameChecksum(t, "WaitingPromotion", checkCalls(t, ns, "hooks", st, rollout), release)
	h.set("/promotion", http.StatusOK)
	st = r.stepHooks(h, &events, stage{Phase: "Promoting", Weight: 50, FailedChecks: 1, Routes: weighted("hooks", 50, 50)}, 1)
	sameChecksum(t, "promotion opened", checkCalls(t, ns, "hooks", st, rollout), release)
	// Flagger never resets failedChecks on success: only a new release or a rollback does.
	st = r.stepHooks(h, &events, stage{Phase: "Finalising", FailedChecks: 1, Routes: weighted("hooks", 100, 0)}, 10)
	checkCalls(t, ns, "hooks", st, map[string]string{})
	st = r.stepHooks(h, &events, stage{Phase: "Succeeded", FailedChecks: 1, Routes: weighted("hooks", 100, 0)}, 10)
	sameChecksum(t, "post-rollout", checkCalls(t, ns, "hooks", st, map[string]string{"/post-rollout": "Succeeded"}), release)
	checkPromoted(t, e, "hooks")

	// A second release rolled back by its rollback hook during the analysis.
	e.setImage("hooks", e.lab.Registry()+"/lab/hooks:3.0.0")
	st = r.stepHooks(h, &events, stage{Phase: "Progressing", Routes: weighted("hooks", 100, 0)}, 5)
	sameChecksum(t, "second release", checkCalls(t, ns, "hooks", st, map[string]string{"/confirm-rollout": "Succeeded"}), release)
	st = r.stepHooks(h, &events, stage{Phase: "Progressing", Weight: 50, Routes: weighted("hooks", 50, 50)}, 20)
	second := checkCalls(t, ns, "hooks", st, map[string]string{"/rollback": "Progressing", "/pre-rollout": "Progressing", "/traffic": "Progressing"})["/pre-rollout"]
	if second == release || second == before {
		t.Errorf("the third revision's checksum %s repeats an earlier one (%s, %s)", second, before, release)
	}
	h.set("/rollback", http.StatusOK)
	st = r.stepHooks(h, &events, stage{Phase: "Failed", Routes: weighted("hooks", 100, 0)}, 1)
	sameChecksum(t, "rollback", checkCalls(t, ns, "hooks", st, map[string]string{"/rollback": "Progressing", "/post-rollout": "Failed"}), second)
	if _, replicas := e.deployment("hooks"); replicas != 0 {
		t.Errorf("target has %d replicas after the rollback, want 0", replicas)
	}
	if img, _ := e.deployment("hooks-primary"); img != e.lab.Registry()+"/lab/hooks:2.0.0" {
		t.Errorf("primary runs %s after the rollback, want the promoted 2.0.0", img)
	}

	// The event webhook received every Kubernetes Event, with Flagger's event payload.
	checkEventHook(t, e, "hooks", events, start, []string{before, release, second})
}

// checkEventHook asserts that the event webhook received each Kubernetes Event recorded on the
// canary, as Flagger's payload: metadata eventMessage, eventType and timestamp, plus the hook's
// own metadata, which cannot override them; the checksum is one of the revisions'.
func checkEventHook(t *testing.T, e *env, name string, events []hookCall, start time.Time, checksums []string) {
	t.Helper()
	recorded := e.canaryEvents(name)
	received := map[string]string{}
	for _, c := range events {
		meta, _ := c.Body["metadata"].(map[string]any)
		msg, _ := meta["eventMessage"].(string)
		typ, _ := meta["eventType"].(string)
		received[msg] = typ
		ms, err := strconv.ParseInt(fmt.Sprint(meta["timestamp"]), 10, 64)
		if err != nil || time.UnixMilli(ms).Before(start.Add(-time.Second)) || time.UnixMilli(ms).After(time.Now()) {
			t.Errorf("event %q: timestamp %v is not unix milliseconds of this test", msg, meta["timestamp"])
		}
		phase, _ := c.Body["phase"].(string)
		want := map[string]any{"name": name, "namespace": e.ns, "phase": phase, "checksum": c.Body["checksum"],
			"metadata": map[string]any{"eventMessage": msg, "eventType": typ, "timestamp": meta["timestamp"], "team": "web"}}
		if d := cmp.Diff(want, c.Body); d != "" {
			t.Errorf("event %q: body (-want +got):\n%s", msg, d)
		}
		if phase != "" && phase != "Initializing" && !slices.Contains(checksums, fmt.Sprint(c.Body["checksum"])) {
			t.Errorf("event %q in %s: checksum %v is none of the revisions' %v", msg, phase, c.Body["checksum"], checksums)
		}
	}
	if d := cmp.Diff(recorded, received); d != "" {
		t.Errorf("event webhook vs Kubernetes Events, message -> type (-recorded +received):\n%s", d)
	}
	if len(recorded) < 10 {
		t.Errorf("only %d distinct events recorded: %v", len(recorded), recorded)
	}
}

func TestRollbackHookRollsBackAWaitingCanary(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "hooks-waiting")
	h := newHookRecorder(t)
	e.createDeployment("waiter", e.lab.Registry()+"/lab/waiter:1.0.0", 1)
	e.apply(specCanary(e.ns, "waiter", fmt.Sprintf(`service:
  port: 9898
analysis:
  interval: 10s
  threshold: 2
  stepWeight: 10
  webhooks:
    - name: gate
      type: confirm-rollout
      url: %[1]s/confirm-rollout
    - name: rollback
      type: rollback
      url: %[1]s/rollback
    - name: notify
      type: post-rollout
      url: %[1]s/post-rollout
`, h.srv.URL)))
	s := startSiskin(t, e.lab, siskinOpts{namespace: e.ns})
	r := newRel(t, e, s, "waiter")
	r.initialize(weighted("waiter", 100, 0))
	h.set("/confirm-rollout", http.StatusForbidden)
	h.set("/rollback", http.StatusForbidden)
	e.setImage("waiter", e.lab.Registry()+"/lab/waiter:2.0.0")
	var events []hookCall
	r.stepHooks(h, &events, stage{Phase: "Waiting", Routes: weighted("waiter", 100, 0)}, 5)
	h.set("/rollback", http.StatusOK)
	st := r.stepHooks(h, &events, stage{Phase: "Failed", Routes: weighted("waiter", 100, 0)}, 1)
	checkCallsWith(t, e.ns, "waiter", st, map[string]string{"/confirm-rollout": "Waiting", "/rollback": "Waiting", "/post-rollout": "Failed"}, nil)
	if _, replicas := e.deployment("waiter"); replicas != 0 {
		t.Errorf("target has %d replicas, want 0", replicas)
	}
	// The rolled-back revision does not start again on its own.
	h.set("/rollback", http.StatusForbidden)
	h.set("/confirm-rollout", http.StatusOK)
	r.holds(2, stage{Phase: "Failed", Routes: weighted("waiter", 100, 0)})
}

// waitReady waits until a Deployment's rollout is complete.
func (e *env) waitReady(name string) {
	e.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		d, err := e.kube.AppsV1().Deployments(e.ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			e.t.Fatal(err)
		}
		if d.Status.ObservedGeneration >= d.Generation && d.Spec.Replicas != nil &&
			d.Status.UpdatedReplicas == *d.Spec.Replicas && d.Status.AvailableReplicas == *d.Spec.Replicas && d.Status.Replicas == *d.Spec.Replicas {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.t.Fatalf("deployment %s never became ready", name)
}

// A slow webhook fails its own canary's gate and holds up nobody else: two canaries are due in
// the same tick; the fast one's step is saved while the slow one's hook is still waiting for its
// answer, before its timeout.
func TestSlowWebhookHoldsUpOnlyItsCanary(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "hooks-slow")
	h := newHookRecorder(t)
	for _, n := range []string{"slow", "fast"} {
		e.createDeployment(n, e.lab.Registry()+"/lab/"+n+":1.0.0", 1)
	}
	manifests := map[string][]byte{}
	manifests["slow"] = specCanary(e.ns, "slow", fmt.Sprintf(`service:
  port: 9898
analysis:
  interval: 10s
  threshold: 2
  stepWeight: 10
  webhooks:
    - name: approval
      type: confirm-traffic-increase
      url: %s/slow
      timeout: 5s
`, h.srv.URL))
	manifests["fast"] = specCanary(e.ns, "fast", `service:
  port: 9898
analysis:
  interval: 10s
  threshold: 2
  stepWeight: 10
`)
	s := startSiskin(t, e.lab, siskinOpts{namespace: e.ns})
	slow, fast := newRel(t, e, s, "slow"), newRel(t, e, s, "fast")
	for _, r := range []*rel{slow, fast} {
		// One at a time: a tick steps every due canary of the namespace, and each is checked
		// from its very first step.
		e.apply(manifests[r.name])
		r.initialize(weighted(r.name, 100, 0))
		e.setImage(r.name, e.lab.Registry()+"/lab/"+r.name+":2.0.0")
		r.steps([]stage{{Phase: "Initialized", Routes: weighted(r.name, 100, 0)}, {Phase: "Progressing", Routes: weighted(r.name, 100, 0)}}, 5)
		e.waitReady(r.name)
	}
	h.holdCalls("/slow")

	var (
		mu    sync.Mutex
		order []string
	)
	note := func(what string) {
		mu.Lock()
		defer mu.Unlock()
		order = append(order, what)
	}
	h.onCall = func(hookCall) { note("slow hook called") }
	h.onDone = func(c hookCall) {
		if c.Cancelled {
			note("slow hook given up")
		} else {
			note("slow hook answered")
		}
	}
	before := s.view(e.ns, "fast").Steps
	done := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if s.view(e.ns, "fast").Steps > before {
				note("fast step saved")
				return
			}
		}
	}()
	forceDue(t, e, "slow", "fast")
	code, body := s.tick("one-tick-for-both")
	close(done)
	<-watched
	if code != http.StatusOK {
		t.Fatalf("tick: %d %s", code, body)
	}
	mu.Lock()
	got := slices.Clone(order)
	mu.Unlock()
	want := []string{"fast step saved", "slow hook given up"}
	var seen []string
	for _, o := range got {
		if slices.Contains(want, o) {
			seen = append(seen, o)
		}
	}
	if !slices.Equal(seen, want) || !slices.Contains(got, "slow hook called") {
		t.Fatalf("order of events %v, want the fast canary's step saved before the slow hook was given up on", got)
	}
	if d := (stage{Phase: "Progressing", Weight: 10, Routes: weighted("fast", 90, 10)}).diff(fast.snap()); d != "" {
		t.Errorf("fast canary: %s", d)
	}
	// The slow canary's gate failed: the weight holds, and a gate counts no failed check.
	got2 := slow.snap()
	if d := (stage{Phase: "Progressing", Routes: weighted("slow", 100, 0)}).diff(got2); d != "" {
		t.Errorf("slow canary: %s", d)
	}
	t.Logf("slow canary after the tick: %s", got2.message)
}

// alertSeen is one alert as a receiver got it, without its timestamp.
type alertSeen struct {
	Severity, Message string
	Fields            map[string]any
}

// alertsOn checks every alert body posted to path (Siskin's generic JSON webhook: name,
// namespace, severity, message, fields, timestamp) and returns them in order.
func alertsOn(t *testing.T, calls []hookCall, path, ns, name string, start time.Time) []alertSeen {
	t.Helper()
	var out []alertSeen
	for _, c := range onPath(calls, path) {
		ts, _ := c.Body["timestamp"].(string)
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil || at.Before(start.Add(-time.Second)) || at.After(time.Now()) {
			t.Errorf("%s: timestamp %q is not RFC 3339 of this test", path, ts)
		}
		fields, _ := c.Body["fields"].(map[string]any)
		want := map[string]any{"name": name, "namespace": ns, "severity": c.Body["severity"], "message": c.Body["message"],
			"fields": fields, "timestamp": ts}
		if d := cmp.Diff(want, c.Body); d != "" || fields == nil {
			t.Errorf("%s: alert body (-want +got):\n%s\nraw: %s", path, d, c.Raw)
		}
		out = append(out, alertSeen{Severity: fmt.Sprint(c.Body["severity"]), Message: fmt.Sprint(c.Body["message"]), Fields: fields})
	}
	return out
}

func TestAlertProvidersReceiveFlaggersAlertsBySeverity(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "hooks-alerts")
	ctx := context.Background()
	start := time.Now()
	hooks, alerts := newHookRecorder(t), newHookRecorder(t)
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "on-call-url", Namespace: e.ns},
		StringData: map[string]string{"address": alerts.url("/error")}}
	if _, err := e.kube.CoreV1().Secrets(e.ns).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.apply([]byte(fmt.Sprintf(`apiVersion: flagger.app/v1beta1
kind: AlertProvider
metadata:
  name: team
  namespace: %[1]s
spec:
  type: webhook
  address: %[2]s/info
---
apiVersion: flagger.app/v1beta1
kind: AlertProvider
metadata:
  name: ops
  namespace: %[1]s
spec:
  type: webhook
  address: %[2]s/warn
---
apiVersion: flagger.app/v1beta1
kind: AlertProvider
metadata:
  name: on-call
  namespace: %[1]s
spec:
  type: webhook
  secretRef:
    name: on-call-url
`, e.ns, alerts.srv.URL)))
	e.createDeployment("alerted", e.lab.Registry()+"/lab/alerted:1.0.0", 1)
	e.apply(specCanary(e.ns, "alerted", fmt.Sprintf(`service:
  port: 9898
analysis:
  interval: 10s
  threshold: 1
  stepWeight: 50
  maxWeight: 50
  alerts:
    - name: everything
      severity: info
      providerRef:
        name: team
    - name: warnings
      severity: warn
      providerRef:
        name: ops
    - name: pager
      severity: error
      providerRef:
        name: on-call
        namespace: %[2]s
  webhooks:
    - name: gate
      type: confirm-rollout
      url: %[1]s/confirm-rollout
    - name: load
      type: rollout
      url: %[1]s/rollout
`, hooks.srv.URL, e.ns)))
	s := startSiskin(t, e.lab, siskinOpts{namespace: e.ns})
	r := newRel(t, e, s, "alerted")
	r.initialize(weighted("alerted", 100, 0))

	// A release that waits for approval, then succeeds.
	hooks.set("/confirm-rollout", http.StatusForbidden)
	e.setImage("alerted", e.lab.Registry()+"/lab/alerted:2.0.0")
	r.steps([]stage{{Phase: "Initialized", Routes: weighted("alerted", 100, 0)}, {Phase: "Waiting", Routes: weighted("alerted", 100, 0)}}, 10)
	hooks.set("/confirm-rollout", http.StatusOK)
	r.steps([]stage{
		{Phase: "Waiting", Routes: weighted("alerted", 100, 0)},
		{Phase: "Progressing", Routes: weighted("alerted", 100, 0)},
		{Phase: "Progressing", Weight: 50, Routes: weighted("alerted", 50, 50)},
		{Phase: "Promoting", Weight: 50, Routes: weighted("alerted", 50, 50)},
		{Phase: "Finalising", Routes: weighted("alerted", 100, 0)},
		{Phase: "Succeeded", Routes: weighted("alerted", 100, 0)},
	}, 40)
	// A release whose rollout hook fails: threshold 1 rolls it back.
	hooks.set("/rollout", http.StatusInternalServerError)
	e.setImage("alerted", e.lab.Registry()+"/lab/alerted:3.0.0")
	r.steps([]stage{
		{Phase: "Succeeded", Routes: weighted("alerted", 100, 0)},
		{Phase: "Progressing", Routes: weighted("alerted", 100, 0)},
		{Phase: "Progressing", Weight: 50, Routes: weighted("alerted", 50, 50)},
		{Phase: "Failed", Routes: weighted("alerted", 100, 0)},
	}, 40)

	calls := alerts.take()
	meta := map[string]any{"Target": "Deployment/alerted." + e.ns, "Failed checks threshold": "1",
		"Progress deadline": "600s", "Traffic routing": "Weight step: 50 max: 50"}
	none := map[string]any{}
	initialized := alertSeen{"info", "New Deployment detected, initialization completed.", meta}
	waiting := alertSeen{"warn", "Canary is waiting for approval.", none}
	started := alertSeen{"info", "New revision detected, progressing canary analysis.", meta}
	succeeded := alertSeen{"info", "Canary analysis completed successfully, promotion finished.", none}
	failed := alertSeen{"error", "Failed checks threshold reached 1", none}
	for path, want := range map[string][]alertSeen{
		"/info":  {initialized, waiting, started, succeeded, started, failed},
		"/warn":  {waiting, failed},
		"/error": {failed},
	} {
		if d := cmp.Diff(want, alertsOn(t, calls, path, e.ns, "alerted", start)); d != "" {
			t.Errorf("alerts on %s (-want +got):\n%s", path, d)
		}
	}
	if other := slices.DeleteFunc(paths(calls), func(p string) bool { return p == "/info" || p == "/warn" || p == "/error" }); len(other) > 0 {
		t.Errorf("alerts posted elsewhere: %v", other)
	}
}

// Success is a status up to 202; a hook with retries is retried on 5xx and 429 (not on 501 or
// 4xx), within the step.
func TestWebhookRetriesAndSuccessCodes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "hooks-retries")
	h := newHookRecorder(t)
	e.createDeployment("retried", e.lab.Registry()+"/lab/retried:1.0.0", 1)
	e.apply(specCanary(e.ns, "retried", fmt.Sprintf(`service:
  port: 9898
analysis:
  interval: 10s
  threshold: 5
  stepWeight: 20
  maxWeight: 40
  webhooks:
    - name: smoke
      type: pre-rollout
      url: %[1]s/pre-rollout
      retries: 2
    - name: load
      type: rollout
      url: %[1]s/rollout
      retries: 3
`, h.srv.URL)))
	s := startSiskin(t, e.lab, siskinOpts{namespace: e.ns})
	r := newRel(t, e, s, "retried")
	r.initialize(weighted("retried", 100, 0))
	e.setImage("retried", e.lab.Registry()+"/lab/retried:2.0.0")
	var events []hookCall
	r.stepHooks(h, &events, stage{Phase: "Progressing", Routes: weighted("retried", 100, 0)}, 5)
	e.waitReady("retried")

	// 503, 429, then 202: passed within the step, after three calls.
	h.answer("/pre-rollout", http.StatusServiceUnavailable, http.StatusTooManyRequests, http.StatusAccepted)
	st := r.stepHooks(h, &events, stage{Phase: "Progressing", Weight: 20, Routes: weighted("retried", 80, 20)}, 5)
	if got := paths(st.calls); !slices.Equal(got, []string{"/pre-rollout", "/pre-rollout", "/pre-rollout"}) {
		t.Errorf("pre-rollout calls %v, want three", got)
	}
	// 203 is not success, and 4xx is not retried: one call, one failed check.
	h.answer("/rollout", http.StatusNonAuthoritativeInfo)
	st = r.stepHooks(h, &events, stage{Phase: "Progressing", Weight: 20, FailedChecks: 1, Routes: weighted("retried", 80, 20)}, 1)
	h.answer("/rollout", http.StatusForbidden)
	st2 := r.stepHooks(h, &events, stage{Phase: "Progressing", Weight: 20, FailedChecks: 2, Routes: weighted("retried", 80, 20)}, 1)
	if got := append(paths(st.calls), paths(st2.calls)...); !slices.Equal(got, []string{"/rollout", "/rollout"}) {
		t.Errorf("rollout calls %v, want one per step", got)
	}
	// 501 is not retried either; 500 four times exhausts the three retries.
	h.answer("/rollout", http.StatusNotImplemented)
	st = r.stepHooks(h, &events, stage{Phase: "Progressing", Weight: 20, FailedChecks: 3, Routes: weighted("retried", 80, 20)}, 1)
	h.answer("/rollout", 500, 500, 500, 500, 200)
	st2 = r.stepHooks(h, &events, stage{Phase: "Progressing", Weight: 20, FailedChecks: 4, Routes: weighted("retried", 80, 20)}, 1)
	if len(st.calls) != 1 || len(st2.calls) != 4 {
		t.Errorf("rollout calls: %d on 501 (want 1), %d on 500s (want 4)", len(st.calls), len(st2.calls))
	}
	// The script's last answer, 200, lets the analysis go on.
	r.stepHooks(h, &events, stage{Phase: "Progressing", Weight: 40, FailedChecks: 4, Routes: weighted("retried", 60, 40)}, 1)
}
