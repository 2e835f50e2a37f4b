package handlers

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime"
	"net/http"
	"regexp"
	"strings"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/siskin-dev/siskin/functions"
)

// Inbound is a CloudEvent decoded into one of the inputs Siskin acts on.
type Inbound struct {
	Kind InboundKind `json:"kind"`
	// EventID is "ce:" + source + "#" + id, the CloudEvents identity of a delivery, for dedupe.
	EventID string `json:"eventID"`
	// Type is the CloudEvent type, for logs.
	Type string `json:"type"`
	// Reason says why an event is ignored.
	Reason string                       `json:"reason,omitempty"`
	Pushes []functions.ImagePush        `json:"pushes,omitempty"`
	Alert  *functions.AlertNotification `json:"alert,omitempty"`
	// Object is the object of an ApiServerSource event.
	Object *functions.ObjectRef `json:"object,omitempty"`
	// Step is the canary of a step event.
	Step *functions.Key `json:"step,omitempty"`
}

// DecodeCloudEvent classifies a CloudEvent (as parsed by cehttp.NewEventFromHTTPRequest) and
// converts its data: a PingSource tick; a push from Harbor, ACR through Event Grid, GAR
// through Eventarc's Pub/Sub event, or Siskin's TypeImagePushed; an Alertmanager
// notification; a Deployment added or updated, from an ApiServerSource in Resource or
// Reference mode. Anything else is InboundIgnored, with no error. Errors wrap
// functions.ErrInvalid and name the offending field of data.
func DecodeCloudEvent(e event.Event) (Inbound, error) {
	if err := e.Validate(); err != nil {
		return Inbound{}, invalid("cloudevent", "%s", oneLine(err.Error()))
	}
	in := Inbound{Kind: InboundIgnored, EventID: "ce:" + e.Source() + "#" + e.ID(), Type: e.Type()}
	decode, ok := ceDecoders[e.Type()]
	if !ok {
		decode = decodeOtherEvent
	}
	if err := decode(e, &in); err != nil {
		return Inbound{}, fmt.Errorf("cloudevent %s: %w", plain(e.Type()), err)
	}
	if in.Kind == InboundPush {
		if len(in.Pushes) == 0 {
			in.Kind, in.Reason = InboundIgnored, "no tagged manifest push"
		}
		dedupeEventIDs(in.Pushes)
		for _, p := range in.Pushes {
			if err := checkPush(p); err != nil {
				return Inbound{}, fmt.Errorf("cloudevent %s: %w", plain(e.Type()), err)
			}
		}
	}
	return in, nil
}

// ceData parses the event's data as JSON; paths in errors start at "data".
func ceData(e event.Event) (jsonNode, error) {
	if mt := e.DataMediaType(); mt != "" && !isJSONMediaType(mt) {
		return jsonNode{}, invalid("datacontenttype", "%s, want JSON", quote(mt))
	}
	return parseJSON(e.Data(), "data")
}

func isJSONMediaType(mt string) bool {
	mt, _, err := mime.ParseMediaType(mt)
	return err == nil && (mt == "application/json" || mt == "text/json" || strings.HasSuffix(mt, "+json"))
}

// withData runs read over the event's data and returns the first error either met.
func withData(e event.Event, read func(data jsonNode)) error {
	data, err := ceData(e)
	if err != nil {
		return err
	}
	read(data)
	return data.err()
}

func decodeNeutralPush(e event.Event, in *Inbound) error {
	return withData(e, func(data jsonNode) {
		data.object()
		data.allowOnly("registry", "repository", "tag", "digest", "mediaType")
		tagNode := data.get("tag")
		tag := tagNode.requiredStr()
		if tag != "" {
			tagNode.checkTag(tag)
		}
		mediaTypeNode := data.get("mediaType")
		mediaType := mediaTypeNode.str()
		if mediaType != "" && !manifestMediaTypes[mediaType] {
			mediaTypeNode.fail("%s is not an OCI or Docker manifest or index media type", quote(mediaType))
		}
		in.Kind = InboundPush
		in.Pushes = []functions.ImagePush{{
			EventID:    in.EventID,
			Source:     "cloudevent",
			Registry:   data.get("registry").optionalHost(),
			Repository: data.get("repository").repository(),
			Tag:        tag,
			Digest:     data.get("digest").optionalDigest(),
			MediaType:  mediaType,
			PushedAt:   e.Time(),
		}}
	})
}

