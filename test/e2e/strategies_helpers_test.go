//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	istioapi "istio.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/siskin-dev/siskin/functions"
)

// specCanary is a Canary whose target is a Deployment of the same name; spec is the rest of
// spec (service, analysis, ...) written from column 0.
func specCanary(ns, name, spec string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata:\n  name: %s\n  namespace: %s\nspec:\n", name, ns)
	fmt.Fprintf(&b, "  targetRef:\n    apiVersion: apps/v1\n    kind: Deployment\n    name: %s\n", name)
	for _, line := range strings.Split(strings.TrimRight(spec, "\n"), "\n") {
		b.WriteString("  " + line + "\n")
	}
	return []byte(b.String())
}

// rel is one canary of a test, driven by one Siskin: every step is forced due and run by one
// tick, and after every step the user-visible objects are read back.
type rel struct {
	t    *testing.T
	e    *env
	s    *siskin
	name string
	// trafficPolicy is what both DestinationRules must carry (nil: none).
	trafficPolicy *istioapi.TrafficPolicy
	// hosts and gateways the VirtualService must carry (default: the apex name, mesh).
	hosts, gateways []string
	ticks           int
	// gateway: a gatewayapi canary, whose invariants are its HTTPRoute's (checkGatewayInvariants).
	gateway    bool
	parentRefs []gwv1.ParentReference
	hostnames  []gwv1.Hostname
}

func newRel(t *testing.T, e *env, s *siskin, name string) *rel {
	return &rel{t: t, e: e, s: s, name: name, hosts: []string{name}, gateways: []string{"mesh"}}
}

// snap is what a user sees after a step: the Canary's status, the VirtualService and the
// DestinationRules.
type snap struct {
	Phase                                 string
	Weight, Iterations, FailedChecks      int64
	Cookie, PrimaryCookie, PreviousCookie string
	LastAppliedSpec                       string
	VSFound                               bool
	Hosts, Gateways                       []string
	HTTP                                  []*istioapi.HTTPRoute
	DRPrimary, DRCanary                   *istioapi.DestinationRule
	DRPrimaryFound, DRCanaryFound         bool
	VSAnnotations                         map[string]string
	VSOwnedByCanary                       bool
	// The HTTPRoute of a gatewayapi canary.
	HRFound         bool
	HRParents       []gwv1.ParentReference
	HRHostnames     []gwv1.Hostname
	HRRules         []gwv1.HTTPRouteRule
	HRAnnotations   map[string]string
	HROwnedByCanary bool
	message         string
}

// same compares what a step can change for a user.
func (a snap) same(b snap) bool {
	a.message, b.message = "", ""
	return cmp.Equal(a, b, protocmp.Transform(), cmp.AllowUnexported(snap{}))
}

func (a snap) String() string {
	return fmt.Sprintf("%s canaryWeight=%d iterations=%d failedChecks=%d routes=%s (%s)",
		a.Phase, a.Weight, a.Iterations, a.FailedChecks, routesSummary(a.HTTP), a.message)
}

func routesSummary(rs []*istioapi.HTTPRoute) string {
	var parts []string
	for _, r := range rs {
		var ds []string
		for _, d := range r.GetRoute() {
			ds = append(ds, fmt.Sprintf("%s=%d", d.GetDestination().GetHost(), d.GetWeight()))
		}
		s := strings.Join(ds, ",")
		if r.GetName() != "" {
			s = r.GetName() + ":" + s
		}
		if m := r.GetMirror(); m != nil {
			s += fmt.Sprintf(" mirror=%s@%v", m.GetHost(), r.GetMirrorPercentage().GetValue())
		}
		parts = append(parts, "["+s+"]")
	}
	return strings.Join(parts, "")
}

