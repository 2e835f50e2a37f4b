package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/siskin-dev/siskin/functions"
	"github.com/siskin-dev/siskin/test/lab"
	"github.com/siskin-dev/siskin/test/traffic"
)

// scenario is one release played by the demo, in a namespace of its own.
type scenario struct {
	key       string // a, b, c
	title     string
	namespace string
	name      string // the Canary's and its target's name
	fromTag   string
	toTag     string
	alertRule bool // whether a Prometheus alert rule watches the canary
	// gatewayAPI: the Canary routes with an HTTPRoute (provider gatewayapi:v1).
	gatewayAPI bool
	expect     string // what must happen, said on screen
	wantPhase  functions.Phase

	mu           sync.Mutex
	view         functions.CanaryView
	lastWeight   int
	lastFailed   int
	pushedAt     time.Time
	endAt        time.Time // the step (or abort) that reached a final phase, from Siskin's log
	alertFiring  time.Time // Prometheus: the alert's activeAt
	alertArrived time.Time // Siskin: the alert trigger's time (HandleAlerts received it)
	abortedAt    time.Time // Siskin's "aborted" log line: traffic back on the primary, state saved
	abortTook    time.Duration
	checksAtEnd  int // failed checks when the analysis rolled the release back
	samples      []sample
	marks        []mark
	rolling      []traffic.Snapshot
}

// sample is the canary's state at one moment: the live routes, and how each version answered
// over the last rollingWindow.
type sample struct {
	at                          time.Time
	primaryWeight, canaryWeight float64
	primaryRate, canaryRate     float64 // % of requests answered without a 5xx; NaN without requests
	primaryP99, canaryP99       float64 // ms; NaN without requests
	phase                       functions.Phase
}

// mark is an event drawn on the timeline.
type mark struct {
	at    time.Time
	label string
	kind  string // push, phase, check, alert, abort
}

const rollingWindow = 5 * time.Second

func (s *scenario) label() string { return fmt.Sprintf("(%s) %s", s.key, s.title) }

func (s *scenario) image(registry, tag string) string {
	return registry + "/" + s.namespace + "/" + s.name + ":" + tag
}

func (s *scenario) addMark(at time.Time, kind, label string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.marks = append(s.marks, mark{at: at, kind: kind, label: label})
}

// canaryManifest is the seed Canary for a scenario: its namespace and names changed, its
// interval shortened and, for the short demo, fewer steps.
func canaryManifest(seed []byte, ns, name, interval string, maxWeight, stepWeight int) ([]byte, error) {
	s := string(seed)
	for _, must := range []string{"    interval: 1m\n    threshold", "    maxWeight: 50\n", "    stepWeight: 5\n", "namespace: default", "podinfo"} {
		if !strings.Contains(s, must) {
			return nil, fmt.Errorf("the seed Canary changed: it no longer contains %q; update test/demo", must)
		}
	}
	s = strings.Replace(s, "    interval: 1m\n    threshold", "    interval: "+interval+"\n    threshold", 1)
	s = strings.Replace(s, "    maxWeight: 50\n", fmt.Sprintf("    maxWeight: %d\n", maxWeight), 1)
	s = strings.Replace(s, "    stepWeight: 5\n", fmt.Sprintf("    stepWeight: %d\n", stepWeight), 1)
	s = strings.ReplaceAll(s, "namespace: default", "namespace: "+ns)
	s = strings.ReplaceAll(s, ".default.svc", "."+ns+".svc")
	s = strings.ReplaceAll(s, "podinfo", name)
	return []byte(s), nil
}

// onGatewayAPI moves a seed Canary onto the Gateway API: provider gatewayapi:v1 and a
// gatewayRef to an ingress Gateway (the lab has no Gateway controller; the simulator routes
// by the HTTPRoute's rules).
func onGatewayAPI(manifest []byte) ([]byte, error) {
	s := string(manifest)
	for _, must := range []string{"spec:\n", "  service:\n    port: 9898\n"} {
		if !strings.Contains(s, must) {
			return nil, fmt.Errorf("the seed Canary changed: it no longer contains %q; update test/demo", must)
		}
	}
	s = strings.Replace(s, "spec:\n", "spec:\n  provider: gatewayapi:v1\n", 1)
	s = strings.Replace(s, "  service:\n    port: 9898\n", "  service:\n    port: 9898\n    gatewayRefs:\n      - name: public\n        namespace: istio-ingress\n", 1)
	return []byte(s), nil
}

