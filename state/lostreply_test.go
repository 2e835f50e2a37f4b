package state

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/siskin-dev/siskin/functions"
)

// replyDropper is a TCP proxy to a real redis-server that, once armed, lets the next command
// through and closes the connection instead of relaying its reply: the write happened, and the
// client cannot know.
type replyDropper struct {
	addr  string
	armed atomic.Bool
}

func newReplyDropper(t *testing.T, upstream string) *replyDropper {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &replyDropper{addr: l.Addr().String()}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	track := func(c net.Conn) { mu.Lock(); conns = append(conns, c); mu.Unlock() }
	go func() {
		for {
			client, err := l.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", upstream)
			if err != nil {
				client.Close()
				continue
			}
			track(client)
			track(server)
			go func() { _, _ = io.Copy(server, client); server.Close() }()
			go func() {
				buf := make([]byte, 64<<10)
				for {
					n, err := server.Read(buf)
					if n > 0 && d.armed.CompareAndSwap(true, false) {
						client.Close()
						return
					}
					if n > 0 {
						if _, werr := client.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						client.Close()
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return d
}

// A save whose reply is lost did happen. Reporting it failed makes the caller step again from
// the old state; the Store reads the state back instead. With the client's own retries, the
// retry finds its first attempt's write and must not be taken for a conflict either.
func TestSaveWithALostReplyIsReadBack(t *testing.T) {
	needRedis(t)
	for _, tc := range []struct{ name, query string }{
		{"no client retries", "?max_retries=-1"},
		{"client retries", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			proxy := newReplyDropper(t, standaloneAddr)
			s := New(openTest(t, "redis://"+proxy.addr+tc.query), Options{Prefix: "lostreply" + tc.query, Timeout: time.Second})
			ctx := context.Background()
			if err := s.Delete(ctx, podinfo); err != nil {
				t.Fatal(err)
			}
			first, err := s.Save(ctx, podinfo, functions.State{Phase: functions.PhaseProgressing, Steps: 1}, nil)
			if err != nil {
				t.Fatal(err)
			}
			next := first
			next.Steps, next.Routing = 2, functions.Routing{Primary: 90, Canary: 10}
			proxy.armed.Store(true)
			saved, err := s.Save(ctx, podinfo, next, nil)
			if proxy.armed.Load() {
				t.Fatal("the proxy dropped no reply")
			}
			if err != nil {
				t.Fatalf("Save whose reply was lost: got %v, want success (it was written)", err)
			}
			if saved.Version != first.Version+1 {
				t.Errorf("saved version: got %d, want %d", saved.Version, first.Version+1)
			}
			got, err := s.Load(ctx, podinfo)
			if err != nil || got.Steps != 2 {
				t.Errorf("stored state: got steps %d (%v), want 2", got.Steps, err)
			}
			// A save that really did not happen is still reported failed.
			stale := first
			stale.Steps = 3
			if _, err := s.Save(ctx, podinfo, stale, nil); !errors.Is(err, functions.ErrConflict) {
				t.Errorf("stale Save: got %v, want ErrConflict", err)
			}
		})
	}
}
