package deploy

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/siskin-dev/siskin/functions"
)

// MetricTemplate is a flagger.app/v1beta1 MetricTemplate, as the analysis package needs it.
type MetricTemplate struct {
	// ProviderType is spec.provider.type (prometheus, datadog…).
	ProviderType string
	// Address is spec.provider.address (empty: the global metrics server).
	Address string
	// Headers are spec.provider.headers, sent with every query.
	Headers map[string][]string
	// SecretRef names a Secret in the template's namespace holding credentials (empty: none).
	SecretRef string
	// InsecureSkipVerify is spec.provider.insecureSkipVerify.
	InsecureSkipVerify bool
	// Query is spec.query, a Go text/template.
	Query string
}

// AlertProvider is a flagger.app/v1beta1 AlertProvider.
type AlertProvider struct {
	// Type is spec.type (slack, msteams, discord, rocket, gchat…).
	Type     string
	Channel  string
	Username string
	// Address is spec.address; a Secret named by SecretRef may override it with its "address" key.
	Address string
	Proxy   string
	// SecretRef names a Secret in the provider's namespace (empty: none).
	SecretRef string
}

// localRef is a corev1.LocalObjectReference.
type localRef struct {
	Name string `json:"name"`
}

type metricTemplateObject struct {
	Spec struct {
		Provider struct {
			Type               string              `json:"type"`
			Address            string              `json:"address"`
			Headers            map[string][]string `json:"headers"`
			SecretRef          *localRef           `json:"secretRef"`
			InsecureSkipVerify bool                `json:"insecureSkipVerify"`
		} `json:"provider"`
		Query string `json:"query"`
	} `json:"spec"`
}

type alertProviderObject struct {
	Spec struct {
		Type      string    `json:"type"`
		Channel   string    `json:"channel"`
		Username  string    `json:"username"`
		Address   string    `json:"address"`
		Proxy     string    `json:"proxy"`
		SecretRef *localRef `json:"secretRef"`
	} `json:"spec"`
}

// MetricTemplate reads a MetricTemplate.
func (c *Cluster) MetricTemplate(ctx context.Context, namespace, name string) (MetricTemplate, error) {
	var obj metricTemplateObject
	if err := c.getFlaggerObject(ctx, MetricTemplateGVR, "MetricTemplate", namespace, name, &obj); err != nil {
		return MetricTemplate{}, err
	}
	p := obj.Spec.Provider
	mt := MetricTemplate{ProviderType: p.Type, Address: p.Address, Headers: p.Headers,
		InsecureSkipVerify: p.InsecureSkipVerify, Query: obj.Spec.Query}
	if p.SecretRef != nil {
		mt.SecretRef = p.SecretRef.Name
	}
	return mt, nil
}

// AlertProvider reads an AlertProvider.
func (c *Cluster) AlertProvider(ctx context.Context, namespace, name string) (AlertProvider, error) {
	var obj alertProviderObject
	if err := c.getFlaggerObject(ctx, AlertProviderGVR, "AlertProvider", namespace, name, &obj); err != nil {
		return AlertProvider{}, err
	}
	s := obj.Spec
	ap := AlertProvider{Type: s.Type, Channel: s.Channel, Username: s.Username, Address: s.Address, Proxy: s.Proxy}
	if s.SecretRef != nil {
		ap.SecretRef = s.SecretRef.Name
	}
	return ap, nil
}

// Secret reads a Secret's data.
func (c *Cluster) Secret(ctx context.Context, namespace, name string) (map[string][]byte, error) {
	if namespace == "" || name == "" {
		return nil, fmt.Errorf("%w: secret %q in namespace %q: both are required", functions.ErrInvalid, name, namespace)
	}
	cctx, cancel := c.call(ctx)
	defer cancel()
	s, err := c.kube.CoreV1().Secrets(namespace).Get(cctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, apiError(err, "get", "Secret", namespace, name)
	}
	return s.Data, nil
}

func (c *Cluster) getFlaggerObject(ctx context.Context, gvr schema.GroupVersionResource, kind, namespace, name string, out any) error {
	if namespace == "" || name == "" {
		return fmt.Errorf("%w: %s %q in namespace %q: both are required", functions.ErrInvalid, kind, name, namespace)
	}
	cctx, cancel := c.call(ctx)
	defer cancel()
	u, err := c.dyn.Resource(gvr).Namespace(namespace).Get(cctx, name, metav1.GetOptions{})
	if err != nil {
		return apiError(err, "get", kind, namespace, name)
	}
	if err := decodeJSON(u.Object, out, ""); err != nil {
		return fmt.Errorf("%w: decode %s %s/%s: %w", functions.ErrInvalid, kind, namespace, name, err)
	}
	return nil
}
