package handlers

// The triggers: every kind of event Siskin acts on, how it is recognised and decoded, and the
// use case it runs. To add a trigger:
//   - a CloudEvent type: a decoder in ceDecoders that sets Inbound.Kind (and its payload);
//   - a registry's webhook body: a registryFormat in registryFormats (first match decodes);
//   - a new kind of work: an InboundKind, its use case on Releases (routes.go), and its case
//     in handleCloudEvent (events.go).
//
// The HTTP routes themselves (/, /registry, /alertmanager, the API) are in routes.go.

import (
	"net/http"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/siskin-dev/siskin/functions"
)

// CloudEvent types with a meaning of Siskin's own.
const (
	// TypeImagePushed is Siskin's neutral push event, for any sender without a format of its
	// own. Its data is {"registry", "repository", "tag", "digest", "mediaType"}: repository and
	// tag required, digest a "sha256:…" digest when set, mediaType a manifest or index type
	// when set, nothing else allowed.
	TypeImagePushed = "dev.siskin.image.pushed.v1"
	// TypeAlertmanagerNotification carries an Alertmanager webhook body (version "4") as data.
	// Any other type whose data is such a body is read the same way.
	TypeAlertmanagerNotification = "dev.siskin.alertmanager.notification.v1"
	// TypePing is a Knative PingSource tick.
	TypePing = "dev.knative.sources.ping"
	// TypeStep is one canary's due step, sent by the dispatcher (a tick) to the Service, so
	// that each step is a request of its own, spread over pods. Its data is
	// {"namespace", "name", "dueAt"}.
	TypeStep = functions.StepEventType
	// TypeWake starts a dispatcher, as a ping does: sent by a step when a release goes on
	// between pings and no dispatcher runs.
	TypeWake = functions.WakeEventType
)

// InboundKind says what a CloudEvent asks of Siskin.
type InboundKind string

const (
	// InboundIgnored: well formed but of no concern; acknowledge with a 2xx.
	InboundIgnored InboundKind = "ignored"
	// InboundTick: advance the canaries whose step is due (Releases.Tick: the dispatcher).
	InboundTick InboundKind = "tick"
	// InboundPush: Pushes holds one or more image pushes (Releases.HandlePushes).
	InboundPush InboundKind = "push"
	// InboundAlert: Alert holds an Alertmanager notification (Releases.HandleAlerts).
	InboundAlert InboundKind = "alert"
	// InboundObject: an object Siskin cares about (a Canary, a target or primary Deployment,
	// a generated VirtualService, DestinationRule or Service) was added, changed or deleted
	// (Releases.ObjectChanged).
	InboundObject InboundKind = "object"
	// InboundStep: one canary's step is due (Releases.StepDue).
	InboundStep InboundKind = "step"
)

type ceDecoder func(e event.Event, in *Inbound) error

// ceDecoders by CloudEvent type; any other type is sniffed for an Alertmanager body, then
// ignored.
var ceDecoders = map[string]ceDecoder{
	TypePing:                     func(_ event.Event, in *Inbound) error { in.Kind = InboundTick; return nil },
	TypeWake:                     func(_ event.Event, in *Inbound) error { in.Kind = InboundTick; return nil },
	TypeImagePushed:              decodeNeutralPush,
	TypeAlertmanagerNotification: decodeAlertEvent,
	"harbor.artifact.pushed":     decodeHarborEvent,
	"Microsoft.ContainerRegistry.ImagePushed":       decodeEventGridPush,
	"google.cloud.pubsub.topic.v1.messagePublished": decodePubSubEvent,
	"dev.knative.apiserver.resource.add":            decodeAPIServerEvent,
	"dev.knative.apiserver.resource.update":         decodeAPIServerEvent,
	"dev.knative.apiserver.resource.delete":         decodeAPIServerEvent,
	"dev.knative.apiserver.ref.add":                 decodeAPIServerEvent,
	"dev.knative.apiserver.ref.update":              decodeAPIServerEvent,
	"dev.knative.apiserver.ref.delete":              decodeAPIServerEvent,
	TypeStep:                                        decodeStepEvent,
}

// registryFormat recognises one sender's body and decodes it. decode returns no pushes, and no
// error, for a well-formed event that cannot start a release (a blob, a pull, an untagged
// push, a failed push…), so that the sender gets a 2xx and does not back up.
type registryFormat struct {
	name   string
	match  func(h http.Header, root jsonNode) bool
	decode func(h http.Header, root jsonNode, body []byte) []functions.ImagePush
}

// registryFormats are tried in order; the first match decodes. Order matters only where
// shapes overlap: ACR's single event has action and target, GAR's raw message has action and
// no target.
var registryFormats = []registryFormat{
	{"distribution", func(_ http.Header, r jsonNode) bool { return r.has("events") }, decodeDistribution},
	{"acr", func(_ http.Header, r jsonNode) bool { return r.has("target") && r.has("action") }, decodeACR},
	{"harbor", func(_ http.Header, r jsonNode) bool { return r.has("event_data") && r.has("type") }, decodeHarbor},
	{"dockerhub", func(_ http.Header, r jsonNode) bool { return r.has("push_data") }, decodeDockerHub},
	{"quay", func(_ http.Header, r jsonNode) bool { return r.has("updated_tags") || r.has("docker_url") }, decodeQuay},
	{"ecr", func(_ http.Header, r jsonNode) bool { return r.has("detail-type") && r.has("detail") }, decodeECR},
	{"gar", func(_ http.Header, r jsonNode) bool { return r.get("message").isObject() }, decodePubSubPush},
	{"gar", func(_ http.Header, r jsonNode) bool {
		return r.has("action") && (r.has("digest") || r.has("tag"))
	}, decodeGARRaw},
}
