package functions

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Emitter publishes a canary's phase transitions (package analysis, to K_SINK).
type Emitter interface {
	Transitioned(ctx context.Context, c Canary, before, after State)
	// Failed publishes a failure that kept the phase (Step.Failure) as dev.siskin.canary.failed.
	Failed(ctx context.Context, c Canary, st State, cause string)
}

// EventSink receives every Kubernetes Event a step records, for the canary's `event` webhooks
// (package analysis). Optional.
type EventSink interface {
	SendEvent(ctx context.Context, c Canary, e Event)
}

// Deps are the adapters a Service drives.
type Deps struct {
	Store     Store
	Workloads Workloads
	// Routers are the traffic providers by spec.provider.
	Routers Routers
	Metrics Metrics
	Hooks   Hooks
	Alerts  Alerter
	Events  EventSink
	// Registry and Images serve push-started releases; without them pushes are refused.
	Registry Registry
	Images   Images
	// TargetFinalizer serves revertOnDeletion, with the canary's Router; without it a deleted
	// canary is simply forgotten.
	TargetFinalizer TargetFinalizer
	// Emitter publishes phase transitions (CloudEvents to K_SINK); optional.
	Emitter Emitter
	// EventLog lists a canary's Events for the API; optional.
	EventLog EventLog
	// Observer is told about steps and aborts, for metrics; nil means nobody.
	Observer Observer
	// Dispatcher, when set, sends each due step as an event of its own instead of the tick
	// stepping it.
	Dispatcher StepDispatcher
	// History keeps every step's outcome per release; optional.
	History History
}

// Config tunes a Service.
type Config struct {
	// Namespace limits Siskin to one namespace; empty means all.
	Namespace string
	// MinInterval is the analysis interval floor (Flagger's 10 s unless lowered for tests).
	MinInterval time.Duration
	// LeaseTTL bounds how long a crashed or stalled step can hold a canary; a live step
	// renews its lease every third of it.
	LeaseTTL time.Duration
	// StepTimeout bounds one step, webhook gates included.
	StepTimeout time.Duration
	// Resync is how often a canary with no release in flight is stepped anyway, to catch what
	// no event reported (a missed event, a change outside the watched objects); at least its
	// interval. It is also how often a step re-asserts the generated objects no weight depends
	// on (State.ReassertDue). Zero: its interval and every step, as Flagger checks every
	// canary and its objects at every interval.
	Resync time.Duration
	// PushAnyNamespace lets a push release canaries in every namespace whose targets run the
	// image. Off (the default), a push releases only in the namespaces it names (the webhook
	// URL's ?namespace=), or in Namespace for a namespace-scoped Siskin: one team's push of a
	// shared base image must not release another team's canaries.
	PushAnyNamespace bool
	// DispatchWindow is how long a dispatcher woken by a step keeps dispatching (the tick
	// window); zero wakes none, and releases between pings wait for the next ping.
	DispatchWindow time.Duration
	// DispatchPoll caps how long a dispatcher waits before it looks at the schedule again
	// (a second when zero): steps scheduled meanwhile by events are seen within it.
	DispatchPoll time.Duration
	// Parallelism bounds the canaries a tick steps at once.
	Parallelism int
	// DueBatch is how many due canaries a tick claims per round.
	DueBatch int
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// Sleep waits for d or until ctx is done (a real sleep when nil); simulations replace both.
	Sleep func(ctx context.Context, d time.Duration)
	// AfterAct, when set, runs between acting and saving; an error abandons the step there.
	// Tests use it to crash between act and save.
	AfterAct func(Key) error
}

func (c Config) withDefaults() Config {
	if c.MinInterval <= 0 {
		c.MinInterval = MinAnalysisInterval
	}
	if c.LeaseTTL <= 0 {
		c.LeaseTTL = 30 * time.Second
	}
	if c.StepTimeout <= 0 {
		c.StepTimeout = time.Minute
	}
	if c.Parallelism <= 0 {
		c.Parallelism = 16
	}
	if c.DueBatch <= 0 {
		c.DueBatch = 256
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.DispatchPoll <= 0 {
		c.DispatchPoll = time.Second
	}
	if c.Sleep == nil {
		c.Sleep = func(ctx context.Context, d time.Duration) {
			select {
			case <-ctx.Done():
			case <-time.After(d):
			}
		}
	}
	return c
}

// Service holds the use cases the event functions call.
type Service struct {
	d   Deps
	cfg Config
	log *slog.Logger
	bg  sync.WaitGroup
	// inflight bounds the step events a dispatcher has sent and not yet heard back from.
	inflight chan struct{}
	// failing counts, per canary, the steps this process saw fail in a row, so that a step
	// that keeps failing (an overloaded apiserver) backs off instead of retrying in a storm.
	failing sync.Map
}

func New(d Deps, cfg Config, log *slog.Logger) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if d.Observer == nil {
		d.Observer = nopObserver{}
	}
	cfg = cfg.withDefaults()
	return &Service{d: d, cfg: cfg, log: log, inflight: make(chan struct{}, 4*cfg.Parallelism)}
}

