package gatewayapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/siskin-dev/siskin/functions"
	"github.com/siskin-dev/siskin/kubeapi"
)

// DefaultCallTimeout bounds each Kubernetes API call when NewRouter is given no timeout.
const DefaultCallTimeout = 10 * time.Second

// CRDName is the CustomResourceDefinition the router needs.
const CRDName = "httproutes.gateway.networking.k8s.io"

// Router reconciles a Canary's HTTPRoute. It implements the engine's Router (ApplyRoutes,
// ObserveRoutes, Finalize), its route validation and its event check.
type Router struct {
	client          versioned.Interface
	log             *slog.Logger
	timeout         time.Duration
	conflictBackoff wait.Backoff
}

var (
	_ functions.Router             = (*Router)(nil)
	_ functions.RouteValidator     = (*Router)(nil)
	_ functions.EventRoutesChecker = (*Router)(nil)
)

// NewRouter returns a Router using client; timeout bounds every single API call (<= 0 means
// DefaultCallTimeout).
func NewRouter(client versioned.Interface, log *slog.Logger, timeout time.Duration) *Router {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if timeout <= 0 {
		timeout = DefaultCallTimeout
	}
	return &Router{client: client, log: log, timeout: timeout,
		conflictBackoff: wait.Backoff{Steps: 4, Duration: 20 * time.Millisecond, Factor: 2, Jitter: 0.2}}
}

// ValidateRoutes lists what of the Canary the Gateway API cannot route (see Problems).
func (r *Router) ValidateRoutes(c functions.Canary) []string { return Problems(c) }

// ApplyRoutes creates or corrects the HTTPRoute so that it says what the plan says; a hand edit
// is overwritten. An HTTPRoute already as rendered is not written. There are no DestinationRules
// on this path, so WeightsOnly changes nothing.
func (r *Router) ApplyRoutes(ctx context.Context, c functions.Canary, p functions.RoutePlan) error {
	want, err := RenderHTTPRoute(c, p)
	if err != nil {
		return fmt.Errorf("render HTTPRoute for canary %s: %w", c.Key, err)
	}
	op := "apply HTTPRoute " + want.Namespace + "/" + want.Name
	read := fromCache
	err = r.onConflict(ctx, func() error {
		live, err := r.get(ctx, want.Namespace, want.Name, read)
		read = fresh
		if apierrors.IsNotFound(err) && !crdMissing(err) {
			if _, err := call(ctx, r.timeout, func(ctx context.Context) (*gwv1.HTTPRoute, error) {
				return r.client.GatewayV1().HTTPRoutes(want.Namespace).Create(ctx, want, metav1.CreateOptions{})
			}); err != nil {
				return err
			}
			r.log.InfoContext(ctx, "HTTPRoute created", "canary", c.Key.String(), "httpRoute", want.Name)
			return nil
		}
		if err != nil {
			return err
		}
		next, changed, err := corrected(live, want, c.UID)
		if err != nil || !changed {
			return err
		}
		if _, err := call(ctx, r.timeout, func(ctx context.Context) (*gwv1.HTTPRoute, error) {
			return r.client.GatewayV1().HTTPRoutes(next.Namespace).Update(ctx, next, metav1.UpdateOptions{})
		}); err != nil {
			return err
		}
		r.log.InfoContext(ctx, "HTTPRoute updated", "canary", c.Key.String(), "httpRoute", want.Name)
		return nil
	})
	if err != nil {
		return apiError(op, err)
	}
	return nil
}

// ObserveRoutes reads the live routing. found is false when there is no HTTPRoute, or when it
// has no rule to the canary yet (an HTTPRoute not taken over). An HTTPRoute that Flagger
// managed is read as it is, so the release goes on from its weights.
func (r *Router) ObserveRoutes(ctx context.Context, c functions.Canary) (functions.Routing, bool, error) {
	name := c.Names().Apex
	route, err := r.get(ctx, c.Namespace, name, fresh)
	if apierrors.IsNotFound(err) && !crdMissing(err) {
		return functions.Routing{}, false, nil
	}
	if err != nil {
		return functions.Routing{}, false, apiError("get HTTPRoute "+c.Namespace+"/"+name, err)
	}
	routing, ok := WeightsOf(route, stickyFirst(c))
	if !ok {
		r.log.WarnContext(ctx, "HTTPRoute has no rule to the canary", "canary", c.Key.String(), "httpRoute", name)
		return functions.Routing{}, false, nil
	}
	return routing, true, nil
}

