//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/siskin-dev/siskin/test/browser"
)

// TestDashboardInBrowser drives the dashboard of a real `siskin serve` in headless chromium
// against a release in the lab: the fleet lists the canary, the weight on the page follows the
// VirtualService, and Abort, confirmed, puts the VirtualService back on the primary. Each page
// is screenshotted to $SISKIN_SHOTS, or the test's artifact folder (go test -artifacts).
func TestDashboardInBrowser(t *testing.T) {
	t.Parallel()
	e, _, s := seedSetup(t, "dashboard", "1s")
	releaseTo(t, e, s, "podinfo", 10)

	out := os.Getenv("SISKIN_SHOTS")
	if out == "" {
		out = t.ArtifactDir()
	} else {
		out, _ = filepath.Abs(out)
	}
	b := browser.New(t, out)
	t.Logf("screenshots in %s", out)
	// localhost: a secure context for the Secure session cookie over plain HTTP.
	base := strings.Replace(s.url, "127.0.0.1", "localhost", 1)

	b.Do("log in", 30*time.Second, chromedp.Navigate(base+"/ui/"), chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), apiToken), chromedp.Click(chromedp.ID("login-submit")),
		chromedp.WaitVisible(chromedp.CSS(`#fleet-rows tr[data-key="dashboard/podinfo"]`)))
	row := `document.querySelector('#fleet-rows tr[data-key="dashboard/podinfo"]')`
	b.WaitFor("the fleet at weight 10", row+`.querySelector('meter').value === 10`, 10*time.Second)
	b.Screenshot("fleet")

	// One more step: the page follows the VirtualService within a few seconds.
	stepThrough(t, e, s, "podinfo", time.Second, []observed{
		{Phase: "Progressing", CanaryWeight: 10, Primary: 90, Canary: 10},
		{Phase: "Progressing", CanaryWeight: 15, Primary: 85, Canary: 15},
	}, 10)
	start := time.Now()
	b.WaitFor("the fleet at weight 15", row+`.querySelector('meter').value === 15`, 10*time.Second)
	t.Logf("the fleet showed the new weight %s after the step", time.Since(start).Round(100*time.Millisecond))

	b.Do("open the canary", 30*time.Second, chromedp.Click(chromedp.CSS(`#fleet-rows tr[data-key="dashboard/podinfo"] a`)),
		chromedp.WaitVisible(chromedp.CSS(`#timeline svg`)))
	if got := browser.Text(b, "#c-description"); !strings.Contains(got, "5 % steps to 50 % every 1s; rollback after 5 failed checks") {
		t.Errorf("spec in words: %q", got)
	}
	b.WaitFor("the timeline's metrics", `document.querySelectorAll('#timeline svg polyline').length >= 2`, 10*time.Second)
	b.Screenshot("canary")

	b.Do("abort, confirmed", 30*time.Second, chromedp.Click(chromedp.CSS(`button[data-gate="abort"]`)),
		chromedp.WaitVisible(chromedp.ID("confirm")), chromedp.Click(chromedp.ID("confirm-ok")))
	b.WaitFor("the abort's outcome", `document.getElementById('gate-result').textContent.includes('abort done')`, 30*time.Second)
	if got := e.observe("podinfo"); got.Phase != "Failed" || got.Primary != 100 || got.Canary != 0 {
		t.Errorf("after the abort: %s, want Failed with the VirtualService on the primary", got)
	}
	b.WaitFor("the page at Failed", `document.querySelector('h1 .phase').textContent === 'Failed'`, 10*time.Second)
	b.WaitFor("the abort on the timeline", `document.querySelectorAll('#timeline svg .mark.fail').length >= 1`, 10*time.Second)
	b.Screenshot("aborted")
	if p := b.Problems(); len(p) > 0 {
		t.Errorf("the page reported problems: %q", p)
	}
}
