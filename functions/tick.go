package functions

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// TickReport sums up one tick.
type TickReport struct {
	Discovered int          `json:"discovered"`
	Stepped    []StepReport `json:"stepped"`
	// Dispatched counts the steps sent as step events (with a StepDispatcher).
	Dispatched int `json:"dispatched,omitempty"`
	Busy       int `json:"busy"`
	Failed     int `json:"failed"`
	Rounds     int `json:"rounds"`
	// HandedOver: a newer tick took over the dispatching before this one's window closed.
	HandedOver bool `json:"handedOver,omitempty"`
}

// dispatchGrace is how long a step sent as an event has to reschedule itself before the
// dispatcher sends it again (the event was lost, or its process died).
const dispatchGrace = 10 * time.Second

// Tick is the dispatcher. It advances every canary that is due, then keeps doing so until
// `until` while a release in flight has a step due before it, and returns at once when none
// has. That is how analysis intervals shorter than the once-a-minute PingSource are honoured
// without a resident process: a ping keeps one invocation alive only while something is
// releasing. A window longer than a minute overlaps the next ping, which takes over (the older
// tick stops at its next wake-up), so a step due in the last seconds of a minute is on time.
//
// With a StepDispatcher, each due step is sent as a request of its own, which Knative spreads
// over pods; without one, the tick steps the canaries itself, with bounded parallelism. A
// canary's failure is logged and counted; it never stops the others.
func (s *Service) Tick(ctx context.Context, until time.Time) (rep TickReport, err error) {
	scope := s.scope()
	gen, err := s.d.Store.BeginDispatch(ctx, scope, until)
	if err != nil {
		return rep, fmt.Errorf("begin dispatch: %w", err)
	}
	n, err := s.discover(ctx)
	rep.Discovered = n
	if err != nil {
		return rep, err
	}
	// The report is named so that the failures of step events still in flight, counted under
	// repMu, are in it when Tick returns.
	var (
		sent  sync.WaitGroup
		repMu sync.Mutex
		// answered wakes the dispatcher's wait when a step it sent has been answered: that
		// step has put its next due time on the schedule, perhaps before the one awaited.
		answered = make(chan struct{}, 1)
	)
	defer sent.Wait()
	for {
		rep.Rounds++
		if newest, err := s.d.Store.DispatchGeneration(ctx, scope); err == nil && newest > gen {
			rep.HandedOver = true
			return rep, nil
		}
		roundStart := s.cfg.Now()
		if err := s.stepDue(ctx, &rep, &repMu, &sent, answered); err != nil {
			return rep, err
		}
		next, ok, err := s.nextReleasingDue(ctx, roundStart, until)
		if err != nil {
			return rep, fmt.Errorf("read schedule: %w", err)
		}
		if !s.cfg.Now().Before(until) {
			return rep, nil
		}
		if !ok {
			// Say so before looking again: a step saving a release now either is seen by
			// the second look, or sees no dispatcher and wakes one (wakeDispatcher).
			if err := s.d.Store.EndDispatch(ctx, scope, gen); err != nil {
				return rep, fmt.Errorf("end dispatch: %w", err)
			}
			if next, ok, err = s.nextReleasingDue(ctx, roundStart, until); err != nil || !ok {
				return rep, err
			}
			if gen, err = s.d.Store.BeginDispatch(ctx, scope, until); err != nil {
				return rep, fmt.Errorf("begin dispatch: %w", err)
			}
		}
		// The wait is capped: a release started or stepped elsewhere meanwhile (an event at
		// another pod) may fall due before next, and the cap bounds how late it is seen.
		if wait := min(next.Sub(s.cfg.Now()), s.cfg.DispatchPoll); wait > 0 {
			s.sleepUnlessAnswered(ctx, wait, answered)
			if ctx.Err() != nil {
				return rep, nil
			}
		}
	}
}

