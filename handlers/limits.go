package handlers

import (
	"errors"
	"io"
	"net/http"
	"time"
)

// An oversized body is read and thrown away, up to maxDrain bytes within drainTimeout, before
// the 413 is written: a client that sends its whole request before it reads the answer (most
// scripts, Python's http.client, some webhook senders) then gets the 413 instead of a reset,
// and the connection stays usable. Past that bound the server answers and closes; such a
// client may see a reset, which is the price of not reading without limit.
const (
	maxDrain     = 8 << 20
	drainTimeout = 10 * time.Second
)

// limitBody refuses bodies over n bytes with a 413, reliably: see maxDrain.
func limitBody(n int64) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ContentLength > n {
				if r.ContentLength-n > maxDrain || !drain(w, r.Body) {
					w.Header().Set("Connection", "close")
				}
				writeError(w, &http.MaxBytesError{Limit: n})
				return
			}
			r.Body = &limitedBody{ReadCloser: r.Body, left: n, limit: n, w: w}
			next.ServeHTTP(w, r)
		})
	}
}

// drain reads what is left of body, up to maxDrain bytes within drainTimeout, and reports
// whether it reached the end.
func drain(w http.ResponseWriter, body io.Reader) bool {
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(drainTimeout))
	defer func() { _ = rc.SetReadDeadline(time.Time{}) }()
	n, err := io.Copy(io.Discard, io.LimitReader(body, maxDrain+1))
	return err == nil && n <= maxDrain
}

// limitedBody is http.MaxBytesReader that drains the rest of an oversized body (bounded)
// before it reports the *http.MaxBytesError, instead of having the server close the
// connection on a client still sending.
type limitedBody struct {
	io.ReadCloser
	left, limit int64
	w           http.ResponseWriter
	err         error
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.ReadCloser.Read(p)
	if int64(n) <= b.left {
		b.left -= int64(n)
		if err != nil && !errors.Is(err, io.EOF) {
			b.err = err
		}
		return n, err
	}
	n = int(b.left)
	b.left = 0
	if !drain(b.w, b.ReadCloser) {
		b.w.Header().Set("Connection", "close")
	}
	b.err = &http.MaxBytesError{Limit: b.limit}
	return n, b.err
}