func (r *rel) snap() snap {
	r.t.Helper()
	ctx := context.Background()
	var o snap
	cd, err := r.e.dyn.Resource(canaryGVR).Namespace(r.e.ns).Get(ctx, r.name, metav1.GetOptions{})
	if err != nil {
		r.t.Fatalf("get canary %s: %v", r.name, err)
	}
	str := func(f string) string { v, _, _ := unstructured.NestedString(cd.Object, "status", f); return v }
	num := func(f string) int64 { v, _, _ := unstructured.NestedInt64(cd.Object, "status", f); return v }
	o.Phase, o.Weight, o.Iterations, o.FailedChecks = str("phase"), num("canaryWeight"), num("iterations"), num("failedChecks")
	o.Cookie, o.PrimaryCookie, o.PreviousCookie = str("sessionAffinityCookie"), str("primarySessionAffinityCookie"), str("previousSessionAffinityCookie")
	o.LastAppliedSpec, o.message = str("lastAppliedSpec"), str("message")

	vs, err := r.e.istio.NetworkingV1().VirtualServices(r.e.ns).Get(ctx, r.name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		r.t.Fatalf("get VirtualService: %v", err)
	default:
		o.VSFound = true
		o.Hosts, o.Gateways, o.HTTP = vs.Spec.Hosts, vs.Spec.Gateways, vs.Spec.Http
		o.VSAnnotations = vs.Annotations
		for _, ref := range vs.OwnerReferences {
			if ref.Kind == "Canary" && ref.Name == r.name && ref.Controller != nil && *ref.Controller {
				o.VSOwnedByCanary = true
			}
		}
	}
	hr, err := r.e.gw.GatewayV1().HTTPRoutes(r.e.ns).Get(ctx, r.name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		r.t.Fatalf("get HTTPRoute: %v", err)
	default:
		o.HRFound, o.HRParents, o.HRHostnames, o.HRRules, o.HRAnnotations = true, hr.Spec.ParentRefs, hr.Spec.Hostnames, hr.Spec.Rules, hr.Annotations
		for _, ref := range hr.OwnerReferences {
			if ref.Kind == "Canary" && ref.Name == r.name && ref.Controller != nil && *ref.Controller {
				o.HROwnedByCanary = true
			}
		}
	}
	for _, dr := range []struct {
		name  string
		spec  **istioapi.DestinationRule
		found *bool
	}{{r.name + "-primary", &o.DRPrimary, &o.DRPrimaryFound}, {r.name + "-canary", &o.DRCanary, &o.DRCanaryFound}} {
		got, err := r.e.istio.NetworkingV1().DestinationRules(r.e.ns).Get(ctx, dr.name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			r.t.Fatalf("get DestinationRule %s: %v", dr.name, err)
		default:
			*dr.spec, *dr.found = &got.Spec, true
		}
	}
	return o
}

// tick forces the canary due and delivers one ping; it reports whether the canary stepped.
func (r *rel) tick() bool {
	r.t.Helper()
	forceDue(r.t, r.e, r.name)
	r.ticks++
	code, body := r.s.tick(fmt.Sprintf("%s-%s-%d-%d", r.e.ns, r.name, r.ticks, time.Now().UnixNano()))
	if code != http.StatusOK {
		r.t.Fatalf("tick: %d %s", code, body)
	}
	var rep functions.TickReport
	if err := json.Unmarshal(body, &rep); err != nil {
		r.t.Fatalf("tick report: %v: %s", err, body)
	}
	return slices.ContainsFunc(rep.Stepped, func(s functions.StepReport) bool {
		return s.Key == functions.Key{Namespace: r.e.ns, Name: r.name}
	})
}

// stage is what a user must see after a step.
type stage struct {
	Phase                            string
	Weight, Iterations, FailedChecks int64
	// Routes renders the VirtualService's http routes Flagger documents for this stage; nil
	// means no VirtualService yet.
	Routes func(got snap) []*istioapi.HTTPRoute
	// Rules, for a gatewayapi canary, renders the HTTPRoute's rules; nil (and no Routes)
	// means no HTTPRoute yet.
	Rules func(got snap) []gwv1.HTTPRouteRule
}

func (st stage) String() string {
	return fmt.Sprintf("%s canaryWeight=%d iterations=%d failedChecks=%d", st.Phase, st.Weight, st.Iterations, st.FailedChecks)
}

