//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Every failure path tells the user, once per cause and naming it: the AlertProvider, a
// Warning Event and the dev.siskin.canary.failed CloudEvent (K_SINK). One canary per path: a
// primary that can never become ready while initialising (Flagger waits silently, #1663), an
// invalid spec, a release aborted by hand.
func TestEveryFailurePathAlertsOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "failures")
	rec := newHookRecorder(t)
	e.apply([]byte(fmt.Sprintf(`apiVersion: flagger.app/v1beta1
kind: AlertProvider
metadata:
  name: team
  namespace: %s
spec:
  type: webhook
  address: %s
`, e.ns, rec.url("/alerts"))))
	const alerting = `  alerts:
    - name: team
      severity: info
      providerRef:
        name: team
`
	spec := func(extra string) string {
		return `progressDeadlineSeconds: 3
service:
  port: 9898
` + extra + `analysis:
  interval: 10s
  threshold: 2
  stepWeight: 10
  maxWeight: 30
` + alerting
	}
	image := func(name, v string) string { return e.lab.Registry() + "/lab/" + name + ":" + v }

	// Its pods can be scheduled on no node, and the primary copies them.
	stuck := func() {
		d, err := e.kube.AppsV1().Deployments(e.ns).Get(context.Background(), "neverready", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		d.Spec.Template.Spec.NodeSelector = map[string]string{"siskin.dev/e2e": "nowhere"}
		d.Spec.ProgressDeadlineSeconds = ptrTo(int32(2))
		if _, err := e.kube.AppsV1().Deployments(e.ns).Update(context.Background(), d, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	e.createDeployment("neverready", image("neverready", "1.0.0"), 1)
	stuck()
	e.apply(specCanary(e.ns, "neverready", spec("")))
	e.createDeployment("invalid", image("invalid", "1.0.0"), 1)
	e.apply(specCanary(e.ns, "invalid", spec("  primary:\n    host: invalid-main."+e.ns+".svc.cluster.local\n")))
	e.createDeployment("aborted", image("aborted", "1.0.0"), 1)
	e.apply(specCanary(e.ns, "aborted", spec("")))
	s := startSiskin(t, e.lab, siskinOpts{namespace: e.ns, extraEnv: []string{"K_SINK=" + rec.url("/sink")}})

	aborted := newRel(t, e, s, "aborted")
	aborted.initialize(weighted("aborted", 100, 0))
	e.setImage("aborted", image("aborted", "2.0.0"))
	aborted.steps([]stage{
		{Phase: "Initialized", Routes: weighted("aborted", 100, 0)},
		{Phase: "Progressing", Routes: weighted("aborted", 100, 0)},
	}, 30)
	mustGate(t, s, e.ns, "aborted", "abort", http.StatusOK)

	// The other two are stepped until their failure has been said, then some more.
	neverready, invalid := newRel(t, e, s, "neverready"), newRel(t, e, s, "invalid")
	deadline := time.Now().Add(90 * time.Second)
	for !saidOnce(rec, "neverready-primary cannot become ready") && time.Now().Before(deadline) {
		neverready.tick()
		invalid.tick()
		time.Sleep(500 * time.Millisecond)
	}
	for range 5 {
		neverready.tick()
		invalid.tick()
		aborted.tick()
	}
	// Alerts and CloudEvents are sent after the step answers: give them a moment.
	time.Sleep(2 * time.Second)

	for _, tc := range []struct {
		canary, cause string
	}{
		{"neverready", "neverready-primary cannot become ready"},
		{"invalid", "Invalid canary spec: spec.service.primary.host"},
		{"aborted", "Canary aborted"},
	} {
		t.Run(tc.canary, func(t *testing.T) {
			var alerts, sinks int
			for _, c := range rec.peek() {
				if !strings.Contains(c.Raw, tc.canary) {
					continue
				}
				switch {
				case c.Path == "/alerts" && strings.Contains(c.Raw, tc.cause):
					alerts++
				case c.Path == "/sink" && strings.Contains(c.Raw, `"to":"`) && failedEvent(c, tc.cause):
					sinks++
				}
			}
			if alerts != 1 {
				t.Errorf("AlertProvider: got %d alerts naming %q, want exactly 1; calls: %v", alerts, tc.cause, paths(rec.peek()))
			}
			if sinks != 1 {
				t.Errorf("K_SINK: got %d dev.siskin.canary.failed events naming the failure, want exactly 1", sinks)
			}
			events, err := e.kube.CoreV1().Events(e.ns).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + tc.canary})
			if err != nil {
				t.Fatal(err)
			}
			warned := 0
			for _, ev := range events.Items {
				if ev.Type == "Warning" && (strings.Contains(ev.Message, tc.cause) || strings.Contains(ev.Message, "Rolling back")) {
					warned++
				}
			}
			if warned == 0 {
				t.Errorf("no Warning Event naming %q among %d Events", tc.cause, len(events.Items))
			}
		})
	}
}

// saidOnce reports whether an alert naming cause arrived.
func saidOnce(rec *hookRecorder, cause string) bool {
	for _, c := range rec.peek() {
		if c.Path == "/alerts" && strings.Contains(c.Raw, cause) {
			return true
		}
	}
	return false
}

// failedEvent is a transition to Failed, or a failure that kept the phase, naming cause.
func failedEvent(c hookCall, cause string) bool {
	to, _ := c.Body["to"].(string)
	from, _ := c.Body["from"].(string)
	msg, _ := c.Body["message"].(string)
	return strings.Contains(msg, strings.TrimPrefix(cause, "Invalid canary spec: ")) && (to == "Failed" || from == to)
}
