package handlers

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/siskin-dev/siskin/functions"
)

// The dashboard: server-rendered pages (html/template) that scripts of their own (no inline
// script, no build step) keep live by polling the JSON routes beside them. Everything a
// Canary says reaches the page escaped: by html/template in the HTML, as JSON set with
// textContent by the scripts.

//go:embed ui/*.html ui/static/*
var uiFiles embed.FS

// contentSecurityPolicy allows only Siskin's own scripts, styles and requests.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// pollInterval is how often the pages refresh their data.
const pollInterval = 3 * time.Second

type principalKey struct{}

// principal is who a dashboard request is from: a session (cookie), or a bearer token, which
// a browser never sends by itself and so needs no CSRF token.
type principal struct {
	session session
	bearer  bool
}

type dashboard struct {
	rel   Releases
	auth  authenticator
	opts  Options
	log   *slog.Logger
	pages *template.Template
	// anonKey signs the sessions of an unauthenticated dashboard (--insecure-skip-auth).
	anonKey []byte
	now     func() time.Time
}

func newDashboard(rel Releases, a authenticator, opts Options, log *slog.Logger) *dashboard {
	pages := template.Must(template.New("").Funcs(template.FuncMap{
		"when":  formatWhen,
		"since": func(t time.Time) string { return since(t, time.Now()) },
		"join":  strings.Join,
		"dur":   func(d time.Duration) string { return d.Round(time.Second).String() },
	}).ParseFS(uiFiles, "ui/*.html"))
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	return &dashboard{rel: rel, auth: a, opts: opts, log: log, pages: pages, anonKey: key, now: time.Now}
}

// mount serves the dashboard under /ui/.
func (d *dashboard) mount(r chi.Router) {
	r.Get("/ui", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ui/", http.StatusMovedPermanently) })
	r.Route("/ui/", func(r chi.Router) {
		r.Use(uiHeaders)
		static, _ := fs.Sub(uiFiles, "ui/static")
		r.Handle("/static/*", http.StripPrefix("/ui/static/", staticFiles(http.FileServer(http.FS(static)))))
		r.Get("/login", d.loginPage)
		r.With(d.sameOrigin).Post("/login", d.login)
		r.With(d.signedIn(false), d.sameOrigin).Post("/logout", d.logout)
		r.With(d.signedIn(false)).Get("/", d.fleetPage)
		r.With(d.signedIn(false)).Get("/canaries/{namespace}/{name}", d.canaryPage)
		r.With(d.signedIn(true)).Get("/api/canaries", d.fleetJSON)
		r.With(d.signedIn(true)).Get("/api/canaries/{namespace}/{name}", d.canaryJSON)
		r.With(d.signedIn(true), d.sameOrigin, d.csrf, d.writable).Post("/api/canaries/{namespace}/{name}/{gate}", d.gate)
	})
}

func uiHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "same-origin") // no-referrer would make form posts say Origin: null
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

func staticFiles(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "" || strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r) // no directory listings
			return
		}
		w.Header().Set("Cache-Control", "no-cache")
		next.ServeHTTP(w, r)
	})
}

// sessionKeys are the keys of the sessions the valid operator tokens open.
func (d *dashboard) sessionKeys() [][]byte {
	if d.opts.InsecureSkipAuth {
		return [][]byte{d.anonKey}
	}
	var keys [][]byte
	for _, t := range d.opts.APITokens {
		if t != "" {
			keys = append(keys, sessionKey(t))
		}
	}
	return keys
}

func (d *dashboard) sessionTTL() time.Duration {
	if d.opts.UISessionTTL > 0 {
		return d.opts.UISessionTTL
	}
	return defaultSessionTTL
}

// signedIn lets through a request with a valid session cookie or an operator's bearer token.
// Pages without one are sent to the login form; JSON gets a 401.
func (d *dashboard) signedIn(api bool) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if tok := bearerOf(r); tok != "" {
				d.auth.operator(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, principal{bearer: true})))
				})).ServeHTTP(w, r)
				return
			}
			var (
				s   session
				err = errNoSession
			)
			if d.opts.InsecureSkipAuth {
				s, err = session{payload: "v1|anonymous|", key: d.anonKey}, nil
			} else if c, cerr := r.Cookie(sessionCookie); cerr == nil {
				s, err = verifySession(c.Value, d.sessionKeys(), d.now())
			}
			if err != nil {
				if api {
					unauthorized(w, "log in at /ui/login, or send the operator's bearer token")
					return
				}
				http.Redirect(w, r, "/ui/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, principal{session: s})))
		})
	}
}