// diff is empty when the snapshot shows the stage.
func (st stage) diff(got snap) string {
	var d []string
	if got.Phase != st.Phase || got.Weight != st.Weight || got.Iterations != st.Iterations || got.FailedChecks != st.FailedChecks {
		d = append(d, fmt.Sprintf("status: got %s canaryWeight=%d iterations=%d failedChecks=%d, want %s",
			got.Phase, got.Weight, got.Iterations, got.FailedChecks, st))
	}
	if st.Rules != nil || got.HRFound {
		switch {
		case st.Rules == nil:
			d = append(d, "HTTPRoute: found one, want none yet")
		case !got.HRFound:
			d = append(d, "HTTPRoute: not found")
		default:
			if rd := cmp.Diff(st.Rules(got), got.HRRules); rd != "" {
				d = append(d, "HTTPRoute rules (-want +got):\n"+rd)
			}
		}
		if got.VSFound {
			d = append(d, "VirtualService: found one on the Gateway API path")
		}
		return strings.Join(d, "\n")
	}
	if st.Routes == nil {
		if got.VSFound {
			d = append(d, "VirtualService: found one, want none yet")
		}
		return strings.Join(d, "\n")
	}
	if !got.VSFound {
		return strings.Join(append(d, "VirtualService: not found"), "\n")
	}
	if rd := cmp.Diff(st.Routes(got), got.HTTP, protocmp.Transform()); rd != "" {
		d = append(d, "VirtualService http (-want +got):\n"+rd)
	}
	return strings.Join(d, "\n")
}

// checkInvariants asserts what holds after every step once the routing objects exist: the
// VirtualService's hosts and gateways, and both DestinationRules.
func (r *rel) checkInvariants(step int, got snap) {
	r.t.Helper()
	if r.gateway {
		r.checkGatewayInvariants(step, got)
		return
	}
	if !got.VSFound || got.Phase == "" || got.Phase == "Initializing" {
		// Until initialized there may be only the user's VirtualService.
		return
	}
	if !slices.Equal(got.Hosts, r.hosts) || !slices.Equal(got.Gateways, r.gateways) {
		r.t.Errorf("step %d: VirtualService hosts %v gateways %v, want %v %v", step, got.Hosts, got.Gateways, r.hosts, r.gateways)
	}
	for _, dr := range []struct {
		name  string
		found bool
		spec  *istioapi.DestinationRule
	}{{r.name + "-primary", got.DRPrimaryFound, got.DRPrimary}, {r.name + "-canary", got.DRCanaryFound, got.DRCanary}} {
		if !dr.found {
			r.t.Errorf("step %d: DestinationRule %s not found", step, dr.name)
			continue
		}
		want := &istioapi.DestinationRule{Host: dr.name, TrafficPolicy: r.trafficPolicy}
		if d := cmp.Diff(want, dr.spec, protocmp.Transform()); d != "" {
			r.t.Errorf("step %d: DestinationRule %s (-want +got):\n%s", step, dr.name, d)
		}
	}
}

// waitBudget bounds the steps of one r.steps call that wait for the cluster.
const waitBudget = 2 * time.Minute

// steps ticks until the canary has gone through every stage in order. want[0] is what the
// user sees before the first tick. A step may also leave everything as it was (waiting for
// pods, a rollout, a gate); anything else fails. It returns the snapshot of each stage.
func (r *rel) steps(want []stage, maxSteps int) []snap {
	r.t.Helper()
	prev := r.snap()
	if d := want[0].diff(prev); d != "" {
		r.t.Fatalf("before the first step:\n%s", d)
	}
	seen := []snap{prev}
	i := 0
	// A step that waits (for pods, a rollout or a gate) moves nothing and is not counted against
	// maxSteps: how long kwok's rollouts take depends on the machine's load. Waiting is bounded
	// by the clock instead.
	waitUntil := time.Now().Add(waitBudget)
	for step, counted := 1, 1; counted <= maxSteps; step++ {
		stepped := r.tick()
		got := r.snap()
		switch {
		case i+1 < len(want) && want[i+1].diff(got) == "":
			i++
			seen = append(seen, got)
			counted++
		case got.same(prev):
			if time.Now().After(waitUntil) {
				r.t.Fatalf("step %d: still %v after waiting %s, want %v", step, got, waitBudget, want[min(i+1, len(want)-1)])
			}
		case want[i].diff(got) == "":
			counted++
			seen[len(seen)-1] = got
		default:
			next := want[min(i+1, len(want)-1)]
			r.t.Fatalf("step %d (stepped=%v): got %v\nwant %v:\n%s\nor still %v:\n%s", step, stepped, got, next, next.diff(got), want[i], want[i].diff(got))
		}
		r.checkInvariants(step, got)
		r.t.Logf("step %d: %v", step, got)
		prev = got
		if i == len(want)-1 {
			return seen
		}
		time.Sleep(250 * time.Millisecond)
	}
	r.t.Fatalf("after %d steps that moved something the canary is at %v, want %v", maxSteps, prev, want[len(want)-1])
	return nil
}

