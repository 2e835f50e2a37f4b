package functions

import "time"

// ImagePush is a registry push, whatever the registry's wire format.
type ImagePush struct {
	// EventID identifies the delivery for dedupe (CloudEvent source+id, Distribution event id…).
	EventID string `json:"eventID"`
	// Source names the sender format: distribution, harbor, dockerhub, ghcr, quay, acr, ecr, gar,
	// cloudevent.
	Source string `json:"source"`
	// Registry is the registry host[:port] ("docker.io" for Docker Hub); empty when the sender
	// does not say (Distribution without request.host).
	Registry string `json:"registry"`
	// Repository is the path inside the registry, e.g. "shop/checkout".
	Repository string `json:"repository"`
	// Tag is empty for a push by digest.
	Tag string `json:"tag,omitempty"`
	// Digest is "sha256:…", empty when the sender does not say (Docker Hub, Quay).
	Digest string `json:"digest,omitempty"`
	// MediaType is the manifest media type when known.
	MediaType string    `json:"mediaType,omitempty"`
	PushedAt  time.Time `json:"pushedAt,omitempty"`
	// Namespaces are the namespaces the sender may release into (the webhook URL's
	// ?namespace=); see Config.PushAnyNamespace.
	Namespaces []string `json:"namespaces,omitempty"`
}

// AlertNotification is one Alertmanager notification (webhook version 4).
type AlertNotification struct {
	Receiver          string            `json:"receiver"`
	Status            string            `json:"status"`
	GroupKey          string            `json:"groupKey"`
	GroupLabels       map[string]string `json:"groupLabels,omitempty"`
	CommonLabels      map[string]string `json:"commonLabels,omitempty"`
	CommonAnnotations map[string]string `json:"commonAnnotations,omitempty"`
	ExternalURL       string            `json:"externalURL,omitempty"`
	Alerts            []Alert           `json:"alerts"`
}

// Alert is one alert of a notification.
type Alert struct {
	Status       string            `json:"status"` // firing or resolved
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt,omitempty"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
	Fingerprint  string            `json:"fingerprint"`
}

// Firing reports whether the alert is firing.
func (a Alert) Firing() bool { return a.Status == "firing" }