// thresholds reads the metric checks of a Canary manifest: metric name → "min" or "max" bound.
type threshold struct {
	min, max *float64
}

func thresholds(manifest []byte) (map[string]threshold, int, error) {
	var c struct {
		Spec struct {
			Analysis struct {
				Threshold int `json:"threshold"`
				Metrics   []struct {
					Name           string `json:"name"`
					ThresholdRange struct {
						Min *float64 `json:"min"`
						Max *float64 `json:"max"`
					} `json:"thresholdRange"`
				} `json:"metrics"`
			} `json:"analysis"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(manifest, &c); err != nil {
		return nil, 0, fmt.Errorf("read the seed Canary: %w", err)
	}
	out := map[string]threshold{}
	for _, m := range c.Spec.Analysis.Metrics {
		out[m.Name] = threshold{min: m.ThresholdRange.Min, max: m.ThresholdRange.Max}
	}
	return out, c.Spec.Analysis.Threshold, nil
}

// pushImage pushes a new (random) image to the lab's registry, as a CI job would.
func pushImage(ctx context.Context, ref string) (string, error) {
	img, err := random.Image(2048, 1)
	if err != nil {
		return "", fmt.Errorf("make image %s: %w", ref, err)
	}
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return "", fmt.Errorf("parse %s: %w", ref, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := remote.Write(r, img, remote.WithContext(ctx)); err != nil {
		return "", fmt.Errorf("push %s: %w", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		return "", fmt.Errorf("digest of %s: %w", ref, err)
	}
	return d.String(), nil
}

// record takes the simulator's traffic since the last sample and keeps the routes and the
// rolling success rate and latency of each version.
func (s *scenario) record(snap traffic.Snapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rolling = append(s.rolling, snap)
	for len(s.rolling) > 1 && snap.At.Sub(s.rolling[0].At) > rollingWindow {
		s.rolling = s.rolling[1:]
	}
	shares := snap.Shares[s.name]
	smp := sample{at: snap.At, primaryWeight: math.NaN(), canaryWeight: math.NaN(), phase: s.view.Phase}
	if shares != nil {
		smp.primaryWeight = 100 * shares[s.name+"-primary"]
		smp.canaryWeight = 100 * shares[s.name+"-canary"]
	}
	smp.primaryRate, smp.primaryP99 = rollingStats(s.rolling, s.name+"-primary")
	smp.canaryRate, smp.canaryP99 = rollingStats(s.rolling, s.name)
	s.samples = append(s.samples, smp)
}

// rollingStats is a workload's success rate (%) and p99 latency (ms) over the snapshots.
func rollingStats(snaps []traffic.Snapshot, workload string) (rate, p99 float64) {
	var requests, errs int
	var latencies []float64
	for _, sn := range snaps {
		if w := sn.Workloads[workload]; w != nil {
			requests += w.Requests
			errs += w.Errors
			latencies = append(latencies, w.LatenciesMs...)
		}
	}
	if requests == 0 {
		return math.NaN(), math.NaN()
	}
	slices.Sort(latencies)
	idx := int(math.Ceil(0.99*float64(len(latencies)))) - 1
	return 100 * float64(requests-errs) / float64(requests), latencies[max(idx, 0)]
}

// latest is the last sample, for the status block.
func (s *scenario) latest() (sample, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.samples) == 0 {
		return sample{}, false
	}
	return s.samples[len(s.samples)-1], true
}

// progress is how far the release has come, 0..1, and whether it failed.
func progress(v functions.CanaryView) (float64, bool) {
	maxW := float64(max(v.MaxWeight, 1))
	switch v.Phase {
	case functions.PhaseProgressing, functions.PhaseWaitingPromotion:
		return 0.1 + 0.75*float64(v.Weight)/maxW, false
	case functions.PhasePromoting:
		return 0.9, false
	case functions.PhaseFinalising:
		return 0.95, false
	case functions.PhaseSucceeded:
		return 1, false
	case functions.PhaseFailed:
		return 1, true
	case functions.PhaseWaiting:
		return 0.05, false
	}
	return 0, false
}

// setUp creates the scenario's namespace and workload and applies its Canary.
func (s *scenario) setUp(ctx context.Context, kube kubernetes.Interface, apply func(context.Context, []byte) error, registry string, manifest []byte) error {
	if _, err := pushImage(ctx, s.image(registry, s.fromTag)); err != nil {
		return err
	}
	call, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := kube.CoreV1().Namespaces().Create(call, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: s.namespace}}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create namespace %s: %w", s.namespace, err)
	}
	if _, err := kube.AppsV1().Deployments(s.namespace).Create(call, lab.PodinfoDeployment(s.namespace, s.name, s.image(registry, s.fromTag), 2), metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create deployment %s/%s: %w", s.namespace, s.name, err)
	}
	if err := apply(call, manifest); err != nil {
		return fmt.Errorf("apply canary %s/%s: %w", s.namespace, s.name, err)
	}
	return nil
}

// waitPhase polls Siskin's API until the canary reaches one of the phases.
func (s *scenario) waitPhase(ctx context.Context, sk *siskin, timeout time.Duration, phases ...functions.Phase) (functions.CanaryView, error) {
	deadline := time.Now().Add(timeout)
	var last functions.CanaryView
	for {
		v, err := sk.view(ctx, s.namespace, s.name)
		if err == nil {
			last = v
			s.mu.Lock()
			s.view = v
			s.mu.Unlock()
			if slices.Contains(phases, v.Phase) {
				return v, nil
			}
		}
		if time.Now().After(deadline) {
			return last, fmt.Errorf("%s: still %s after %s, want %v (last error: %v)", s.label(), last.Phase, timeout, phases, err)
		}
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// verify checks that the release ended as the scenario expects, in Siskin's view and in the
// cluster.
func (s *scenario) verify(ctx context.Context, kube kubernetes.Interface, v functions.CanaryView) error {
	var errs []error
	if v.Phase != s.wantPhase {
		errs = append(errs, fmt.Errorf("ended %s, want %s (%s)", v.Phase, s.wantPhase, v.Message))
	}
	call, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	primary, err := kube.AppsV1().Deployments(s.namespace).Get(call, s.name+"-primary", metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get primary: %w", err)
	}
	runs := traffic.VersionOf(primary.Spec.Template.Spec.Containers[0].Image)
	switch s.key {
	case "a", "d":
		if runs != s.toTag {
			errs = append(errs, fmt.Errorf("the primary runs %s, want the new %s", runs, s.toTag))
		}
	case "b":
		if v.Trigger == nil || v.Trigger.Kind != "alert" {
			errs = append(errs, fmt.Errorf("not aborted by the alert: trigger %+v", v.Trigger))
		}
		if s.abortedAt.IsZero() {
			errs = append(errs, errors.New("siskin logged no abort"))
		}
	case "c":
		s.mu.Lock()
		checks := s.checksAtEnd
		s.mu.Unlock()
		if checks < v.Threshold || !strings.HasPrefix(v.Message, "Canary analysis failed") {
			errs = append(errs, fmt.Errorf("not rolled back by failed checks (%d of %d): %q", checks, v.Threshold, v.Message))
		}
		if v.Trigger != nil && v.Trigger.Kind == "alert" {
			errs = append(errs, errors.New("aborted by an alert, but it has no alert rule"))
		}
	}
	if s.wantPhase == functions.PhaseFailed && runs != s.fromTag {
		errs = append(errs, fmt.Errorf("the primary runs %s after the rollback, want the old %s", runs, s.fromTag))
	}
	if s.wantPhase == functions.PhaseFailed || s.wantPhase == functions.PhaseSucceeded {
		target, err := kube.AppsV1().Deployments(s.namespace).Get(call, s.name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("get target: %w", err)
		}
		if r := target.Spec.Replicas; r == nil || *r != 0 {
			errs = append(errs, fmt.Errorf("the canary Deployment still has %v replicas, want 0", r))
		}
	}
	if v.Weight != 0 || v.PrimaryWeight != 100 {
		errs = append(errs, fmt.Errorf("routes %d/%d, want all traffic on the primary", v.PrimaryWeight, v.Weight))
	}
	return errors.Join(errs...)
}

// copyDir copies the files of src (not recursively into symlinks) under dst, for keeping the
// lab's logs after a failure.
func copyDir(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
}
