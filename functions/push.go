package functions

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Masterminds/semver/v3"
)

// Image policy annotations on a Canary.
const (
	// AnnotationPushTrigger "disabled" opts a canary out of push-started releases, for
	// example when Flux or Argo CD image automation owns the image field.
	AnnotationPushTrigger = "siskin.dev/push-trigger"
	// AnnotationTagPattern is a regular expression a pushed tag must match.
	AnnotationTagPattern = "siskin.dev/tag-pattern"
	// AnnotationSemver is a semver constraint a pushed tag must satisfy, e.g. "~1.4".
	AnnotationSemver = "siskin.dev/semver"
	// AnnotationPinDigest "false" sets the tag alone instead of tag@digest.
	AnnotationPinDigest = "siskin.dev/pin-digest"
	// AnnotationContainer limits the update to one container of the target.
	AnnotationContainer = "siskin.dev/container"
)

// ImageRef is a normalised image reference.
type ImageRef struct {
	Registry   string // "index.docker.io" for Docker Hub, host[:port] otherwise
	Repository string // "library/nginx" for Docker Hub's official images
	Tag        string
	Digest     string
}

// Repo is registry/repository.
func (r ImageRef) Repo() string { return r.Registry + "/" + r.Repository }

// String is the reference as a container spec wants it.
func (r ImageRef) String() string {
	s := r.Repo()
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + r.Digest
	}
	return s
}

// Registry is the container registry (package registry).
type Registry interface {
	// Resolve HEADs the manifest of repo:tag or repo@digest and returns its digest;
	// ErrNotFound when the registry does not have it.
	Resolve(ctx context.Context, ref ImageRef) (string, error)
}

// Images reads and writes the Deployments' container images (package deploy).
type Images interface {
	// DeploymentImages lists a namespace's Deployments: name -> container -> image.
	DeploymentImages(ctx context.Context, namespace string) (map[string]map[string]string, error)
	SetImage(ctx context.Context, deployment Key, container, image string) error
}

// PushOutcome is what became of one push.
type PushOutcome struct {
	Image    string   `json:"image"`
	Outcome  string   `json:"outcome"` // started, ignored, duplicate, rejected
	Reason   string   `json:"reason,omitempty"`
	Canaries []string `json:"canaries,omitempty"`
}

// PushReport is what a notification did.
type PushReport struct {
	Pushes  []PushOutcome `json:"pushes"`
	Started []string      `json:"started"`
}

// PushDedupeWindow: pushes of the same repository and digest within it start one release.
const PushDedupeWindow = 10 * time.Minute

// HandlePushes starts a release for every canary whose target runs a pushed repository and
// whose image policy takes the pushed tag, after checking the digest with the registry.
func (s *Service) HandlePushes(ctx context.Context, pushes []ImagePush) (PushReport, error) {
	if s.d.Registry == nil || s.d.Images == nil {
		return PushReport{}, fmt.Errorf("%w: push triggers are not configured", ErrUnavailable)
	}
	// Which canaries run what does not depend on the registry's answer: read it meanwhile.
	var (
		fl    fleet
		flErr error
		ready = make(chan struct{})
	)
	go func() { defer close(ready); fl, flErr = s.loadFleet(ctx) }()
	fleetNow := func() (fleet, error) { <-ready; return fl, flErr }

	var rep PushReport
	var errs []error
	for _, p := range pushes {
		out, err := s.handlePush(ctx, p, fleetNow)
		rep.Pushes = append(rep.Pushes, out)
		if out.Outcome == "started" {
			rep.Started = append(rep.Started, out.Canaries...)
		}
		errs = append(errs, err)
	}
	<-ready
	return rep, errors.Join(errs...)
}

// fleet is the canaries and the images their targets run, read once per notification: one
// LIST of Canaries and one LIST of Deployments per namespace, however many canaries there are.
type fleet struct {
	canaries []Canary
	images   map[Key]map[string]string // Deployment -> container -> image
}

