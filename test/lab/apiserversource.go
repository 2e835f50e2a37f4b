package lab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
)

// WatchedResource is one resource an APIServerSource watches.
type WatchedResource struct {
	GVR  schema.GroupVersionResource
	Kind string
	// ResourceMode sends this resource's objects as data (Resource mode) instead of a reference.
	ResourceMode bool
}

// SiskinResources are what knative/core/eventing.yaml's ApiServerSources watch: siskin-resources
// sends Canaries, Deployments, VirtualServices and HTTPRoutes in Resource mode, siskin-references the rest
// in Reference mode.
var SiskinResources = []WatchedResource{
	{GVR: schema.GroupVersionResource{Group: "flagger.app", Version: "v1beta1", Resource: "canaries"}, Kind: "Canary", ResourceMode: true},
	{GVR: schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}, Kind: "Deployment", ResourceMode: true},
	{GVR: schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "virtualservices"}, Kind: "VirtualService", ResourceMode: true},
	{GVR: schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "httproutes"}, Kind: "HTTPRoute", ResourceMode: true},
	{GVR: schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "destinationrules"}, Kind: "DestinationRule"},
	{GVR: schema.GroupVersionResource{Version: "v1", Resource: "services"}, Kind: "Service"},
	{GVR: schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}, Kind: "ConfigMap"},
	{GVR: schema.GroupVersionResource{Version: "v1", Resource: "secrets"}, Kind: "Secret"},
}

// APIServerSourceOptions configure the stand-in.
type APIServerSourceOptions struct {
	// Namespace limits the watches to one namespace; empty: every namespace.
	Namespace string
	// Resources to watch; SiskinResources when empty.
	Resources []WatchedResource
	// Sink receives the events, with Token as a bearer token (a Broker would send an OIDC
	// token instead).
	Sink, Token string
	// ResourceMode sends every object as data (Resource mode) instead of a reference.
	ResourceMode bool
}

// APIServerSource stands in for Knative Eventing's ApiServerSource, which the lab does not run:
// it watches the same resources and POSTs the CloudEvents ApiServerSource sends, in their real
// format (binary mode; types dev.knative.apiserver.ref.add/update/delete, or .resource.* in
// Resource mode; the source, subject and data of Knative's adapter). Delivery is at least once,
// as Knative's: a refused or failed delivery is retried a few times with a backoff.
type APIServerSource struct {
	opts   APIServerSourceOptions
	dyn    dynamic.Interface
	source string
	client *http.Client
	cancel context.CancelFunc
	done   sync.WaitGroup

	mu        sync.Mutex
	delivered int
	failed    int
}

// StartAPIServerSource starts the watches; Stop ends them.
func (l *Lab) StartAPIServerSource(ctx context.Context, opts APIServerSourceOptions) (*APIServerSource, error) {
	if opts.Sink == "" {
		return nil, fmt.Errorf("apiserversource: no sink")
	}
	if len(opts.Resources) == 0 {
		opts.Resources = SiskinResources
	}
	dyn, err := dynamic.NewForConfig(l.RESTConfig())
	if err != nil {
		return nil, fmt.Errorf("apiserversource: %w", err)
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &APIServerSource{opts: opts, dyn: dyn, source: l.APIServerURL(), client: &http.Client{Timeout: 30 * time.Second}, cancel: cancel}
	for _, r := range opts.Resources {
		w, err := s.watch(ctx, r, "")
		if err != nil {
			cancel()
			s.done.Wait()
			return nil, err
		}
		s.done.Go(func() { s.run(ctx, r, w) })
	}
	return s, nil
}

// Stop ends the watches and waits for deliveries in flight.
func (s *APIServerSource) Stop() {
	s.cancel()
	s.done.Wait()
}

// Delivered is how many events the sink accepted, and how many it never did.
func (s *APIServerSource) Delivered() (ok, failed int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.delivered, s.failed
}

func (s *APIServerSource) watch(ctx context.Context, r WatchedResource, resourceVersion string) (watch.Interface, error) {
	var ri dynamic.ResourceInterface = s.dyn.Resource(r.GVR)
	if s.opts.Namespace != "" {
		ri = s.dyn.Resource(r.GVR).Namespace(s.opts.Namespace)
	}
	// Like the adapter's informers, it starts from now: objects that exist are sent as adds.
	w, err := ri.Watch(ctx, metav1.ListOptions{ResourceVersion: resourceVersion, AllowWatchBookmarks: true})
	if err != nil {
		return nil, fmt.Errorf("apiserversource: watch %s: %w", r.GVR.Resource, err)
	}
	return w, nil
}

func (s *APIServerSource) run(ctx context.Context, r WatchedResource, w watch.Interface) {
	lastRV := ""
	for {
		for ev := range w.ResultChan() {
			obj, ok := ev.Object.(*unstructured.Unstructured)
			if !ok {
				continue
			}
			lastRV = obj.GetResourceVersion()
			var verb string
			switch ev.Type {
			case watch.Added:
				verb = "add"
			case watch.Modified:
				verb = "update"
			case watch.Deleted:
				verb = "delete"
			default:
				continue // bookmarks, errors
			}
			s.send(ctx, r, verb, obj)
		}
		if ctx.Err() != nil {
			return
		}
		// The watch ended (a timeout of the apiserver's): carry on from where it was.
		var err error
		for w, err = s.watch(ctx, r, lastRV); err != nil; w, err = s.watch(ctx, r, "") {
			if ctx.Err() != nil {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// send delivers one event, retrying a refused one as Knative's delivery spec would.
func (s *APIServerSource) send(ctx context.Context, r WatchedResource, verb string, obj *unstructured.Unstructured) {
	mode, data := "ref", map[string]any{"kind": r.Kind, "namespace": obj.GetNamespace(), "name": obj.GetName(), "apiVersion": r.GVR.GroupVersion().String()}
	if s.opts.ResourceMode || r.ResourceMode {
		mode, data = "resource", obj.Object
	}
	body, err := json.Marshal(data)
	if err != nil {
		return
	}
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	subject := "/apis/" + r.GVR.GroupVersion().String()
	if r.GVR.Group == "" {
		subject = "/api/" + r.GVR.Version
	}
	subject += "/namespaces/" + obj.GetNamespace() + "/" + r.GVR.Resource + "/" + obj.GetName()
	headers := map[string]string{
		"Ce-Specversion": "1.0", "Ce-Type": "dev.knative.apiserver." + mode + "." + verb, "Ce-Source": s.source,
		"Ce-Subject": subject, "Ce-Id": hex.EncodeToString(id), "Ce-Time": time.Now().UTC().Format(time.RFC3339Nano),
		"Content-Type": "application/json",
	}
	backoff := 100 * time.Millisecond
	for attempt := 0; attempt < 6; attempt++ {
		if ctx.Err() != nil {
			return
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.opts.Sink, bytes.NewReader(body))
		if err != nil {
			return
		}
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		if s.opts.Token != "" {
			req.Header.Set("Authorization", "Bearer "+s.opts.Token)
		}
		resp, err := s.client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode < 300 {
				s.mu.Lock()
				s.delivered++
				s.mu.Unlock()
				return
			}
			if resp.StatusCode < 500 && resp.StatusCode != http.StatusTooManyRequests {
				break // Knative does not retry a 4xx
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff *= 2
	}
	s.mu.Lock()
	s.failed++
	s.mu.Unlock()
}
