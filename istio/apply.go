package istio

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	istioapi "istio.io/api/networking/v1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	"istio.io/client-go/pkg/clientset/versioned"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"

	"google.golang.org/protobuf/proto"

	"github.com/siskin-dev/siskin/functions"
	"github.com/siskin-dev/siskin/kubeapi"
)

// DefaultCallTimeout bounds each Kubernetes API call when NewRouter is given no timeout.
const DefaultCallTimeout = 10 * time.Second

// Router reconciles a Canary's DestinationRules and VirtualService. It implements
// functions.Router.
type Router struct {
	client  versioned.Interface
	log     *slog.Logger
	timeout time.Duration
	// conflictBackoff paces the fresh Get+Update attempts after a write conflict.
	conflictBackoff wait.Backoff
	// known holds each VirtualService ("namespace/name") as this process last wrote it or read
	// it, resourceVersion included, so that a step between two re-assertions whose saved state
	// names that version (State.RoutesVersion: no other process wrote it since) starts from it
	// and needs no read. A copy gone stale anyway (a hand edit) costs a conflict and a fresh
	// read, never a lost update; a hand edit is also put back through its event, or by the
	// next re-assertion, which reads.
	known sync.Map
}

var (
	_ functions.Router             = (*Router)(nil)
	_ functions.RoutesReader       = (*Router)(nil)
	_ functions.EventRoutesChecker = (*Router)(nil)
	_ functions.RouteVersions      = (*Router)(nil)
)

// NewRouter returns a Router using client; timeout bounds every single API call (<= 0 means
// DefaultCallTimeout).
func NewRouter(client versioned.Interface, log *slog.Logger, timeout time.Duration) *Router {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if timeout <= 0 {
		timeout = DefaultCallTimeout
	}
	return &Router{
		client:          client,
		log:             log,
		timeout:         timeout,
		conflictBackoff: wait.Backoff{Steps: 4, Duration: 20 * time.Millisecond, Factor: 2, Jitter: 0.2},
	}
}

// ApplyRoutes creates or corrects the two DestinationRules and the VirtualService so that they
// say what the plan says (the VirtualService alone for a plan of WeightsOnly). The three
// objects are independent and are reconciled concurrently. An object already as rendered is
// not written.
func (r *Router) ApplyRoutes(ctx context.Context, c functions.Canary, p functions.RoutePlan) error {
	return r.apply(ctx, c, p, liveObjects{})
}

// liveObjects are the routing objects as read ahead of a step's decision; nil is "not read".
type liveObjects struct {
	vs                  *networkingv1.VirtualService
	primaryDR, canaryDR *networkingv1.DestinationRule
	// vsKnown: vs is the copy this process last wrote or read, not a read of this step.
	vsKnown bool
}

// LiveRoutes are a canary's routing objects read ahead of the decision (ReadRoutes).
type LiveRoutes struct {
	r    *Router
	c    functions.Canary
	live liveObjects
}

// ReadRoutes reads the VirtualService and, with rules, the DestinationRules of a canary from the
// watch cache, concurrently. A step calls it alongside its other reads, so that the correction
// after the decision starts from these and needs no read of its own. An object that could not
// be read, or was not, is read again by Apply if the plan needs it.
func (r *Router) ReadRoutes(ctx context.Context, c functions.Canary, rules bool, version string) functions.LiveRoutes {
	l := &LiveRoutes{r: r, c: c}
	names := c.Names()
	if v, ok := r.known.Load(c.Namespace + "/" + names.Apex); ok && !rules && version != "" {
		if vs := v.(*networkingv1.VirtualService); vs.ResourceVersion == version {
			l.live.vs, l.live.vsKnown = vs.DeepCopy(), true
			return l
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		if vs, err := r.getVirtualService(ctx, c.Namespace, names.Apex, fromCache); err == nil {
			l.live.vs = vs
		}
	})
	rule := func(name string, into **networkingv1.DestinationRule) {
		if dr, err := r.getDestinationRule(ctx, c.Namespace, name, fromCache); err == nil {
			*into = dr
		}
	}
	if rules {
		wg.Go(func() { rule(names.PrimarySvc, &l.live.primaryDR) })
		wg.Go(func() { rule(names.CanarySvc, &l.live.canaryDR) })
	}
	wg.Wait()
	return l
}

// Apply is ApplyRoutes from the objects read ahead.
func (l *LiveRoutes) Apply(ctx context.Context, p functions.RoutePlan) error {
	return l.r.apply(ctx, l.c, p, l.live)
}