// StepReport is what one step did, for logs, metrics and the HTTP reply.
type StepReport struct {
	Key      Key           `json:"key"`
	From     Phase         `json:"from"`
	To       Phase         `json:"to"`
	Routing  Routing       `json:"routing"`
	Message  string        `json:"message,omitempty"`
	Skipped  string        `json:"skipped,omitempty"`
	Duration time.Duration `json:"duration"`
}

// Advance runs one step of one canary now, whether it is due or not (manual gates). A
// concurrent step of the same canary makes it return ErrBusy.
func (s *Service) Advance(ctx context.Context, k Key) (StepReport, error) {
	return s.claimAndStep(ctx, k, stepGate{kind: gateNone}, nil, nil)
}

// stepGate says when a claimed canary is stepped.
type stepGate struct {
	kind gateKind
	// cause is what changed, for gateChanged.
	cause changeCause
}

type gateKind int

const (
	// gateNone steps at once (manual gates, the first step after a push).
	gateNone gateKind = iota
	// gateDue steps only once the saved state's next step is due (ticks, step events).
	gateDue
	// gateChanged is an object event's: a canary that is due, not initialised yet, or whose
	// target carries a revision the state has not seen is stepped at once (a new release
	// starts, or the analysis restarts); a generated object edited by hand is put back from the
	// saved state without a step; anything else does nothing.
	gateChanged
)

// claimAndStep claims the canary and steps it under the lease. read, when not nil, is the
// Canary as the caller read it a moment ago (a push has just listed it): the step then reads
// only its state. mutate, when not nil, changes the state first and saves it under the same
// lease (the manual gates).
func (s *Service) claimAndStep(ctx context.Context, k Key, gate stepGate, read *Canary, mutate func(*State) error) (StepReport, error) {
	start := s.cfg.Now()
	lease, err := s.d.Store.Claim(ctx, k, s.cfg.LeaseTTL)
	if err != nil {
		return StepReport{Key: k, Skipped: "busy"}, fmt.Errorf("claim canary %s: %w", k, err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StepTimeout)
	defer cancel()
	ctx, stop := s.keepLease(ctx, k, lease)
	defer func() {
		stop()
		// Release on a fresh context: the step's may be cancelled, and a lease left behind
		// only delays the next step by its TTL.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if err := lease.Release(rctx); err != nil {
			s.log.WarnContext(ctx, "release lease", "canary", k.String(), "err", err)
		}
	}()
	var (
		c  Canary
		st State
	)
	if read != nil {
		c = *read
		st, err = s.loadState(ctx, c)
	} else {
		c, st, err = s.load(ctx, k)
	}
	if errors.Is(err, ErrNotFound) {
		s.log.InfoContext(ctx, "canary gone, forgetting its state", "canary", k.String(), "namespace", k.Namespace)
		return StepReport{Key: k, Skipped: "canary deleted"}, s.d.Store.Delete(ctx, k)
	}
	if err != nil {
		return StepReport{Key: k}, err
	}
	now := s.cfg.Now()
	if gate.kind == gateDue && !st.Due(now) {
		// Stepped by someone else since the schedule said it was due, or the schedule is
		// behind the saved state: the state is the truth, the schedule follows it.
		return StepReport{Key: k, From: st.Phase, Skipped: "not due"}, s.d.Store.Schedule(ctx, k, st.NextStepAt, st.Phase.Releasing())
	}
	if mutate != nil {
		if err := mutate(&st); err != nil {
			return StepReport{Key: k, From: st.Phase}, err
		}
		if st, err = s.d.Store.Save(ctx, k, st, lease); err != nil {
			return StepReport{Key: k, From: st.Phase}, fmt.Errorf("save state of %s: %w", k, err)
		}
	}
	var late time.Duration
	if gate.kind == gateDue && !st.NextStepAt.IsZero() {
		late = now.Sub(st.NextStepAt)
	}
	h := held{lease: lease, gate: gate, late: late, kind: "step"}
	if mutate != nil {
		h.kind = "gate" // a manual promote or resume, and the step it runs at once
	}
	rep, err := s.step(ctx, c, st, h)
	rep.Duration = s.cfg.Now().Sub(start)
	return rep, err
}

// held is what a step knows about its claim.
type held struct {
	lease Lease
	gate  stepGate
	late  time.Duration
	// kind names the step in the history: step, or gate.
	kind string
}

