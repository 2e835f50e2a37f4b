package analysis

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/siskin-dev/siskin/functions"
)

func TestEmitterSendsTransitionCloudEvent(t *testing.T) {
	got := make(chan *http.Request, 1)
	body := make(chan []byte, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := make([]byte, r.ContentLength)
		_, _ = r.Body.Read(b)
		got <- r
		body <- b
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	em, err := NewEmitter(srv.URL, time.Second, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	c := functions.Canary{Key: functions.Key{Namespace: "shop", Name: "checkout"}, UID: "u1",
		Spec: functions.Spec{TargetRef: functions.TargetRef{Name: "checkout"}}}
	at := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	before := functions.State{Phase: functions.PhaseProgressing}
	after := functions.State{Phase: functions.PhaseFailed, Version: 7, LastTransitionTime: at, Message: "Canary aborted: alert X",
		Trigger: &functions.Trigger{Kind: "alert", Detail: "X abc"}}
	em.Transitioned(context.Background(), c, before, after)
	r := <-got
	for h, want := range map[string]string{
		"Ce-Type":    "dev.siskin.canary.failed",
		"Ce-Source":  "/apis/flagger.app/v1beta1/namespaces/shop/canaries/checkout",
		"Ce-Subject": "shop/checkout",
		"Ce-Id":      "u1-failed-7",
	} {
		if r.Header.Get(h) != want {
			t.Errorf("%s: got %q, want %q", h, r.Header.Get(h), want)
		}
	}
	var data TransitionData
	if err := json.Unmarshal(<-body, &data); err != nil {
		t.Fatal(err)
	}
	want := TransitionData{Name: "checkout", Namespace: "shop", Target: "checkout", From: functions.PhaseProgressing,
		To: functions.PhaseFailed, Message: "Canary aborted: alert X", Trigger: after.Trigger}
	if diff := cmp.Diff(want, data); diff != "" {
		t.Errorf("data (-want +got):\n%s", diff)
	}
}

// A failure that keeps the phase (an invalid spec, a primary that cannot become ready) is
// published as dev.siskin.canary.failed too, with the phase it kept and its cause.
func TestEmitterSendsFailureCloudEvent(t *testing.T) {
	got := make(chan *http.Request, 1)
	body := make(chan []byte, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- r
		body <- b
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	em, err := NewEmitter(srv.URL, time.Second, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	c := functions.Canary{Key: functions.Key{Namespace: "shop", Name: "checkout"}, UID: "u1",
		Spec: functions.Spec{TargetRef: functions.TargetRef{Name: "checkout"}}}
	st := functions.State{Phase: functions.PhaseInitializing, Version: 3}
	em.Failed(context.Background(), c, st, "checkout-primary cannot become ready: deadline")
	r := <-got
	if r.Header.Get("Ce-Type") != "dev.siskin.canary.failed" || r.Header.Get("Ce-Id") != "u1-failure-3" {
		t.Errorf("got type %q id %q, want dev.siskin.canary.failed and u1-failure-3", r.Header.Get("Ce-Type"), r.Header.Get("Ce-Id"))
	}
	var data TransitionData
	if err := json.Unmarshal(<-body, &data); err != nil {
		t.Fatal(err)
	}
	want := TransitionData{Name: "checkout", Namespace: "shop", Target: "checkout", From: functions.PhaseInitializing,
		To: functions.PhaseInitializing, Message: "checkout-primary cannot become ready: deadline"}
	if diff := cmp.Diff(want, data); diff != "" {
		t.Errorf("data (-want +got):\n%s", diff)
	}
}