func stickyFirst(c functions.Canary) bool {
	return c.Spec.Analysis != nil && c.Spec.Analysis.SessionAffinity != nil && c.Spec.Strategy() == functions.StrategyCanary
}

// Finalize undoes the takeover when a Canary with revertOnDeletion is deleted: an HTTPRoute
// that existed before is restored to its spec (kubectl's last-applied configuration, else the
// original-configuration annotation) and let go of; one that Siskin created is deleted rather
// than left routing to a primary that goes away. One neither owned nor annotated is left alone.
func (r *Router) Finalize(ctx context.Context, c functions.Canary) error {
	name := c.Names().Apex
	op := "finalize HTTPRoute " + c.Namespace + "/" + name
	err := r.onConflict(ctx, func() error {
		live, err := r.get(ctx, c.Namespace, name, fresh)
		if apierrors.IsNotFound(err) && !crdMissing(err) {
			return nil
		}
		if err != nil {
			return err
		}
		original, found, err := originalSpec(live)
		if err != nil {
			return err
		}
		if !found {
			if !controlledBy(live, c.UID) {
				r.log.WarnContext(ctx, "HTTPRoute original configuration not found, nothing to revert", "canary", c.Key.String(), "httpRoute", name)
				return nil
			}
			uid := live.UID
			_, err := call(ctx, r.timeout, func(ctx context.Context) (struct{}, error) {
				return struct{}{}, r.client.GatewayV1().HTTPRoutes(c.Namespace).Delete(ctx, name,
					metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
			})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return err
		}
		next := live.DeepCopy()
		next.Spec = *original
		delete(next.Annotations, OriginalConfigAnnotation)
		next.OwnerReferences = withoutOwner(next.OwnerReferences, c.UID)
		if _, err := call(ctx, r.timeout, func(ctx context.Context) (*gwv1.HTTPRoute, error) {
			return r.client.GatewayV1().HTTPRoutes(next.Namespace).Update(ctx, next, metav1.UpdateOptions{})
		}); err != nil {
			return err
		}
		r.log.InfoContext(ctx, "HTTPRoute restored to its original configuration", "canary", c.Key.String(), "httpRoute", name)
		return nil
	})
	if err != nil {
		return apiError(op, err)
	}
	return nil
}

// AsPlanned reports whether object, an HTTPRoute as an ApiServerSource event carried it, is
// already what the plan renders: then its event (most often Siskin's own write coming back)
// needs no read and no write.
func (r *Router) AsPlanned(c functions.Canary, p functions.RoutePlan, object []byte) bool {
	var live gwv1.HTTPRoute
	if err := json.Unmarshal(object, &live); err != nil || live.Kind != "HTTPRoute" ||
		live.Namespace != c.Namespace || live.Name != c.Names().Apex {
		return false
	}
	want, err := RenderHTTPRoute(c, p)
	if err != nil {
		return false
	}
	_, changed, err := corrected(&live, want, c.UID)
	return err == nil && !changed
}

// WeightsAsPlanned reports whether object, an HTTPRoute as an event carried it, routes as the
// plan says (the Canary known by the owner reference alone).
func (r *Router) WeightsAsPlanned(p functions.RoutePlan, object []byte) bool {
	var live gwv1.HTTPRoute
	if err := json.Unmarshal(object, &live); err != nil || live.Kind != "HTTPRoute" {
		return false
	}
	// Without the Canary, the rule with session affinity cannot be told; the first is read.
	w, found := WeightsOf(&live, false)
	return found && w == p.Routing
}

// corrected returns live corrected to want and whether anything changed. Labels and
// annotations Siskin does not set are kept. An HTTPRoute the Canary does not own is taken over:
// its spec is saved in the original-configuration annotation first (unless kubectl's
// last-applied configuration has it), and no owner reference is added, so that it outlives the
// Canary and can be restored.
func corrected(live, want *gwv1.HTTPRoute, canaryUID string) (*gwv1.HTTPRoute, bool, error) {
	owned := controlledBy(live, canaryUID)
	if ctrl := controllerOf(live.OwnerReferences); !owned && ctrl != nil && ctrl.Kind == canaryKind && ctrl.APIVersion == canaryAPIVersion {
		return nil, false, fmt.Errorf("%w: it is controlled by Canary %s (uid %s)", functions.ErrInvalid, ctrl.Name, ctrl.UID)
	}
	next := live.DeepCopy()
	changed := false
	if !SameSpec(live.Spec, want.Spec) {
		next.Spec = *want.Spec.DeepCopy()
		changed = true
	}
	if setAll(&next.Labels, want.Labels) {
		changed = true
	}
	if setAll(&next.Annotations, want.Annotations) {
		changed = true
	}
	if !owned {
		_, kubectl := live.Annotations[kubectlLastAppliedAnnotation]
		_, saved := live.Annotations[OriginalConfigAnnotation]
		if !kubectl && !saved {
			original, err := json.Marshal(&live.Spec)
			if err != nil {
				return nil, false, fmt.Errorf("%w: marshal original spec: %v", functions.ErrInvalid, err)
			}
			setAll(&next.Annotations, map[string]string{OriginalConfigAnnotation: string(original)})
			changed = true
		}
	}
	return next, changed, nil
}

// SameSpec compares two HTTPRoute specs as the apiserver stores them: the schema's defaults
// (parentRef group and kind, backendRef weight, match types, the every-path rule) filled in on
// both sides, nil equal to empty.
func SameSpec(a, b gwv1.HTTPRouteSpec) bool {
	return apiequality.Semantic.DeepEqual(withDefaults(a), withDefaults(b))
}

func withDefaults(s gwv1.HTTPRouteSpec) gwv1.HTTPRouteSpec {
	s = *s.DeepCopy()
	for i := range s.ParentRefs {
		ref := &s.ParentRefs[i]
		if ref.Group == nil {
			g := gwv1.Group(gwv1.GroupName)
			ref.Group = &g
		}
		if ref.Kind == nil {
			k := gwv1.Kind("Gateway")
			ref.Kind = &k
		}
	}
	if len(s.Rules) == 0 {
		s.Rules = []gwv1.HTTPRouteRule{{}}
	}
	for i := range s.Rules {
		rule := &s.Rules[i]
		if len(rule.Matches) == 0 {
			rule.Matches = []gwv1.HTTPRouteMatch{everyPath()}
		}
		for j := range rule.Matches {
			m := &rule.Matches[j]
			if m.Path == nil {
				m.Path = everyPath().Path
			}
			if m.Path.Type == nil {
				t := gwv1.PathMatchPathPrefix
				m.Path.Type = &t
			}
			if m.Path.Value == nil {
				v := "/"
				m.Path.Value = &v
			}
			for k := range m.Headers {
				if m.Headers[k].Type == nil {
					t := gwv1.HeaderMatchExact
					m.Headers[k].Type = &t
				}
			}
			for k := range m.QueryParams {
				if m.QueryParams[k].Type == nil {
					t := gwv1.QueryParamMatchExact
					m.QueryParams[k].Type = &t
				}
			}
		}
		for j := range rule.BackendRefs {
			ref := &rule.BackendRefs[j]
			if ref.Weight == nil {
				w := int32(1)
				ref.Weight = &w
			}
			if ref.Group == nil {
				g := gwv1.Group("")
				ref.Group = &g
			}
			if ref.Kind == nil {
				k := gwv1.Kind("Service")
				ref.Kind = &k
			}
		}
	}
	return s
}

func originalSpec(route *gwv1.HTTPRoute) (*gwv1.HTTPRouteSpec, bool, error) {
	if a, ok := route.Annotations[kubectlLastAppliedAnnotation]; ok {
		var applied gwv1.HTTPRoute
		if err := json.Unmarshal([]byte(a), &applied); err != nil {
			return nil, false, fmt.Errorf("%w: annotation %s: %v", functions.ErrInvalid, kubectlLastAppliedAnnotation, err)
		}
		return &applied.Spec, true, nil
	}
	if a, ok := route.Annotations[OriginalConfigAnnotation]; ok {
		var spec gwv1.HTTPRouteSpec
		if err := json.Unmarshal([]byte(a), &spec); err != nil {
			return nil, false, fmt.Errorf("%w: annotation %s: %v", functions.ErrInvalid, OriginalConfigAnnotation, err)
		}
		return &spec, true, nil
	}
	return nil, false, nil
}

// Reads that the update after them corrects come from the watch cache; a stale one ends in a
// conflict and a fresh read (see package istio, which does the same).
var (
	fromCache = metav1.GetOptions{ResourceVersion: "0"}
	fresh     = metav1.GetOptions{}
)

func (r *Router) get(ctx context.Context, namespace, name string, opts metav1.GetOptions) (*gwv1.HTTPRoute, error) {
	return call(ctx, r.timeout, func(ctx context.Context) (*gwv1.HTTPRoute, error) {
		return r.client.GatewayV1().HTTPRoutes(namespace).Get(ctx, name, opts)
	})
}

func (r *Router) onConflict(ctx context.Context, fn func() error) error {
	return retry.OnError(r.conflictBackoff, func(err error) bool {
		return ctx.Err() == nil && (apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err))
	}, fn)
}

