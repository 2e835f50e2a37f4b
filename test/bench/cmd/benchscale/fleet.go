package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"github.com/siskin-dev/siskin/istio"
	"github.com/siskin-dev/siskin/test/lab"
)

var canaryGVR = schema.GroupVersionResource{Group: "flagger.app", Version: "v1beta1", Resource: "canaries"}

// fleet is N canaries of the seed's shape in one namespace, driven with the admin identity
// (whose requests the counting proxies never see).
type fleet struct {
	l      *lab.Lab
	log    *slog.Logger
	ns     string
	n      int
	kube   kubernetes.Interface
	dyn    dynamic.Interface
	istio  istioclient.Interface
	seed   string
	image1 string
	image2 string
}

func newFleet(l *lab.Lab, root, ns string, n int, log *slog.Logger) (*fleet, error) {
	cfg := l.RESTConfig()
	cfg.QPS, cfg.Burst = 1000, 2000 // the benchmark's own calls must not be what limits it
	cfg.Timeout = 30 * time.Second
	seed, err := os.ReadFile(filepath.Join(root, "knative", "testdata", "canary-seed.yaml"))
	if err != nil {
		return nil, fmt.Errorf("read the seed Canary: %w", err)
	}
	f := &fleet{l: l, log: log, ns: ns, n: n, seed: string(seed),
		image1: l.Registry() + "/lab/podinfo:1.0.0", image2: l.Registry() + "/lab/podinfo:2.0.0"}
	if f.kube, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, fmt.Errorf("kube client: %w", err)
	}
	if f.dyn, err = dynamic.NewForConfig(cfg); err != nil {
		return nil, fmt.Errorf("dynamic client: %w", err)
	}
	if f.istio, err = istioclient.NewForConfig(cfg); err != nil {
		return nil, fmt.Errorf("istio client: %w", err)
	}
	return f, nil
}

func (f *fleet) name(i int) string { return fmt.Sprintf("app-%04d", i) }

