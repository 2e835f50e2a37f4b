package handlers

import (
	"bytes"
	"errors"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/siskin-dev/siskin/functions"
)

// The fuzzers assert what the handlers rely on: no panic; every error is a
// functions.ErrInvalid (a 4xx, never a retry); every success is well formed, checked against
// go-containerregistry's reference parser rather than the decoders' own rules.
// Run one for long with: go test ./handlers -run '^$' -fuzz FuzzDecodeRegistryWebhook -fuzztime 10m

func FuzzDecodeRegistryWebhook(f *testing.F) {
	for _, dir := range append(slices.Clone(registryDirs), "cloudevents") {
		for _, s := range readSamples(f, dir) {
			f.Add(headerText(s), s.body)
		}
	}
	f.Fuzz(func(t *testing.T, head string, body []byte) {
		pushes, err := DecodeRegistryWebhook(parseHeaderLines(head), body)
		if err != nil {
			assertInvalid(t, err)
			if pushes != nil {
				t.Errorf("got pushes %v with error %v", pushes, err)
			}
			return
		}
		assertPushes(t, pushes)
	})
}

func FuzzDecodeAlertmanager(f *testing.F) {
	for _, s := range readSamples(f, "alertmanager") {
		f.Add(s.body)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		n, err := DecodeAlertmanager(body)
		if err != nil {
			assertInvalid(t, err)
			return
		}
		assertNotification(t, n)
	})
}

// FuzzDecodeCloudEvent drives the data paths: the type picks the decoder, the data is fuzzed.
func FuzzDecodeCloudEvent(f *testing.F) {
	for _, s := range readSamples(f, "cloudevents") {
		req := httptest.NewRequest("POST", "/", bytes.NewReader(s.body))
		req.Header = s.header
		e, err := cehttp.NewEventFromHTTPRequest(req)
		if err != nil {
			f.Fatalf("%s: %v", s.name, err)
		}
		f.Add(e.Type(), e.DataContentType(), e.Data())
	}
	f.Fuzz(func(t *testing.T, ceType, contentType string, data []byte) {
		e := event.New()
		e.SetID("fuzz-1")
		e.SetSource("/fuzz")
		e.SetType(ceType)
		e.SetDataContentType(contentType)
		e.DataEncoded = data
		in, err := DecodeCloudEvent(e)
		if err != nil {
			assertInvalid(t, err)
			return
		}
		if in.EventID != "ce:/fuzz#fuzz-1" {
			t.Errorf("event id %q, want ce:/fuzz#fuzz-1", in.EventID)
		}
		switch in.Kind {
		case InboundPush:
			if len(in.Pushes) == 0 {
				t.Error("push without pushes")
			}
			assertPushes(t, in.Pushes)
		case InboundAlert:
			if in.Alert == nil {
				t.Fatal("alert without notification")
			}
			assertNotification(t, *in.Alert)
		case InboundObject:
			if in.Object == nil || in.Object.Namespace == "" || in.Object.Name == "" || in.Object.Kind == "" {
				t.Errorf("object %v is not a kind and namespace/name", in.Object)
			}
		case InboundStep:
			if in.Step == nil || in.Step.Namespace == "" || in.Step.Name == "" {
				t.Errorf("step %v is not namespace/name", in.Step)
			}
		case InboundTick, InboundIgnored:
			if in.Pushes != nil || in.Alert != nil || in.Object != nil || in.Step != nil {
				t.Errorf("%s with a payload: %+v", in.Kind, in)
			}
		default:
			t.Errorf("unknown kind %q", in.Kind)
		}
	})
}

func headerText(s sample) string {
	var b strings.Builder
	for k, vs := range s.header {
		for _, v := range vs {
			b.WriteString(k + ": " + v + "\n")
		}
	}
	return b.String()
}

func assertInvalid(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, functions.ErrInvalid) {
		t.Fatalf("error %q is not ErrInvalid", err)
	}
	if err.Error() == "" || strings.ContainsAny(err.Error(), "\n\r") {
		t.Fatalf("error message %q is empty or multi-line", err)
	}
}

var pushSources = []string{"distribution", "harbor", "dockerhub", "ghcr", "quay", "acr", "ecr", "gar", "cloudevent"}

func assertPushes(t *testing.T, pushes []functions.ImagePush) {
	t.Helper()
	ids := map[string]bool{}
	for _, p := range pushes {
		if ids[p.EventID] {
			t.Errorf("event id %q repeats", p.EventID)
		}
		ids[p.EventID] = true
		if p.EventID == "" || !slices.Contains(pushSources, p.Source) || p.Repository == "" || p.Tag == "" {
			t.Errorf("push %+v lacks an event id, a known source, a repository or a tag", p)
		}
		// The registry is checked on its own: a single-label host ("registry") is a host here,
		// though prefixed to a path it would read as a Docker Hub namespace.
		if p.Registry != "" {
			if _, err := name.NewRegistry(p.Registry, name.StrictValidation); err != nil {
				t.Errorf("push %+v: %v", p, err)
			}
		}
		ref := "registry.invalid/" + p.Repository
		if _, err := name.NewTag(ref+":"+p.Tag, name.StrictValidation); err != nil {
			t.Errorf("push %+v: %v", p, err)
		}
		if p.Digest != "" {
			if _, err := name.NewDigest(ref+"@"+p.Digest, name.StrictValidation); err != nil {
				t.Errorf("push %+v: %v", p, err)
			}
		}
		if p.MediaType != "" && strings.ContainsAny(p.MediaType, " \n") {
			t.Errorf("push %+v: media type with spaces", p)
		}
	}
}

func assertNotification(t *testing.T, n functions.AlertNotification) {
	t.Helper()
	if n.Status != "firing" && n.Status != "resolved" {
		t.Errorf("status %q", n.Status)
	}
	if n.Alerts == nil {
		t.Error("nil alerts")
	}
	for i, a := range n.Alerts {
		if a.Status != "firing" && a.Status != "resolved" {
			t.Errorf("alerts[%d].status %q", i, a.Status)
		}
		if a.Labels == nil {
			t.Errorf("alerts[%d].labels is nil", i)
		}
	}
}
