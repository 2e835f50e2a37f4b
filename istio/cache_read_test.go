package istio

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	"istio.io/client-go/pkg/clientset/versioned"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"

	"github.com/siskin-dev/siskin/functions"
)

// laggingAPIServer serves Istio objects over HTTP like a kube-apiserver whose watch cache is one
// write behind: a GET with resourceVersion=0 answers the previous version of an object, a GET
// without answers the current one, and an update whose resourceVersion is not the current one
// is a 409 Conflict.
type laggingAPIServer struct {
	mu      sync.Mutex
	current map[string][]byte // path -> JSON, with its resourceVersion
	stale   map[string][]byte
	version int
	reads   []string // "path rv=…" in order
	updates int
}

func (s *laggingAPIServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	path := r.URL.Path
	switch r.Method {
	case http.MethodGet:
		rv := r.URL.Query().Get("resourceVersion")
		s.reads = append(s.reads, path+" rv="+rv)
		body := s.current[path]
		if rv == "0" && s.stale[path] != nil {
			body = s.stale[path]
		}
		_, _ = w.Write(body)
	case http.MethodPut:
		s.updates++
		b, _ := io.ReadAll(r.Body)
		var meta struct {
			Metadata metav1.ObjectMeta `json:"metadata"`
		}
		_ = json.Unmarshal(b, &meta)
		var live struct {
			Metadata metav1.ObjectMeta `json:"metadata"`
		}
		_ = json.Unmarshal(s.current[path], &live)
		if meta.Metadata.ResourceVersion != live.Metadata.ResourceVersion {
			w.WriteHeader(http.StatusConflict)
			_ = json.NewEncoder(w).Encode(apierrors.NewConflict(schema.GroupResource{Group: "networking.istio.io", Resource: "virtualservices"},
				meta.Metadata.Name, fmt.Errorf("the object has been modified")).ErrStatus)
			return
		}
		s.store(path, b)
		_, _ = w.Write(s.current[path])
	default:
		http.Error(w, "unexpected "+r.Method, http.StatusMethodNotAllowed)
	}
}

// store makes b the current version of path; the old current becomes what the cache answers.
func (s *laggingAPIServer) store(path string, b []byte) {
	s.version++
	var obj map[string]any
	_ = json.Unmarshal(b, &obj)
	obj["metadata"].(map[string]any)["resourceVersion"] = fmt.Sprint(s.version)
	out, _ := json.Marshal(obj)
	if s.current[path] != nil {
		s.stale[path] = s.current[path]
	}
	s.current[path] = out
}