func (s *Service) loadFleet(ctx context.Context) (fleet, error) {
	fl := fleet{images: map[Key]map[string]string{}}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	listDeployments := func(ns string) {
		wg.Go(func() {
			deps, err := s.d.Images.DeploymentImages(ctx, ns)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("list deployments in %s: %w", ns, err))
				return
			}
			for name, images := range deps {
				fl.images[Key{Namespace: ns, Name: name}] = images
			}
		})
	}
	// A Siskin scoped to a namespace knows where to list the Deployments: both lists at once.
	// Across the cluster, the canaries say which namespaces to list.
	if s.cfg.Namespace != "" {
		listDeployments(s.cfg.Namespace)
	}
	canaries, err := s.d.Workloads.ListCanaries(ctx, s.cfg.Namespace)
	if err != nil {
		wg.Wait()
		return fleet{}, fmt.Errorf("list canaries: %w", err)
	}
	fl.canaries = canaries
	if s.cfg.Namespace == "" {
		namespaces := map[string]bool{}
		for _, c := range canaries {
			namespaces[c.Namespace] = true
		}
		for ns := range namespaces {
			listDeployments(ns)
		}
	}
	wg.Wait()
	return fl, errors.Join(errs...)
}

func (s *Service) handlePush(ctx context.Context, p ImagePush, fleetNow func() (fleet, error)) (PushOutcome, error) {
	out := PushOutcome{Image: pushName(p)}
	if p.Tag == "" {
		out.Outcome, out.Reason = "ignored", "untagged push"
		return out, nil
	}
	pushed, err := ParseImageRef(pushName(p))
	if err != nil {
		out.Outcome, out.Reason = "rejected", err.Error()
		return out, nil
	}
	scope, err := s.pushScope(p)
	if err != nil {
		out.Outcome, out.Reason = "rejected", err.Error()
		return out, err
	}
	fl, err := fleetNow()
	if err != nil {
		out.Outcome, out.Reason = "error", err.Error()
		return out, err
	}
	// Only a push that some canary in scope runs is worth the registry's time: a push of an
	// image nobody runs, or from a registry nobody uses (forged, or unreachable from here), is
	// acknowledged at once instead of failing, and being retried, forever.
	fl = fl.running(pushed, scope, s.d.Registry)
	if len(fl.canaries) == 0 {
		out.Outcome, out.Reason = "ignored", "no canary in "+scope.String()+" runs "+pushed.Repo()
		return out, nil
	}
	// A forged notification must not roll production: the digest (or the tag) must exist.
	digest, err := s.d.Registry.Resolve(ctx, pushed)
	switch {
	case errors.Is(err, ErrNotFound):
		out.Outcome, out.Reason = "rejected", fmt.Sprintf("%s is not in the registry", pushed)
		return out, nil
	case err != nil:
		out.Outcome, out.Reason = "error", err.Error()
		if errors.Is(err, ErrUpstreamDenied) {
			// Siskin's registry credentials are wrong: say so where the user looks.
			for _, c := range fl.canaries {
				s.recordEvents(ctx, c, []Event{{Warning: true, Message: upstreamDenied("verifying the push of "+pushed.String(), err)}})
			}
		}
		return out, fmt.Errorf("verify %s: %w", pushed, err)
	}
	if pushed.Digest == "" || pushed.Digest != digest {
		// Pin what the tag points at now: for a multi-arch push that is the index, whichever
		// of its manifests' events arrived.
		tagged := pushed
		tagged.Digest = ""
		if d, err := s.d.Registry.Resolve(ctx, tagged); err == nil {
			digest = d
		}
	}
	pushed.Digest = digest
	out.Image = pushed.String()

	// A push is claimed for as long as handling it may take, and marked done for the dedupe
	// window only once it is applied: a process killed in between leaves a claim that runs
	// out, and the sender's retry (answered 503 meanwhile) applies it.
	claim := "push:" + pushed.Repo() + ":" + pushed.Tag + "@" + digest + ":" + scope.String()
	done := claim + ":done"
	claimed, err := s.d.Store.FirstSeen(ctx, claim, s.cfg.StepTimeout+pushClaimSlack)
	if err != nil {
		out.Outcome, out.Reason = "error", err.Error()
		return out, fmt.Errorf("dedupe push %s: %w", pushed, err)
	}
	if !claimed {
		out.Outcome, out.Reason = "busy", "the same push is being handled; retry"
		return out, fmt.Errorf("push %s: %w: being handled by another delivery", pushed, ErrBusy)
	}
	defer func() {
		if ferr := s.d.Store.Forget(context.WithoutCancel(ctx), claim); ferr != nil {
			s.log.WarnContext(ctx, "release push claim", "push", claim, "err", ferr)
		}
	}()
	if seen, err := s.d.Store.Seen(ctx, done); err != nil {
		out.Outcome, out.Reason = "error", err.Error()
		return out, fmt.Errorf("dedupe push %s: %w", pushed, err)
	} else if seen {
		out.Outcome, out.Reason = "duplicate", "the same push was handled within "+PushDedupeWindow.String()
		return out, nil
	}
	started, reasons, err := s.applyPush(ctx, p, pushed, fl)
	if err != nil {
		// Not marked done: the sender's retry does it again.
		out.Outcome, out.Reason = "error", err.Error()
		return out, err
	}
	if _, err := s.d.Store.FirstSeen(ctx, done, PushDedupeWindow); err != nil {
		// Applied: a retry finds the image set and starts nothing new.
		s.log.WarnContext(ctx, "mark push done", "push", done, "err", err)
	}
	return s.pushOutcome(out, started, reasons), nil
}

