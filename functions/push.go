package functions

import (
	"context"
	"errors"
	"fmt"
	"regexp"
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
	// Parse normalises a reference (Docker Hub defaults, default tag).
	Parse(ref string) (ImageRef, error)
	// Resolve HEADs the manifest of repo:tag or repo@digest and returns its digest;
	// ErrNotFound when the registry does not have it.
	Resolve(ctx context.Context, ref ImageRef) (string, error)
}

// Images reads and writes the target's container images (package deploy).
type Images interface {
	TargetImages(ctx context.Context, c Canary) (map[string]string, error)
	SetImage(ctx context.Context, c Canary, container, image string) error
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
	var rep PushReport
	var errs []error
	canaries, err := s.d.Workloads.ListCanaries(ctx, s.cfg.Namespace)
	if err != nil {
		return rep, fmt.Errorf("list canaries: %w", err)
	}
	for _, p := range pushes {
		out, err := s.handlePush(ctx, p, canaries)
		rep.Pushes = append(rep.Pushes, out)
		if out.Outcome == "started" {
			rep.Started = append(rep.Started, out.Canaries...)
		}
		errs = append(errs, err)
	}
	return rep, errors.Join(errs...)
}

func (s *Service) handlePush(ctx context.Context, p ImagePush, canaries []Canary) (PushOutcome, error) {
	out := PushOutcome{Image: pushName(p)}
	if p.Tag == "" {
		out.Outcome, out.Reason = "ignored", "untagged push"
		return out, nil
	}
	pushed, err := s.d.Registry.Parse(pushName(p))
	if err != nil {
		out.Outcome, out.Reason = "rejected", err.Error()
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

	dedupe := "push:" + pushed.Repo() + ":" + pushed.Tag + "@" + digest
	first, err := s.d.Store.FirstSeen(ctx, dedupe, PushDedupeWindow)
	if err != nil {
		out.Outcome, out.Reason = "error", err.Error()
		return out, fmt.Errorf("dedupe push %s: %w", pushed, err)
	}
	if !first {
		out.Outcome, out.Reason = "duplicate", "the same push was handled within "+PushDedupeWindow.String()
		return out, nil
	}
	started, reasons, err := s.applyPush(ctx, p, pushed, canaries)
	if err != nil {
		// Let the sender's retry do it again.
		if ferr := s.d.Store.Forget(ctx, dedupe); ferr != nil {
			s.log.Warn("forget push after failure", "push", dedupe, "err", ferr)
		}
		out.Outcome, out.Reason = "error", err.Error()
		return out, err
	}
	if len(started) == 0 {
		out.Outcome = "ignored"
		out.Reason = "no canary takes it"
		if len(reasons) > 0 {
			out.Reason += ": " + strings.Join(reasons, "; ")
		}
		return out, nil
	}
	out.Outcome, out.Canaries = "started", started
	return out, nil
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

func (s *Service) applyPush(ctx context.Context, p ImagePush, pushed ImageRef, canaries []Canary) ([]string, []string, error) {
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		started []string
		reasons []string
		errs    []error
		slots   = make(chan struct{}, s.cfg.Parallelism)
		trigger = Trigger{Kind: "push", EventID: p.EventID, Source: p.Source, Detail: pushed.String(), At: s.cfg.Now()}
	)
	for _, c := range canaries {
		if strings.EqualFold(c.Annotations[AnnotationPushTrigger], "disabled") {
			continue
		}
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			took, reason, err := s.pushToCanary(ctx, c, pushed, trigger)
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
	}
	wg.Wait()
	return started, reasons, errors.Join(errs...)
}

// pushToCanary sets the new image on the canary's target when the policy takes it, records
// the trigger and runs the first step of the release at once.
func (s *Service) pushToCanary(ctx context.Context, c Canary, pushed ImageRef, trig Trigger) (bool, string, error) {
	images, err := s.d.Images.TargetImages(ctx, c)
	if errors.Is(err, ErrNotFound) {
		return false, "", nil
	}
	if err != nil {
		return false, "", err
	}
	var updates map[string]string
	var reason string
	for container, image := range images {
		if want := c.Annotations[AnnotationContainer]; want != "" && want != container {
			continue
		}
		running, err := s.d.Registry.Parse(image)
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
	if err := s.setPendingTrigger(ctx, c, trig); err != nil {
		return false, "", err
	}
	for container, image := range updates {
		if err := s.d.Images.SetImage(ctx, c, container, image); err != nil {
			return false, "", fmt.Errorf("set image %s on %s: %w", image, c.Spec.TargetRef.Name, err)
		}
	}
	if _, err := s.Advance(ctx, c.Key); err != nil && !errors.Is(err, ErrBusy) {
		// The image is set: the next tick starts the release. Say so, do not fail the push.
		s.log.Warn("first step after push", "canary", c.Key.String(), "err", err)
	}
	return true, "", nil
}

func (s *Service) setPendingTrigger(ctx context.Context, c Canary, trig Trigger) error {
	for attempt := 0; attempt < 3; attempt++ {
		_, st, err := s.load(ctx, c.Key)
		if err != nil {
			return err
		}
		st.PendingTrigger = &trig
		_, err = s.d.Store.Save(ctx, c.Key, st)
		if !errors.Is(err, ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("record push trigger on %s: %w", c.Key, ErrConflict)
}

// DecidePush is the image policy: whether a canary running `running` takes `pushed`, and
// the reference to set. Without a policy, a tag newer by semver than the running one is taken,
// or, for tags that are not semver, any new digest.
func DecidePush(annotations map[string]string, running, pushed ImageRef) (string, bool, string) {
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
	if rv, err := semver.NewVersion(running.Tag); err == nil && perr == nil {
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
