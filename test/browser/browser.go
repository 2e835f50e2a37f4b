// Package browser starts Debian's chromium headless for the dashboard's browser tests
// (chromedp over the DevTools protocol), with a fresh profile, and collects what the page
// says went wrong: script exceptions, console errors (Content-Security-Policy violations
// among them) and dialogs nobody expected.
package browser

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// Chromium is where Debian's chromium package puts the browser (test/lab/deps.sh installs it).
const Chromium = "/usr/bin/chromium"

// Browser is one headless chromium with one tab.
type Browser struct {
	Ctx      context.Context
	t        testing.TB
	mu       sync.Mutex
	problems []string
	dialogs  []string
	// OutDir receives the screenshots.
	OutDir string
}

// New starts chromium, or skips the test when it is not installed. Screenshots go to outDir.
func New(t testing.TB, outDir string) *Browser {
	t.Helper()
	if _, err := os.Stat(Chromium); err != nil {
		t.Skipf("%s not found (%v): run test/lab/deps.sh to install chromium", Chromium, err)
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(Chromium),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	b := &Browser{Ctx: ctx, t: t, OutDir: outDir}
	start, cancelStart := context.WithTimeout(ctx, 60*time.Second)
	defer cancelStart()
	if err := chromedp.Do(ctx); err != nil { // starts the browser, bound to ctx alone
		cancel()
		cancelAlloc()
		t.Fatalf("start chromium: %v", err)
	}
	messages := chromedp.Console(ctx)
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			// A refused request (a gate answered 422, say) is logged by the browser; the
			// tests check what the page shows instead.
			if (m.Type == chromedp.ConsoleError || m.IsException()) && !strings.Contains(m.Text, "Failed to load resource") {
				b.problem(string(m.Type) + ": " + m.String())
			}
		}
	}()
	go func() {
		for ev, err := range dialogs {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.dialogs = append(b.dialogs, string(ev.Type)+": "+ev.Message)
			b.mu.Unlock()
			_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: false})
		}
	}()
	if err := chromedp.Do(start, chromedp.Navigate("about:blank")); err != nil {
		cancel()
		cancelAlloc()
		t.Fatalf("start chromium: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	return b
}

func (b *Browser) problem(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.problems = append(b.problems, s)
}

// Problems are the exceptions and console errors so far.
func (b *Browser) Problems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.problems...)
}

// Dialogs are the alert, confirm and prompt dialogs that opened (and were dismissed).
func (b *Browser) Dialogs() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.dialogs...)
}

// Do runs actions with a timeout, failing the test with a screenshot and what the page said
// on error.
func (b *Browser) Do(what string, timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.Ctx, timeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.fail(what, err)
	}
}

func (b *Browser) fail(what string, err error) {
	b.t.Helper()
	url, _ := chromedp.Run(b.Ctx, chromedp.Location())
	b.Screenshot("failed-" + strings.ReplaceAll(what, " ", "-"))
	b.t.Fatalf("%s (at %s): %v; page problems: %v", what, url, err, b.Problems())
}

// Eval evaluates a JavaScript expression in the page.
func Eval[T any](b *Browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.Ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.fail("evaluate "+expr, err)
	}
	return v
}

// WaitFor polls a JavaScript expression until it is true.
func (b *Browser) WaitFor(what, expr string, timeout time.Duration) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.Ctx, timeout)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr)); err != nil {
		b.fail("wait for "+what, err)
	}
}

// Screenshot saves the whole page as OutDir/name.png.
func (b *Browser) Screenshot(name string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.Ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return ""
	}
	path := filepath.Join(b.OutDir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
	}
	return path
}

// Width sets the viewport's width (390 for a phone, 1280 for a laptop).
func Width(w int64) chromedp.Action[chromedp.Void] {
	return chromedp.EmulateViewport(w, 900)
}

// Text is the textContent of the element sel selects, "" when there is none.
func Text(b *Browser, sel string) string {
	return Eval[string](b, fmt.Sprintf(`(document.querySelector(%q)||{}).textContent||""`, sel))
}