// holds ticks n times, each a step of the canary, and checks that nothing a user sees moves.
func (r *rel) holds(n int, want stage) snap {
	r.t.Helper()
	var got snap
	for i := 1; i <= n; i++ {
		if !r.tick() {
			r.t.Fatalf("hold %d: the canary did not step", i)
		}
		got = r.snap()
		if d := want.diff(got); d != "" {
			r.t.Fatalf("hold %d: %s", i, d)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return got
}

// initialize takes a fresh canary to Initialized.
func (r *rel) initialize(routes func(snap) []*istioapi.HTTPRoute) {
	r.t.Helper()
	want := []stage{{}, {Phase: "Initializing"}, {Phase: "Initialized", Routes: routes}}
	if r.snap().Phase == "Initializing" {
		// Another canary's tick already took its first step.
		want = want[1:]
	}
	r.steps(want, 30)
}

// The route shapes Flagger documents (the reference on Flagger and Istio, on its VirtualService shapes), written out by hand.

func dest(host string, weight int32) *istioapi.HTTPRouteDestination {
	return &istioapi.HTTPRouteDestination{Destination: &istioapi.Destination{Host: host}, Weight: weight}
}

// weightedRoute is the single http route of the canary strategy.
func weightedRoute(name string, primary, canary int32) *istioapi.HTTPRoute {
	return &istioapi.HTTPRoute{Route: []*istioapi.HTTPRouteDestination{dest(name+"-primary", primary), dest(name+"-canary", canary)}}
}

func weighted(name string, primary, canary int32) func(snap) []*istioapi.HTTPRoute {
	return func(snap) []*istioapi.HTTPRoute { return []*istioapi.HTTPRoute{weightedRoute(name, primary, canary)} }
}

// mirrored is the weighted route that also mirrors to the canary (percent 0: unset).
func mirrored(name string, primary, canary int32, percent float64) func(snap) []*istioapi.HTTPRoute {
	return func(snap) []*istioapi.HTTPRoute {
		r := weightedRoute(name, primary, canary)
		r.Mirror = &istioapi.Destination{Host: name + "-canary"}
		if percent > 0 {
			r.MirrorPercentage = &istioapi.Percent{Value: percent}
		}
		return []*istioapi.HTTPRoute{r}
	}
}

// hookRecorder is a test's webhook receiver, like flagger-loadtester's gates: every path
// answers a status the test sets (200 by default) and every call is recorded.
type hookRecorder struct {
	srv *httptest.Server
	mu  sync.Mutex
	// status per path; absent: 200.
	status map[string]int
	// script per path: the statuses of the next calls, before status applies.
	script map[string][]int
	// hold per path: the handler blocks until the request is cancelled or the channel closes.
	hold  map[string]chan struct{}
	calls []hookCall
	// onCall, if set, sees every call as it arrives; onDone once it is answered.
	onCall, onDone func(hookCall)
}

type hookCall struct {
	Path string
	Body map[string]any
	Raw  string
	At   time.Time
	// Cancelled is set for a held call whose request the caller gave up on.
	Cancelled bool
}

func newHookRecorder(t *testing.T) *hookRecorder {
	h := &hookRecorder{status: map[string]int{}, script: map[string][]int{}, hold: map[string]chan struct{}{}}
	h.srv = httptest.NewServer(http.HandlerFunc(h.serve))
	t.Cleanup(func() {
		h.mu.Lock()
		for p, c := range h.hold {
			close(c)
			delete(h.hold, p)
		}
		h.mu.Unlock()
		h.srv.Close()
	})
	return h
}

func (h *hookRecorder) url(path string) string { return h.srv.URL + path }

func (h *hookRecorder) serve(w http.ResponseWriter, req *http.Request) {
	raw, _ := io.ReadAll(req.Body)
	c := hookCall{Path: req.URL.Path, Raw: string(raw), At: time.Now()}
	if err := json.Unmarshal(raw, &c.Body); err != nil {
		c.Body = map[string]any{"unparsable": err.Error()}
	}
	h.mu.Lock()
	code, ok := h.status[req.URL.Path]
	if !ok {
		code = http.StatusOK
	}
	if next := h.script[req.URL.Path]; len(next) > 0 {
		code, h.script[req.URL.Path] = next[0], next[1:]
	}
	hold := h.hold[req.URL.Path]
	onCall, onDone := h.onCall, h.onDone
	h.mu.Unlock()
	if onCall != nil {
		onCall(c)
	}
	if req.Header.Get("Content-Type") != "application/json" {
		c.Body["contentTypeWas"] = req.Header.Get("Content-Type")
	}
	if req.Method != http.MethodPost {
		c.Body["methodWas"] = req.Method
	}
	if hold != nil {
		select {
		case <-hold:
		case <-req.Context().Done():
			c.Cancelled = true
		}
	}
	h.mu.Lock()
	h.calls = append(h.calls, c)
	h.mu.Unlock()
	if onDone != nil {
		onDone(c)
	}
	w.WriteHeader(code)
	fmt.Fprintf(w, "status %d from %s", code, req.URL.Path)
}

// holdCalls makes calls on path block until the caller gives up (or the test ends).
func (h *hookRecorder) holdCalls(path string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hold[path] = make(chan struct{})
}

// answer makes the next calls on path answer codes, in order.
func (h *hookRecorder) answer(path string, codes ...int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.script[path] = codes
}

func (h *hookRecorder) set(path string, code int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.status[path] = code
}

// take returns the calls recorded so far and forgets them.
func (h *hookRecorder) take() []hookCall {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.calls
	h.calls = nil
	return c
}

func (h *hookRecorder) peek() []hookCall {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.calls)
}

func paths(calls []hookCall) []string {
	out := make([]string, len(calls))
	for i, c := range calls {
		out[i] = c.Path
	}
	return out
}

func onPath(calls []hookCall, path string) []hookCall {
	var out []hookCall
	for _, c := range calls {
		if c.Path == path {
			out = append(out, c)
		}
	}
	return out
}

var checksumRE = regexp.MustCompile(`^[0-9a-f]{16}$`)

// checkHookBody asserts Flagger's webhook payload exactly: name, namespace, phase, checksum
// and the hook's metadata, nothing else. It returns the checksum.
func checkHookBody(t *testing.T, c hookCall, ns, name, phase string, metadata map[string]string) string {
	t.Helper()
	sum, _ := c.Body["checksum"].(string)
	if !checksumRE.MatchString(sum) {
		t.Errorf("%s: checksum %q is not 16 hex digits (body %s)", c.Path, sum, c.Raw)
	}
	want := map[string]any{"name": name, "namespace": ns, "phase": phase, "checksum": sum}
	if len(metadata) > 0 {
		m := map[string]any{}
		for k, v := range metadata {
			m[k] = v
		}
		want["metadata"] = m
	}
	if d := cmp.Diff(want, c.Body); d != "" {
		t.Errorf("%s: body (-want +got):\n%s\nraw: %s", c.Path, d, c.Raw)
	}
	return sum
}

// gate posts to a manual gate of the HTTP API.
func (s *siskin) gate(ns, name, gate string) (int, map[string]any) {
	s.t.Helper()
	code, body := s.post("/api/v1/canaries/"+ns+"/"+name+"/"+gate, map[string]string{"Content-Type": "application/json"}, nil)
	var out map[string]any
	if err := json.Unmarshal(body, &out); err != nil {
		s.t.Fatalf("%s: %d %s: %v", gate, code, body, err)
	}
	return code, out
}

// canaryEvents lists the messages of the Kubernetes Events recorded on the canary.
func (e *env) canaryEvents(name string) map[string]string {
	e.t.Helper()
	list, err := e.kube.CoreV1().Events(e.ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]string{}
	for _, ev := range list.Items {
		if ev.InvolvedObject.Kind == "Canary" && ev.InvolvedObject.Name == name {
			out[ev.Message] = ev.Type
		}
	}
	return out
}
