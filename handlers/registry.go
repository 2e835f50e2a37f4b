// Package handlers is Siskin's HTTP edge: it decodes what registries, Alertmanager and
// Knative send into the domain's inputs, and routes them to the use cases.
package handlers

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/siskin-dev/siskin/functions"
)

// distributionEventsPrefix starts both CNCF Distribution media types (events.v1+json up to
// registry 2.8, events.v2+json from 3.0).
const distributionEventsPrefix = "application/vnd.docker.distribution.events."

// DecodeRegistryWebhook reads a registry's push notification, whichever registry sent it:
// CNCF Distribution (and GitLab's and Harbor's embedded registries), Harbor, Docker Hub, GHCR
// (X-GitHub-Event), Quay, ACR, ECR through EventBridge, GAR through a Pub/Sub push or
// unwrapped, and a CloudEvent carrying a push. It returns the pushes that can start a
// release: tagged manifest or index pushes. Every other well-formed event yields no push and
// no error. Errors wrap functions.ErrInvalid and name the offending field.
//
// GHCR signatures are not checked here: call VerifyGitHubSignature first when a secret is
// configured.
func DecodeRegistryWebhook(h http.Header, body []byte) ([]functions.ImagePush, error) {
	if h == nil {
		h = http.Header{}
	}
	var pushes []functions.ImagePush
	var err error
	switch {
	case h.Get("X-GitHub-Event") != "":
		pushes, err = decodeGitHub(h, body)
	case isCloudEventRequest(h):
		pushes, err = decodeCloudEventRequest(h, body)
	default:
		pushes, err = decodeSniffed(h, body)
	}
	if err != nil {
		return nil, err
	}
	dedupeEventIDs(pushes)
	for _, p := range pushes {
		if err := checkPush(p); err != nil {
			return nil, err
		}
	}
	return pushes, nil
}

func decodeSniffed(h http.Header, body []byte) ([]functions.ImagePush, error) {
	root, err := parseJSON(body, "")
	if err != nil {
		return nil, err
	}
	if !root.isObject() {
		return nil, invalid("body", "expected a JSON object, got %s", jsonKind(root.val))
	}
	if strings.HasPrefix(strings.ToLower(h.Get("Content-Type")), distributionEventsPrefix) && !root.has("events") {
		return nil, invalid("events", "missing, want the distribution events envelope")
	}
	for _, f := range registryFormats {
		if !f.match(h, root) {
			continue
		}
		pushes := f.decode(h, root, body)
		if err := root.err(); err != nil {
			return nil, fmt.Errorf("%s notification: %w", f.name, err)
		}
		return pushes, nil
	}
	if root.has("alerts") && root.has("version") {
		return nil, invalid("body", "an Alertmanager notification, not a registry push; post it to the alertmanager route")
	}
	return nil, invalid("body", "unrecognised registry notification (want CNCF Distribution, Harbor, Docker Hub, "+
		"GHCR with X-GitHub-Event, Quay, ACR, ECR EventBridge, GAR Pub/Sub, or a CloudEvent)")
}