func (s *Service) sleepUnlessAnswered(ctx context.Context, d time.Duration, answered <-chan struct{}) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-answered:
			cancel()
		case <-wctx.Done():
		}
	}()
	s.cfg.Sleep(wctx, d)
}

// nextReleasingDue is when the next step of a releasing canary this Siskin may take falls due,
// if it does after roundStart and by until. Steps that were already due when the round began
// and are still due are not ours to wait for: another instance holds them, or, for a
// namespace-scoped Siskin sharing the schedule, another namespace's Siskin owns them (and may
// be gone). Waiting for those would spin; looking past them keeps the window for our own.
func (s *Service) nextReleasingDue(ctx context.Context, roundStart, until time.Time) (time.Time, bool, error) {
	k, next, ok, err := s.d.Store.NextDue(ctx, true)
	if err != nil || !ok || next.After(until) {
		return next, false, err
	}
	if next.After(roundStart) && (s.cfg.Namespace == "" || k.Namespace == s.cfg.Namespace) {
		return next, true, nil
	}
	due, err := s.d.Store.Due(ctx, until, s.cfg.DueBatch)
	if err != nil {
		return time.Time{}, false, err
	}
	for _, k := range due { // earliest first
		if s.cfg.Namespace != "" && k.Namespace != s.cfg.Namespace {
			continue
		}
		at, ok, err := s.d.Store.DueAt(ctx, k)
		if err != nil {
			return time.Time{}, false, err
		}
		if !ok || !at.After(roundStart) || at.After(until) {
			continue
		}
		st, err := s.d.Store.Load(ctx, k)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return time.Time{}, false, err
		}
		if st.Phase.Releasing() {
			return at, true, nil
		}
	}
	return time.Time{}, false, nil
}

// discover schedules every Canary that has no schedule yet: new canaries, and all of them
// after Redis lost its data.
func (s *Service) discover(ctx context.Context) (int, error) {
	canaries, err := s.d.Workloads.ListCanaries(ctx, s.cfg.Namespace)
	if err != nil {
		return 0, fmt.Errorf("list canaries: %w", err)
	}
	var (
		mu   sync.Mutex
		n    int
		errs []error
	)
	now := s.cfg.Now()
	perNamespace, fresh := map[string]int{}, map[string]bool{}
	for _, c := range canaries {
		perNamespace[c.Namespace]++
	}
	s.d.Observer.Counted(perNamespace)
	panicked := forEach(canaries, s.cfg.Parallelism, func(c Canary) {
		_, ok, err := s.d.Store.DueAt(ctx, c.Key)
		if err == nil && !ok {
			err = s.d.Store.Schedule(ctx, c.Key, now, c.Status.Phase.Releasing())
			if err == nil {
				mu.Lock()
				n++
				fresh[c.Namespace] = true
				mu.Unlock()
			}
		}
		if err != nil {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}
	})
	for ns := range fresh {
		// A canary found here, not through its own event, may be missing from the index.
		s.invalidateDependents(ctx, ns)
	}
	if err := errors.Join(append(errs, panicked)...); err != nil {
		return n, fmt.Errorf("schedule discovered canaries: %w", err)
	}
	return n, nil
}