// keepLease renews the lease while the step runs, so a slow webhook gate does not outlive it.
// When the lease is lost (seized by an abort, or expired while this process stalled or could
// not reach Redis), the returned context is cancelled with ErrLeaseLost as its cause: the step
// stops waiting, and the holder check before its writes fails.
func (s *Service) keepLease(ctx context.Context, k Key, l Lease) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	go func() {
		defer func() {
			if r := recover(); r != nil {
				cancel(fmt.Errorf("%w: lease keeper of %s panicked: %v", ErrLeaseLost, k, r))
			}
		}()
		tick := time.NewTicker(max(s.cfg.LeaseTTL/3, time.Millisecond))
		defer tick.Stop()
		renewed := time.Now()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			err := l.Renew(ctx, s.cfg.LeaseTTL)
			switch {
			case err == nil:
				renewed = time.Now()
			case errors.Is(err, ErrLeaseLost):
				cancel(fmt.Errorf("canary %s: %w", k, err))
				return
			case time.Since(renewed) > s.cfg.LeaseTTL*2/3:
				// Redis has not answered for most of the ttl: the lease may be gone already.
				cancel(fmt.Errorf("canary %s: %w: cannot renew it: %v", k, ErrLeaseLost, err))
				return
			}
		}
	}()
	return ctx, func() { close(done); cancel(nil) }
}

// checkHolder renews the lease before a batch of writes: a step that lost it gives up there.
func (s *Service) checkHolder(ctx context.Context, k Key, l Lease) error {
	if cause := context.Cause(ctx); errors.Is(cause, ErrLeaseLost) {
		return fmt.Errorf("step of %s gave up before writing: %w", k, cause)
	}
	if err := l.Renew(ctx, s.cfg.LeaseTTL); err != nil {
		if cause := context.Cause(ctx); errors.Is(cause, ErrLeaseLost) {
			err = cause // the keeper found out first, and cancelled the renewal
		}
		return fmt.Errorf("step of %s gave up before writing: %w", k, err)
	}
	return nil
}

// load reads the Canary and its state concurrently; lost state is rebuilt from the cluster.
func (s *Service) load(ctx context.Context, k Key) (Canary, State, error) {
	var (
		c           Canary
		st          State
		cErr, stErr error
		wg          sync.WaitGroup
	)
	wg.Go(func() { c, cErr = s.d.Workloads.GetCanary(ctx, k) })
	wg.Go(func() { st, stErr = s.d.Store.Load(ctx, k) })
	wg.Wait()
	if cErr != nil {
		return c, st, fmt.Errorf("get canary %s: %w", k, cErr)
	}
	st, err := s.orRebuilt(ctx, c, st, stErr)
	return c, st, err
}

// loadState reads the state of a Canary already read.
func (s *Service) loadState(ctx context.Context, c Canary) (State, error) {
	st, err := s.d.Store.Load(ctx, c.Key)
	return s.orRebuilt(ctx, c, st, err)
}

// orRebuilt passes a loaded state through, or rebuilds a lost one from the Canary's status and
// the live VirtualService. A state that lost an abort (a Redis failover) is rebuilt from the
// status too, keeping its version for the compare-and-set.
func (s *Service) orRebuilt(ctx context.Context, c Canary, st State, loadErr error) (State, error) {
	switch {
	case loadErr == nil && AbortLostByRedis(st, c.Status):
		s.log.WarnContext(ctx, "Redis lost an abort (a failover?): the Canary's status wins", "canary", c.Key.String(),
			"namespace", c.Key.Namespace, "redisPhase", st.Phase, "statusPhase", c.Status.Phase, "abort", c.Status.Trigger.Detail)
		rebuilt := RebuildState(c.Status, Routing{}, false)
		rebuilt.Version, rebuilt.Steps, rebuilt.NextStepAt = st.Version, st.Steps, st.NextStepAt
		return rebuilt, nil
	case loadErr == nil:
		return st, nil
	case !errors.Is(loadErr, ErrNotFound):
		return st, fmt.Errorf("load state of %s: %w", c.Key, loadErr)
	}
	var (
		live  Routing
		found bool
	)
	if c.Status.Phase != "" {
		var err error
		if live, found, err = s.routerOf(c).ObserveRoutes(ctx, c); err != nil {
			return st, fmt.Errorf("read routes of %s to rebuild its state: %w", c.Key, err)
		}
	}
	st = RebuildState(c.Status, live, found)
	if ForeignRevision(st.LastAppliedSpec) {
		st = s.adoptFlaggersRevision(ctx, c, st)
	}
	s.log.InfoContext(ctx, "rebuilt state from the cluster", "canary", c.Key.String(), "namespace", c.Key.Namespace, "phase", st.Phase, "weight", st.Routing.Canary)
	if !st.Phase.Releasing() {
		return st, nil
	}
	// When the last step ran was lost with the state: a release waits one whole interval
	// from now rather than risk a step earlier than its interval. The rebuilt state is saved,
	// so that the wait is not rebuilt again at the next tick.
	st.NextStepAt = s.cfg.Now().Add(c.Spec.Interval(s.cfg.MinInterval))
	saved, err := s.d.Store.Save(ctx, c.Key, st, nil)
	if errors.Is(err, ErrConflict) {
		// Another step rebuilt it first: its state is the one.
		return s.d.Store.Load(ctx, c.Key)
	}
	if err != nil {
		return st, fmt.Errorf("save the rebuilt state of %s: %w", c.Key, err)
	}
	if err := s.d.Store.Schedule(ctx, c.Key, saved.NextStepAt, true); err != nil {
		return saved, fmt.Errorf("schedule the rebuilt state of %s: %w", c.Key, err)
	}
	return saved, nil
}