// storeRules stores the canary's DestinationRules as rendered.
func storeRules(t *testing.T, srv *laggingAPIServer, c functions.Canary) {
	t.Helper()
	primaryDR, canaryDR, err := RenderDestinationRules(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, dr := range []*networkingv1.DestinationRule{primaryDR, canaryDR} {
		dr.APIVersion, dr.Kind = "networking.istio.io/v1", "DestinationRule"
		b, err := json.Marshal(dr)
		if err != nil {
			t.Fatal(err)
		}
		srv.store("/apis/networking.istio.io/v1/namespaces/default/destinationrules/"+dr.Name, b)
	}
}

// routerOn serves srv over HTTP for the test's length and returns a Router talking to it.
func routerOn(t *testing.T, srv *laggingAPIServer) *Router {
	t.Helper()
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	client, err := versioned.NewForConfig(&rest.Config{Host: ts.URL})
	if err != nil {
		t.Fatal(err)
	}
	return NewRouter(client, slog.New(slog.NewTextHandler(testWriter{t}, nil)), time.Second)
}

func TestApplyRoutesReadsTheCacheThenFreshAfterAConflict(t *testing.T) {
	c := podinfo()
	vsPath := "/apis/networking.istio.io/v1/namespaces/default/virtualservices/podinfo"
	drPath := "/apis/networking.istio.io/v1/namespaces/default/destinationrules/"
	srv := &laggingAPIServer{current: map[string][]byte{}, stale: map[string][]byte{}}
	put := func(path string, obj any) {
		b, err := json.Marshal(obj)
		if err != nil {
			t.Fatal(err)
		}
		srv.store(path, b)
	}
	typed := func(vs *networkingv1.VirtualService) *networkingv1.VirtualService {
		vs.APIVersion, vs.Kind = "networking.istio.io/v1", "VirtualService"
		return vs
	}
	storeRules(t, srv, c)
	// The cache still has 100/0; the VirtualService is at 90/10 since the last step.
	put(vsPath, typed(mustRender(t, c, plan(100, 0))))
	put(vsPath, typed(mustRender(t, c, plan(90, 10))))
	router := routerOn(t, srv)

	if err := router.ApplyRoutes(context.Background(), c, plan(80, 20)); err != nil {
		t.Fatalf("ApplyRoutes from a stale cache: %v", err)
	}
	var vsReads []string
	for _, r := range srv.reads {
		if strings.HasPrefix(r, vsPath) {
			vsReads = append(vsReads, strings.TrimPrefix(r, vsPath+" "))
		}
	}
	if want := []string{"rv=0", "rv="}; strings.Join(vsReads, ",") != strings.Join(want, ",") {
		t.Errorf("VirtualService reads: got %v, want %v (the cache, then fresh after the conflict)", vsReads, want)
	}
	if srv.updates != 2 {
		t.Errorf("updates: got %d, want 2 (the stale one refused, then one from the fresh read)", srv.updates)
	}
	var got networkingv1.VirtualService
	if err := json.Unmarshal(srv.current[vsPath], &got); err != nil {
		t.Fatal(err)
	}
	if w, _ := WeightsOf(&got); w != (functions.Routing{Primary: 80, Canary: 20}) {
		t.Errorf("weights after the step: got %+v, want 80/20", w)
	}
	// The DestinationRules were already right in the cache: read once each, never written.
	drReads := 0
	for _, r := range srv.reads {
		if strings.HasPrefix(r, drPath) {
			drReads++
			if !strings.HasSuffix(r, "rv=0") {
				t.Errorf("DestinationRule read %q, want it from the cache (rv=0)", r)
			}
		}
	}
	if drReads != 2 {
		t.Errorf("DestinationRule reads: got %d, want 2", drReads)
	}
}

// Between two re-assertions a step starts from the VirtualService as this process last wrote
// it, without a read; a copy gone stale (a hand edit, another process's write) is refused
// with a conflict and the step goes on from a fresh read.
func TestAWeightStepStartsFromTheVirtualServiceItWrote(t *testing.T) {
	c := podinfo()
	vsPath := "/apis/networking.istio.io/v1/namespaces/default/virtualservices/podinfo"
	srv := &laggingAPIServer{current: map[string][]byte{}, stale: map[string][]byte{}}
	put := func(vs *networkingv1.VirtualService) {
		vs.APIVersion, vs.Kind = "networking.istio.io/v1", "VirtualService"
		b, err := json.Marshal(vs)
		if err != nil {
			t.Fatal(err)
		}
		srv.store(vsPath, b)
	}
	put(mustRender(t, c, plan(100, 0)))
	storeRules(t, srv, c)
	router := routerOn(t, srv)
	weightsOnly := func(primary, canary int) functions.RoutePlan {
		p := plan(primary, canary)
		p.WeightsOnly = true
		return p
	}
	step := func(p functions.RoutePlan, rules bool, version string) (reads, updates int) {
		t.Helper()
		srv.mu.Lock()
		r0, u0 := len(srv.reads), srv.updates
		srv.mu.Unlock()
		if err := router.ReadRoutes(context.Background(), c, rules, version).Apply(context.Background(), p); err != nil {
			t.Fatalf("step to %v: %v", p.Routing, err)
		}
		srv.mu.Lock()
		defer srv.mu.Unlock()
		for _, r := range srv.reads[r0:] {
			if strings.HasPrefix(r, vsPath) {
				reads++
			}
		}
		return reads, srv.updates - u0
	}
	weights := func() functions.Routing {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		var got networkingv1.VirtualService
		if err := json.Unmarshal(srv.current[vsPath], &got); err != nil {
			t.Fatal(err)
		}
		w, _ := WeightsOf(&got)
		return w
	}

	tests := []struct {
		name                    string
		before                  func()
		plan                    functions.RoutePlan
		wantReads, wantUpdates  int
		wantPrimary, wantCanary int
	}{
		{name: "the first step reads", plan: weightsOnly(95, 5), wantReads: 1, wantUpdates: 1, wantPrimary: 95, wantCanary: 5},
		{name: "the next one starts from what it wrote", plan: weightsOnly(90, 10), wantUpdates: 1, wantPrimary: 90, wantCanary: 10},
		{name: "a hand edit since makes it read again", before: func() { put(mustRender(t, c, plan(50, 50))) }, plan: weightsOnly(85, 15),
			wantReads: 1, wantUpdates: 2, wantPrimary: 85, wantCanary: 15},
		// The lagging cache answers the hand edit: its update is refused, and a fresh read
		// finds the VirtualService as planned.
		{name: "a re-assertion reads", plan: plan(85, 15), wantReads: 2, wantUpdates: 1, wantPrimary: 85, wantCanary: 15},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.before != nil {
				tt.before()
			}
			reads, updates := step(tt.plan, !tt.plan.WeightsOnly, router.RoutesVersion(c))
			if reads != tt.wantReads || updates != tt.wantUpdates {
				t.Errorf("got %d reads and %d updates of the VirtualService, want %d and %d", reads, updates, tt.wantReads, tt.wantUpdates)
			}
			if got, want := weights(), (functions.Routing{Primary: tt.wantPrimary, Canary: tt.wantCanary}); got != want {
				t.Errorf("weights: got %v, want %v", got, want)
			}
		})
	}
	// The saved state names another version: another process wrote the VirtualService since,
	// so this one reads it instead of trusting its copy (the lagging cache first, whose answer
	// is refused, then fresh).
	if reads, updates := step(weightsOnly(80, 20), false, "written-elsewhere"); reads != 2 || updates != 2 {
		t.Errorf("after another process's write: got %d reads and %d updates, want 2 and 2", reads, updates)
	}
}
