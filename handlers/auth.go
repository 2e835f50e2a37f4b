package handlers

import (
	"crypto/subtle"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/siskin-dev/siskin/functions"
)

type authenticator struct {
	opts Options
	oidc *oidcGate
	log  *slog.Logger
}

func bearerOf(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// oneOf compares token with every valid one in constant time: two are valid at once while a
// token is rotated.
func oneOf(token string, valid []string) bool {
	ok := 0
	for _, v := range valid {
		if v != "" && token != "" {
			ok |= subtle.ConstantTimeCompare([]byte(token), []byte(v))
		}
	}
	return ok == 1
}

// tokenOK: a sender's token, or an operator's (who may send anything a sender may).
func (a authenticator) tokenOK(token string) bool {
	return oneOf(token, a.opts.WebhookTokens) || oneOf(token, a.opts.APITokens)
}

// operatorOK: an operator's token, never a sender's.
func (a authenticator) operatorOK(token string) bool { return oneOf(token, a.opts.APITokens) }

func unauthorized(w http.ResponseWriter, why string) {
	writeError(w, fmt.Errorf("%w: %s", functions.ErrUnauthorized, why))
}

// operator requires an operator's token: the API's gates change releases, and a sender's
// token travels in registry URLs and the logs of proxies.
func (a authenticator) operator(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := bearerOf(r)
		switch {
		case a.opts.InsecureSkipAuth, a.operatorOK(tok):
			next.ServeHTTP(w, r)
		case tok == "":
			unauthorized(w, "missing bearer token")
		case oneOf(tok, a.opts.WebhookTokens):
			writeError(w, fmt.Errorf("%w: the webhook token is a sender's; the API takes the operator token (--api-token)", functions.ErrForbidden))
		default:
			unauthorized(w, "bad bearer token")
		}
	})
}

// bearer requires a sender's (or an operator's) token.
func (a authenticator) bearer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.opts.InsecureSkipAuth || a.tokenOK(bearerOf(r)) {
			next.ServeHTTP(w, r)
			return
		}
		if bearerOf(r) == "" {
			unauthorized(w, "missing bearer token")
			return
		}
		unauthorized(w, "bad bearer token")
	})
}

// registry accepts the bearer token; a sender's token as a `token` query parameter, for
// registries that cannot set headers (Docker Hub, Quay); or a valid GitHub signature for GHCR.
func (a authenticator) registry(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case a.opts.InsecureSkipAuth, a.tokenOK(bearerOf(r)), oneOf(r.URL.Query().Get("token"), a.opts.WebhookTokens):
			next.ServeHTTP(w, r)
			return
		case r.Header.Get("X-Hub-Signature-256") != "" && a.opts.GitHubSecret != "":
			body, err := io.ReadAll(r.Body)
			if err != nil {
				writeError(w, err)
				return
			}
			if err := VerifyGitHubSignature([]byte(a.opts.GitHubSecret), r.Header, body); err != nil {
				writeError(w, err)
				return
			}
			r.Body = io.NopCloser(strings.NewReader(string(body)))
			next.ServeHTTP(w, r)
			return
		}
		unauthorized(w, "missing or bad bearer token, token parameter or GitHub signature")
	})
}

// cloudEvents accepts the bearer token or, when configured, a Knative Eventing OIDC token
// (see oidcGate): a Broker cannot send custom headers, but Eventing with OIDC on sends its own
// token.
func (a authenticator) cloudEvents(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := bearerOf(r)
		if a.opts.InsecureSkipAuth || a.tokenOK(tok) {
			next.ServeHTTP(w, r)
			return
		}
		if tok == "" {
			unauthorized(w, "missing bearer token")
			return
		}
		if a.oidc == nil {
			unauthorized(w, "bad bearer token")
			return
		}
		user, err := a.oidc.sender(r.Context(), tok)
		if err != nil {
			writeError(w, err)
			return
		}
		a.log.DebugContext(r.Context(), "oidc sender", "user", user)
		next.ServeHTTP(w, r)
	})
}