// pushClaimSlack is how much longer than a step a push claim lasts.
const pushClaimSlack = 5 * time.Second

// namespaceScope is where a push may release: every namespace, or the ones listed.
type namespaceScope struct {
	any        bool
	namespaces []string
}

func (n namespaceScope) has(ns string) bool { return n.any || slices.Contains(n.namespaces, ns) }

func (n namespaceScope) String() string {
	if n.any {
		return "any namespace"
	}
	return "namespace " + strings.Join(n.namespaces, ",")
}

// pushScope is where p may release (see Config.PushAnyNamespace).
func (s *Service) pushScope(p ImagePush) (namespaceScope, error) {
	switch {
	case s.cfg.Namespace != "":
		return namespaceScope{namespaces: []string{s.cfg.Namespace}}, nil
	case len(p.Namespaces) > 0:
		return namespaceScope{namespaces: p.Namespaces}, nil
	case s.cfg.PushAnyNamespace:
		return namespaceScope{any: true}, nil
	}
	return namespaceScope{}, fmt.Errorf("%w: the push names no namespace to release into: add ?namespace=NS to the webhook URL (repeat it for more), or run Siskin with --push-scope=cluster", ErrInvalid)
}

// running keeps the canaries in scope whose target runs the pushed repository and that take
// pushes.
func (fl fleet) running(pushed ImageRef, scope namespaceScope, reg Registry) fleet {
	out := fleet{images: fl.images}
	for _, c := range fl.canaries {
		if !scope.has(c.Namespace) || strings.EqualFold(c.Annotations[AnnotationPushTrigger], "disabled") {
			continue
		}
		for _, image := range fl.images[Key{Namespace: c.Namespace, Name: c.Spec.TargetRef.Name}] {
			if running, err := ParseImageRef(image); err == nil && running.Repo() == pushed.Repo() {
				out.canaries = append(out.canaries, c)
				break
			}
		}
	}
	return out
}

func (s *Service) pushOutcome(out PushOutcome, started, reasons []string) PushOutcome {
	if len(started) == 0 {
		out.Outcome = "ignored"
		out.Reason = "no canary takes it"
		if len(reasons) > 0 {
			out.Reason += ": " + strings.Join(reasons, "; ")
		}
		return out
	}
	out.Outcome, out.Canaries = "started", started
	return out
}

func pushName(p ImagePush) string {
	n := p.Repository
	if p.Registry != "" {
		n = p.Registry + "/" + n
	}
	if p.Tag != "" {
		n += ":" + p.Tag
	}
	if p.Digest != "" {
		n += "@" + p.Digest
	}
	return n
}

func (s *Service) applyPush(ctx context.Context, p ImagePush, pushed ImageRef, fl fleet) ([]string, []string, error) {
	var (
		mu      sync.Mutex
		started []string
		reasons []string
		errs    []error
		trigger = Trigger{Kind: "push", EventID: p.EventID, Source: p.Source, Detail: pushed.String(), At: s.cfg.Now()}
	)
	panicked := forEach(fl.canaries, s.cfg.Parallelism, func(c Canary) {
		images := fl.images[Key{Namespace: c.Namespace, Name: c.Spec.TargetRef.Name}]
		took, reason, err := s.pushToCanary(ctx, c, images, pushed, trigger)
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", c.Key, err))
		case took:
			started = append(started, c.Key.String())
		case reason != "":
			reasons = append(reasons, c.Key.String()+": "+reason)
		}
	})
	return started, reasons, errors.Join(append(errs, panicked)...)
}