func (r *Router) apply(ctx context.Context, c functions.Canary, p functions.RoutePlan, live liveObjects) error {
	vs, err := RenderVirtualService(c, p)
	if err != nil {
		return fmt.Errorf("render VirtualService for canary %s: %w", c.Key, err)
	}
	if p.WeightsOnly {
		return r.applyVirtualService(ctx, c, vs, live.vs, live.vsKnown)
	}
	primaryDR, canaryDR, err := RenderDestinationRules(c)
	if err != nil {
		return fmt.Errorf("render DestinationRules for canary %s: %w", c.Key, err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 3)
	wg.Go(func() { errs[0] = r.applyDestinationRule(ctx, c, primaryDR, live.primaryDR) })
	wg.Go(func() { errs[1] = r.applyDestinationRule(ctx, c, canaryDR, live.canaryDR) })
	wg.Go(func() { errs[2] = r.applyVirtualService(ctx, c, vs, live.vs, live.vsKnown) })
	wg.Wait()
	return errors.Join(errs...)
}

// AsPlanned reports whether object, a VirtualService as an ApiServerSource event carried it,
// is already what the plan renders: then its event (most often Siskin's own write coming back)
// needs no read and no write. Anything else, a DestinationRule, an object that does not
// decode or is not the canary's, is not as planned, and is read and corrected.
func (r *Router) AsPlanned(c functions.Canary, p functions.RoutePlan, object []byte) bool {
	var live networkingv1.VirtualService
	if err := json.Unmarshal(object, &live); err != nil || live.Kind != "VirtualService" ||
		live.Namespace != c.Namespace || live.Name != c.Names().Apex {
		return false
	}
	want, err := RenderVirtualService(c, p)
	if err != nil {
		return false
	}
	_, changed, err := correctedVirtualService(&live, want, c.UID)
	return err == nil && !changed
}

// RoutesVersion is the resourceVersion of c's VirtualService as this process last wrote or
// read it; "" when it keeps no copy.
func (r *Router) RoutesVersion(c functions.Canary) string {
	if v, ok := r.known.Load(c.Namespace + "/" + c.Names().Apex); ok {
		return v.(*networkingv1.VirtualService).ResourceVersion
	}
	return ""
}

// WeightsAsPlanned reports whether object, a VirtualService as an ApiServerSource event carried
// it, routes as the plan says.
func (r *Router) WeightsAsPlanned(p functions.RoutePlan, object []byte) bool {
	var live networkingv1.VirtualService
	if err := json.Unmarshal(object, &live); err != nil || live.Kind != "VirtualService" {
		return false
	}
	w, found := WeightsOf(&live)
	return found && w == p.Routing
}

// ObserveRoutes reads the live routing. found is false when there is no VirtualService, or when
// it has no route to the canary yet (a VirtualService not taken over).
func (r *Router) ObserveRoutes(ctx context.Context, c functions.Canary) (functions.Routing, bool, error) {
	name := c.Names().Apex
	vs, err := r.getVirtualService(ctx, c.Namespace, name, fresh)
	if apierrors.IsNotFound(err) {
		return functions.Routing{}, false, nil
	}
	if err != nil {
		return functions.Routing{}, false, kubeapi.Error("get VirtualService "+c.Namespace+"/"+name, err)
	}
	routing, ok := WeightsOf(vs)
	if !ok {
		r.log.WarnContext(ctx, "VirtualService has no route to the canary", "canary", c.Key.String(), "virtualService", name)
		return functions.Routing{}, false, nil
	}
	return routing, true, nil
}

// Finalize undoes the VirtualService takeover when a Canary with revertOnDeletion is deleted:
// the spec found before Siskin took it over (kubectl's last-applied configuration, else the
// original-configuration annotation) is restored and the Canary lets go of it. A VirtualService
// that Siskin created has no original: it is deleted now rather than left routing to a primary
// that is being torn down. A VirtualService neither owned nor annotated is left alone.
func (r *Router) Finalize(ctx context.Context, c functions.Canary) error {
	name := c.Names().Apex
	op := "finalize VirtualService " + c.Namespace + "/" + name
	err := r.onConflict(ctx, func() error {
		live, err := r.getVirtualService(ctx, c.Namespace, name, fresh)
		if apierrors.IsNotFound(err) {
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
				r.log.WarnContext(ctx, "VirtualService original configuration not found, nothing to revert", "canary", c.Key.String(), "virtualService", name)
				return nil
			}
			return r.deleteVirtualService(ctx, live)
		}
		next := live.DeepCopy()
		original.DeepCopyInto(&next.Spec)
		delete(next.Annotations, OriginalConfigAnnotation)
		next.OwnerReferences = withoutOwner(next.OwnerReferences, c.UID)
		if _, err := r.updateVirtualService(ctx, next); err != nil {
			return err
		}
		r.log.InfoContext(ctx, "VirtualService restored to its original configuration", "canary", c.Key.String(), "virtualService", name)
		return nil
	})
	if err != nil {
		return kubeapi.Error(op, err)
	}
	return nil
}

