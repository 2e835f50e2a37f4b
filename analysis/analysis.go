// Package analysis observes a canary for the step machine: it queries Prometheus for the
// built-in Istio metrics and MetricTemplates (Metrics), judges the values with Flagger's
// thresholds and messages (Judge), calls webhooks with Flagger's payload (Hooks) and sends alerts
// through AlertProviders (Alerter).
//
// Everything here is bound by the caller's context and by a timeout of its own, because steps
// of many canaries run concurrently and one slow endpoint must not hold up the others.
package analysis

import (
	"context"
	"net/http"
)

// TemplateSource reads the Kubernetes objects that metrics and alerts refer to. The deploy
// package implements it; a missing object is reported with an error wrapping
// functions.ErrNotFound.
type TemplateSource interface {
	// MetricTemplate reads flagger.app/v1beta1 MetricTemplate namespace/name.
	MetricTemplate(ctx context.Context, namespace, name string) (MetricTemplate, error)
	// Secret returns the data of core/v1 Secret namespace/name.
	Secret(ctx context.Context, namespace, name string) (map[string][]byte, error)
	// AlertProvider reads flagger.app/v1beta1 AlertProvider namespace/name.
	AlertProvider(ctx context.Context, namespace, name string) (AlertProvider, error)
}

// MetricTemplate is the spec of a flagger.app/v1beta1 MetricTemplate. The JSON names are
// Flagger's, so the spec decodes straight into it.
type MetricTemplate struct {
	Provider MetricProvider `json:"provider"`
	Query    string         `json:"query"`
}

// MetricProvider is MetricTemplate spec.provider.
type MetricProvider struct {
	// Type chooses the Provider (AnalyzerConfig.Providers); Siskin registers "prometheus".
	Type string `json:"type,omitempty"`
	// Address overrides the default Prometheus URL.
	Address string `json:"address,omitempty"`
	// Headers are added to every query.
	Headers http.Header `json:"headers,omitempty"`
	// SecretRef names a Secret, in the template's namespace, with the key "token" (bearer) or
	// the keys "username" and "password" (basic auth).
	SecretRef          *SecretRef `json:"secretRef,omitempty"`
	InsecureSkipVerify bool       `json:"insecureSkipVerify,omitempty"`
}

// SecretRef names a Secret in the namespace of the object that refers to it.
type SecretRef struct {
	Name string `json:"name"`
}

// AlertProvider is the spec of a flagger.app/v1beta1 AlertProvider.
type AlertProvider struct {
	// Type is slack, msteams, discord, rocket, gchat, or Siskin's generic JSON "webhook".
	Type     string `json:"type"`
	Channel  string `json:"channel,omitempty"`
	Username string `json:"username,omitempty"`
	Address  string `json:"address,omitempty"`
	// Proxy is an HTTP(S) proxy URL for the notifications.
	Proxy string `json:"proxy,omitempty"`
	// SecretRef names a Secret, in the provider's namespace, whose key "address" overrides
	// Address and whose optional key "token" is sent as a bearer token.
	SecretRef *SecretRef `json:"secretRef,omitempty"`
}
