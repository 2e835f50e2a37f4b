package deploy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/siskin-dev/siskin/functions"
)

// Config tracking follows Flagger's ConfigTracker (canary/config_tracker.go).

const (
	configMapKind = "configmap"
	secretKind    = "secret"
	// configTrackingAnnotation on a ConfigMap or Secret with a value starting with "disable"
	// leaves it untracked: the primary then uses the same object.
	configTrackingAnnotation = "flagger.app/config-tracking"
	primarySuffix            = "-primary"
)

// configRef is one ConfigMap or Secret the pod template references.
type configRef struct {
	Kind string // configmap or secret
	Name string
	// Mandatory: some reference says optional: false. As in Flagger, a reference that does not
	// say (optional unset) is not mandatory: a missing object is skipped with a log line, and the
	// Deployment's own readiness reports the pods that cannot start.
	Mandatory bool
}

func (r configRef) key() string { return r.Kind + "/" + r.Name }

// configRefs lists the ConfigMaps and Secrets referenced by the pod spec's volumes, projected
// volumes, and the env valueFrom and envFrom of its containers and init containers, sorted and
// without duplicates.
func configRefs(spec corev1.PodSpec) []configRef {
	found := map[string]configRef{}
	add := func(kind, name string, optional *bool) {
		if name == "" {
			return
		}
		r := configRef{Kind: kind, Name: name, Mandatory: optional != nil && !*optional}
		if prev, ok := found[r.key()]; ok {
			r.Mandatory = r.Mandatory || prev.Mandatory
		}
		found[r.key()] = r
	}
	for _, v := range spec.Volumes {
		if v.ConfigMap != nil {
			add(configMapKind, v.ConfigMap.Name, v.ConfigMap.Optional)
		}
		if v.Secret != nil {
			add(secretKind, v.Secret.SecretName, v.Secret.Optional)
		}
		if v.Projected != nil {
			for _, src := range v.Projected.Sources {
				if src.ConfigMap != nil {
					add(configMapKind, src.ConfigMap.Name, src.ConfigMap.Optional)
				}
				if src.Secret != nil {
					add(secretKind, src.Secret.Name, src.Secret.Optional)
				}
			}
		}
	}
	for _, ctr := range slices.Concat(spec.Containers, spec.InitContainers) {
		for _, e := range ctr.Env {
			switch {
			case e.ValueFrom == nil:
			case e.ValueFrom.ConfigMapKeyRef != nil:
				add(configMapKind, e.ValueFrom.ConfigMapKeyRef.Name, e.ValueFrom.ConfigMapKeyRef.Optional)
			case e.ValueFrom.SecretKeyRef != nil:
				add(secretKind, e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Optional)
			}
		}
		for _, e := range ctr.EnvFrom {
			switch {
			case e.ConfigMapRef != nil:
				add(configMapKind, e.ConfigMapRef.Name, e.ConfigMapRef.Optional)
			case e.SecretRef != nil:
				add(secretKind, e.SecretRef.Name, e.SecretRef.Optional)
			}
		}
	}
	out := make([]configRef, 0, len(found))
	for _, k := range slices.Sorted(maps.Keys(found)) {
		out = append(out, found[k])
	}
	return out
}

// trackedConfig is a tracked ConfigMap or Secret as read, with its checksum.
type trackedConfig struct {
	Ref       configRef
	Checksum  string
	ConfigMap *corev1.ConfigMap
	Secret    *corev1.Secret
}

// trackedSecretTypes are the Secret types Flagger tracks; registry credentials and
// service-account tokens are not copied.
var trackedSecretTypes = []corev1.SecretType{"", corev1.SecretTypeOpaque, corev1.SecretTypeBasicAuth,
	corev1.SecretTypeSSHAuth, corev1.SecretTypeTLS}

func trackingDisabled(annotations map[string]string) bool {
	return strings.HasPrefix(annotations[configTrackingAnnotation], "disable")
}