func decodeAlertEvent(e event.Event, in *Inbound) error {
	return withData(e, func(data jsonNode) {
		n := alertNotification(data)
		in.Kind, in.Alert = InboundAlert, &n
	})
}

// decodeOtherEvent reads an Alertmanager body under any type (a relay may name it
// io.prometheus.alertmanager.notification or anything else), and ignores the rest.
func decodeOtherEvent(e event.Event, in *Inbound) error {
	in.Reason = "type not handled"
	if mt := e.DataMediaType(); mt != "" && !isJSONMediaType(mt) {
		return nil
	}
	data, err := parseJSON(e.Data(), "data")
	if err != nil || !data.has("alerts") || !data.has("version") {
		return nil
	}
	in.Reason = ""
	return decodeAlertEvent(e, in)
}

// decodeHarborEvent reads Harbor's CloudEvents format, whose data is the default format's
// event_data.
func decodeHarborEvent(e event.Event, in *Inbound) error {
	return withData(e, func(data jsonNode) {
		in.Kind = InboundPush
		in.Pushes = harborPushes(data, e.Time(), func(string, string) string { return in.EventID })
	})
}

// decodeEventGridPush reads ACR's ImagePushed through Event Grid, whose data is the webhook's
// single Distribution-shaped event.
func decodeEventGridPush(e event.Event, in *Inbound) error {
	return withData(e, func(data jsonNode) {
		in.Kind = InboundPush
		if p, ok := distributionPush(data, "acr"); ok {
			p.EventID = in.EventID
			in.Pushes = []functions.ImagePush{p}
		}
	})
}

// decodePubSubEvent reads Eventarc's Pub/Sub event, whose data is a push envelope carrying an
// Artifact Registry notification.
func decodePubSubEvent(e event.Event, in *Inbound) error {
	return withData(e, func(data jsonNode) {
		in.Kind = InboundPush
		in.Pushes = pubSubPushes(data, in.EventID)
		for i := range in.Pushes {
			if in.Pushes[i].PushedAt.IsZero() {
				in.Pushes[i].PushedAt = e.Time()
			}
		}
	})
}

// watchedKinds are the objects whose changes Siskin acts on, by API group and kind. For
// Secrets, the source must run in Reference mode (knative/ does): in Resource mode it would
// send their data, which Siskin reads nothing of but the name.
var watchedKinds = map[[2]string]bool{
	{"flagger.app", "Canary"}:                  true,
	{"apps", "Deployment"}:                     true,
	{"networking.istio.io", "VirtualService"}:  true,
	{"networking.istio.io", "DestinationRule"}: true,
	{"gateway.networking.k8s.io", "HTTPRoute"}: true,
	{"", "Service"}:                            true,
	{"", "ConfigMap"}:                          true,
	{"", "Secret"}:                             true,
}

// decodeAPIServerEvent reads an ApiServerSource event: in Resource mode the data is the
// object, in Reference mode an object reference. Kinds Siskin does not watch are ignored.
// judgedFromTheEvent are the kinds whose Resource-mode events carry what their gate needs.
var judgedFromTheEvent = map[string]bool{"flagger.app/Canary": true, "apps/Deployment": true, "networking.istio.io/VirtualService": true,
	"gateway.networking.k8s.io/HTTPRoute": true}