// ForeignRevision reports whether a status's lastAppliedSpec was written by another controller:
// Siskin's template hashes are 16 hex digits, Flagger's its FNV-32a in another alphabet.
func ForeignRevision(hash string) bool {
	if hash == "" {
		return false
	}
	if len(hash) != 16 {
		return true
	}
	for _, r := range hash {
		if (r < '0' || r > '9') && (r < 'a' || r > 'f') {
			return true
		}
	}
	return false
}

// adoptFlaggersRevision takes over a Canary whose status Flagger wrote: the target as it is now
// is taken as the revision Flagger applied (and promoted, when Flagger had promoted what it
// applied), so the takeover moves no traffic and restarts no analysis. A target changed after
// Flagger last looked is then analysed from where Flagger was, not from the start.
func (s *Service) adoptFlaggersRevision(ctx context.Context, c Canary, st State) State {
	work, err := s.d.Workloads.ObserveWorkloads(ctx, c)
	if err != nil || !work.TargetFound {
		return st // the step observes again; the release then restarts, as before
	}
	promoted := st.LastPromotedSpec == st.LastAppliedSpec
	st.LastAppliedSpec, st.TrackedConfigs = work.TemplateHash, work.TrackedConfigs
	switch {
	case promoted:
		st.LastPromotedSpec = work.TemplateHash
	case ForeignRevision(st.LastPromotedSpec):
		st.LastPromotedSpec = ""
	}
	s.log.InfoContext(ctx, "took over a Canary from Flagger: its target is the applied revision", "canary", c.Key.String(), "namespace", c.Key.Namespace, "revision", work.TemplateHash)
	return st
}

// step observes, decides, acts and saves one canary under its lease, in named stages with
// early returns: before → observe → decide and act → save → after. It returns only after the
// state is saved.
func (s *Service) step(ctx context.Context, c Canary, st State, h held) (StepReport, error) {
	now := s.cfg.Now()
	reported := st.SpecError // beforeStep clears it for a spec that validates
	if rep, done, err := s.beforeStep(ctx, c, &st, h, now); done {
		return rep, err
	}
	rep := StepReport{Key: c.Key, From: st.Phase}
	due := h.gate.kind != gateChanged || st.Due(now) || st.Phase == "" || st.Phase == PhaseInitializing
	if !due {
		switch h.gate.cause {
		case causeCanary, causePrimary:
			rep.To, rep.Skipped = st.Phase, "not due"
			return rep, nil
		case causeRoutes, causeServices:
			return s.restore(ctx, c, st, h)
		}
	}
	in, live, err := s.observe(ctx, c, st, due, now)
	if err != nil {
		return rep, err
	}
	if !due && !st.SeesNewRevision(in.Work) {
		rep.To, rep.Skipped = st.Phase, "not due, and no new revision"
		return rep, nil
	}
	// A new revision: the release (or its restart) starts now.
	out, err := s.decideActAgainIfChanged(ctx, c, &in, live, h.lease)
	if errors.Is(err, ErrInvalid) && !errors.Is(err, ErrLeaseLost) {
		// The cluster refused what the Canary asks for (a CRD's schema refused the route, or
		// the route's CRD is not installed): it fails the same way until the Canary or the
		// cluster changes, so it is the Canary's problem, on its status, not a retry.
		st.SpecError = reported
		return s.reportInvalid(ctx, c, st, err.Error(), h.lease)
	}
	if err != nil {
		return rep, err
	}
	saved, err := s.saveStep(ctx, c, st, &out, h, now)
	if err != nil {
		return rep, err
	}
	if err := s.afterStep(ctx, c, st, saved, out, in, h, now); err != nil {
		return rep, err
	}
	rep.To, rep.Routing, rep.Message = saved.Phase, saved.Routing, saved.Message
	return rep, nil
}