// checksum is Flagger's: the first 8 bytes of sha256 of the JSON of the data, as 16 hex
// characters. A ConfigMap's binaryData, which Flagger ignores, is included when present, so that
// a change there is a new revision too (the checksum of a ConfigMap without binaryData is
// Flagger's).
func checksum(data any) string {
	b, _ := json.Marshal(data)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

func configMapChecksum(cm *corev1.ConfigMap) string {
	if len(cm.BinaryData) == 0 {
		return checksum(cm.Data)
	}
	return checksum(struct {
		Data       map[string]string `json:"data"`
		BinaryData map[string][]byte `json:"binaryData"`
	}{cm.Data, cm.BinaryData})
}

// trackConfigMap and trackSecret apply Flagger's exclusions; nil means untracked.
func trackConfigMap(ref configRef, cm *corev1.ConfigMap) *trackedConfig {
	if trackingDisabled(cm.Annotations) {
		return nil
	}
	return &trackedConfig{Ref: ref, Checksum: configMapChecksum(cm), ConfigMap: cm}
}

func trackSecret(ref configRef, s *corev1.Secret) *trackedConfig {
	if !slices.Contains(trackedSecretTypes, s.Type) || trackingDisabled(s.Annotations) {
		return nil
	}
	return &trackedConfig{Ref: ref, Checksum: checksum(s.Data), Secret: s}
}

// fetchConfigs reads the referenced ConfigMaps and Secrets concurrently and keeps the tracked
// ones, keyed "configmap/<name>" or "secret/<name>". A missing object is skipped unless a
// reference to it is mandatory; any other error fails the whole read, since dropping a config
// on a transient error would look like a new revision.
func (c *Cluster) fetchConfigs(ctx context.Context, cd functions.Canary, refs []configRef) (map[string]trackedConfig, error) {
	out := map[string]trackedConfig{}
	var mu sync.Mutex
	var g group
	for _, ref := range refs {
		g.Go(func() error {
			t, err := c.fetchConfig(ctx, cd.Namespace, ref)
			if errors.Is(err, functions.ErrNotFound) && !ref.Mandatory {
				c.log.WarnContext(ctx, "referenced config not found, not tracked", "canary", cd.Key.String(), "config", ref.key())
				return nil
			}
			if err != nil {
				return err
			}
			if t != nil {
				mu.Lock()
				out[ref.key()] = *t
				mu.Unlock()
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}

func (c *Cluster) fetchConfig(ctx context.Context, namespace string, ref configRef) (*trackedConfig, error) {
	cctx, cancel := c.call(ctx)
	defer cancel()
	if ref.Kind == configMapKind {
		cm, err := c.kube.CoreV1().ConfigMaps(namespace).Get(cctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return nil, apiError(err, "get", "ConfigMap", namespace, ref.Name)
		}
		return trackConfigMap(ref, cm), nil
	}
	s, err := c.kube.CoreV1().Secrets(namespace).Get(cctx, ref.Name, metav1.GetOptions{})
	if err != nil {
		return nil, apiError(err, "get", "Secret", namespace, ref.Name)
	}
	return trackSecret(ref, s), nil
}

// checksums is the observation's TrackedConfigs (nil when nothing is tracked).
func checksums(tracked map[string]trackedConfig) map[string]string {
	if len(tracked) == 0 {
		return nil
	}
	out := make(map[string]string, len(tracked))
	for k, t := range tracked {
		out[k] = t.Checksum
	}
	return out
}

// renameConfigRefs points every reference to a tracked config at its -primary copy, in the
// volumes, projected volumes, and the env and envFrom of containers and init containers. (Flagger
// renames in containers only, so a primary's init container kept reading the target's config;
// Siskin renames both, as it tracks both.)
func renameConfigRefs(spec *corev1.PodSpec, tracked map[string]trackedConfig) {
	rename := func(kind string, name *string) {
		if _, ok := tracked[kind+"/"+*name]; ok {
			*name += primarySuffix
		}
	}
	for i := range spec.Volumes {
		v := &spec.Volumes[i]
		if v.ConfigMap != nil {
			rename(configMapKind, &v.ConfigMap.Name)
		}
		if v.Secret != nil {
			rename(secretKind, &v.Secret.SecretName)
		}
		if v.Projected != nil {
			for j := range v.Projected.Sources {
				src := &v.Projected.Sources[j]
				if src.ConfigMap != nil {
					rename(configMapKind, &src.ConfigMap.Name)
				}
				if src.Secret != nil {
					rename(secretKind, &src.Secret.Name)
				}
			}
		}
	}
	for _, ctrs := range [][]corev1.Container{spec.Containers, spec.InitContainers} {
		for i := range ctrs {
			for j := range ctrs[i].Env {
				if vf := ctrs[i].Env[j].ValueFrom; vf != nil {
					if vf.ConfigMapKeyRef != nil {
						rename(configMapKind, &vf.ConfigMapKeyRef.Name)
					}
					if vf.SecretKeyRef != nil {
						rename(secretKind, &vf.SecretKeyRef.Name)
					}
				}
			}
			for j := range ctrs[i].EnvFrom {
				ef := &ctrs[i].EnvFrom[j]
				if ef.ConfigMapRef != nil {
					rename(configMapKind, &ef.ConfigMapRef.Name)
				}
				if ef.SecretRef != nil {
					rename(secretKind, &ef.SecretRef.Name)
				}
			}
		}
	}
}

// primaryConfigMap and primarySecret are the -primary copies Flagger makes: the data (and type),
// the labels by the include prefixes, owned by the Canary.
func primaryConfigMap(cd functions.Canary, cm *corev1.ConfigMap, prefixes []string) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{
			Name:            cm.Name + primarySuffix,
			Namespace:       cd.Namespace,
			Labels:          includeByPrefix(cm.Labels, prefixes),
			OwnerReferences: []metav1.OwnerReference{canaryOwnerRef(cd)},
		},
		Data:       cm.Data,
		BinaryData: cm.BinaryData,
	}
}

func primarySecret(cd functions.Canary, s *corev1.Secret, prefixes []string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:            s.Name + primarySuffix,
			Namespace:       cd.Namespace,
			Labels:          includeByPrefix(s.Labels, prefixes),
			OwnerReferences: []metav1.OwnerReference{canaryOwnerRef(cd)},
		},
		Type: s.Type,
		Data: s.Data,
	}
}

// mergeOwnerRefs makes the Canary the controller and keeps the other owners as non-controllers.
func mergeOwnerRefs(live []metav1.OwnerReference, canary metav1.OwnerReference) []metav1.OwnerReference {
	out := []metav1.OwnerReference{canary}
	for _, r := range live {
		if r.UID == canary.UID && r.Kind == canary.Kind && r.Name == canary.Name {
			continue
		}
		r.Controller = nil
		out = append(out, r)
	}
	return out
}

// syncPrimaryConfigs creates or updates the -primary copies of the tracked configs, concurrently,
// writing only those that differ.
func (c *Cluster) syncPrimaryConfigs(ctx context.Context, cd functions.Canary, tracked map[string]trackedConfig) error {
	var g group
	for _, t := range tracked {
		g.Go(func() error {
			if t.ConfigMap != nil {
				return c.syncPrimaryConfigMap(ctx, cd, primaryConfigMap(cd, t.ConfigMap, c.opts.IncludeLabelPrefixes))
			}
			return c.syncPrimarySecret(ctx, cd, primarySecret(cd, t.Secret, c.opts.IncludeLabelPrefixes))
		})
	}
	return g.Wait()
}

func (c *Cluster) syncPrimaryConfigMap(ctx context.Context, cd functions.Canary, want *corev1.ConfigMap) error {
	return upsert(ctx, c, c.kube.CoreV1().ConfigMaps(want.Namespace), "ConfigMap", want, func(live *corev1.ConfigMap) (*corev1.ConfigMap, error) {
		refs := mergeOwnerRefs(live.OwnerReferences, want.OwnerReferences[0])
		if maps.Equal(live.Data, want.Data) && equalBytes(live.BinaryData, want.BinaryData) &&
			maps.Equal(live.Labels, want.Labels) && apiequality.Semantic.DeepEqual(live.OwnerReferences, refs) {
			return nil, nil
		}
		next := live.DeepCopy()
		next.Data, next.BinaryData, next.Labels, next.OwnerReferences = want.Data, want.BinaryData, want.Labels, refs
		return next, nil
	})
}

func (c *Cluster) syncPrimarySecret(ctx context.Context, cd functions.Canary, want *corev1.Secret) error {
	return upsert(ctx, c, c.kube.CoreV1().Secrets(want.Namespace), "Secret", want, func(live *corev1.Secret) (*corev1.Secret, error) {
		if live.Type != want.Type && want.Type != "" {
			// The type of a Secret cannot change: replace it.
			return nil, fmt.Errorf("%w: secret %s/%s has type %s, the target's has %s; delete it to let Siskin recreate it",
				functions.ErrInvalid, want.Namespace, want.Name, live.Type, want.Type)
		}
		refs := mergeOwnerRefs(live.OwnerReferences, want.OwnerReferences[0])
		if equalBytes(live.Data, want.Data) && maps.Equal(live.Labels, want.Labels) &&
			apiequality.Semantic.DeepEqual(live.OwnerReferences, refs) {
			return nil, nil
		}
		next := live.DeepCopy()
		next.Data, next.StringData, next.Labels, next.OwnerReferences = want.Data, nil, want.Labels, refs
		return next, nil
	})
}

// objectClient is what upsert needs of a typed client (ConfigMaps, Secrets...).
type objectClient[T any] interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*T, error)
	Create(ctx context.Context, obj *T, opts metav1.CreateOptions) (*T, error)
	Update(ctx context.Context, obj *T, opts metav1.UpdateOptions) (*T, error)
}

// upsert is get → create when missing, else compute → update only if changed: reconcile
// returns the object to write, or nil when live is already as wanted. Every call has its
// own timeout.
func upsert[T any, P interface {
	*T
	metav1.Object
}](ctx context.Context, c *Cluster, api objectClient[T], kind string, want P, reconcile func(live *T) (*T, error)) error {
	ns, name := want.GetNamespace(), want.GetName()
	cctx, cancel := c.call(ctx)
	defer cancel()
	live, err := api.Get(cctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		cctx, cancel := c.call(ctx)
		defer cancel()
		_, err = api.Create(cctx, (*T)(want), metav1.CreateOptions{FieldManager: fieldManager})
		return apiError(err, "create", kind, ns, name)
	}
	if err != nil {
		return apiError(err, "get", kind, ns, name)
	}
	next, err := reconcile(live)
	if err != nil || next == nil {
		return err
	}
	cctx, cancel = c.call(ctx)
	defer cancel()
	_, err = api.Update(cctx, next, metav1.UpdateOptions{FieldManager: fieldManager})
	return apiError(err, "update", kind, ns, name)
}

func equalBytes(a, b map[string][]byte) bool { return maps.EqualFunc(a, b, bytes.Equal) }