func decodeAPIServerEvent(e event.Event, in *Inbound) error {
	return withData(e, func(data jsonNode) {
		data.object()
		meta := data
		if strings.Contains(e.Type(), ".resource.") {
			meta = data.get("metadata").object()
		}
		kind, apiVersion := data.get("kind").str(), data.get("apiVersion").str()
		group, _, _ := strings.Cut(apiVersion, "/")
		if !strings.Contains(apiVersion, "/") {
			group = "" // the core group: "v1"
		}
		if !watchedKinds[[2]string{group, kind}] {
			in.Reason = fmt.Sprintf("%s %s is not a kind Siskin watches", plain(apiVersion), plain(kind))
			return
		}
		nsNode, nameNode := meta.get("namespace"), meta.get("name")
		ns, name := nsNode.requiredStr(), nameNode.requiredStr()
		if ns != "" && (len(ns) > 63 || !dnsLabelRE.MatchString(ns)) {
			nsNode.fail("%s is not a namespace name", quote(ns))
		}
		if name != "" && (len(name) > 253 || !dnsSubdomainRE.MatchString(name)) {
			nameNode.fail("%s is not a %s name", quote(name), plain(kind))
		}
		in.Kind = InboundObject
		in.Object = &functions.ObjectRef{Group: group, Kind: kind, Namespace: ns, Name: name,
			Deleted: strings.HasSuffix(e.Type(), ".delete")}
		// A Canary, a Deployment or a route (VirtualService, HTTPRoute) in Resource mode can be judged from the
		// event alone (Siskin's own write coming back, a rollout's progress), so it travels on.
		if strings.Contains(e.Type(), ".resource.") && !in.Object.Deleted && judgedFromTheEvent[group+"/"+kind] {
			in.Object.Object = e.Data()
			in.Object.Owner = controllingCanary(meta)
		}
	})
}

// controllingCanary is the name of the Canary that controls an object, from its
// ownerReferences (Siskin sets them on what it creates); "" when no Canary does.
func controllingCanary(meta jsonNode) string {
	for _, r := range meta.get("ownerReferences").items() {
		if r.get("controller").val == true && r.get("kind").str() == "Canary" && strings.HasPrefix(r.get("apiVersion").str(), "flagger.app/") {
			return r.get("name").str()
		}
	}
	return ""
}

// decodeStepEvent reads the dispatcher's step event.
func decodeStepEvent(e event.Event, in *Inbound) error {
	return withData(e, func(data jsonNode) {
		data.object()
		data.allowOnly("namespace", "name", "dueAt")
		nsNode, nameNode := data.get("namespace"), data.get("name")
		ns, name := nsNode.requiredStr(), nameNode.requiredStr()
		if ns != "" && (len(ns) > 63 || !dnsLabelRE.MatchString(ns)) {
			nsNode.fail("%s is not a namespace name", quote(ns))
		}
		if name != "" && (len(name) > 253 || !dnsSubdomainRE.MatchString(name)) {
			nameNode.fail("%s is not a Canary name", quote(name))
		}
		in.Kind, in.Step = InboundStep, &functions.Key{Namespace: ns, Name: name}
	})
}

// Kubernetes object names (RFC 1123): a namespace is a label, a Deployment a subdomain.
var (
	dnsLabelRE     = regexp.MustCompile(`^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?$`)
	dnsSubdomainRE = regexp.MustCompile(`^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*$`)
)

// isCloudEventRequest: a structured or batched CloudEvent by Content-Type, or a binary one by
// its ce-specversion header.
func isCloudEventRequest(h http.Header) bool {
	return strings.HasPrefix(strings.ToLower(h.Get("Content-Type")), "application/cloudevents") ||
		h.Get("Ce-Specversion") != ""
}

// decodeCloudEventRequest lets the registry route take a push sent as a CloudEvent (Harbor in
// its CloudEvents format, say). Other CloudEvents belong on the CloudEvents route.
func decodeCloudEventRequest(h http.Header, body []byte) ([]functions.ImagePush, error) {
	msg := cehttp.NewMessage(h, io.NopCloser(bytes.NewReader(body)))
	// Decoding a buffered body does no I/O: the context only satisfies the SDK's signature.
	e, err := binding.ToEvent(context.Background(), msg)
	if err != nil {
		return nil, invalid("cloudevent", "%s", oneLine(err.Error()))
	}
	in, err := DecodeCloudEvent(*e)
	if err != nil {
		return nil, err
	}
	switch in.Kind {
	case InboundPush, InboundIgnored:
		return in.Pushes, nil
	default:
		return nil, invalid("cloudevent "+plain(in.Type), "a %s event, not a registry push; post it to the CloudEvents route", in.Kind)
	}
}

// oneLine joins the lines of the SDK's validation errors, which list one problem per line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(strings.TrimSpace(s), "\n", " ; ")), " ")
}
