package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"

	"github.com/siskin-dev/siskin/functions"
)

// listPageSize bounds one List page, so that a cluster with many canaries is read in bounded
// calls, each with its own timeout.
const listPageSize = 250

// ListCanaries lists the Canaries of a namespace ("" for all). A Canary whose spec cannot be
// decoded is still listed, with what could be decoded and Status.SpecError saying why, so that
// one broken Canary never hides the others.
//
// The list comes from the apiserver's watch cache (resourceVersion "0"): a consistent list
// waits for the cache to catch up with etcd, which on a busy apiserver is most of its tail
// latency, and the callers (a tick looking for new canaries, a push looking for takers) lose
// nothing to a list a few milliseconds old. A step reads its Canary fresh.
func (c *Cluster) ListCanaries(ctx context.Context, namespace string) ([]functions.Canary, error) {
	var out []functions.Canary
	opts := metav1.ListOptions{Limit: listPageSize, ResourceVersion: "0"}
	for {
		cctx, cancel := c.call(ctx)
		list, err := c.dyn.Resource(CanaryGVR).Namespace(namespace).List(cctx, opts)
		cancel()
		if err != nil {
			return nil, apiError(err, "list", "Canaries", namespace, "")
		}
		for i := range list.Items {
			out = append(out, c.canaryFrom(ctx, &list.Items[i]))
		}
		if list.GetContinue() == "" {
			return out, nil
		}
		// A continued list is served at the first page's resourceVersion.
		opts.Continue, opts.ResourceVersion = list.GetContinue(), ""
	}
}

// GetCanary reads one Canary. A spec that cannot be decoded comes back in Status.SpecError, not
// as an error.
func (c *Cluster) GetCanary(ctx context.Context, k functions.Key) (functions.Canary, error) {
	u, err := c.getCanaryObject(ctx, k)
	if err != nil {
		return functions.Canary{}, err
	}
	return c.canaryFrom(ctx, u), nil
}

func (c *Cluster) getCanaryObject(ctx context.Context, k functions.Key) (*unstructured.Unstructured, error) {
	cctx, cancel := c.call(ctx)
	defer cancel()
	u, err := c.dyn.Resource(CanaryGVR).Namespace(k.Namespace).Get(cctx, k.Name, metav1.GetOptions{})
	if err != nil {
		return nil, apiError(err, "get", "Canary", k.Namespace, k.Name)
	}
	return u, nil
}

func (c *Cluster) canaryFrom(ctx context.Context, u *unstructured.Unstructured) functions.Canary {
	cd, err := CanaryFromUnstructured(u)
	if err != nil {
		c.log.WarnContext(ctx, "canary spec does not decode", "canary", cd.Key.String(), "err", err)
	}
	return cd
}

// specWithFallback decodes spec and Flagger's deprecated spec.canaryAnalysis together.
type specWithFallback struct {
	functions.Spec
	CanaryAnalysis *functions.Analysis `json:"canaryAnalysis,omitempty"`
}

// CanaryFromUnstructured converts a flagger.app/v1beta1 Canary. The spec and status are decoded
// with encoding/json, which keeps every field it can decode: on a type mismatch the result is
// still usable, Status.SpecError says what was wrong, and the error is returned for logging.
// The deprecated spec.canaryAnalysis is used when spec.analysis is absent, as Flagger's
// GetAnalysis does. Defaults are not written into the spec: functions.Spec's methods apply them.
func CanaryFromUnstructured(u *unstructured.Unstructured) (functions.Canary, error) {
	cd := functions.Canary{
		Key:         functions.Key{Namespace: u.GetNamespace(), Name: u.GetName()},
		UID:         string(u.GetUID()),
		Generation:  u.GetGeneration(),
		Annotations: u.GetAnnotations(),
		Deleting:    u.GetDeletionTimestamp() != nil,
		Finalizers:  u.GetFinalizers(),
	}
	// Status first: a spec error below is reported in it.
	if raw, ok := u.Object["status"]; ok {
		_ = decodeJSON(raw, &cd.Status, "status") // a status Siskin cannot read is rebuilt by the next write
	}
	var spec specWithFallback
	var specErr error
	if raw, ok := u.Object["spec"]; ok {
		specErr = decodeJSON(raw, &spec, "spec")
	} else {
		specErr = fmt.Errorf("canary %s has no spec", cd.Key)
	}
	cd.Spec = spec.Spec
	if cd.Spec.Analysis == nil && spec.CanaryAnalysis != nil {
		cd.Spec.Analysis = spec.CanaryAnalysis
	}
	if specErr != nil {
		specErr = fmt.Errorf("%w: canary %s spec: %w", functions.ErrInvalid, cd.Key, specErr)
		cd.Status.SpecError = specErr.Error()
		cd.DecodeError = specErr.Error()
	}
	return cd, specErr
}

// decodeJSON decodes in into out; path names in within the manifest, for error messages.
func decodeJSON(in any, out any, path string) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	err = json.Unmarshal(b, out)
	// Say which field, in the manifest's own terms: "spec.analysis.stepWeight: got number 2.5,
	// want int" rather than the Go struct path.
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) && typeErr.Field != "" {
		field := typeErr.Field
		if _, rest, ok := strings.Cut(field, "."); ok && typeErr.Struct != "" {
			field = rest // drop the Go type's name
		}
		if path != "" {
			field = path + "." + field
		}
		return fmt.Errorf("%s: got %s, want %s", field, typeErr.Value, typeErr.Type)
	}
	return err
}