// beforeStep runs the decisions that need no observation: the deletion flow, the finalizer,
// suspend and an invalid spec. done says the step ended there.
func (s *Service) beforeStep(ctx context.Context, c Canary, st *State, h held, now time.Time) (StepReport, bool, error) {
	k := c.Key
	rep := StepReport{Key: k, From: st.Phase}
	if c.Deleting {
		rep, err := s.finalize(ctx, c, *st, h.lease)
		return rep, true, err
	}
	if err := s.syncFinalizer(ctx, c); err != nil {
		return rep, true, err
	}
	if Suspended(c) {
		rep.Skipped = "suspended"
		s.log.InfoContext(ctx, "skipping canary run as object is suspended", "canary", k.String(), "namespace", k.Namespace)
		return rep, true, s.d.Store.Schedule(ctx, k, now.Add(c.Spec.Interval(s.cfg.MinInterval)), false)
	}
	if problems := Validate(c, s.d.Routers); len(problems) > 0 {
		rep, err := s.reportInvalid(ctx, c, *st, strings.Join(problems, "; "), h.lease)
		return rep, true, err
	}
	st.SpecError = ""
	return rep, false, nil
}

// observe reads, concurrently, what the decision needs: the workloads, the routing objects
// (when the router reads ahead) and the metrics (when the step will want them; unused if the
// canary turns out not to be ready). It writes nothing.
func (s *Service) observe(ctx context.Context, c Canary, st State, due bool, now time.Time) (StepInput, LiveRoutes, error) {
	var (
		prefetch   []MetricResult
		prefetched bool
		live       LiveRoutes
		wg         sync.WaitGroup
	)
	if due && st.WillQueryMetrics(c.Spec) {
		prefetched = true
		wg.Go(func() { prefetch = s.d.Metrics.QueryMetrics(ctx, c) })
	}
	// So do the routing objects, which every step past initialisation checks.
	reassert := st.ReassertDue(c, now, s.cfg.Resync)
	if rr, ok := s.routerOf(c).(RoutesReader); ok && st.WillRoute() {
		wg.Go(func() { live = rr.ReadRoutes(ctx, c, reassert, st.RoutesVersion) })
	}
	work, err := s.d.Workloads.ObserveWorkloads(ctx, c)
	wg.Wait()
	if err != nil {
		return StepInput{}, nil, fmt.Errorf("observe workloads of %s: %w", c.Key, err)
	}
	in := StepInput{Canary: c, State: st, Work: work, Now: now, MinInterval: s.cfg.MinInterval,
		NewCookieValue: randomLetters(10), NewPrimaryCookieValue: randomLetters(10), Reassert: reassert}
	if prefetched {
		in.Metrics, in.MetricsDone = prefetch, true
	}
	return in, live, nil
}

// decideActAgainIfChanged is decideAndAct, once more when the target changed between the
// observation and the promotion, which was then not written: the revision the analysis
// approved is gone. The machine restarts the analysis on the new revision, as Flagger does.
func (s *Service) decideActAgainIfChanged(ctx context.Context, c Canary, in *StepInput, live LiveRoutes, lease Lease) (Step, error) {
	out, err := s.decideAndAct(ctx, c, in, live, lease)
	if !errors.Is(err, ErrRevisionChanged) {
		return out, err
	}
	s.log.InfoContext(ctx, "target changed before the promotion, observing again", "canary", c.Key.String(), "namespace", c.Key.Namespace, "err", err)
	if in.Work, err = s.d.Workloads.ObserveWorkloads(ctx, c); err != nil {
		return out, fmt.Errorf("observe workloads of %s: %w", c.Key, err)
	}
	in.Hooks, in.Metrics, in.MetricsDone = nil, nil, false
	return s.decideAndAct(ctx, c, in, live, lease)
}

// saveStep completes the decided state (the resync at rest, the release it belongs to, the
// routes' version) and saves it under the lease. A lost race re-asserts the winner's state.
func (s *Service) saveStep(ctx context.Context, c Canary, before State, out *Step, h held, now time.Time) (State, error) {
	k := c.Key
	if p := out.State.Phase; s.cfg.Resync > out.Next && p != "" && p != PhaseInitializing && !p.Releasing() {
		// At rest, events bring the changes: the interval becomes the slow safety resync.
		out.Next = s.cfg.Resync
		out.State.NextStepAt = now.Add(out.Next)
	}
	assignRelease(before, &out.State, now)
	if rv, ok := s.routerOf(c).(RouteVersions); ok {
		out.State.RoutesVersion = rv.RoutesVersion(c)
	}
	if s.cfg.AfterAct != nil {
		if err := s.cfg.AfterAct(k); err != nil {
			return State{}, fmt.Errorf("step of %s abandoned after acting: %w", k, err)
		}
	}
	saved, err := s.d.Store.Save(ctx, k, out.State, h.lease)
	if errors.Is(err, ErrConflict) || errors.Is(err, ErrLeaseLost) {
		// Someone else (an abort, most likely) saved first or took the canary. What we did
		// may contradict it: re-assert what the winning state says, then report it.
		s.repair(ctx, c)
	}
	if err != nil {
		return State{}, fmt.Errorf("save state of %s: %w", k, err)
	}
	return saved, nil
}

