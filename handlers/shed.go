package handlers

import (
	"net/http"
	"strconv"
	"time"
)

// DefaultMaxInflight is how many requests one event route works on at once before it sheds.
const DefaultMaxInflight = 256

// shed bounds the requests one route works on at once. Past n, a request is refused at once
// with 503 and Retry-After, which every sender Siskin serves retries: under overload the work
// queued stays bounded (n requests, each with its own deadline) instead of growing with the
// offered load, and the senders' backoff spreads the rest.
func shed(route string, n int, observe func(kind, outcome string, took time.Duration)) func(http.Handler) http.Handler {
	slots := make(chan struct{}, n)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case slots <- struct{}{}:
			default:
				observe(route, "shed", 0)
				w.Header().Set("Retry-After", strconv.Itoa(1))
				writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: "busy: " + strconv.Itoa(n) + " requests in flight on this route; retry"})
				return
			}
			defer func() { <-slots }()
			next.ServeHTTP(w, r)
		})
	}
}
