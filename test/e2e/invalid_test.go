//go:build e2e

package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/siskin-dev/siskin/test/traffic"
)

// An invalid Canary is reported on its status (a condition and an Event), and never stops the
// canaries next to it.
func TestInvalidSpecIsReportedAndBlocksNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "invalid")
	ex := startExporter(t, e)
	ex.Set(e.ns, "good", traffic.Behaviour{RPS: 20, LatencyMs: 30})
	e.createDeployment("good", e.lab.Registry()+"/lab/good:1.0.0", 1)
	e.createDeployment("bad", e.lab.Registry()+"/lab/bad:1.0.0", 1)
	e.createDeployment("fraction", e.lab.Registry()+"/lab/fraction:1.0.0", 1)
	e.apply(seedCanary(t, e.ns, "good", "1s"))
	// The seed's host fields, pointing at a Service Siskin does not generate.
	bad := strings.Replace(string(seedCanary(t, e.ns, "bad", "1s")), "host: bad-primary."+e.ns, "host: bad-main."+e.ns, 1)
	e.apply([]byte(bad))
	// A weight the CRD accepts (Flagger types it as a number) but no canary can take.
	fraction := strings.Replace(string(seedCanary(t, e.ns, "fraction", "1s")), "stepWeight: 5", "stepWeight: 2.5", 1)
	e.apply([]byte(fraction))
	s := startSiskin(t, e.lab, siskinOpts{namespace: e.ns})

	stepThrough(t, e, s, "good", time.Second, []observed{{Phase: "Initializing"}, {Phase: "Initialized", Primary: 100}}, 20)

	ctx := context.Background()
	for _, tc := range []struct{ name, want string }{
		{"bad", `spec.service.primary.host "bad-main.invalid.svc.cluster.local" does not match the generated Service bad-primary.invalid`},
		{"fraction", "spec.analysis.stepWeight: got number 2.5, want int"},
	} {
		cd, err := e.dyn.Resource(canaryGVR).Namespace(e.ns).Get(ctx, tc.name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		specErr, _, _ := unstructured.NestedString(cd.Object, "status", "specError")
		if !strings.Contains(specErr, tc.want) {
			t.Errorf("%s: got status.specError %q, want it to say %q", tc.name, specErr, tc.want)
		}
		conds, _, _ := unstructured.NestedSlice(cd.Object, "status", "conditions")
		valid := false
		for _, c := range conds {
			m := c.(map[string]any)
			if m["type"] == "Valid" && m["status"] == "False" && strings.Contains(m["message"].(string), tc.want) {
				valid = true
			}
		}
		if !valid {
			t.Errorf("%s: no Valid=False condition naming the problem in %v", tc.name, conds)
		}
		events, err := e.kube.CoreV1().Events(e.ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + tc.name})
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, ev := range events.Items {
			if ev.Type == "Warning" && strings.Contains(ev.Message, "Invalid canary spec") {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: no Warning event about the invalid spec", tc.name)
		}
		// Nothing was generated for it.
		if _, err := e.kube.AppsV1().Deployments(e.ns).Get(ctx, tc.name+"-primary", metav1.GetOptions{}); err == nil {
			t.Errorf("%s: a primary Deployment was created for an invalid canary", tc.name)
		}
	}
}