// stepDue claims and steps every canary due now, with bounded parallelism, or sends each its
// step event.
func (s *Service) stepDue(ctx context.Context, rep *TickReport, mu *sync.Mutex, sent *sync.WaitGroup, answered chan<- struct{}) error {
	due, err := s.d.Store.Due(ctx, s.cfg.Now(), s.cfg.DueBatch)
	if err != nil {
		return fmt.Errorf("list due canaries: %w", err)
	}
	var mine []Key
	for _, k := range due {
		// Another Siskin, scoped to its own namespace, may share this Redis.
		if s.cfg.Namespace == "" || k.Namespace == s.cfg.Namespace {
			mine = append(mine, k)
		}
	}
	if s.d.Dispatcher != nil {
		s.dispatch(ctx, mine, rep, mu, sent, answered)
		return nil
	}
	panicked := forEach(mine, s.cfg.Parallelism, func(k Key) {
		var (
			r   StepReport
			err error
		)
		func() {
			// A step that panics is that canary's failure, not the tick's.
			defer func() {
				if p := recover(); p != nil {
					err = fmt.Errorf("step of %s: %w: %v", k, ErrPanic, p)
				}
			}()
			r, err = s.claimAndStep(ctx, k, stepGate{kind: gateDue}, nil, nil)
		}()
		mu.Lock()
		defer mu.Unlock()
		switch {
		case errors.Is(err, ErrBusy):
			rep.Busy++
		case err != nil:
			rep.Failed++
			s.log.ErrorContext(ctx, "step failed", "canary", k.String(), "namespace", k.Namespace, "err", err)
			s.retryLater(ctx, k, r.From.Releasing())
		default:
			s.failing.Delete(k)
			if r.Skipped == "" {
				rep.Stepped = append(rep.Stepped, r)
			}
		}
	})
	return panicked
}

// dispatch sends each due step as an event, without waiting for it: the tick goes on
// scheduling. A sent step is postponed by dispatchGrace first, so that only a lost one is sent
// again; a step that fails is retried a little later.
func (s *Service) dispatch(ctx context.Context, due []Key, rep *TickReport, mu *sync.Mutex, sent *sync.WaitGroup, answered chan<- struct{}) {
	for _, k := range due {
		at, _, err := s.d.Store.DueAt(ctx, k)
		if err == nil {
			err = s.d.Store.Postpone(ctx, k, s.cfg.Now().Add(dispatchGrace))
		}
		if err != nil {
			mu.Lock()
			rep.Failed++
			mu.Unlock()
			s.log.ErrorContext(ctx, "dispatch step", "canary", k.String(), "err", err)
			continue
		}
		mu.Lock()
		rep.Dispatched++
		mu.Unlock()
		s.inflight <- struct{}{}
		sent.Go(func() {
			defer func() { <-s.inflight }()
			err := s.d.Dispatcher.DispatchStep(context.WithoutCancel(ctx), k, at)
			select {
			case answered <- struct{}{}:
			default:
			}
			if err != nil {
				mu.Lock()
				rep.Failed++
				mu.Unlock()
				s.log.WarnContext(ctx, "step event failed; retrying it shortly", "canary", k.String(), "err", err)
				s.retryLater(ctx, k, true)
				return
			}
			s.failing.Delete(k)
		})
	}
}

// retryLater pushes a failed canary's step into the future so a tick's loop does not spin on
// it, further each time it fails again (retryDelay); the next ping or wake-up retries it.
func (s *Service) retryLater(ctx context.Context, k Key, releasing bool) {
	n := 1
	if v, ok := s.failing.Load(k); ok {
		n = v.(int) + 1
	}
	s.failing.Store(k, n)
	delay := retryDelay(max(s.cfg.MinInterval, time.Second), n, rand.Float64())
	if err := s.d.Store.Schedule(ctx, k, s.cfg.Now().Add(delay), releasing); err != nil {
		s.log.WarnContext(ctx, "reschedule failed step", "canary", k.String(), "err", err)
	}
}

// maxRetryDelay caps the back-off of a step that keeps failing.
const maxRetryDelay = 2 * time.Minute

// retryDelay is the wait before the failures-th retry of a step: base, doubled at each
// failure in a row up to maxRetryDelay, less up to a fifth at random (jitter in [0, 1)), so
// that canaries failing together do not retry together.
func retryDelay(base time.Duration, failures int, jitter float64) time.Duration {
	d := base
	for i := 1; i < failures && d < maxRetryDelay; i++ {
		d *= 2
	}
	d = min(d, maxRetryDelay)
	return d - time.Duration(float64(d)*0.2*jitter)
}
