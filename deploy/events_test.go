package deploy

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"

	"github.com/siskin-dev/siskin/functions"
)

func TestRecordEventAggregatesRepeats(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	cd := seedDomain(t)
	msg := "Advance podinfo.default canary weight 5"

	for i := 0; i < 3; i++ {
		f.c.now = func() time.Time { return testNow.Add(time.Duration(i) * time.Minute) }
		if err := f.c.RecordEvent(ctx, cd, functions.Event{Message: msg}); err != nil {
			t.Fatalf("RecordEvent %d: %v", i, err)
		}
	}
	if err := f.c.RecordEvent(ctx, cd, functions.Event{Warning: true, Message: "Halt advancement podinfo.default"}); err != nil {
		t.Fatalf("RecordEvent warning: %v", err)
	}

	list, err := f.kube.CoreV1().Events("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 2 {
		t.Fatalf("got %d events, want 2 (3 identical aggregated + 1 warning)", len(list.Items))
	}
	var normal, warning corev1.Event
	for _, e := range list.Items {
		if e.Type == corev1.EventTypeWarning {
			warning = e
		} else {
			normal = e
		}
	}
	want := corev1.Event{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default"},
		InvolvedObject: corev1.ObjectReference{APIVersion: "flagger.app/v1beta1", Kind: "Canary",
			Namespace: "default", Name: "podinfo", UID: "uid-podinfo"},
		Reason:              "Synced",
		Message:             msg,
		Type:                corev1.EventTypeNormal,
		Source:              corev1.EventSource{Component: "siskin"},
		FirstTimestamp:      metav1.NewTime(testNow),
		LastTimestamp:       metav1.NewTime(testNow.Add(2 * time.Minute)),
		Count:               3,
		ReportingController: "siskin",
	}
	ignore := cmp.Options{cmpopts.IgnoreFields(metav1.ObjectMeta{}, "Name", "ResourceVersion", "ManagedFields"), cmpopts.IgnoreTypes(metav1.TypeMeta{})}
	if diff := cmp.Diff(want, normal, ignore); diff != "" {
		t.Errorf("normal event (-want +got):\n%s", diff)
	}
	if !strings.HasPrefix(normal.Name, "podinfo.") {
		t.Errorf("got event name %q, want podinfo.<hash>", normal.Name)
	}
	if warning.Count != 1 || warning.Reason != "Synced" || warning.Name == normal.Name {
		t.Errorf("got warning %+v, want a separate Synced event with count 1", warning)
	}
}

func TestRecordEventErrors(t *testing.T) {
	f := newFixture(t, nil)
	f.kube.PrependReactor("create", "events", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, forbiddenErr("events", "")
	})
	err := f.c.RecordEvent(context.Background(), seedDomain(t), functions.Event{Message: "x"})
	if !errors.Is(err, functions.ErrUpstreamDenied) || !strings.Contains(err.Error(), "create Event") {
		t.Errorf("got %v, want functions.ErrUpstreamDenied naming create Event", err)
	}
}

func TestNewEventTruncatesLongMessages(t *testing.T) {
	e := newEvent(seedDomain(t), functions.Event{Message: strings.Repeat("é", 1000)}, metav1.NewTime(testNow))
	if len(e.Message) > maxEventMessage || !strings.HasSuffix(e.Message, "...") {
		t.Errorf("got a message of %d bytes ending %q, want at most %d ending ...", len(e.Message), e.Message[len(e.Message)-5:], maxEventMessage)
	}
}
