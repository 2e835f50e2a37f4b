package analysis

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/siskin-dev/siskin/functions"
)

// TransitionEventPrefix starts the type of the CloudEvent sent for each phase transition:
// dev.siskin.canary.progressing, dev.siskin.canary.succeeded, dev.siskin.canary.failed…
const TransitionEventPrefix = "dev.siskin.canary."

// TransitionData is the data of a transition CloudEvent.
type TransitionData struct {
	Name      string             `json:"name"`
	Namespace string             `json:"namespace"`
	Target    string             `json:"target"`
	From      functions.Phase    `json:"from"`
	To        functions.Phase    `json:"to"`
	Weight    int                `json:"weight"`
	Message   string             `json:"message,omitempty"`
	Trigger   *functions.Trigger `json:"trigger,omitempty"`
}

// Emitter sends a CloudEvent for every phase transition to a sink, normally the Knative Broker
// Siskin's SinkBinding or Service points K_SINK at, so that others can subscribe.
type Emitter struct {
	client  cloudevents.Client
	sink    string
	timeout time.Duration
	log     *slog.Logger
}

// NewEmitter sends to sink (K_SINK); each send has its own timeout (5 s by default).
func NewEmitter(sink string, timeout time.Duration, log *slog.Logger) (*Emitter, error) {
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	p, err := cloudevents.NewHTTP(cehttp.WithTarget(sink))
	if err != nil {
		return nil, fmt.Errorf("cloudevents sender for %s: %w", sink, err)
	}
	c, err := cloudevents.NewClient(p, cloudevents.WithUUIDs(), cloudevents.WithTimeNow())
	if err != nil {
		return nil, fmt.Errorf("cloudevents client: %w", err)
	}
	return &Emitter{client: c, sink: sink, timeout: timeout, log: log}, nil
}

// TransitionEvent builds the CloudEvent of one transition.
func TransitionEvent(c functions.Canary, before, after functions.State) (cloudevents.Event, error) {
	e := cloudevents.NewEvent()
	e.SetType(TransitionEventPrefix + strings.ToLower(string(after.Phase)))
	e.SetSource(fmt.Sprintf("/apis/flagger.app/v1beta1/namespaces/%s/canaries/%s", c.Namespace, c.Name))
	e.SetSubject(c.Namespace + "/" + c.Name)
	e.SetTime(after.LastTransitionTime)
	// The same transition is the same event: a retried step does not publish twice under
	// different ids.
	e.SetID(fmt.Sprintf("%s-%s-%d", c.UID, strings.ToLower(string(after.Phase)), after.Version))
	err := e.SetData(cloudevents.ApplicationJSON, TransitionData{Name: c.Name, Namespace: c.Namespace,
		Target: c.Spec.TargetRef.Name, From: before.Phase, To: after.Phase, Weight: after.Routing.Canary,
		Message: after.Message, Trigger: after.Trigger})
	return e, err
}

// FailureEvent builds the dev.siskin.canary.failed CloudEvent of a failure that kept the
// phase (an invalid spec, a primary that cannot become ready): From and To are that phase.
func FailureEvent(c functions.Canary, st functions.State, cause string) (cloudevents.Event, error) {
	e := cloudevents.NewEvent()
	e.SetType(TransitionEventPrefix + "failed")
	e.SetSource(fmt.Sprintf("/apis/flagger.app/v1beta1/namespaces/%s/canaries/%s", c.Namespace, c.Name))
	e.SetSubject(c.Namespace + "/" + c.Name)
	e.SetTime(st.LastStepAt)
	e.SetID(fmt.Sprintf("%s-failure-%d", c.UID, st.Version))
	err := e.SetData(cloudevents.ApplicationJSON, TransitionData{Name: c.Name, Namespace: c.Namespace,
		Target: c.Spec.TargetRef.Name, From: st.Phase, To: st.Phase, Weight: st.Routing.Canary,
		Message: cause, Trigger: st.Trigger})
	return e, err
}

// Failed implements functions.Emitter.
func (m *Emitter) Failed(ctx context.Context, c functions.Canary, st functions.State, cause string) {
	e, err := FailureEvent(c, st, cause)
	if err != nil {
		m.log.WarnContext(ctx, "failure event", "canary", c.Key.String(), "err", err)
		return
	}
	m.send(ctx, c, e)
}

// Transitioned implements functions.Emitter.
func (m *Emitter) Transitioned(ctx context.Context, c functions.Canary, before, after functions.State) {
	e, err := TransitionEvent(c, before, after)
	if err != nil {
		m.log.WarnContext(ctx, "transition event", "canary", c.Key.String(), "err", err)
		return
	}
	m.send(ctx, c, e)
}

func (m *Emitter) send(ctx context.Context, c functions.Canary, e cloudevents.Event) {
	ctx, cancel := context.WithTimeout(ctx, m.timeout)
	defer cancel()
	if res := m.client.Send(ctx, e); cloudevents.IsUndelivered(res) || !cloudevents.IsACK(res) {
		m.log.WarnContext(ctx, "transition event not delivered", "canary", c.Key.String(), "sink", m.sink, "type", e.Type(), "err", res)
	}
}