// pushToCanary sets the new image on the canary's target when the policy takes it, records
// the trigger and runs the first step of the release at once.
func (s *Service) pushToCanary(ctx context.Context, c Canary, images map[string]string, pushed ImageRef, trig Trigger) (bool, string, error) {
	var updates map[string]string
	var reason string
	for container, image := range images {
		if want := c.Annotations[AnnotationContainer]; want != "" && want != container {
			continue
		}
		running, err := ParseImageRef(image)
		if err != nil || running.Repo() != pushed.Repo() {
			continue
		}
		next, ok, why := DecidePush(c.Annotations, running, pushed)
		if !ok {
			reason = why
			continue
		}
		if updates == nil {
			updates = map[string]string{}
		}
		updates[container] = next
	}
	if len(updates) == 0 {
		return false, reason, nil
	}
	// The trigger is recorded while the image is set: the two are independent, and the release
	// starts only with the step below, which needs both.
	var (
		wg              sync.WaitGroup
		trigErr, setErr error
	)
	wg.Go(func() { trigErr = s.setPendingTrigger(ctx, c, trig) })
	wg.Go(func() {
		for container, image := range updates {
			target := Key{Namespace: c.Namespace, Name: c.Spec.TargetRef.Name}
			if err := s.d.Images.SetImage(ctx, target, container, image); err != nil {
				setErr = fmt.Errorf("set image %s on %s: %w", image, c.Spec.TargetRef.Name, err)
				return
			}
		}
	})
	wg.Wait()
	if err := errors.Join(trigErr, setErr); err != nil {
		return false, "", err
	}
	// The canary was listed for this push a moment ago: the step reads only its state.
	if _, err := s.claimAndStep(ctx, c.Key, stepGate{kind: gateNone}, &c, nil); err != nil && !errors.Is(err, ErrBusy) {
		// The image is set: the next tick starts the release. Say so, do not fail the push.
		s.log.WarnContext(ctx, "first step after push", "canary", c.Key.String(), "err", err)
	}
	return true, "", nil
}

func (s *Service) setPendingTrigger(ctx context.Context, c Canary, trig Trigger) error {
	for attempt := 0; attempt < 3; attempt++ {
		st, err := s.loadState(ctx, c)
		if err != nil {
			return err
		}
		st.PendingTrigger = &trig
		_, err = s.d.Store.Save(ctx, c.Key, st, nil)
		if !errors.Is(err, ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("record push trigger on %s: %w", c.Key, ErrConflict)
}

// DecidePush is the image policy: whether a canary running `running` takes `pushed`, and
// the reference to set. Without a policy, a tag newer by semver than the running one is taken,
// or, for tags that are not semver, any new digest.
func DecidePush(annotations map[string]string, running, pushed ImageRef) (image string, take bool, why string) {
	if pat := annotations[AnnotationTagPattern]; pat != "" {
		re, err := regexp.Compile(pat)
		if err != nil {
			return "", false, fmt.Sprintf("bad %s %q: %v", AnnotationTagPattern, pat, err)
		}
		if !re.MatchString(pushed.Tag) {
			return "", false, fmt.Sprintf("tag %s does not match %s", pushed.Tag, pat)
		}
	}
	pv, perr := semver.NewVersion(pushed.Tag)
	if c := annotations[AnnotationSemver]; c != "" {
		constraint, err := semver.NewConstraint(c)
		if err != nil {
			return "", false, fmt.Sprintf("bad %s %q: %v", AnnotationSemver, c, err)
		}
		if perr != nil || !constraint.Check(pv) {
			return "", false, fmt.Sprintf("tag %s does not satisfy %s", pushed.Tag, c)
		}
	}
	rv, rerr := semver.NewVersion(running.Tag)
	if rerr == nil && perr != nil && annotations[AnnotationTagPattern] == "" {
		// A semver release line is not left for a tag like "latest" or "main-abc123": which
		// is newer cannot be told, and guessing would roll production sideways.
		return "", false, fmt.Sprintf("tag %s is not a semantic version, and the running %s is", pushed.Tag, running.Tag)
	}
	if rerr == nil && perr == nil {
		if pv.LessThan(rv) {
			return "", false, fmt.Sprintf("tag %s is older than the running %s", pushed.Tag, running.Tag)
		}
		if pv.Equal(rv) && running.Tag == pushed.Tag && (running.Digest == "" || running.Digest == pushed.Digest) {
			return "", false, "already running " + pushed.Tag
		}
	} else if running.Tag == pushed.Tag && running.Digest == pushed.Digest {
		return "", false, "already running " + pushed.String()
	}
	next := pushed
	if pin, err := strconv.ParseBool(annotations[AnnotationPinDigest]); err == nil && !pin {
		next.Digest = ""
	}
	return next.String(), true, ""
}
