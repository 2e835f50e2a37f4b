package handlers

import (
	"bytes"
	"net/http/httptest"
	"testing"

	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
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
			}
			compareGolden(t, s.golden, got)
		})
	}
}
