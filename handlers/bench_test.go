package handlers

import (
	"bytes"
	"net/http/httptest"
	"testing"

	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
)

func BenchmarkDecodeCloudEvent(b *testing.B) {
	for _, s := range readSamples(b, "cloudevents") {
		req := httptest.NewRequest("POST", "/", bytes.NewReader(s.body))
		req.Header = s.header
		e, err := cehttp.NewEventFromHTTPRequest(req)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(s.name, func(b *testing.B) {
			for b.Loop() {
				_, _ = DecodeCloudEvent(*e)
			}
		})
	}
}

func BenchmarkDecodeRegistryWebhook(b *testing.B) {
	for _, dir := range registryDirs {
		for _, s := range readSamples(b, dir) {
			b.Run(dir+"/"+s.name, func(b *testing.B) {
				for b.Loop() {
					_, _ = DecodeRegistryWebhook(s.header, s.body)
				}
			})
		}
	}
}

func BenchmarkDecodeAlertmanager(b *testing.B) {
	for _, s := range readSamples(b, "alertmanager") {
		b.Run(s.name, func(b *testing.B) {
			for b.Loop() {
				_, _ = DecodeAlertmanager(s.body)
			}
		})
	}
}