func principalOf(r *http.Request) principal {
	p, _ := r.Context().Value(principalKey{}).(principal)
	return p
}

// sameOrigin refuses a state-changing request a browser says comes from another site.
func (d *dashboard) sameOrigin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
			writeError(w, fmt.Errorf("%w: cross-site request (Sec-Fetch-Site: %s)", functions.ErrForbidden, site))
			return
		}
		if o := r.Header.Get("Origin"); o != "" {
			u, err := url.Parse(o)
			if err != nil || u.Host != r.Host {
				writeError(w, fmt.Errorf("%w: request from another origin", functions.ErrForbidden))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// csrf requires the session's CSRF token on a call a cookie authenticates.
func (d *dashboard) csrf(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := principalOf(r)
		if !p.bearer && !p.session.csrfOK(r.Header.Get(csrfHeader)) {
			writeError(w, fmt.Errorf("%w: missing or bad CSRF token (%s)", functions.ErrForbidden, csrfHeader))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (d *dashboard) writable(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d.opts.UIReadOnly {
			writeError(w, fmt.Errorf("%w: the dashboard is read-only (--ui-readonly); use the API or the CLI", functions.ErrForbidden))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// safeNext is where a login goes: a dashboard path, never another site.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/ui/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return "/ui/"
	}
	return next
}

type loginData struct {
	Next, Error string
}

func (d *dashboard) loginPage(w http.ResponseWriter, r *http.Request) {
	d.render(w, http.StatusOK, "login", page{Title: "Log in", Data: loginData{Next: safeNext(r.URL.Query().Get("next"))}})
}

func (d *dashboard) login(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		writeError(w, fmt.Errorf("%w: %w", functions.ErrInvalid, err))
		return
	}
	next := safeNext(r.PostForm.Get("next"))
	if d.opts.InsecureSkipAuth {
		http.Redirect(w, r, next, http.StatusSeeOther)
		return
	}
	tok := strings.TrimSpace(r.PostForm.Get("token"))
	var key []byte
	for _, t := range d.opts.APITokens {
		if oneOf(tok, []string{t}) {
			key = sessionKey(t)
		}
	}
	if key == nil {
		msg := "That is not an operator token."
		code := http.StatusUnauthorized
		if oneOf(tok, d.opts.WebhookTokens) {
			msg, code = "That is the senders' webhook token; the dashboard takes the operators' API token.", http.StatusForbidden
		}
		d.log.InfoContext(r.Context(), "dashboard login refused", "remote", r.RemoteAddr)
		d.render(w, code, "login", page{Title: "Log in", Data: loginData{Next: next, Error: msg}})
		return
	}
	_, value := newSession(key, d.now(), d.sessionTTL())
	setSessionCookie(w, value, d.sessionTTL())
	d.log.InfoContext(r.Context(), "dashboard login", "remote", r.RemoteAddr)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (d *dashboard) logout(w http.ResponseWriter, r *http.Request) {
	p := principalOf(r)
	if !p.bearer && !p.session.csrfOK(r.FormValue("csrf")) {
		writeError(w, fmt.Errorf("%w: missing or bad CSRF token", functions.ErrForbidden))
		return
	}
	clearSessionCookie(w)
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
}

// page is what every template gets.
type page struct {
	Title    string
	CSRF     string
	ReadOnly bool
	SignedIn bool
	Poll     int // milliseconds
	Data     any
}

func (d *dashboard) page(r *http.Request, title string, data any) page {
	p := principalOf(r)
	return page{Title: title, CSRF: p.session.csrf(), ReadOnly: d.opts.UIReadOnly,
		SignedIn: !d.opts.InsecureSkipAuth && !p.bearer, Poll: int(pollInterval.Milliseconds()), Data: data}
}

func (d *dashboard) render(w http.ResponseWriter, code int, name string, p page) {
	var b strings.Builder
	if err := d.pages.ExecuteTemplate(&b, name, p); err != nil {
		d.log.Error("render dashboard page", "page", name, "err", err)
		http.Error(w, "cannot render the page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(b.String()))
}

// renderError shows an error on a page, with the status the error table gives it.
func (d *dashboard) renderError(w http.ResponseWriter, r *http.Request, err error) {
	d.render(w, statusOf(err), "error", d.page(r, "Error", err.Error()))
}

// fleetData is the fleet page: the canaries, filtered and sorted by last activity.
type fleetData struct {
	Canaries   []functions.CanaryView
	Namespaces []string
	Phases     []functions.Phase
	Namespace  string
	Phase      string
	Total      int
}

// lastActivity is a canary's most recent step or transition.
func lastActivity(v functions.CanaryView) time.Time {
	if v.LastStepAt.After(v.LastTransitionTime) {
		return v.LastStepAt
	}
	return v.LastTransitionTime
}

// sortFleet orders canaries by last activity, newest first, then by key.
func sortFleet(views []functions.CanaryView) {
	slices.SortStableFunc(views, func(a, b functions.CanaryView) int {
		if c := lastActivity(b).Compare(lastActivity(a)); c != 0 {
			return c
		}
		return strings.Compare(a.Key.String(), b.Key.String())
	})
}

func (d *dashboard) fleetPage(w http.ResponseWriter, r *http.Request) {
	views, err := d.rel.Views(r.Context(), "")
	if err != nil && len(views) == 0 {
		d.renderError(w, r, err)
		return
	}
	ns, phase := r.URL.Query().Get("namespace"), r.URL.Query().Get("phase")
	data := fleetData{Phases: functions.Phases, Namespace: ns, Phase: phase, Total: len(views)}
	seen := map[string]bool{}
	for _, v := range views {
		if !seen[v.Namespace] {
			seen[v.Namespace] = true
			data.Namespaces = append(data.Namespaces, v.Namespace)
		}
		if (ns == "" || v.Namespace == ns) && (phase == "" || string(v.Phase) == phase) {
			data.Canaries = append(data.Canaries, v)
		}
	}
	slices.Sort(data.Namespaces)
	sortFleet(data.Canaries)
	d.render(w, http.StatusOK, "fleet", d.page(r, "Canaries", data))
}

func (d *dashboard) canaryPage(w http.ResponseWriter, r *http.Request) {
	det, err := d.rel.Detail(r.Context(), keyOf(r))
	if err != nil {
		d.renderError(w, r, err)
		return
	}
	d.render(w, http.StatusOK, "canary", d.page(r, det.Key.String(), det))
}

// fleetReply is the fleet's live update.
type fleetReply struct {
	Now      time.Time              `json:"now"`
	Canaries []functions.CanaryView `json:"canaries"`
	Error    string                 `json:"error,omitempty"`
}

func (d *dashboard) fleetJSON(w http.ResponseWriter, r *http.Request) {
	views, err := d.rel.Views(r.Context(), "")
	if err != nil && len(views) == 0 {
		writeError(w, err)
		return
	}
	if views == nil {
		views = []functions.CanaryView{}
	}
	sortFleet(views)
	rep := fleetReply{Now: d.now().UTC(), Canaries: views}
	if err != nil {
		rep.Error = "some canaries could not be read: " + err.Error()
	}
	writeLive(w, r, rep, func(v *fleetReply) { v.Now = time.Time{} })
}

type canaryReply struct {
	Now    time.Time              `json:"now"`
	Canary functions.CanaryDetail `json:"canary"`
}

func (d *dashboard) canaryJSON(w http.ResponseWriter, r *http.Request) {
	det, err := d.rel.Detail(r.Context(), keyOf(r))
	if err != nil {
		writeError(w, err)
		return
	}
	writeLive(w, r, canaryReply{Now: d.now().UTC(), Canary: det}, func(v *canaryReply) { v.Now = time.Time{} })
}

// writeLive writes a live update with an ETag of its content (the clock aside), so a poll
// that finds nothing new gets an empty 304.
func writeLive[T any](w http.ResponseWriter, r *http.Request, v T, withoutClock func(*T)) {
	body, err := json.Marshal(v)
	if err != nil {
		writeError(w, err)
		return
	}
	still := v
	withoutClock(&still)
	stable, _ := json.Marshal(still)
	sum := sha256.Sum256(stable)
	etag := `"` + hex.EncodeToString(sum[:12]) + `"`
	w.Header().Set("ETag", etag)
	w.Header().Set("Cache-Control", "no-cache, private")
	if match := r.Header.Get("If-None-Match"); match != "" && match == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(append(body, '\n'))
}

var gates = []string{"promote", "abort", "resume"}

func (d *dashboard) gate(w http.ResponseWriter, r *http.Request) {
	g := chi.URLParam(r, "gate")
	if !slices.Contains(gates, g) {
		writeError(w, fmt.Errorf("%w: no gate %q", functions.ErrNotFound, g))
		return
	}
	handleGate(d.rel, g, d.opts, d.log).ServeHTTP(w, r)
}

// formatWhen prints a time for the pages (UTC, to the second); zero is "-".
func formatWhen(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

// since prints how long ago t was, coarsely.
func since(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "in " + (-d).Round(time.Second).String()
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}
