package handlers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/siskin-dev/siskin/functions"
)

func readBody(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: read body: %v", functions.ErrInvalid, err)
	}
	return b, nil
}

func isCloudEvent(r *http.Request) bool {
	return r.Header.Get("Ce-Specversion") != "" ||
		strings.HasPrefix(strings.ToLower(r.Header.Get("Content-Type")), "application/cloudevents")
}

// handleCloudEvent is POST /: any CloudEvent, dispatched by type. A POST without CloudEvent
// attributes is a tick (a plain timer, or a human with curl).
func handleCloudEvent(rel Releases, opts Options, log *slog.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		if !isCloudEvent(r) {
			runTick(w, r, rel, opts, log, "plain", start)
			return
		}
		if strings.HasPrefix(strings.ToLower(r.Header.Get("Content-Type")), "application/cloudevents-batch") {
			writeJSON(w, http.StatusUnsupportedMediaType, errorBody{Error: "batched CloudEvents are not accepted; send one event per request"})
			return
		}
		ev, err := cehttp.NewEventFromHTTPRequest(r)
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				writeError(w, err)
				return
			}
			writeError(w, fmt.Errorf("%w: not a valid CloudEvent: %v", functions.ErrInvalid, err))
			return
		}
		if err := ev.Validate(); err != nil {
			writeError(w, fmt.Errorf("%w: not a valid CloudEvent: %v", functions.ErrInvalid, err))
			return
		}
		in, err := DecodeCloudEvent(*ev)
		attrs := []slog.Attr{slog.String("eventID", ev.ID()), slog.String("eventType", ev.Type()), slog.String("eventSource", ev.Source())}
		if tp, ok := ev.Extensions()["traceparent"]; ok {
			attrs = append(attrs, slog.String("traceparent", fmt.Sprint(tp)))
		}
		log := slog.New(log.Handler().WithAttrs(attrs))
		// The use cases log each step with the request's context: those records carry the
		// event too (NewContextLogHandler).
		r = r.WithContext(WithLogAttrs(r.Context(), attrs...))
		if err != nil {
			opts.Observe("cloudevent", "invalid", time.Since(start))
			writeError(w, err)
			return
		}
		switch in.Kind {
		case InboundTick:
			runTick(w, r, rel, opts, log, "ping", start)
		case InboundPush:
			runPushes(w, r, rel, opts, log, in.Pushes, start)
		case InboundAlert:
			runAlerts(w, r, rel, opts, log, *in.Alert, ev.Source()+"/"+ev.ID(), start)
		case InboundObject:
			ctx, cancel := detached(r, opts.WorkTimeout)
			defer cancel()
			reps, err := rel.ObjectChanged(ctx, *in.Object, in.EventID)
			observe(opts, "object", err, start)
			if err != nil {
				writeError(w, err)
				return
			}
			writeJSON(w, http.StatusOK, map[string]any{"stepped": reps})
		case InboundStep:
			ctx, cancel := detached(r, opts.WorkTimeout)
			defer cancel()
			rep, err := rel.StepDue(ctx, *in.Step)
			observe(opts, "step", err, start)
			if err != nil {
				writeError(w, err)
				return
			}
			writeJSON(w, http.StatusOK, rep)
		default:
			opts.Observe("cloudevent", "ignored", time.Since(start))
			writeJSON(w, http.StatusAccepted, map[string]string{"ignored": "event type " + ev.Type() + " concerns nothing here"})
		}
	}
}

// detached is the context of work a request started: it keeps the request's values (its log
// attributes), but not its cancellation, so work under way is not lost when the sender hangs
// up; it ends at its own deadline.
func detached(r *http.Request, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(r.Context()), d)
}

func observe(opts Options, kind string, err error, start time.Time) {
	outcome := "ok"
	if err != nil {
		outcome = "error"
		if statusOf(err) < 500 {
			outcome = "rejected"
		}
	}
	opts.Observe(kind, outcome, time.Since(start))
}