func call[T any](ctx context.Context, timeout time.Duration, fn func(context.Context) (T, error)) (T, error) {
	return kubeapi.Call(ctx, timeout, fn)
}

// crdMissing tells a 404 for the resource type (the CRD is not installed: the apiserver does
// not know the path) from a 404 for one object, which names the object in its details.
func crdMissing(err error) bool {
	var status apierrors.APIStatus
	if !apierrors.IsNotFound(err) || !errors.As(err, &status) {
		return false
	}
	d := status.Status().Details
	return d == nil || d.Name == ""
}

// errCRDMissing is the status's message when the cluster does not serve HTTPRoutes.
var errCRDMissing = fmt.Errorf("%w: the cluster does not serve gateway.networking.k8s.io/v1 HTTPRoutes: install the Gateway API CRD %s (standard channel, v1.1 or later)", functions.ErrInvalid, CRDName)

// apiError maps an API error with kubeapi.Error, the mapping every adapter shares. A missing
// CRD is an invalid setup that names the CRD: the apiserver's bare 404 would read as "no
// HTTPRoute yet" and retry forever.
func apiError(op string, err error) error {
	if crdMissing(err) {
		return fmt.Errorf("%s: %w (%w)", op, errCRDMissing, err)
	}
	return kubeapi.Error(op, err)
}

func controllerOf(refs []metav1.OwnerReference) *metav1.OwnerReference {
	for i := range refs {
		if refs[i].Controller != nil && *refs[i].Controller {
			return &refs[i]
		}
	}
	return nil
}

func controlledBy(route *gwv1.HTTPRoute, uid string) bool {
	ctrl := controllerOf(route.OwnerReferences)
	return ctrl != nil && uid != "" && ctrl.UID == types.UID(uid)
}

func withoutOwner(refs []metav1.OwnerReference, uid string) []metav1.OwnerReference {
	var out []metav1.OwnerReference
	for _, ref := range refs {
		if ref.UID != types.UID(uid) {
			out = append(out, ref)
		}
	}
	return out
}

// setAll sets every key of want in *m and reports whether *m changed.
func setAll(m *map[string]string, want map[string]string) bool {
	changed := false
	for k, v := range want {
		if cur, ok := (*m)[k]; ok && cur == v {
			continue
		}
		if *m == nil {
			*m = map[string]string{}
		}
		(*m)[k] = v
		changed = true
	}
	return changed
}
