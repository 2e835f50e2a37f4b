package handlers

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/siskin-dev/siskin/functions"
)

// keyOf reads the canary's key from the path (chi gives the escaped form when the path has
// escapes).
func keyOf(r *http.Request) functions.Key {
	return functions.Key{Namespace: pathParam(r, "namespace"), Name: pathParam(r, "name")}
}

func pathParam(r *http.Request, name string) string {
	v := chi.URLParam(r, name)
	if u, err := url.PathUnescape(v); err == nil {
		return u
	}
	return v
}

func handleListCanaries(rel Releases) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		views, err := rel.Views(r.Context(), chi.URLParam(r, "namespace"))
		if err != nil {
			writeError(w, err)
			return
		}
		if views == nil {
			views = []functions.CanaryView{}
		}
		writeJSON(w, http.StatusOK, views)
	}
}

func handleGetCanary(rel Releases) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := rel.View(r.Context(), keyOf(r))
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, v)
	}
}

func handleCanaryEvents(rel Releases) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		events, err := rel.Events(r.Context(), keyOf(r))
		if err != nil {
			writeError(w, err)
			return
		}
		if events == nil {
			events = []functions.EventRecord{}
		}
		writeJSON(w, http.StatusOK, events)
	}
}

func handleCanaryHistory(rel Releases) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		rs, err := rel.History(r.Context(), keyOf(r))
		if err != nil {
			writeError(w, err)
			return
		}
		if rs == nil {
			rs = []functions.Release{}
		}
		writeJSON(w, http.StatusOK, rs)
	}
}

// handleGate is the manual promote, abort and resume.
func handleGate(rel Releases, gate string, opts Options, log *slog.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		k := keyOf(r)
		ctx, cancel := detached(r, opts.WorkTimeout)
		defer cancel()
		var (
			rep functions.StepReport
			err error
		)
		switch gate {
		case "promote":
			rep, err = rel.RequestPromotion(ctx, k)
		case "resume":
			rep, err = rel.Resume(ctx, k)
		case "abort":
			reason := r.URL.Query().Get("reason")
			if reason == "" {
				reason = "manual abort"
			}
			var aborted bool
			rep, aborted, err = rel.Abort(ctx, k, reason)
			if err == nil && !aborted {
				err = fmt.Errorf("%w: %s is %s, no release to abort", functions.ErrRejected, k, rep.From)
				if rep.Message != "" {
					err = fmt.Errorf("%w: %s", functions.ErrRejected, rep.Message)
				}
			}
		}
		if err != nil {
			log.InfoContext(r.Context(), "manual gate refused", "gate", gate, "canary", k.String(), "err", err)
			writeError(w, err)
			return
		}
		log.InfoContext(r.Context(), "manual gate", "gate", gate, "canary", k.String(), "to", rep.To)
		writeJSON(w, http.StatusOK, rep)
	}
}

func handleHealthz() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}
}

// handleReadyz checks every dependency concurrently, each with its own short timeout.
// handleReadyz is open to anyone who reaches the pod (the kubelet has no token): it names the
// dependencies that failed, never how (addresses, errors), which go to the log.
func handleReadyz(checks []Checker, timeout time.Duration, log *slog.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			errs = map[string]string{}
		)
		for _, c := range checks {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(r.Context(), timeout)
				defer cancel()
				if err := c.Check(ctx); err != nil {
					log.WarnContext(ctx, "not ready", "dependency", c.Name, "err", err)
					mu.Lock()
					errs[c.Name] = "unavailable"
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if len(errs) > 0 {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "not ready", "failed": errs})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	}
}