// WriteStatus writes the Canary's status subresource, only if it differs from the live status
// (compared as functions.Status, with times compared as instants and nil equal to empty), and
// re-reads and retries on conflict.
func (c *Cluster) WriteStatus(ctx context.Context, cd functions.Canary, st functions.Status) error {
	// The step has just read the Canary: compare with that, and skip the write when nothing
	// changed, rather than reading it again.
	if StatusEqual(cd.Status, st) {
		return nil
	}
	desired, err := statusObject(st)
	if err != nil {
		return fmt.Errorf("%w: encode status of canary %s: %w", functions.ErrInvalid, cd.Key, err)
	}
	// One JSON patch replaces the whole status: no read, no conflict to retry, and no stale
	// field left behind (a merge patch would keep fields the new status omits).
	patch, err := json.Marshal([]map[string]any{{"op": "add", "path": "/status", "value": desired}})
	if err != nil {
		return fmt.Errorf("%w: encode status patch of canary %s: %w", functions.ErrInvalid, cd.Key, err)
	}
	cctx, cancel := c.call(ctx)
	defer cancel()
	_, err = c.dyn.Resource(CanaryGVR).Namespace(cd.Namespace).Patch(cctx, cd.Name, types.JSONPatchType, patch,
		metav1.PatchOptions{FieldManager: fieldManager}, "status")
	return apiError(err, "patch status of", "Canary", cd.Namespace, cd.Name)
}

// StatusEqual compares two statuses semantically: times as instants, nil maps and slices equal
// to empty ones.
func StatusEqual(a, b functions.Status) bool {
	return cmp.Equal(a, b, cmpopts.EquateEmpty(), cmp.Comparer(func(x, y time.Time) bool { return x.Equal(y) }))
}

// statusObject renders a status as the unstructured content of .status. Zero times are dropped
// rather than written as 0001-01-01T00:00:00Z, and times are written in UTC.
func statusObject(st functions.Status) (map[string]any, error) {
	st = normalizeStatusTimes(st)
	b, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	dropZeroTimes(m)
	return m, nil
}

func normalizeStatusTimes(st functions.Status) functions.Status {
	st.LastTransitionTime = st.LastTransitionTime.UTC()
	st.Conditions = slices.Clone(st.Conditions)
	for i := range st.Conditions {
		st.Conditions[i].LastUpdateTime = st.Conditions[i].LastUpdateTime.UTC()
		st.Conditions[i].LastTransitionTime = st.Conditions[i].LastTransitionTime.UTC()
	}
	if st.Trigger != nil {
		t := *st.Trigger
		t.At = t.At.UTC()
		st.Trigger = &t
	}
	return st
}

// zeroTimeJSON is how encoding/json writes a zero time.Time.
const zeroTimeJSON = "0001-01-01T00:00:00Z"

func dropZeroTimes(v any) {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if s, ok := e.(string); ok && s == zeroTimeJSON {
				delete(v, k)
				continue
			}
			dropZeroTimes(e)
		}
	case []any:
		for _, e := range v {
			dropZeroTimes(e)
		}
	}
}

func isConflict(err error) bool { return errors.Is(err, functions.ErrConflict) }

// EnsureFinalizer adds (present) or removes Flagger's finalizer finalizer.flagger.app on the
// Canary, only if needed, retrying on conflict against a fresh read.
func (c *Cluster) EnsureFinalizer(ctx context.Context, cd functions.Canary, present bool) error {
	return retry.OnError(retry.DefaultRetry, isConflict, func() error {
		u, err := c.getCanaryObject(ctx, cd.Key)
		if err != nil {
			return err
		}
		fins := u.GetFinalizers()
		has := slices.Contains(fins, FinalizerName)
		if has == present {
			return nil
		}
		next := u.DeepCopy()
		if present {
			next.SetFinalizers(append(slices.Clone(fins), FinalizerName))
		} else {
			next.SetFinalizers(slices.DeleteFunc(slices.Clone(fins), func(s string) bool { return s == FinalizerName }))
		}
		cctx, cancel := c.call(ctx)
		defer cancel()
		_, err = c.dyn.Resource(CanaryGVR).Namespace(cd.Namespace).Update(cctx, next,
			metav1.UpdateOptions{FieldManager: fieldManager})
		return apiError(err, "update finalizers of", "Canary", cd.Namespace, cd.Name)
	})
}

// FactsOf reads, from a Canary or a Deployment of cd as an ApiServerSource event carried it,
// what decides whether the event changes anything: the generation and deletion of either, and
// the TemplateHash and readiness of a Deployment, computed as ObserveWorkloads computes them.
func (c *Cluster) FactsOf(cd functions.Canary, object []byte) (functions.ObjectFacts, bool) {
	var head struct {
		APIVersion string            `json:"apiVersion"`
		Kind       string            `json:"kind"`
		Metadata   metav1.ObjectMeta `json:"metadata"`
	}
	if err := json.Unmarshal(object, &head); err != nil {
		return functions.ObjectFacts{}, false
	}
	f := functions.ObjectFacts{Kind: head.Kind, Generation: head.Metadata.Generation, Deleting: head.Metadata.DeletionTimestamp != nil}
	switch {
	case head.APIVersion == CanaryGVR.GroupVersion().String() && head.Kind == "Canary":
		return f, true
	case head.APIVersion == "apps/v1" && head.Kind == "Deployment":
		var d appsv1.Deployment
		if err := json.Unmarshal(object, &d); err != nil {
			return functions.ObjectFacts{}, false
		}
		f.TemplateHash = TemplateHash(d.Spec.Template)
		threshold := cd.Spec.CanaryReadyThreshold()
		if d.Name == cd.Names().Primary {
			threshold = cd.Spec.PrimaryReadyThreshold()
		}
		f.Ready = DeploymentReadiness(&d, cd.Spec.ProgressDeadline(), threshold, c.now()).Ready
		return f, true
	}
	return functions.ObjectFacts{}, false
}