// afterStep records the step in the history alongside what follows every saved step (after).
func (s *Service) afterStep(ctx context.Context, c Canary, before, saved State, out Step, in StepInput, h held, now time.Time) error {
	var remembered sync.WaitGroup
	if worthRecording(before, saved) {
		remembered.Go(func() {
			s.remember(ctx, c.Key, saved.Release, NewStepRecord(h.kind, c, before, saved, out, in.Metrics, in.Hooks, now))
		})
	}
	err := s.after(ctx, c, before, saved, out)
	remembered.Wait()
	if err != nil {
		return err
	}
	s.d.Observer.Stepped(c, before, saved, in.Metrics, s.cfg.Now().Sub(now), h.late)
	s.log.InfoContext(ctx, "step", "canary", c.Key.String(), "namespace", c.Key.Namespace, "from", before.Phase, "to", saved.Phase,
		"weight", saved.Routing.Canary, "failedChecks", saved.FailedChecks, "message", saved.Message)
	return nil
}

// restore puts a generated object edited by hand back to what the saved state says, without a
// step: the routes (VirtualService, DestinationRules) or the Services.
func (s *Service) restore(ctx context.Context, c Canary, st State, h held) (StepReport, error) {
	rep := StepReport{Key: c.Key, From: st.Phase, To: st.Phase, Routing: st.Routing, Skipped: "not due; restored"}
	if !st.WillRoute() {
		rep.Skipped = "not due"
		return rep, nil
	}
	if err := s.checkHolder(ctx, c.Key, h.lease); err != nil {
		return rep, err
	}
	var err error
	switch h.gate.cause {
	case causeRoutes:
		// A VirtualService that an event carried as planned never gets here (settled).
		err = s.routerOf(c).ApplyRoutes(ctx, c, routePlan(st))
	case causeServices:
		err = s.d.Workloads.ApplyWorkloads(ctx, c, WorkloadPlan{EnsureServices: true, EnsureApex: true})
	}
	if err != nil {
		return rep, fmt.Errorf("restore %s: %w", c.Key, err)
	}
	s.log.InfoContext(ctx, "restored after a change made outside Siskin", "canary", c.Key.String(), "namespace", c.Key.Namespace)
	return rep, nil
}

// decideAndAct runs the machine, answering what it asks, and acts on its decision once the
// lease is confirmed.
func (s *Service) decideAndAct(ctx context.Context, c Canary, in *StepInput, live LiveRoutes, lease Lease) (Step, error) {
	out := Decide(*in)
	for round := 0; !out.Need.Empty(); round++ {
		if round > 8 {
			return out, fmt.Errorf("step of %s: the machine kept asking for %v", c.Key, out.Need)
		}
		s.answer(ctx, c, in.State, out.Need, in)
		out = Decide(*in)
	}
	if err := s.checkHolder(ctx, c.Key, lease); err != nil {
		return out, err
	}
	if err := s.act(ctx, c, out, live, lease); err != nil {
		if errors.Is(err, ErrLeaseLost) {
			s.repair(ctx, c)
		}
		return out, err
	}
	return out, nil
}

func (s *Service) reportInvalid(ctx context.Context, c Canary, st State, problem string, lease Lease) (StepReport, error) {
	rep := StepReport{Key: c.Key, From: st.Phase, To: st.Phase, Message: problem}
	out := InvalidSpec(st, problem, s.cfg.Now(), c.Spec.Interval(s.cfg.MinInterval))
	saved, err := s.d.Store.Save(ctx, c.Key, out.State, lease)
	if err != nil {
		return rep, fmt.Errorf("save state of %s: %w", c.Key, err)
	}
	return rep, s.after(ctx, c, st, saved, out)
}

// answer fills the step input with what the machine asked for; independent calls run
// concurrently.
func (s *Service) answer(ctx context.Context, c Canary, st State, n Need, in *StepInput) {
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	if in.Hooks == nil {
		in.Hooks = map[HookType][]HookResult{}
	}
	call := HookCall{Phase: PhaseProgressing, Checksum: Checksum(st)}
	for _, t := range n.Hooks {
		hc := call
		if t == HookConfirmRollout || t == HookRollback {
			hc.Phase = st.Phase
		}
		wg.Go(func() {
			r := s.d.Hooks.CallHooks(ctx, c, c.Spec.Hooks(t), hc, t != HookRollback)
			mu.Lock()
			in.Hooks[t] = r
			mu.Unlock()
		})
	}
	if n.Metrics {
		wg.Go(func() {
			r := s.d.Metrics.QueryMetrics(ctx, c)
			mu.Lock()
			in.Metrics, in.MetricsDone = r, true
			mu.Unlock()
		})
	}
	wg.Wait()
}

