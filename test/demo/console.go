package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// console prints the demo's story: lines appended with the time since the start, never
// redrawn, so that it reads the same in a terminal, a CI log or a file.
type console struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
}

func newConsole(w io.Writer) *console { return &console{w: w, start: time.Now()} }

func (c *console) since() string {
	return fmt.Sprintf("%6.1fs", time.Since(c.start).Seconds())
}

// say prints one line stamped with the time since the demo started.
func (c *console) say(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintf(c.w, "%s  %s\n", c.since(), fmt.Sprintf(format, args...))
}

// block prints several lines at once, unstamped, so that concurrent lines do not cut them.
func (c *console) block(lines []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range lines {
		fmt.Fprintln(c.w, l)
	}
}

// heading starts a part of the story.
func (c *console) heading(title string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintf(c.w, "\n%s  == %s ==\n", c.since(), title)
}

// progressBar draws done (0..1) in width cells; a failed release is drawn with x up to where
// it stopped.
func progressBar(done float64, width int, failed bool) string {
	done = min(max(done, 0), 1)
	full := int(done*float64(width) + 0.5)
	fill := "#"
	if failed {
		fill = "x"
	}
	return "[" + strings.Repeat(fill, full) + strings.Repeat(".", width-full) + "]"
}

// labHandler turns the lab's log records into the demo's progress lines.
type labHandler struct {
	out   *console
	up    *atomic.Bool // the lab is ready: later readiness lines are restarts
	attrs []slog.Attr
}

func (h labHandler) Enabled(_ context.Context, level slog.Level) bool { return level >= slog.LevelInfo }

func (h labHandler) Handle(_ context.Context, r slog.Record) error {
	attrs := map[string]string{}
	for _, a := range h.attrs {
		attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool {
		attrs[a.Key] = a.Value.String()
		return true
	})
	switch r.Message {
	case "ready":
		switch {
		case h.up.Load():
			h.out.say("  lab: %s restarted", attrs["component"])
		case attrs["component"] == "lab":
			h.up.Store(true)
		default:
			h.out.say("  lab: %-24s ready after %s", attrs["component"], attrs["after"])
		}
	case "starting lab":
		h.out.say("  lab: starting in %s", attrs["dir"])
	case "lab stopped":
		h.out.say("  lab: stopped, every process gone")
	default:
		var b strings.Builder
		b.WriteString(r.Message)
		for k, v := range attrs {
			fmt.Fprintf(&b, " %s=%s", k, v)
		}
		h.out.say("  lab: %s", b.String())
	}
	return nil
}

func (h labHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return labHandler{out: h.out, up: h.up, attrs: append(append([]slog.Attr(nil), h.attrs...), attrs...)}
}

func (h labHandler) WithGroup(string) slog.Handler { return h }
