package functions

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// AnnotationAbortOn narrows which alerts abort a canary: a comma-separated list of label
// requirements (k=v, k!=v, k) that a matching alert must also satisfy.
const AnnotationAbortOn = "siskin.dev/abort-on"

// alertNameLabels are the alert labels that can name a canary or its workload.
var alertNameLabels = []string{"canary", "deployment", "service", "destination_workload", "app"}

// AbortReport is what one alert notification did.
type AbortReport struct {
	Aborted []StepReport `json:"aborted"`
	// Ignored lists canaries an alert matched but that had no release to abort.
	Ignored  []string `json:"ignored,omitempty"`
	Resolved int      `json:"resolved"`
	Firing   int      `json:"firing"`
}

// AlertMatches is the matching rule: the alert's namespace label, one of the name labels equal
// to the canary's name or its target's, and the canary's abort-on selector if it has one.
func AlertMatches(c Canary, labels map[string]string) bool {
	if labels["namespace"] != c.Namespace {
		return false
	}
	named := slices.ContainsFunc(alertNameLabels, func(l string) bool {
		v := labels[l]
		return v != "" && (v == c.Name || v == c.Spec.TargetRef.Name)
	})
	if !named {
		return false
	}
	sel, ok := c.Annotations[AnnotationAbortOn]
	return !ok || selectorMatches(sel, labels)
}

func selectorMatches(sel string, labels map[string]string) bool {
	for _, req := range strings.Split(sel, ",") {
		req = strings.TrimSpace(req)
		switch {
		case req == "":
		case strings.Contains(req, "!="):
			k, v, _ := strings.Cut(req, "!=")
			if labels[strings.TrimSpace(k)] == strings.TrimSpace(v) {
				return false
			}
		case strings.Contains(req, "="):
			k, v, _ := strings.Cut(strings.Replace(req, "==", "=", 1), "=")
			if labels[strings.TrimSpace(k)] != strings.TrimSpace(v) {
				return false
			}
		default:
			if _, ok := labels[req]; !ok {
				return false
			}
		}
	}
	return true
}

// HandleAlerts aborts, within the call, every releasing canary that a firing alert names. A
// resolved alert is recorded but never undoes an abort; repeated notifications are no-ops.
func (s *Service) HandleAlerts(ctx context.Context, n AlertNotification, eventID string) (AbortReport, error) {
	var rep AbortReport
	byNamespace := map[string][]Alert{}
	for _, a := range n.Alerts {
		if !a.Firing() {
			rep.Resolved++
			s.log.InfoContext(ctx, "resolved alert recorded", "alertname", a.Labels["alertname"], "fingerprint", a.Fingerprint)
			continue
		}
		rep.Firing++
		if ns := a.Labels["namespace"]; ns != "" && (s.cfg.Namespace == "" || s.cfg.Namespace == ns) {
			byNamespace[ns] = append(byNamespace[ns], a)
		}
	}
	type target struct {
		c Canary
		a Alert
	}
	var targets []target
	seen := map[Key]bool{}
	for ns, alerts := range byNamespace {
		// An alert that names its canary needs one GET; only the others need a LIST of the
		// namespace (it costs tens of milliseconds with many canaries, on the abort's path).
		var unnamed []Alert
		for _, a := range alerts {
			k := Key{Namespace: ns, Name: a.Labels["canary"]}
			if k.Name == "" {
				unnamed = append(unnamed, a)
				continue
			}
			c, err := s.d.Workloads.GetCanary(ctx, k)
			switch {
			case errors.Is(err, ErrNotFound):
				unnamed = append(unnamed, a) // "canary" may name a workload: match by labels
			case err != nil:
				return rep, fmt.Errorf("get canary %s: %w", k, err)
			case AlertMatches(c, a.Labels) && !seen[k]:
				seen[k] = true
				targets = append(targets, target{c, a})
			}
		}
		if len(unnamed) == 0 {
			continue
		}
		canaries, err := s.d.Workloads.ListCanaries(ctx, ns)
		if err != nil {
			return rep, fmt.Errorf("list canaries in %s: %w", ns, err)
		}
		for _, c := range canaries {
			for _, a := range unnamed {
				if AlertMatches(c, a.Labels) && !seen[c.Key] {
					seen[c.Key] = true
					targets = append(targets, target{c, a})
					break
				}
			}
		}
	}
	var (
		mu   sync.Mutex
		errs []error
	)
	panicked := forEach(targets, 0, func(t target) {
		r, aborted, err := s.abort(ctx, t.c.Key, &t.c, alertReason(t.a), &Trigger{Kind: "alert", EventID: eventID,
			Source: t.a.GeneratorURL, Detail: t.a.Labels["alertname"] + " " + t.a.Fingerprint, At: s.cfg.Now()})
		mu.Lock()
		defer mu.Unlock()
		switch {
		case errors.Is(err, ErrAlreadyPromoted):
			// Alertmanager cannot act on a refusal: acknowledge it, with the reason.
			rep.Ignored = append(rep.Ignored, t.c.Key.String()+" ("+r.Message+")")
		case err != nil:
			errs = append(errs, err)
		case aborted:
			rep.Aborted = append(rep.Aborted, r)
		default:
			rep.Ignored = append(rep.Ignored, t.c.Key.String()+" ("+string(r.From)+")")
		}
	})
	return rep, errors.Join(append(errs, panicked)...)
}

