package handlers

import (
	"bytes"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/google/go-cmp/cmp"

	"github.com/siskin-dev/siskin/functions"
)

type cloudEventGolden struct {
	Inbound *Inbound `json:"inbound,omitempty"`
	Error   string   `json:"error,omitempty"`
}

// The samples are whole HTTP requests, parsed the way the CloudEvents route parses them, in
// binary mode (PingSource, Brokers, Eventarc) or structured mode (Harbor, Event Grid).
func TestDecodeCloudEventGolden(t *testing.T) {
	for _, s := range readSamples(t, "cloudevents") {
		t.Run(s.name, func(t *testing.T) {
			req := httptest.NewRequest("POST", "/", bytes.NewReader(s.body))
			req.Header = s.header
			e, err := cehttp.NewEventFromHTTPRequest(req)
			if err != nil {
				t.Fatalf("sample is not a CloudEvent: %v", err)
			}
			in, err := DecodeCloudEvent(*e)
			got := cloudEventGolden{Error: errorText(t, err)}
			if err == nil {
				got.Inbound = &in
				// The object a Resource-mode event carries travels on as the event's data;
				// the golden file, like the JSON of an ObjectRef, leaves it out.
				if in.Object != nil && in.Object.Object != nil {
					if !bytes.Equal(in.Object.Object, e.Data()) {
						t.Errorf("the object travels on as %q, want the event's data", in.Object.Object)
					}
					obj := *in.Object
					obj.Object = nil
					got.Inbound.Object = &obj
				}
			}
			compareGolden(t, s.golden, got)
		})
	}
}

