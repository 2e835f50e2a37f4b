package functions

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// DependentIndex keeps, per namespace, which canaries depend on which objects, so that an
// event about a Deployment, Service or DestinationRule finds its canaries with one Redis read
// instead of a LIST of the namespace's Canaries (package state). The index is rebuilt from a
// list when it is not current: never built, lost with Redis, older than its time to live, or
// made stale by a Canary that was created, changed or deleted since.
type DependentIndex interface {
	// Dependents returns the entry of object in ns ("" when none), and whether the
	// namespace's index is current.
	Dependents(ctx context.Context, ns, object string) (entry string, current bool, err error)
	// DependentsEpoch is the namespace index's epoch, read before the list a rebuild uses.
	DependentsEpoch(ctx context.Context, ns string) (int64, error)
	// ReplaceDependents writes the whole index of ns, current for ttl, if its epoch is still
	// epoch; it reports false, writing nothing, when the index was made stale meanwhile.
	ReplaceDependents(ctx context.Context, ns string, epoch int64, entries map[string]string, ttl time.Duration) (bool, error)
	// InvalidateDependents makes the index of ns stale.
	InvalidateDependents(ctx context.Context, ns string) error
}

// dependentsTTL bounds how long an index entry can be wrong if an invalidation was lost: the
// resync period, when it is set.
func (s *Service) dependentsTTL() time.Duration {
	if s.cfg.Resync > 0 {
		return s.cfg.Resync
	}
	return 5 * time.Minute
}

// objectIndexKey names obj in the dependents index.
func objectIndexKey(group, kind, name string) string { return group + "/" + kind + "/" + name }

// dependencies are the objects c depends on, each with how: the same relation as dependsOn.
func dependencies(c Canary) map[string]changeCause {
	n := c.Names()
	if n.Target == "" {
		// A Canary without a target depends on nothing yet; its own events step it.
		return map[string]changeCause{}
	}
	return map[string]changeCause{
		objectIndexKey("apps", "Deployment", n.Target):                         causeTarget,
		objectIndexKey("apps", "Deployment", n.Primary):                        causePrimary,
		objectIndexKey("networking.istio.io", "VirtualService", n.Apex):        causeRoutes,
		objectIndexKey("networking.istio.io", "DestinationRule", n.PrimarySvc): causeRoutes,
		objectIndexKey("networking.istio.io", "DestinationRule", n.CanarySvc):  causeRoutes,
		objectIndexKey("gateway.networking.k8s.io", "HTTPRoute", n.Apex):       causeRoutes,
		objectIndexKey("", "Service", n.Apex):                                  causeServices,
		objectIndexKey("", "Service", n.PrimarySvc):                            causeServices,
		objectIndexKey("", "Service", n.CanarySvc):                             causeServices,
	}
}

// dependent is one canary an object event concerns, and how it depends on the object.
type dependent struct {
	canary Canary
	cause  changeCause
}

// indexEntries is the dependents index of one namespace's canaries: object -> "name=cause …".
func indexEntries(cs []Canary) map[string]string {
	byObject := map[string][]string{}
	for _, c := range cs {
		for obj, cause := range dependencies(c) {
			byObject[obj] = append(byObject[obj], c.Name+"="+strconv.Itoa(int(cause)))
		}
	}
	out := make(map[string]string, len(byObject))
	for obj, names := range byObject {
		sort.Strings(names)
		out[obj] = strings.Join(names, " ")
	}
	return out
}

// parseIndexEntry reads an entry of indexEntries back; a malformed part is an error, so that
// the caller falls back to listing instead of missing a canary.
func parseIndexEntry(ns, entry string) ([]dependent, error) {
	var out []dependent
	for part := range strings.FieldsSeq(entry) {
		name, cause, ok := strings.Cut(part, "=")
		n, err := strconv.Atoi(cause)
		if !ok || err != nil || name == "" || n < int(causeCanary) || n > int(causeServices) {
			return nil, fmt.Errorf("dependents index of %s: malformed entry %q", ns, entry)
		}
		out = append(out, dependent{canary: Canary{Key: Key{Namespace: ns, Name: name}}, cause: changeCause(n)})
	}
	return out, nil
}

// dependentsOf finds the canaries that depend on obj: from the index when it is current,
// from a list of the namespace's Canaries otherwise, which then rebuilds the index. Without
// an index (a Store that has none), every call lists.
func (s *Service) dependentsOf(ctx context.Context, obj ObjectRef) ([]dependent, error) {
	ix, indexed := s.d.Store.(DependentIndex)
	key := objectIndexKey(obj.Group, obj.Kind, obj.Name)
	if indexed {
		entry, current, err := ix.Dependents(ctx, obj.Namespace, key)
		if err == nil && current {
			deps, perr := parseIndexEntry(obj.Namespace, entry)
			if perr == nil {
				return deps, nil
			}
			err = perr
		}
		if err != nil {
			s.log.WarnContext(ctx, "dependents index unreadable; listing the canaries", "namespace", obj.Namespace, "err", err)
			indexed = false
		}
	}
	var epoch int64
	if indexed {
		e, err := ix.DependentsEpoch(ctx, obj.Namespace)
		if err != nil {
			s.log.WarnContext(ctx, "dependents index epoch unreadable; not rebuilding it", "namespace", obj.Namespace, "err", err)
			indexed = false
		}
		epoch = e
	}
	cs, err := s.d.Workloads.ListCanaries(ctx, obj.Namespace)
	if err != nil {
		return nil, fmt.Errorf("list canaries in %s: %w", obj.Namespace, err)
	}
	if indexed {
		if _, err := ix.ReplaceDependents(ctx, obj.Namespace, epoch, indexEntries(cs), s.dependentsTTL()); err != nil {
			s.log.WarnContext(ctx, "rebuild dependents index", "namespace", obj.Namespace, "err", err)
		}
	}
	var deps []dependent
	for _, c := range cs {
		if cause, ok := dependsOn(c, obj); ok {
			deps = append(deps, dependent{canary: c, cause: cause})
		}
	}
	return deps, nil
}

// invalidateDependents makes the namespace's index stale after a Canary changed what it
// depends on. A failure is logged: the index then lives out its time to live.
func (s *Service) invalidateDependents(ctx context.Context, ns string) {
	ix, ok := s.d.Store.(DependentIndex)
	if !ok {
		return
	}
	if err := ix.InvalidateDependents(ctx, ns); err != nil {
		s.log.WarnContext(ctx, "invalidate dependents index", "namespace", ns, "err", err)
	}
}
