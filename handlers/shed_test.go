package handlers

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// Past its bound a route answers 503 with Retry-After at once, and takes requests again as
// soon as one in flight ends.
func TestShedPastTheBound(t *testing.T) {
	tests := []struct {
		name     string
		bound    int
		inflight int
		want     int
	}{
		{"under the bound", 3, 2, http.StatusOK},
		{"at the bound", 3, 3, http.StatusServiceUnavailable},
		{"a bound of one", 1, 1, http.StatusServiceUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			release := make(chan struct{})
			entered := make(chan struct{}, tt.inflight)
			var shedCount int
			var mu sync.Mutex
			h := shed("test", tt.bound, func(kind, outcome string, _ time.Duration) { mu.Lock(); shedCount++; mu.Unlock() })(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/hold" {
					entered <- struct{}{}
					<-release
				}
				w.WriteHeader(http.StatusOK)
			}))
			srv := httptest.NewServer(h)
			defer srv.Close()
			var wg sync.WaitGroup
			for range tt.inflight {
				wg.Go(func() {
					if resp, err := http.Get(srv.URL + "/hold"); err == nil {
						resp.Body.Close()
					}
				})
				<-entered
			}
			resp, err := http.Get(srv.URL + "/now")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("got %d %s, want %d", resp.StatusCode, body, tt.want)
			}
			if tt.want == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "1" {
				t.Errorf("Retry-After %q, want \"1\"", resp.Header.Get("Retry-After"))
			}
			close(release)
			wg.Wait()
			if resp, err := http.Get(srv.URL + "/now"); err != nil || resp.StatusCode != http.StatusOK {
				t.Errorf("after the requests in flight ended: got %v %v, want 200", resp.StatusCode, err)
			} else {
				resp.Body.Close()
			}
			if got, want := shedCount, map[bool]int{true: 1, false: 0}[tt.want != http.StatusOK]; got != want {
				t.Errorf("observed %d sheds, want %d", got, want)
			}
		})
	}
}