// applyDestinationRule corrects the rule to want, starting from readAhead when given (a read
// of the same step), else from the cache; after a conflict, from a fresh read.
func (r *Router) applyDestinationRule(ctx context.Context, c functions.Canary, want, readAhead *networkingv1.DestinationRule) error {
	op := "apply DestinationRule " + want.Namespace + "/" + want.Name
	read := fromCache
	err := r.onConflict(ctx, func() error {
		client := r.client.NetworkingV1().DestinationRules(want.Namespace)
		live, err := readAhead, error(nil)
		if live == nil {
			live, err = r.getDestinationRule(ctx, want.Namespace, want.Name, read)
		}
		readAhead, read = nil, fresh
		if apierrors.IsNotFound(err) {
			if _, err := kubeapi.Call(ctx, r.timeout, func(ctx context.Context) (*networkingv1.DestinationRule, error) {
				return client.Create(ctx, want, metav1.CreateOptions{})
			}); err != nil {
				return err
			}
			r.log.InfoContext(ctx, "DestinationRule created", "canary", c.Key.String(), "destinationRule", want.Name)
			return nil
		}
		if err != nil {
			return err
		}
		specSame := proto.Equal(&live.Spec, &want.Spec)
		// A rule someone else controls keeps its owner; Siskin only corrects its spec.
		adopt := controllerOf(live.OwnerReferences) == nil
		if specSame && !adopt {
			return nil
		}
		next := live.DeepCopy()
		want.Spec.DeepCopyInto(&next.Spec)
		if adopt {
			next.OwnerReferences = append(next.OwnerReferences, want.OwnerReferences...)
		}
		if _, err := kubeapi.Call(ctx, r.timeout, func(ctx context.Context) (*networkingv1.DestinationRule, error) {
			return client.Update(ctx, next, metav1.UpdateOptions{})
		}); err != nil {
			return err
		}
		r.log.InfoContext(ctx, "DestinationRule updated", "canary", c.Key.String(), "destinationRule", want.Name)
		return nil
	})
	if err != nil {
		return kubeapi.Error(op, err)
	}
	return nil
}

// applyVirtualService corrects the VirtualService to want, from readAhead when given, else from
// the cache; after a conflict, from a fresh read.
func (r *Router) applyVirtualService(ctx context.Context, c functions.Canary, want, readAhead *networkingv1.VirtualService, known bool) error {
	op := "apply VirtualService " + want.Namespace + "/" + want.Name
	key := want.Namespace + "/" + want.Name
	read := fromCache
	err := r.onConflict(ctx, func() error {
		live, err := readAhead, error(nil)
		fromKnown := known && live != nil
		if live == nil {
			live, err = r.getVirtualService(ctx, want.Namespace, want.Name, read)
		}
		readAhead, read, known = nil, fresh, false
		if apierrors.IsNotFound(err) {
			r.known.Delete(key)
			created, err := kubeapi.Call(ctx, r.timeout, func(ctx context.Context) (*networkingv1.VirtualService, error) {
				return r.client.NetworkingV1().VirtualServices(want.Namespace).Create(ctx, want, metav1.CreateOptions{})
			})
			if err != nil {
				return err
			}
			r.known.Store(key, created)
			r.log.InfoContext(ctx, "VirtualService created", "canary", c.Key.String(), "virtualService", want.Name)
			return nil
		}
		if err != nil {
			return err
		}
		next, changed, err := correctedVirtualService(live, want, c.UID)
		if err != nil {
			return err
		}
		if !changed {
			r.known.Store(key, live)
			return nil
		}
		updated, err := r.updateVirtualService(ctx, next)
		if fromKnown && apierrors.IsNotFound(err) {
			// Deleted since this process last saw it: read it (gone) and create it again.
			r.known.Delete(key)
			return apierrors.NewConflict(virtualServicesResource, want.Name, err)
		}
		if err != nil {
			if apierrors.IsConflict(err) {
				r.known.Delete(key)
			}
			return err
		}
		r.known.Store(key, updated)
		r.log.InfoContext(ctx, "VirtualService updated", "canary", c.Key.String(), "virtualService", want.Name)
		return nil
	})
	if err != nil {
		return kubeapi.Error(op, err)
	}
	return nil
}

