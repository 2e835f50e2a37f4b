//go:build browser

package handlers

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/siskin-dev/siskin/functions"
	"github.com/siskin-dev/siskin/test/browser"
)

// shotsDir is where the screenshots go: $SISKIN_SHOTS, or the test's artifact folder (kept
// with `go test -artifacts -outputdir DIR`).
func shotsDir(t *testing.T) string {
	if d := os.Getenv("SISKIN_SHOTS"); d != "" {
		abs, _ := filepath.Abs(d)
		return abs
	}
	return t.ArtifactDir()
}

// The dashboard in a real browser, against a fake fleet: login, the fleet, the filters, a
// canary, an abort with its confirmation, escaping, the two widths, logout. `make ui-browser`.
func TestBrowserDashboard(t *testing.T) {
	f := newUIFake()
	srv := newUIServer(t, f, nil)
	// localhost, not 127.0.0.1: browsers treat it as a secure context, so the Secure session
	// cookie is kept over plain HTTP.
	base := strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)
	out := shotsDir(t)
	b := browser.New(t, out)
	t.Logf("screenshots in %s", out)

	b.Do("open the dashboard", 20*time.Second, chromedp.Navigate(base+"/ui/"), chromedp.WaitVisible(chromedp.ID("token")))
	b.Screenshot("login-1280")
	b.Do("log in", 20*time.Second,
		chromedp.SendKeys(chromedp.ID("token"), apiToken),
		chromedp.Click(chromedp.ID("login-submit")),
		chromedp.WaitVisible(chromedp.CSS(`#fleet-rows tr[data-key]`)))

	t.Run("fleet", func(t *testing.T) {
		b.WaitFor("three rows", `document.querySelectorAll('#fleet-rows tr[data-key]').length === 3`, 10*time.Second)
		if got := browser.Eval[string](b, `document.querySelector('#fleet-rows tr[data-key]').dataset.key`); got != "shop/cart" {
			t.Errorf("first row %q, want shop/cart (the most recently active)", got)
		}
		// The canary named <script> is text, and ran nothing.
		if got := browser.Eval[string](b, `document.querySelector('#fleet-rows tr:last-child td:nth-child(2)').textContent`); got != evilName {
			t.Errorf("the evil canary's name cell reads %q, want the name as text", got)
		}
		if n := browser.Eval[int](b, `document.scripts.length`); n != 2 {
			t.Errorf("%d scripts in the page, want the 2 of the dashboard", n)
		}
		if n := browser.Eval[int](b, `document.querySelectorAll('img, b').length`); n != 0 {
			t.Errorf("%d elements came from a Canary's HTML", n)
		}
		b.Do("1280", 10*time.Second, browser.Width(1280))
		b.Screenshot("fleet-1280")
		b.Do("390", 10*time.Second, browser.Width(390))
		b.Screenshot("fleet-390")
		b.Do("back to 1280", 10*time.Second, browser.Width(1280))
	})
	t.Run("filters", func(t *testing.T) {
		b.Do("filter by namespace", 10*time.Second, chromedp.SetValue(chromedp.ID("f-namespace"), "shop"),
			chromedp.Evaluate[chromedp.Void](`document.getElementById('f-namespace').dispatchEvent(new Event('change'))`))
		b.WaitFor("two rows", `document.querySelectorAll('#fleet-rows tr[data-key]').length === 2`, 5*time.Second)
		if got := browser.Eval[string](b, `location.search`); got != "?namespace=shop" {
			t.Errorf("the URL keeps the filter: got %q", got)
		}
		b.Do("filter by phase", 10*time.Second, chromedp.SetValue(chromedp.ID("f-phase"), "Progressing"),
			chromedp.Evaluate[chromedp.Void](`document.getElementById('f-phase').dispatchEvent(new Event('change'))`))
		b.WaitFor("one row", `document.querySelectorAll('#fleet-rows tr[data-key]').length === 1`, 5*time.Second)
	})
	t.Run("live", func(t *testing.T) {
		f.mu.Lock()
		v := f.views[functions.Key{Namespace: "shop", Name: "checkout"}]
		v.Weight = 40
		f.views[v.Key] = v
		f.mu.Unlock()
		b.WaitFor("the new weight", `document.querySelector('#fleet-rows tr[data-key="shop/checkout"] meter').value === 40`, 10*time.Second)
	})
	t.Run("canary", func(t *testing.T) {
		b.Do("open checkout", 20*time.Second, chromedp.Click(chromedp.CSS(`#fleet-rows a`)),
			chromedp.WaitVisible(chromedp.CSS(`#timeline svg`)))
		if got := browser.Text(b, "#c-description"); !strings.Contains(got, "10 % steps to 50 % every 10s") {
			t.Errorf("description %q", got)
		}
		for sel, want := range map[string]int{"#timeline svg .mark.fail": 1, "#timeline svg .mark.hook": 1, "#timeline svg .mark.alert": 1, "#timeline svg polyline": 3} {
			if n := browser.Eval[int](b, `document.querySelectorAll('`+sel+`').length`); n != want {
				t.Errorf("%s: %d, want %d", sel, n, want)
			}
		}
		b.Screenshot("canary-1280")
		b.Do("390", 10*time.Second, browser.Width(390))
		b.WaitFor("the timeline redrawn narrow", `document.querySelector('#timeline svg').getAttribute('width') <= 390`, 5*time.Second)
		b.Screenshot("canary-390")
		b.Do("back to 1280", 10*time.Second, browser.Width(1280))
	})
	t.Run("abort", func(t *testing.T) {
		f.fakeReleases.reset()
		b.Do("click Abort", 10*time.Second, chromedp.Click(chromedp.CSS(`button[data-gate="abort"]`)),
			chromedp.WaitVisible(chromedp.ID("confirm")))
		b.Screenshot("confirm-abort")
		if got := browser.Text(b, "#confirm-text"); !strings.Contains(got, "Abort the release of shop/checkout?") {
			t.Errorf("confirmation %q", got)
		}
		b.Do("cancel", 10*time.Second, chromedp.Click(chromedp.ID("confirm-cancel")), chromedp.WaitNotVisible(chromedp.ID("confirm")))
		time.Sleep(200 * time.Millisecond)
		for _, c := range f.fakeReleases.snapshot() {
			if strings.HasPrefix(c, "abort") {
				t.Fatalf("cancelled, yet called %q", c)
			}
		}
		b.Do("abort and confirm", 10*time.Second, chromedp.Click(chromedp.CSS(`button[data-gate="abort"]`)),
			chromedp.WaitVisible(chromedp.ID("confirm")), chromedp.Click(chromedp.ID("confirm-ok")))
		b.WaitFor("the outcome", `document.getElementById('gate-result').textContent.includes('abort done: Progressing → Failed')`, 10*time.Second)
		b.Screenshot("aborted")
		aborted := false
		for _, c := range f.fakeReleases.snapshot() {
			aborted = aborted || c == "abort shop/checkout manual abort from the dashboard"
		}
		if !aborted {
			t.Errorf("calls %q: want the abort with the dialog's reason", f.fakeReleases.snapshot())
		}
	})
	t.Run("escaping", func(t *testing.T) {
		b.Do("open the evil canary", 20*time.Second, chromedp.Navigate(base+"/ui/canaries/web/"+url.PathEscape(evilName)),
			chromedp.WaitVisible(chromedp.CSS(`#timeline svg`)))
		time.Sleep(500 * time.Millisecond)
		if n := browser.Eval[int](b, `document.querySelectorAll('img, b').length`); n != 0 {
			t.Errorf("%d elements came from a Canary's HTML", n)
		}
		if got := browser.Text(b, "#c-name"); got != evilName {
			t.Errorf("name reads %q", got)
		}
		b.Screenshot("canary-escaped")
	})
	t.Run("logout", func(t *testing.T) {
		b.Do("log out", 20*time.Second, chromedp.Click(chromedp.CSS(`form.logout button`)), chromedp.WaitVisible(chromedp.ID("token")))
		b.Do("the fleet needs a login again", 20*time.Second, chromedp.Navigate(base+"/ui/"), chromedp.WaitVisible(chromedp.ID("token")))
	})
	if d := b.Dialogs(); len(d) > 0 {
		t.Errorf("dialogs opened: %q", d)
	}
	if p := b.Problems(); len(p) > 0 {
		t.Errorf("the page reported problems: %q", p)
	}
}