func runTick(w http.ResponseWriter, r *http.Request, rel Releases, opts Options, log *slog.Logger, kind string, start time.Time) {
	until := time.Now().Add(opts.TickWindow)
	if dl, ok := r.Context().Deadline(); ok && dl.Add(-2*time.Second).Before(until) {
		until = dl.Add(-2 * time.Second)
	}
	// The tick keeps working for its window whether or not the sender waits for the answer.
	ctx, cancel := detached(r, time.Until(until)+opts.WorkTimeout)
	defer cancel()
	rep, err := rel.Tick(ctx, until)
	observe(opts, "tick", err, start)
	if err != nil {
		log.ErrorContext(r.Context(), "tick", "kind", kind, "err", err)
		writeError(w, err)
		return
	}
	log.InfoContext(r.Context(), "tick", "kind", kind, "stepped", len(rep.Stepped), "busy", rep.Busy, "failed", rep.Failed, "rounds", rep.Rounds)
	writeJSON(w, http.StatusOK, rep)
}

func runPushes(w http.ResponseWriter, r *http.Request, rel Releases, opts Options, log *slog.Logger, pushes []functions.ImagePush, start time.Time) {
	namespaces, err := pushNamespaces(r)
	if err != nil {
		opts.Observe("push", "invalid", time.Since(start))
		writeError(w, err)
		return
	}
	for i := range pushes {
		pushes[i].Namespaces = namespaces
	}
	if len(pushes) == 0 {
		opts.Observe("push", "ignored", time.Since(start))
		writeJSON(w, http.StatusOK, map[string]string{"ignored": "no tagged manifest push in this notification"})
		return
	}
	ctx, cancel := detached(r, opts.WorkTimeout)
	defer cancel()
	rep, err := rel.HandlePushes(ctx, pushes)
	observe(opts, "push", err, start)
	if err != nil {
		log.ErrorContext(r.Context(), "push", "err", err)
		writeError(w, err)
		return
	}
	log.InfoContext(r.Context(), "push", "pushes", len(pushes), "started", len(rep.Started))
	writeJSON(w, http.StatusOK, rep)
}

func runAlerts(w http.ResponseWriter, r *http.Request, rel Releases, opts Options, log *slog.Logger, n functions.AlertNotification, eventID string, start time.Time) {
	// The abort must land even if the sender hangs up: it is the one thing that cannot wait.
	ctx, cancel := detached(r, opts.WorkTimeout)
	defer cancel()
	rep, err := rel.HandleAlerts(ctx, n, eventID)
	observe(opts, "alert", err, start)
	if err != nil {
		log.ErrorContext(r.Context(), "alert", "err", err)
		writeError(w, err)
		return
	}
	log.InfoContext(r.Context(), "alert", "firing", rep.Firing, "resolved", rep.Resolved, "aborted", len(rep.Aborted))
	writeJSON(w, http.StatusOK, rep)
}

// pushNamespaces are the namespaces a push may release into: the URL's namespace parameters,
// repeated or comma-separated (a registry's webhook URL, or a Knative Trigger's subscriber
// uri, carries them).
func pushNamespaces(r *http.Request) ([]string, error) {
	var out []string
	for _, v := range r.URL.Query()["namespace"] {
		for _, ns := range strings.Split(v, ",") {
			ns = strings.TrimSpace(ns)
			if ns == "" {
				continue
			}
			if len(ns) > 63 || !dnsLabelRE.MatchString(ns) {
				return nil, invalid("namespace", "%s is not a namespace name", quote(ns))
			}
			out = append(out, ns)
		}
	}
	return out, nil
}

// handleRegistryWebhook is POST /webhooks/registry: a raw registry notification, its format
// detected from headers and body.
func handleRegistryWebhook(rel Releases, opts Options, log *slog.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		body, err := readBody(r)
		if err != nil {
			writeError(w, err)
			return
		}
		pushes, err := DecodeRegistryWebhook(r.Header, body)
		if err != nil {
			opts.Observe("push", "invalid", time.Since(start))
			writeError(w, err)
			return
		}
		runPushes(w, r, rel, opts, log, pushes, start)
	}
}

// handleAlertmanagerWebhook is POST /webhooks/alertmanager: Alertmanager's webhook, version 4.
func handleAlertmanagerWebhook(rel Releases, opts Options, log *slog.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		body, err := readBody(r)
		if err != nil {
			writeError(w, err)
			return
		}
		n, err := DecodeAlertmanager(body)
		if err != nil {
			opts.Observe("alert", "invalid", time.Since(start))
			writeError(w, err)
			return
		}
		runAlerts(w, r, rel, opts, log.With("groupKey", n.GroupKey), n, n.GroupKey, start)
	}
}