// parallel runs fn for 0..n-1 on workers goroutines and returns the first errors.
func parallel(n, workers int, fn func(i int) error) error {
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	next := make(chan int)
	for range workers {
		wg.Go(func() {
			for i := range next {
				if err := fn(i); err != nil {
					mu.Lock()
					if len(errs) < 5 {
						errs = append(errs, err)
					}
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return errors.Join(errs...)
}

// createTargets creates the namespace and N podinfo Deployments, and waits until they are
// available (kwok runs their pods).
func (f *fleet) createTargets(ctx context.Context) error {
	if _, err := f.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: f.ns}}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create namespace %s: %w", f.ns, err)
	}
	err := parallel(f.n, 32, func(i int) error {
		d := lab.PodinfoDeployment(f.ns, f.name(i), f.image1, 1)
		if _, err := f.kube.AppsV1().Deployments(f.ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create Deployment %s: %w", d.Name, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return wait.PollUntilContextTimeout(ctx, time.Second, 10*time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := f.kube.AppsV1().Deployments(f.ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		ready := 0
		for _, d := range list.Items {
			if d.Status.AvailableReplicas >= 1 {
				ready++
			}
		}
		return ready >= f.n, nil
	})
}

// canary is the seed Canary for target name, at a 10 s interval.
func (f *fleet) canary(name string) (*unstructured.Unstructured, error) {
	s := f.seed
	s = strings.Replace(s, "    interval: 1m\n    threshold", "    interval: 10s\n    threshold", 1)
	s = strings.ReplaceAll(s, "namespace: default", "namespace: "+f.ns)
	s = strings.ReplaceAll(s, ".default.svc", "."+f.ns+".svc")
	s = strings.ReplaceAll(s, "podinfo", name)
	var obj unstructured.Unstructured
	if err := utilyaml.Unmarshal([]byte(s), &obj.Object); err != nil {
		return nil, fmt.Errorf("decode the seed Canary: %w", err)
	}
	return &obj, nil
}

// createCanaries creates the N Canaries at once.
func (f *fleet) createCanaries(ctx context.Context) error {
	return parallel(f.n, 32, func(i int) error {
		obj, err := f.canary(f.name(i))
		if err != nil {
			return err
		}
		if _, err := f.dyn.Resource(canaryGVR).Namespace(f.ns).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create Canary %s: %w", obj.GetName(), err)
		}
		return nil
	})
}

// setImages changes every target's image at once, as N parallel `kubectl set image` would.
func (f *fleet) setImages(ctx context.Context) error {
	return parallel(f.n, 64, func(i int) error {
		name := f.name(i)
		return retry.RetryOnConflict(retry.DefaultRetry, func() error {
			d, err := f.kube.AppsV1().Deployments(f.ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			d.Spec.Template.Spec.Containers[0].Image = f.image2
			_, err = f.kube.AppsV1().Deployments(f.ns).Update(ctx, d, metav1.UpdateOptions{})
			return err
		})
	})
}

// deleteNamespace deletes the fleet's namespace and waits until it is gone, so the next system
// starts on a cluster without the previous fleet.
func (f *fleet) deleteNamespace(ctx context.Context, timeout time.Duration) error {
	if err := f.kube.CoreV1().Namespaces().Delete(ctx, f.ns, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete namespace %s: %w", f.ns, err)
	}
	return wait.PollUntilContextTimeout(ctx, 2*time.Second, timeout, true, func(ctx context.Context) (bool, error) {
		_, err := f.kube.CoreV1().Namespaces().Get(ctx, f.ns, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
}

// weightChange is one change of a canary's weight as the VirtualService watch saw it.
type weightChange struct {
	at     time.Time
	name   string
	weight int
}

// tracker follows the fleet through two watches: the Canaries' phases and the
// VirtualServices' canary weights.
type tracker struct {
	mu      sync.Mutex
	phases  map[string]string
	weights map[string]int
	changes []weightChange
	cancel  context.CancelFunc
	done    sync.WaitGroup
}

func (f *fleet) track(ctx context.Context) *tracker {
	ctx, cancel := context.WithCancel(ctx)
	t := &tracker{phases: map[string]string{}, weights: map[string]int{}, cancel: cancel}
	t.done.Go(func() {
		watchLoop(ctx, f.log, "canaries", func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			return f.dyn.Resource(canaryGVR).Namespace(f.ns).Watch(ctx, opts)
		}, func(typ watch.EventType, obj any) string {
			u, ok := obj.(*unstructured.Unstructured)
			if !ok {
				return ""
			}
			phase, _, _ := unstructured.NestedString(u.Object, "status", "phase")
			t.mu.Lock()
			if typ == watch.Deleted {
				delete(t.phases, u.GetName())
			} else {
				t.phases[u.GetName()] = phase
			}
			t.mu.Unlock()
			return u.GetResourceVersion()
		})
	})
	t.done.Go(func() {
		watchLoop(ctx, f.log, "virtualservices", func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			return f.istio.NetworkingV1().VirtualServices(f.ns).Watch(ctx, opts)
		}, func(typ watch.EventType, obj any) string {
			vs, ok := obj.(*networkingv1.VirtualService)
			if !ok || typ == watch.Deleted {
				return ""
			}
			w := 0
			if r, ok := istio.WeightsOf(vs); ok {
				w = r.Canary
			}
			now := time.Now()
			t.mu.Lock()
			if last, seen := t.weights[vs.Name]; !seen || last != w {
				t.weights[vs.Name] = w
				t.changes = append(t.changes, weightChange{at: now, name: vs.Name, weight: w})
			}
			t.mu.Unlock()
			return vs.ResourceVersion
		})
	})
	return t
}

func (t *tracker) stop() { t.cancel(); t.done.Wait() }

// count is how many Canaries are in phase.
func (t *tracker) count(phase string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, p := range t.phases {
		if p == phase {
			n++
		}
	}
	return n
}

// phaseCounts is the number of Canaries per phase.
func (t *tracker) phaseCounts() map[string]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := map[string]int{}
	for _, p := range t.phases {
		m[p]++
	}
	return m
}

func (t *tracker) changesSince(from time.Time) []weightChange {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []weightChange
	for _, c := range t.changes {
		if !c.at.Before(from) {
			out = append(out, c)
		}
	}
	return out
}

// watchLoop watches until ctx ends, carrying on from the last resourceVersion when the
// apiserver ends a watch, and from scratch when that version is gone. handle returns the
// object's resourceVersion ("" for none).
func watchLoop(ctx context.Context, log *slog.Logger, what string, start func(context.Context, metav1.ListOptions) (watch.Interface, error), handle func(watch.EventType, any) string) {
	rv := ""
	for ctx.Err() == nil {
		w, err := start(ctx, metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true})
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("watch failed; retrying", "what", what, "err", err)
				rv = ""
				time.Sleep(500 * time.Millisecond)
			}
			continue
		}
		for ev := range w.ResultChan() {
			if ev.Type == watch.Error {
				if st, ok := ev.Object.(*metav1.Status); ok && st.Code == 410 {
					rv = ""
				}
				continue
			}
			if ev.Type == watch.Bookmark {
				if m, err := metaOf(ev.Object); err == nil {
					rv = m
				}
				continue
			}
			if v := handle(ev.Type, ev.Object); v != "" {
				rv = v
			}
		}
		w.Stop()
	}
}

func metaOf(obj any) (string, error) {
	type rvGetter interface{ GetResourceVersion() string }
	if g, ok := obj.(rvGetter); ok {
		return g.GetResourceVersion(), nil
	}
	return "", errors.New("no resourceVersion")
}