func alertReason(a Alert) string {
	r := fmt.Sprintf("alert %s (fingerprint %s)", a.Labels["alertname"], a.Fingerprint)
	if a.GeneratorURL != "" {
		r += " " + a.GeneratorURL
	}
	return r
}

// Abort fails a canary's release now (manual gate).
func (s *Service) Abort(ctx context.Context, k Key, reason string) (StepReport, bool, error) {
	return s.abort(ctx, k, nil, reason, &Trigger{Kind: "manual", Detail: reason, At: s.cfg.Now()})
}

// abort pre-empts any step in flight: it seizes the canary's lease, so the step in flight
// finds it lost at its next check and writes nothing more, acts at once and saves (a step that
// had already acted loses its save and re-asserts the aborted state).
//
// read is the Canary when the caller just read it, for the first attempt; nil reads it.
func (s *Service) abort(ctx context.Context, k Key, read *Canary, reason string, trig *Trigger) (StepReport, bool, error) {
	start := s.cfg.Now()
	var (
		lease    Lease
		leaseErr error
		seized   sync.WaitGroup
	)
	seized.Go(func() { lease, leaseErr = s.d.Store.Seize(ctx, k, s.cfg.LeaseTTL) })
	defer func() {
		seized.Wait()
		if lease == nil {
			return
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if err := lease.Release(rctx); err != nil {
			s.log.WarnContext(ctx, "release lease", "canary", k.String(), "err", err)
		}
	}()
	for attempt := 0; ; attempt++ {
		var (
			c           Canary
			st          State
			err         error
			live        LiveRoutes
			primaryRev  string
			primaryErr  error
			wg          sync.WaitGroup
			revisions   PrimaryRevisions
			hasRevision bool
		)
		revisions, hasRevision = s.d.Workloads.(PrimaryRevisions)
		if read != nil && attempt == 0 {
			// The alert named the canary: its routing objects and its primary are read while
			// its state loads.
			c = *read
			if rr, ok := s.routerOf(c).(RoutesReader); ok {
				wg.Go(func() { live = rr.ReadRoutes(ctx, c, false, st.RoutesVersion) })
			}
			if hasRevision {
				wg.Go(func() { primaryRev, primaryErr = revisions.PrimaryRevision(ctx, c) })
			}
			st, err = s.loadState(ctx, c)
			wg.Wait()
		} else {
			c, st, err = s.load(ctx, k)
			if err == nil && hasRevision {
				primaryRev, primaryErr = revisions.PrimaryRevision(ctx, c)
			}
		}
		if err == nil && primaryErr != nil {
			err = fmt.Errorf("abort %s: read the primary's revision: %w", k, primaryErr)
		}
		if err != nil {
			return StepReport{Key: k}, false, err
		}
		seized.Wait()
		if leaseErr != nil {
			return StepReport{Key: k}, false, fmt.Errorf("abort %s: %w", k, leaseErr)
		}
		rep := StepReport{Key: k, From: st.Phase, To: st.Phase, Routing: st.Routing}
		out, verdict, why := AbortRelease(c, st, primaryRev, reason, trig, s.cfg.Now())
		assignRelease(st, &out.State, out.State.LastStepAt)
		switch verdict {
		case AbortIgnored:
			rep.Message = why
			if st.Phase == PhaseFailed && c.Status.Phase != PhaseFailed {
				// An earlier abort saved, but could not write the status (and was retried).
				if err := s.d.Workloads.WriteStatus(ctx, c, st.Status()); err != nil {
					return rep, false, fmt.Errorf("abort %s: record it on the Canary's status: %w", k, err)
				}
			}
			return rep, false, nil
		case AbortRefused:
			rep.Message = why
			s.recordEvents(ctx, c, []Event{{Warning: true, Message: "Abort refused: " + why}})
			s.log.WarnContext(ctx, "abort refused", "canary", k.String(), "namespace", k.Namespace, "reason", reason, "why", why)
			return rep, false, fmt.Errorf("abort %s: %w: %s", k, ErrAlreadyPromoted, why)
		}
		if st.Phase == PhaseWaiting {
			// The revision that was waiting is the one aborted: record it, or the next step
			// would start it again.
			work, err := s.d.Workloads.ObserveWorkloads(ctx, c)
			if err != nil {
				return rep, false, fmt.Errorf("abort %s: observe workloads: %w", k, err)
			}
			recordRejectedRevision(&out.State, work)
		}
		// Traffic back to the primary and the state Failed are the abort, acted and saved
		// together; the Kubernetes Events say so alongside.
		var (
			actErr, svErr error
			saved         State
		)
		wg.Go(func() { actErr = s.act(ctx, c, out, live, nil) })
		wg.Go(func() { saved, svErr = s.d.Store.SaveReplicated(ctx, k, out.State, lease) })
		wg.Go(func() { s.recordEvents(ctx, c, out.Events) })
		wg.Wait()
		if errors.Is(svErr, ErrConflict) && attempt < 3 {
			continue
		}
		if err := errors.Join(actErr, svErr); err != nil {
			return rep, false, fmt.Errorf("abort %s: %w", k, err)
		}
		rep.To, rep.Routing, rep.Message = saved.Phase, saved.Routing, saved.Message
		rep.Duration = s.cfg.Now().Sub(start)
		s.d.Observer.Aborted(c, rep.Duration)
		// The status says Failed only once it is true: after the act and the save. It is also
		// where the abort survives a Redis failover that loses the save (AbortLostByRedis), so
		// the abort is acknowledged only once it is written.
		var statusErr, schedErr error
		wg.Go(func() { statusErr = s.d.Workloads.WriteStatus(ctx, c, saved.Status()) })
		wg.Go(func() { schedErr = s.scheduleSaved(ctx, k, saved) })
		wg.Go(func() {
			s.remember(ctx, k, saved.Release, NewStepRecord("abort", c, st, saved, out, nil, nil, saved.LastStepAt))
		})
		wg.Wait()
		if statusErr != nil {
			return rep, false, fmt.Errorf("abort %s: record it on the Canary's status: %w", k, statusErr)
		}
		// Alerts, post-rollout hooks and webhooks may take their own timeouts: the abort does
		// not wait for them.
		s.inBackground(ctx, func(ctx context.Context) { s.notify(ctx, c, st, saved, out) })
		s.log.WarnContext(ctx, "aborted", "canary", k.String(), "namespace", k.Namespace, "reason", reason, "took", rep.Duration)
		return rep, true, schedErr
	}
}

// RequestPromotion asks the next step to promote at once (manual gate), and runs it now.
func (s *Service) RequestPromotion(ctx context.Context, k Key) (StepReport, error) {
	return s.mutateAndAdvance(ctx, k, func(st *State) (err error) { *st, err = PromotionGate(k, *st); return })
}

// Resume retries a failed release of the same revision, or continues a canary that was
// waiting for approval (ResumeGate).
func (s *Service) Resume(ctx context.Context, k Key) (StepReport, error) {
	return s.mutateAndAdvance(ctx, k, func(st *State) (err error) { *st, err = ResumeGate(k, *st); return })
}

// mutateAndAdvance changes the state and steps the canary at once, under one lease.
func (s *Service) mutateAndAdvance(ctx context.Context, k Key, mutate func(*State) error) (StepReport, error) {
	return s.claimAndStep(ctx, k, stepGate{kind: gateNone}, nil, mutate)
}
