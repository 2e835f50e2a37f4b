package lab

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var current atomic.Pointer[Lab]

// Current is the lab started by Main, nil outside of it.
func Current() *Lab { return current.Load() }

// Require returns the lab started by Main, and fails the test when there is none.
func Require(t testing.TB) *Lab {
	t.Helper()
	l := current.Load()
	if l == nil {
		t.Fatal("no lab: call lab.Main(m, lab.Options{}) from TestMain")
	}
	return l
}

// Main is for TestMain: it starts a lab, runs the tests, stops the lab and exits with the
// tests' status. If the lab cannot start, it fails with the reason (end-to-end tests never
// pass without it). The lab is also stopped on Ctrl-C or SIGTERM; should the test binary be
// killed outright (test timeout, SIGKILL), the kernel kills the lab's processes. After a
// failure, the lab's folder with all logs is kept and named.
func Main(m *testing.M, opts Options) {
	os.Exit(run(m, opts))
}

func run(m *testing.M, opts Options) int {
	ctx, restoreSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer restoreSignals()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	l, err := Start(ctx, opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: the lab did not start, so the end-to-end tests cannot run.\n%v\n"+
			"The lab needs the control-plane binaries and Debian packages: run `make lab-build`.\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "lab: %s\n", FormatTimings(l.Timings()))
	current.Store(l)
	defer current.Store(nil)

	done := make(chan int, 1)
	go func() { done <- m.Run() }()
	var code int
	select {
	case code = <-done:
	case <-ctx.Done():
		restoreSignals() // a second Ctrl-C kills at once; the kernel then kills the servers
		fmt.Fprintln(os.Stderr, "lab: interrupted, stopping the lab")
		code = 130
	}
	if code != 0 {
		l.keepDir = true
	}
	if err := l.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "lab: stop: %v\n", err)
		code = max(code, 1)
	}
	if l.keepDir {
		fmt.Fprintf(os.Stderr, "lab: logs kept in %s/logs\n", l.Dir())
	}
	return code
}

// FormatTimings renders readiness times on one line, as "component 1.2s, ...".
func FormatTimings(ts []Timing) string {
	parts := make([]string, 0, len(ts))
	for _, t := range ts {
		parts = append(parts, fmt.Sprintf("%s %s", t.Component, t.Ready.Round(10*time.Millisecond)))
	}
	return "ready: " + strings.Join(parts, ", ")
}
