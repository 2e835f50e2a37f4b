package deploy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"

	"github.com/siskin-dev/siskin/functions"
)

// eventReason is the reason Flagger gives every Event it records.
const eventReason = "Synced"

// maxEventMessage is the events.k8s.io limit on a note; longer messages are cut.
const maxEventMessage = 1024

// maxEventNamePrefix keeps "<canary>.<16 hex>" within a DNS subdomain's 253 characters.
const maxEventNamePrefix = 253 - 17

// RecordEvent records a core/v1 Event on the Canary, synchronously: Siskin is a short-lived
// function, so there is no broadcaster goroutine to flush. Repeats are aggregated as the
// client-go recorder does it for identical events (same object, type, reason, message and
// source): the Event's name is derived from those, so a repeat finds the existing Event and
// bumps its count and lastTimestamp instead of adding another. Events expire with the
// apiserver's event TTL (1h by default), after which a repeat starts a new one.
func (c *Cluster) RecordEvent(ctx context.Context, cd functions.Canary, e functions.Event) error {
	now := metav1.NewTime(c.now())
	ev := newEvent(cd, e, now)
	cctx, cancel := c.call(ctx)
	_, err := c.kube.CoreV1().Events(cd.Namespace).Create(cctx, ev, metav1.CreateOptions{FieldManager: fieldManager})
	cancel()
	if err == nil {
		return nil
	}
	if err = apiError(err, "create", "Event", cd.Namespace, ev.Name); !errors.Is(err, functions.ErrConflict) {
		return err
	}
	// An identical Event exists: count it.
	return retry.OnError(retry.DefaultRetry, isConflict, func() error {
		cctx, cancel := c.call(ctx)
		defer cancel()
		live, err := c.kube.CoreV1().Events(cd.Namespace).Get(cctx, ev.Name, metav1.GetOptions{})
		if err != nil {
			return apiError(err, "get", "Event", cd.Namespace, ev.Name)
		}
		next := live.DeepCopy()
		next.Count++
		next.LastTimestamp = now
		_, err = c.kube.CoreV1().Events(cd.Namespace).Update(cctx, next, metav1.UpdateOptions{FieldManager: fieldManager})
		return apiError(err, "update", "Event", cd.Namespace, ev.Name)
	})
}

// newEvent builds the Event the client-go recorder would emit for the Canary, named after what
// makes two Events identical.
func newEvent(cd functions.Canary, e functions.Event, now metav1.Time) *corev1.Event {
	typ := corev1.EventTypeNormal
	if e.Warning {
		typ = corev1.EventTypeWarning
	}
	msg := e.Message
	if len(msg) > maxEventMessage {
		msg = strings.ToValidUTF8(msg[:maxEventMessage-3], "") + "..."
	}
	prefix := cd.Name
	if len(prefix) > maxEventNamePrefix {
		prefix = prefix[:maxEventNamePrefix]
	}
	sum := sha256.Sum256(fmt.Appendf(nil, "%s\x00%s\x00%s\x00%s\x00%s", cd.UID, typ, eventReason, eventComponent, msg))
	return &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{
			Name:      prefix + "." + hex.EncodeToString(sum[:8]),
			Namespace: cd.Namespace,
		},
		InvolvedObject: corev1.ObjectReference{
			APIVersion: canaryAPIVersion,
			Kind:       canaryKind,
			Namespace:  cd.Namespace,
			Name:       cd.Name,
			UID:        types.UID(cd.UID),
		},
		Reason:              eventReason,
		Message:             msg,
		Type:                typ,
		Source:              corev1.EventSource{Component: eventComponent},
		FirstTimestamp:      now,
		LastTimestamp:       now,
		Count:               1,
		ReportingController: eventComponent,
	}
}