func TestDecodeCloudEvent(t *testing.T) {
	const digest = "sha256:7e2372f4115c43bac7248772d891df3dbc830a85aa27eeed933688f61c44226c"
	newEvent := func(typ, contentType, data string) event.Event {
		e := event.New()
		e.SetID("42")
		e.SetSource("/test")
		e.SetType(typ)
		if contentType != "" {
			e.SetDataContentType(contentType)
		}
		e.DataEncoded = []byte(data)
		return e
	}
	tests := []struct {
		name    string
		event   event.Event
		want    Inbound
		wantErr string
	}{
		{name: "no id", event: func() event.Event { e := newEvent(TypePing, "", ""); e.SetID(""); return e }(), wantErr: "cloudevent: id: id is required"},
		{name: "ping without data", event: newEvent(TypePing, "", ""), want: Inbound{Kind: InboundTick, EventID: "ce:/test#42", Type: TypePing}},
		{name: "a dispatcher wake-up is a tick", event: newEvent(TypeWake, "application/json", `{}`), want: Inbound{Kind: InboundTick, EventID: "ce:/test#42", Type: TypeWake}},
		{
			name:  "neutral push with charset and without registry",
			event: newEvent(TypeImagePushed, "application/json; charset=utf-8", `{"repository":"shop/cart","tag":"v3","digest":"`+digest+`"}`),
			want: Inbound{Kind: InboundPush, EventID: "ce:/test#42", Type: TypeImagePushed, Pushes: []functions.ImagePush{
				{EventID: "ce:/test#42", Source: "cloudevent", Repository: "shop/cart", Tag: "v3", Digest: digest}}},
		},
		{
			name:    "neutral push of a blob",
			event:   newEvent(TypeImagePushed, "application/json", `{"repository":"shop/cart","tag":"v3","mediaType":"application/vnd.oci.image.layer.v1.tar+gzip"}`),
			wantErr: `data.mediaType: "application/vnd.oci.image.layer.v1.tar+gzip" is not an OCI or Docker manifest or index media type`,
		},
		{
			name:    "neutral push with a URL for a registry",
			event:   newEvent(TypeImagePushed, "application/json", `{"registry":"https://r.example.com","repository":"shop/cart","tag":"v3"}`),
			wantErr: `data.registry: "https://r.example.com" is not a registry host[:port]`,
		},
		{name: "neutral push without data", event: newEvent(TypeImagePushed, "", ""), wantErr: "data: empty"},
		{name: "neutral push that is not an object", event: newEvent(TypeImagePushed, "", `["shop/cart"]`), wantErr: "data: expected object, got array"},
		{
			name:    "deployment with a bad namespace",
			event:   newEvent("dev.knative.apiserver.ref.update", "application/json", `{"kind":"Deployment","apiVersion":"apps/v1","namespace":"Team_A","name":"web"}`),
			wantErr: `data.namespace: "Team_A" is not a namespace name`,
		},
		{
			name:    "deployment resource without metadata",
			event:   newEvent("dev.knative.apiserver.resource.add", "application/json", `{"kind":"Deployment","apiVersion":"apps/v1"}`),
			wantErr: "data.metadata: missing, want an object",
		},
		{
			name:  "deployment of another group",
			event: newEvent("dev.knative.apiserver.ref.update", "application/json", `{"kind":"Deployment","apiVersion":"extensions/v1beta1","namespace":"a","name":"web"}`),
			want:  Inbound{Kind: InboundIgnored, EventID: "ce:/test#42", Type: "dev.knative.apiserver.ref.update", Reason: "extensions/v1beta1 Deployment is not a kind Siskin watches"},
		},
		{
			name:  "a Canary applied, by reference",
			event: newEvent("dev.knative.apiserver.ref.add", "application/json", `{"kind":"Canary","apiVersion":"flagger.app/v1beta1","namespace":"shop","name":"cart"}`),
			want: Inbound{Kind: InboundObject, EventID: "ce:/test#42", Type: "dev.knative.apiserver.ref.add",
				Object: &functions.ObjectRef{Group: "flagger.app", Kind: "Canary", Namespace: "shop", Name: "cart"}},
		},
		{
			name:  "a Canary deleted",
			event: newEvent("dev.knative.apiserver.ref.delete", "application/json", `{"kind":"Canary","apiVersion":"flagger.app/v1beta1","namespace":"shop","name":"cart"}`),
			want: Inbound{Kind: InboundObject, EventID: "ce:/test#42", Type: "dev.knative.apiserver.ref.delete",
				Object: &functions.ObjectRef{Group: "flagger.app", Kind: "Canary", Namespace: "shop", Name: "cart", Deleted: true}},
		},
		{
			name:  "a VirtualService edited, as a resource",
			event: newEvent("dev.knative.apiserver.resource.update", "application/json", `{"kind":"VirtualService","apiVersion":"networking.istio.io/v1","metadata":{"namespace":"shop","name":"cart"},"spec":{}}`),
			want: Inbound{Kind: InboundObject, EventID: "ce:/test#42", Type: "dev.knative.apiserver.resource.update",
				Object: &functions.ObjectRef{Group: "networking.istio.io", Kind: "VirtualService", Namespace: "shop", Name: "cart",
					Object: []byte(`{"kind":"VirtualService","apiVersion":"networking.istio.io/v1","metadata":{"namespace":"shop","name":"cart"},"spec":{}}`)}},
		},
		{
			name: "a VirtualService a Canary controls names its owner",
			event: newEvent("dev.knative.apiserver.resource.update", "application/json",
				`{"kind":"VirtualService","apiVersion":"networking.istio.io/v1","metadata":{"namespace":"shop","name":"cart","ownerReferences":[{"apiVersion":"v1","kind":"ConfigMap","name":"x"},{"apiVersion":"flagger.app/v1beta1","kind":"Canary","name":"cart","uid":"u1","controller":true}]}}`),
			want: Inbound{Kind: InboundObject, EventID: "ce:/test#42", Type: "dev.knative.apiserver.resource.update",
				Object: &functions.ObjectRef{Group: "networking.istio.io", Kind: "VirtualService", Namespace: "shop", Name: "cart", Owner: "cart",
					Object: []byte(`{"kind":"VirtualService","apiVersion":"networking.istio.io/v1","metadata":{"namespace":"shop","name":"cart","ownerReferences":[{"apiVersion":"v1","kind":"ConfigMap","name":"x"},{"apiVersion":"flagger.app/v1beta1","kind":"Canary","name":"cart","uid":"u1","controller":true}]}}`)}},
		},
		{
			name: "an HTTPRoute a Canary controls names its owner and travels on",
			event: newEvent("dev.knative.apiserver.resource.update", "application/json",
				`{"kind":"HTTPRoute","apiVersion":"gateway.networking.k8s.io/v1","metadata":{"namespace":"shop","name":"cart","ownerReferences":[{"apiVersion":"flagger.app/v1beta1","kind":"Canary","name":"cart","uid":"u1","controller":true}]}}`),
			want: Inbound{Kind: InboundObject, EventID: "ce:/test#42", Type: "dev.knative.apiserver.resource.update",
				Object: &functions.ObjectRef{Group: "gateway.networking.k8s.io", Kind: "HTTPRoute", Namespace: "shop", Name: "cart", Owner: "cart",
					Object: []byte(`{"kind":"HTTPRoute","apiVersion":"gateway.networking.k8s.io/v1","metadata":{"namespace":"shop","name":"cart","ownerReferences":[{"apiVersion":"flagger.app/v1beta1","kind":"Canary","name":"cart","uid":"u1","controller":true}]}}`)}},
		},
		{
			name: "a Canary that owns without controlling is no owner",
			event: newEvent("dev.knative.apiserver.resource.update", "application/json",
				`{"kind":"VirtualService","apiVersion":"networking.istio.io/v1","metadata":{"namespace":"shop","name":"cart","ownerReferences":[{"apiVersion":"flagger.app/v1beta1","kind":"Canary","name":"cart"}]}}`),
			want: Inbound{Kind: InboundObject, EventID: "ce:/test#42", Type: "dev.knative.apiserver.resource.update",
				Object: &functions.ObjectRef{Group: "networking.istio.io", Kind: "VirtualService", Namespace: "shop", Name: "cart",
					Object: []byte(`{"kind":"VirtualService","apiVersion":"networking.istio.io/v1","metadata":{"namespace":"shop","name":"cart","ownerReferences":[{"apiVersion":"flagger.app/v1beta1","kind":"Canary","name":"cart"}]}}`)}},
		},
		{
			name:  "a Canary as a resource travels on, for its gate",
			event: newEvent("dev.knative.apiserver.resource.update", "application/json", `{"kind":"Canary","apiVersion":"flagger.app/v1beta1","metadata":{"namespace":"shop","name":"cart","generation":3}}`),
			want: Inbound{Kind: InboundObject, EventID: "ce:/test#42", Type: "dev.knative.apiserver.resource.update",
				Object: &functions.ObjectRef{Group: "flagger.app", Kind: "Canary", Namespace: "shop", Name: "cart",
					Object: []byte(`{"kind":"Canary","apiVersion":"flagger.app/v1beta1","metadata":{"namespace":"shop","name":"cart","generation":3}}`)}},
		},
		{
			name:  "a Secret as a resource does not travel on",
			event: newEvent("dev.knative.apiserver.resource.update", "application/json", `{"kind":"Secret","apiVersion":"v1","metadata":{"namespace":"shop","name":"cart-token"},"data":{"token":"czNjcjN0"}}`),
			want: Inbound{Kind: InboundObject, EventID: "ce:/test#42", Type: "dev.knative.apiserver.resource.update",
				Object: &functions.ObjectRef{Kind: "Secret", Namespace: "shop", Name: "cart-token"}},
		},
		{
			name:  "a deleted Deployment as a resource is a deletion alone",
			event: newEvent("dev.knative.apiserver.resource.delete", "application/json", `{"kind":"Deployment","apiVersion":"apps/v1","metadata":{"namespace":"shop","name":"cart"}}`),
			want: Inbound{Kind: InboundObject, EventID: "ce:/test#42", Type: "dev.knative.apiserver.resource.delete",
				Object: &functions.ObjectRef{Group: "apps", Kind: "Deployment", Namespace: "shop", Name: "cart", Deleted: true}},
		},
		{
			name:  "a core Service",
			event: newEvent("dev.knative.apiserver.ref.update", "application/json", `{"kind":"Service","apiVersion":"v1","namespace":"shop","name":"cart-canary"}`),
			want: Inbound{Kind: InboundObject, EventID: "ce:/test#42", Type: "dev.knative.apiserver.ref.update",
				Object: &functions.ObjectRef{Kind: "Service", Namespace: "shop", Name: "cart-canary"}},
		},
		{
			name:  "a Secret by reference",
			event: newEvent("dev.knative.apiserver.ref.update", "application/json", `{"kind":"Secret","apiVersion":"v1","namespace":"shop","name":"cart-token"}`),
			want: Inbound{Kind: InboundObject, EventID: "ce:/test#42", Type: "dev.knative.apiserver.ref.update",
				Object: &functions.ObjectRef{Kind: "Secret", Namespace: "shop", Name: "cart-token"}},
		},
		{
			name:  "a deleted ConfigMap",
			event: newEvent("dev.knative.apiserver.ref.delete", "application/json", `{"kind":"ConfigMap","apiVersion":"v1","namespace":"shop","name":"cart-config"}`),
			want: Inbound{Kind: InboundObject, EventID: "ce:/test#42", Type: "dev.knative.apiserver.ref.delete",
				Object: &functions.ObjectRef{Kind: "ConfigMap", Namespace: "shop", Name: "cart-config", Deleted: true}},
		},
		{
			name:  "a Knative Service is not a core Service",
			event: newEvent("dev.knative.apiserver.ref.update", "application/json", `{"kind":"Service","apiVersion":"serving.knative.dev/v1","namespace":"shop","name":"cart"}`),
			want:  Inbound{Kind: InboundIgnored, EventID: "ce:/test#42", Type: "dev.knative.apiserver.ref.update", Reason: "serving.knative.dev/v1 Service is not a kind Siskin watches"},
		},
		{
			name:  "a step",
			event: newEvent(TypeStep, "application/json", `{"namespace":"shop","name":"cart","dueAt":"2026-12-02T12:00:00Z"}`),
			want:  Inbound{Kind: InboundStep, EventID: "ce:/test#42", Type: TypeStep, Step: &functions.Key{Namespace: "shop", Name: "cart"}},
		},
		{name: "a step with an unknown field", event: newEvent(TypeStep, "application/json", `{"namespace":"shop","name":"cart","weight":5}`), wantErr: `data.weight`},
		{name: "a step without a name", event: newEvent(TypeStep, "application/json", `{"namespace":"shop"}`), wantErr: `data.name: missing`},
		{
			name:  "unknown type with data that is not JSON",
			event: newEvent("com.example.thing", "text/plain", "hello"),
			want:  Inbound{Kind: InboundIgnored, EventID: "ce:/test#42", Type: "com.example.thing", Reason: "type not handled"},
		},
		{
			name:    "unknown type carrying a broken Alertmanager body",
			event:   newEvent("io.prometheus.alertmanager.notification", "", `{"version":"4","status":"firing","alerts":"none"}`),
			wantErr: "data.alerts: expected array, got string",
		},
		{
			name: "harbor push of two tags",
			event: newEvent("harbor.artifact.pushed", "application/json", `{"resources":[{"digest":"`+digest+`","tag":"v3"},{"digest":"`+digest+`","tag":"latest"}],`+
				`"repository":{"repo_full_name":"shop/cart"}}`),
			want: Inbound{Kind: InboundPush, EventID: "ce:/test#42", Type: "harbor.artifact.pushed", Pushes: []functions.ImagePush{
				{EventID: "ce:/test#42/1", Source: "harbor", Repository: "shop/cart", Tag: "v3", Digest: digest},
				{EventID: "ce:/test#42/2", Source: "harbor", Repository: "shop/cart", Tag: "latest", Digest: digest}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeCloudEvent(tt.event)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, functions.ErrInvalid) {
					t.Fatalf("got error %v, want an ErrInvalid containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("inbound (-want +got):\n%s", diff)
			}
		})
	}
}