// act applies a decision. Traffic moves before the canary is scaled down. live, when not nil,
// are the routing objects as this step read them. lease, when not nil, is checked again
// before the second batch of writes.
func (s *Service) act(ctx context.Context, c Canary, out Step, live LiveRoutes, lease Lease) error {
	var (
		wg             sync.WaitGroup
		routeErr, wErr error
	)
	plan := out.Workloads
	if plan.Promote {
		plan.PromoteRevision = out.State.AppliedRevision()
	}
	scaleDown := plan.ScaleTarget == ScaleToZero
	if scaleDown {
		plan.ScaleTarget = ScaleNone
	}
	if out.Route {
		rp := routePlan(out.State)
		rp.WeightsOnly = !out.Reassert
		wg.Go(func() {
			if live != nil {
				routeErr = live.Apply(ctx, rp)
				return
			}
			routeErr = s.routerOf(c).ApplyRoutes(ctx, c, rp)
		})
	}
	if plan != (WorkloadPlan{}) {
		wg.Go(func() { wErr = s.d.Workloads.ApplyWorkloads(ctx, c, plan) })
	}
	wg.Wait()
	if err := errors.Join(routeErr, wErr); err != nil {
		return fmt.Errorf("act on %s: %w", c.Key, err)
	}
	if scaleDown {
		if lease != nil {
			if err := s.checkHolder(ctx, c.Key, lease); err != nil {
				return err
			}
		}
		if err := s.d.Workloads.ApplyWorkloads(ctx, c, WorkloadPlan{ScaleTarget: ScaleToZero}); err != nil {
			return fmt.Errorf("scale %s to zero: %w", c.Spec.TargetRef.Name, err)
		}
	}
	return nil
}

func routePlan(st State) RoutePlan {
	return RoutePlan{Routing: st.Routing, SessionAffinityCookie: st.SessionAffinityCookie,
		PrimarySessionAffinityCookie:  st.PrimarySessionAffinityCookie,
		PreviousSessionAffinityCookie: st.PreviousSessionAffinityCookie}
}

// repair re-asserts the routing and scale of the stored state after losing a save race or the
// lease, on a context of its own: the step's may be the one the lease loss cancelled.
func (s *Service) repair(ctx context.Context, c Canary) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.StepTimeout)
	defer cancel()
	st, err := s.d.Store.Load(ctx, c.Key)
	if err != nil {
		s.log.WarnContext(ctx, "repair after conflict: load", "canary", c.Key.String(), "err", err)
		return
	}
	out, ok := RepairStep(st)
	if !ok {
		return
	}
	if err := s.act(ctx, c, out, nil, nil); err != nil {
		s.log.WarnContext(ctx, "repair after conflict", "canary", c.Key.String(), "err", err)
	}
}

// after runs what follows a saved step: schedule, status, events, alerts, post-rollout hooks.
// Only the schedule can fail the step: the rest is a mirror the next step rewrites.
func (s *Service) after(ctx context.Context, c Canary, before, saved State, out Step) error {
	var (
		wg  sync.WaitGroup
		err error
	)
	wg.Go(func() { err = s.scheduleSaved(ctx, c.Key, saved) })
	wg.Go(func() { s.record(ctx, c, saved, out) })
	wg.Go(func() { s.notify(ctx, c, before, saved, out) })
	wg.Wait()
	return err
}

// scheduleSaved puts the saved state's next step on the schedule. The schedule is an index of
// the states' due times: when it cannot be written, the step is reported failed (a 503, so the
// sender retries) and the retry, or the resync of the next tick, finds the saved due time and
// writes it; a schedule entry left early only wakes a step that finds it is not due.
func (s *Service) scheduleSaved(ctx context.Context, k Key, saved State) error {
	if err := s.d.Store.Schedule(ctx, k, saved.NextStepAt, saved.Phase.Releasing()); err != nil {
		s.log.ErrorContext(ctx, "schedule next step", "canary", k.String(), "err", err)
		return fmt.Errorf("schedule next step of %s: %w", k, err)
	}
	if saved.Phase.Releasing() {
		s.wakeDispatcher(ctx, saved.NextStepAt)
	}
	return nil
}

