package handlers

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// slowBody hands out its bytes in chunks with a pause between them, as a client on a real
// network does, so that the server answers while the client is still sending.
type slowBody struct {
	r     io.Reader
	chunk int
	pause time.Duration
}

func (s *slowBody) Read(p []byte) (int, error) {
	if len(p) > s.chunk {
		p = p[:s.chunk]
	}
	n, err := s.r.Read(p)
	if n > 0 && s.pause > 0 {
		time.Sleep(s.pause)
	}
	return n, err
}

// A body over the limit gets its 413, every time, on a real connection: with its length
// declared or chunked, fast or still being sent, on every event route. Before the fix the
// server closed the connection with the body unread and the client, still sending, often saw
// a reset instead of the answer.
func TestOversizedBodyGets413Reliably(t *testing.T) {
	srv := newServer(t, &fakeReleases{}, nil)
	big := bytes.Repeat([]byte("x"), 1300*1024) // 1.3 MB against the 1 MiB limit
	tests := []struct {
		name    string
		path    string
		headers map[string]string
		chunked bool
		slow    bool
	}{
		{"cloudevent, length declared", "/", map[string]string{"Ce-Specversion": "1.0", "Ce-Id": "1", "Ce-Type": "dev.knative.sources.ping", "Ce-Source": "/t", "Content-Type": "application/json"}, false, false},
		{"cloudevent, chunked", "/", map[string]string{"Ce-Specversion": "1.0", "Ce-Id": "1", "Ce-Type": "dev.knative.sources.ping", "Ce-Source": "/t", "Content-Type": "application/json"}, true, false},
		{"registry, length declared", "/webhooks/registry", map[string]string{"Content-Type": "application/vnd.docker.distribution.events.v1+json"}, false, false},
		{"registry, chunked and slow", "/webhooks/registry", map[string]string{"Content-Type": "application/vnd.docker.distribution.events.v1+json"}, true, true},
		{"alertmanager, length declared and slow", "/webhooks/alertmanager", map[string]string{"Content-Type": "application/json"}, false, true},
		{"alertmanager, chunked", "/webhooks/alertmanager", map[string]string{"Content-Type": "application/json"}, true, false},
	}
	const rounds = 15
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := &http.Client{Timeout: 30 * time.Second}
			for i := range rounds {
				var body io.Reader = bytes.NewReader(big)
				if tt.slow {
					body = &slowBody{r: bytes.NewReader(big), chunk: 64 << 10, pause: 2 * time.Millisecond}
				}
				req, err := http.NewRequest(http.MethodPost, srv.URL+tt.path, body)
				if err != nil {
					t.Fatal(err)
				}
				if tt.chunked {
					req.ContentLength = -1
					req.Body = io.NopCloser(body)
				} else {
					req.ContentLength = int64(len(big))
				}
				req.Header.Set("Authorization", "Bearer "+token)
				for k, v := range tt.headers {
					req.Header.Set(k, v)
				}
				resp, err := client.Do(req)
				if err != nil {
					t.Fatalf("round %d: got error %v, want a 413", i, err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusRequestEntityTooLarge {
					t.Fatalf("round %d: got %d %s, want 413", i, resp.StatusCode, b)
				}
				if !strings.Contains(string(b), "too large") {
					t.Errorf("round %d: body %q does not say the request was too large", i, b)
				}
			}
		})
	}
}

// rawPost is a client that, like many (Python's http.client, shell scripts with nc), sends the
// whole request before it reads the answer, pausing between chunks as a slow network does.
func rawPost(t *testing.T, addr, path string, headers map[string]string, body []byte, chunk int, pause time.Duration) (string, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	var head strings.Builder
	fmt.Fprintf(&head, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\nAuthorization: Bearer %s\r\n", path, addr, len(body), token)
	for k, v := range headers {
		fmt.Fprintf(&head, "%s: %s\r\n", k, v)
	}
	head.WriteString("\r\n")
	if _, err := io.WriteString(c, head.String()); err != nil {
		return "", err
	}
	for off := 0; off < len(body); off += chunk {
		if _, err := c.Write(body[off:min(off+chunk, len(body))]); err != nil {
			return "", fmt.Errorf("write at %d: %w", off, err)
		}
		time.Sleep(pause)
	}
	status, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(status), err
}

// The client that sends all before it reads: it must get the 413 too.
func TestOversizedBodyGets413BySendAllClients(t *testing.T) {
	srv := newServer(t, &fakeReleases{}, nil)
	addr := strings.TrimPrefix(srv.URL, "http://")
	big := bytes.Repeat([]byte("x"), 1300*1024)
	tests := []struct {
		name  string
		path  string
		pause time.Duration
	}{
		{"cloudevents route, fast", "/", 0},
		{"cloudevents route, slow", "/", 40 * time.Millisecond},
		{"registry route, slow", "/webhooks/registry", 40 * time.Millisecond},
		{"alertmanager route, slow", "/webhooks/alertmanager", 40 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i := range 3 {
				got, err := rawPost(t, addr, tt.path, map[string]string{"Content-Type": "application/json"}, big, 64<<10, tt.pause)
				if err != nil || got != "HTTP/1.1 413 Request Entity Too Large" {
					t.Fatalf("round %d: got %q, %v; want HTTP/1.1 413", i, got, err)
				}
			}
		})
	}
}

// The connection stays usable after a 413 within the drain bound: the next request on it is
// answered.
func TestConnectionSurvivesA413(t *testing.T) {
	srv := newServer(t, &fakeReleases{}, nil)
	client := &http.Client{Timeout: 10 * time.Second}
	send := func(body []byte) int {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("POST: %v", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := send(bytes.Repeat([]byte("x"), 1300*1024)); got != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized: got %d, want 413", got)
	}
	if got := send([]byte(`{}`)); got != http.StatusOK {
		t.Errorf("next request: got %d, want 200", got)
	}
}

// Far past the drain bound the server stops reading and closes; the answer is still sent
// first. The client may then see either the 413 or a reset, never a hang.
func TestHugeBodyIsNotReadForever(t *testing.T) {
	srv := newServer(t, &fakeReleases{}, nil)
	client := &http.Client{Timeout: 20 * time.Second}
	huge := io.LimitReader(zeros{}, 64<<20) // 64 MiB
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/webhooks/alertmanager", huge)
	req.ContentLength = 64 << 20
	req.Header.Set("Authorization", "Bearer "+token)
	start := time.Now()
	resp, err := client.Do(req)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("got %d, want 413", resp.StatusCode)
		}
	}
	if took := time.Since(start); took > 15*time.Second {
		t.Errorf("the request took %v (%v): the server read a 64 MiB body it had refused", took, err)
	}
	fmt.Fprint(io.Discard, err)
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
