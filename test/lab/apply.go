package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
)

// applier server-side-applies manifests as the lab's admin.
type applier struct {
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
}

func (l *Lab) applier() (*applier, error) {
	l.applyMu.Lock()
	defer l.applyMu.Unlock()
	if l.apply != nil {
		return l.apply, nil
	}
	disco, err := discovery.NewDiscoveryClientForConfig(l.admin)
	if err != nil {
		return nil, fmt.Errorf("discovery client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(l.admin)
	if err != nil {
		return nil, fmt.Errorf("dynamic client: %w", err)
	}
	l.apply = &applier{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disco))}
	return l.apply, nil
}

// Apply server-side-applies every object of a YAML or JSON manifest (several documents
// allowed) as the admin, creating missing namespaces, and returns the applied objects.
func (l *Lab) Apply(ctx context.Context, manifest []byte) ([]*unstructured.Unstructured, error) {
	a, err := l.applier()
	if err != nil {
		return nil, err
	}
	objs, err := decodeManifest(manifest)
	if err != nil {
		return nil, err
	}
	applied := make([]*unstructured.Unstructured, 0, len(objs))
	for _, obj := range objs {
		out, err := a.apply(ctx, obj)
		if err != nil {
			return applied, err
		}
		applied = append(applied, out)
	}
	return applied, nil
}

func (a *applier) apply(ctx context.Context, obj *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	gvk := obj.GroupVersionKind()
	name := fmt.Sprintf("%s %s", gvk.Kind, obj.GetName())
	mapping, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		a.mapper.Reset() // a CRD applied a moment ago
		mapping, err = a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if err != nil {
		return nil, fmt.Errorf("apply %s: %w", name, err)
	}
	var res dynamic.ResourceInterface = a.dyn.Resource(mapping.Resource)
	if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
		ns := obj.GetNamespace()
		if ns == "" {
			ns = "default"
			obj.SetNamespace(ns)
		}
		if err := a.ensureNamespace(ctx, ns); err != nil {
			return nil, err
		}
		res = a.dyn.Resource(mapping.Resource).Namespace(ns)
		name = fmt.Sprintf("%s %s/%s", gvk.Kind, ns, obj.GetName())
	}
	call, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	out, err := res.Apply(call, obj.GetName(), obj, metav1.ApplyOptions{FieldManager: fieldManager, Force: true})
	if err != nil {
		return nil, fmt.Errorf("apply %s: %w", name, err)
	}
	return out, nil
}

func (a *applier) ensureNamespace(ctx context.Context, ns string) error {
	if ns == "default" {
		return nil
	}
	nsGVR := schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns},
	}}
	call, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := a.dyn.Resource(nsGVR).Create(call, obj, metav1.CreateOptions{FieldManager: fieldManager})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", ns, err)
	}
	return nil
}

// waitEstablished waits until every CustomResourceDefinition among objs is Established.
func (l *Lab) waitEstablished(ctx context.Context, objs []*unstructured.Unstructured) error {
	a, err := l.applier()
	if err != nil {
		return err
	}
	crds := a.dyn.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	deadline := time.Now().Add(l.timeout)
	for _, obj := range objs {
		if obj.GetKind() != "CustomResourceDefinition" {
			continue
		}
		for {
			call, cancel := context.WithTimeout(ctx, 5*time.Second)
			got, err := crds.Get(call, obj.GetName(), metav1.GetOptions{})
			cancel()
			if err == nil && established(got) {
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("CustomResourceDefinition %s not Established after %s (last error: %v)", obj.GetName(), l.timeout, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

func established(crd *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
	for _, c := range conds {
		m, ok := c.(map[string]any)
		if ok && m["type"] == "Established" && m["status"] == "True" {
			return true
		}
	}
	return false
}

// decodeManifest splits a multi-document YAML or JSON manifest into objects; List kinds are
// flattened and empty documents skipped.
func decodeManifest(manifest []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifest), 4096)
	var objs []*unstructured.Unstructured
	for i := 0; ; i++ {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("decode manifest document %d: %w", i, err)
		}
		if len(doc) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: doc}
		if u.IsList() {
			list, err := u.ToList()
			if err != nil {
				return nil, fmt.Errorf("decode manifest document %d: %w", i, err)
			}
			for j := range list.Items {
				objs = append(objs, &list.Items[j])
			}
			continue
		}
		if u.GetKind() == "" || u.GetAPIVersion() == "" || u.GetName() == "" {
			return nil, fmt.Errorf("decode manifest document %d: apiVersion, kind and metadata.name are required (got %s)",
				i, strings.TrimSpace(fmt.Sprint(u.GetAPIVersion(), " ", u.GetKind(), " ", u.GetName())))
		}
		objs = append(objs, u)
	}
}