// correctedVirtualService returns live corrected to want, and whether anything changed. Labels
// and annotations that Siskin does not set are kept, so other tools' metadata survives. A
// VirtualService that the Canary does not own is taken over: its spec is saved in the
// original-configuration annotation first (unless kubectl's last-applied configuration already
// has it), and no owner reference is added, so that it outlives the Canary and can be restored.
func correctedVirtualService(live, want *networkingv1.VirtualService, canaryUID string) (*networkingv1.VirtualService, bool, error) {
	owned := controlledBy(live, canaryUID)
	if ctrl := controllerOf(live.OwnerReferences); !owned && ctrl != nil && ctrl.Kind == canaryKind && ctrl.APIVersion == canaryAPIVersion {
		return nil, false, fmt.Errorf("%w: it is controlled by Canary %s (uid %s)", functions.ErrInvalid, ctrl.Name, ctrl.UID)
	}
	next := live.DeepCopy()
	changed := false
	if !proto.Equal(&live.Spec, &want.Spec) {
		want.Spec.DeepCopyInto(&next.Spec)
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

// originalSpec finds the spec to restore on finalization.
func originalSpec(vs *networkingv1.VirtualService) (*istioapi.VirtualService, bool, error) {
	if a, ok := vs.Annotations[kubectlLastAppliedAnnotation]; ok {
		var applied networkingv1.VirtualService
		if err := json.Unmarshal([]byte(a), &applied); err != nil {
			return nil, false, fmt.Errorf("%w: annotation %s: %v", functions.ErrInvalid, kubectlLastAppliedAnnotation, err)
		}
		return applied.Spec.DeepCopy(), true, nil
	}
	if a, ok := vs.Annotations[OriginalConfigAnnotation]; ok {
		spec := &istioapi.VirtualService{}
		if err := json.Unmarshal([]byte(a), spec); err != nil {
			return nil, false, fmt.Errorf("%w: annotation %s: %v", functions.ErrInvalid, OriginalConfigAnnotation, err)
		}
		return spec, true, nil
	}
	return nil, false, nil
}

// A step re-asserts the DestinationRules and the VirtualService from a read of the apiserver's
// watch cache (resourceVersion "0"): half the cost of a quorum read, and nothing for etcd. A
// read milliseconds old is safe because the update carries its resourceVersion: a stale read
// ends in a conflict (or, for an object created meanwhile, in AlreadyExists), and onConflict
// tries again from a fresh read. Reads that nothing writes after (ObserveRoutes, Finalize's
// "is it there?") are fresh.
var (
	fromCache = metav1.GetOptions{ResourceVersion: "0"}
	fresh     = metav1.GetOptions{}
)

func (r *Router) getVirtualService(ctx context.Context, namespace, name string, opts metav1.GetOptions) (*networkingv1.VirtualService, error) {
	return kubeapi.Call(ctx, r.timeout, func(ctx context.Context) (*networkingv1.VirtualService, error) {
		return r.client.NetworkingV1().VirtualServices(namespace).Get(ctx, name, opts)
	})
}

func (r *Router) getDestinationRule(ctx context.Context, namespace, name string, opts metav1.GetOptions) (*networkingv1.DestinationRule, error) {
	return kubeapi.Call(ctx, r.timeout, func(ctx context.Context) (*networkingv1.DestinationRule, error) {
		return r.client.NetworkingV1().DestinationRules(namespace).Get(ctx, name, opts)
	})
}

func (r *Router) updateVirtualService(ctx context.Context, vs *networkingv1.VirtualService) (*networkingv1.VirtualService, error) {
	return kubeapi.Call(ctx, r.timeout, func(ctx context.Context) (*networkingv1.VirtualService, error) {
		return r.client.NetworkingV1().VirtualServices(vs.Namespace).Update(ctx, vs, metav1.UpdateOptions{})
	})
}

var virtualServicesResource = schema.GroupResource{Group: "networking.istio.io", Resource: "virtualservices"}

func (r *Router) deleteVirtualService(ctx context.Context, vs *networkingv1.VirtualService) error {
	r.known.Delete(vs.Namespace + "/" + vs.Name)
	uid := vs.UID
	_, err := kubeapi.Call(ctx, r.timeout, func(ctx context.Context) (struct{}, error) {
		// The precondition keeps a VirtualService recreated meanwhile by someone else.
		return struct{}{}, r.client.NetworkingV1().VirtualServices(vs.Namespace).Delete(ctx, vs.Name,
			metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// onConflict runs fn again, from a fresh read, when a write lost a race (a conflict, or a
// create that found the object created meanwhile).
func (r *Router) onConflict(ctx context.Context, fn func() error) error {
	return retry.OnError(r.conflictBackoff, func(err error) bool {
		return ctx.Err() == nil && (apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err))
	}, fn)
}

// call runs one API call under its own timeout.
func controllerOf(refs []metav1.OwnerReference) *metav1.OwnerReference {
	for i := range refs {
		if refs[i].Controller != nil && *refs[i].Controller {
			return &refs[i]
		}
	}
	return nil
}

func controlledBy(vs *networkingv1.VirtualService, uid string) bool {
	ctrl := controllerOf(vs.OwnerReferences)
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