// wakeDispatcher starts a dispatcher when a release's next step falls due and none is
// dispatching by then: a release started by an event between pings (or going on past the
// last dispatcher's window) is then stepped on time, not at the next ping. One step of a
// fleet released at once reserves the wake-up; the others see it. A lost wake-up costs
// lateness, never a step: the next ping dispatches.
func (s *Service) wakeDispatcher(ctx context.Context, dueAt time.Time) {
	if s.d.Dispatcher == nil || s.cfg.DispatchWindow <= 0 {
		return
	}
	now := s.cfg.Now()
	wake, err := s.d.Store.ReserveDispatch(ctx, s.scope(), dueAt, now.Add(s.cfg.DispatchWindow))
	if err != nil {
		s.log.WarnContext(ctx, "reserve a dispatcher", "err", err)
		return
	}
	if !wake {
		return
	}
	id := "wake:" + s.scope() + "@" + strconv.FormatInt(now.UnixMilli(), 10) + "-" + randomLetters(6)
	s.inBackground(ctx, func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, s.cfg.DispatchWindow+s.cfg.StepTimeout)
		defer cancel()
		if err := s.d.Dispatcher.WakeDispatcher(ctx, id); err != nil {
			s.log.WarnContext(ctx, "wake a dispatcher; the next ping dispatches", "err", err)
		}
	})
}

// scope names what this Siskin dispatches for: its namespace, or "*".
func (s *Service) scope() string {
	if s.cfg.Namespace == "" {
		return "*"
	}
	return s.cfg.Namespace
}

// record writes what `kubectl` shows: the Canary's status and its Kubernetes Events.
func (s *Service) record(ctx context.Context, c Canary, saved State, out Step) {
	var wg sync.WaitGroup
	wg.Go(func() { s.writeStatus(ctx, c, saved) })
	wg.Go(func() { s.recordEvents(ctx, c, out.Events) })
	wg.Wait()
}

func (s *Service) recordEvents(ctx context.Context, c Canary, events []Event) {
	var wg sync.WaitGroup
	for _, e := range events {
		wg.Go(func() {
			if err := s.d.Workloads.RecordEvent(ctx, c, e); err != nil {
				s.log.WarnContext(ctx, "record event", "canary", c.Key.String(), "err", err)
			}
		})
	}
	wg.Wait()
}

// notify tells the outside world: event webhooks, alerts, post-rollout hooks, the transition
// CloudEvent. Each call has its own timeout; a failure is logged, never fails the step.
func (s *Service) notify(ctx context.Context, c Canary, before, saved State, out Step) {
	var wg sync.WaitGroup
	if s.d.Events != nil && len(c.Spec.Hooks(HookEvent)) > 0 {
		for _, e := range out.Events {
			wg.Go(func() { s.d.Events.SendEvent(ctx, c, e) })
		}
	}
	if s.d.Emitter != nil && before.Phase != saved.Phase {
		wg.Go(func() { s.d.Emitter.Transitioned(ctx, c, before, saved) })
	}
	if s.d.Emitter != nil && out.Failure != "" && saved.Phase != PhaseFailed {
		wg.Go(func() { s.d.Emitter.Failed(ctx, c, saved, out.Failure) })
	}
	if len(out.Alerts) > 0 && s.d.Alerts != nil {
		wg.Go(func() { s.d.Alerts.SendAlerts(ctx, c, out.Alerts) })
	}
	if out.PostRollout {
		if hooks := c.Spec.Hooks(HookPostRollout); len(hooks) > 0 {
			wg.Go(func() {
				for _, r := range s.d.Hooks.CallHooks(ctx, c, hooks, HookCall{Phase: saved.Phase, Checksum: Checksum(saved)}, false) {
					if !r.OK {
						s.log.WarnContext(ctx, "post-rollout hook failed", "canary", c.Key.String(), "hook", r.Name, "detail", r.Detail)
					}
				}
			})
		}
	}
	wg.Wait()
}

// inBackground runs f after the request has been answered, on a context that outlives it.
// Drain waits for such work before the process exits.
func (s *Service) inBackground(ctx context.Context, f func(ctx context.Context)) {
	s.bg.Go(func() { f(context.WithoutCancel(ctx)) })
}

// Drain waits, until ctx is done, for work left running after answering (the notifications of
// an abort).
func (s *Service) Drain(ctx context.Context) {
	done := make(chan struct{})
	go func() { s.bg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

func (s *Service) writeStatus(ctx context.Context, c Canary, st State) {
	if err := s.d.Workloads.WriteStatus(ctx, c, st.Status()); err != nil {
		s.log.WarnContext(ctx, "write canary status", "canary", c.Key.String(), "err", err)
	}
}

// Checksum is Flagger's webhook checksum: a hash of the applied spec and tracked configs.
func Checksum(st State) string {
	if len(st.TrackedConfigs) == 0 {
		// No tracked configs, however they were decoded (Redis, the Canary's status).
		st.TrackedConfigs = nil
	}
	b, _ := json.Marshal(struct {
		TrackedConfigs  map[string]string
		LastAppliedSpec string
	}{st.TrackedConfigs, st.LastAppliedSpec})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

func randomLetters(n int) string {
	b := make([]byte, n)
	for i := range b {
		x, err := rand.Int(rand.Reader, big.NewInt(int64(len(letters))))
		if err != nil {
			panic(err) // crypto/rand never fails on Linux
		}
		b[i] = letters[x.Int64()]
	}
	return string(b)
}
