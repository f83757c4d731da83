package e2e

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const operatorConfig = `modules:
  http_2xx:
    prober: http
    timeout: 5s
`

// What an operator sees at 3 a.m.: greybox at its default log level,
// one healthy and one failing target. The healthy probes write nothing
// to the process log, the failing one a line with its reason; a real
// browser renders the landing page with that reason in the current-state
// table, at laptop and phone widths.
func TestOperatorView(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	t.Cleanup(ok.Close)
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusBadGateway) }))
	t.Cleanup(down.Close)
	cfgPath := writeFile(t, t.TempDir(), "greybox.yml", operatorConfig)
	gb, addr := startServer(t, "greybox", greyboxBin, "/gb/-/ready", func(addr string) []string {
		return []string{"--config.file=" + cfgPath, "--web.listen-address=" + addr, "--web.route-prefix=/gb"}
	})
	base := "http://" + addr + "/gb"
	startupLog := readLog(t, gb)

	for range 5 {
		code, body, err := get(context.Background(), base+"/probe?module=http_2xx&target="+url.QueryEscape(ok.URL))
		if err != nil || code != 200 || !strings.Contains(body, "probe_success 1") {
			t.Fatalf("healthy probe: %d %v\n%s", code, err, body)
		}
	}
	if got := readLog(t, gb); got != startupLog {
		t.Errorf("healthy probes at --log.level=info wrote to the process log:\n%s", strings.TrimPrefix(got, startupLog))
	}
	if code, _, _ := get(context.Background(), base+"/probe?module=http_2xx&target="+url.QueryEscape(down.URL)); code != 200 {
		t.Fatalf("failing probe answered %d", code)
	}
	failLines := strings.TrimPrefix(readLog(t, gb), startupLog)
	if strings.Count(failLines, "\n") != 1 || !strings.Contains(failLines, "level=WARN") || !strings.Contains(failLines, "status_code=502") {
		t.Errorf("a failed probe should write one WARN line with its reason; wrote:\n%s", failLines)
	}

	chromium := browser(t)
	dom := runBrowser(t, chromium, "--dump-dom", base+"/")
	state := between(dom, `id="state-table"`, "</table>")
	if !strings.Contains(state, "invalid HTTP status code: status_code=502") || strings.Count(state, `class="state-row"`) != 2 {
		t.Errorf("the rendered current-state table lacks the failure reason:\n%s", state)
	}
	if !strings.Contains(dom, `href="/gb/metrics"`) {
		t.Errorf("links ignore --web.route-prefix:\n%s", dom)
	}
	for _, size := range []string{"1280,800", "390,844"} {
		shot := filepath.Join(t.TempDir(), "landing.png")
		runBrowser(t, chromium, "--screenshot="+shot, "--window-size="+size, base+"/")
		if fi, err := os.Stat(shot); err != nil || fi.Size() < 1000 {
			t.Errorf("screenshot at %s: %v", size, err)
		}
	}
}

func readLog(t *testing.T, p *proc) string {
	t.Helper()
	b, err := os.ReadFile(p.log)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func between(s, from, to string) string {
	i := strings.Index(s, from)
	if i < 0 {
		return ""
	}
	s = s[i:]
	if j := strings.Index(s, to); j >= 0 {
		return s[:j]
	}
	return s
}

// browser finds Debian's chromium; .ci/run installs it. Without it the
// test fails rather than skip: the rendering is what it checks.
func browser(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no chromium on PATH (apt-get install chromium)")
	return ""
}

// runBrowser runs headless chromium on a loopback URL with everything
// that would reach the network off: no DNS for any other name, a dead
// loopback proxy for any other address, no background services.
func runBrowser(t *testing.T, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	profile := t.TempDir()
	cmd := exec.CommandContext(ctx, bin, append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--user-data-dir=" + profile, "--no-first-run", "--no-default-browser-check",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-extensions", "--disable-default-apps", "--disable-domain-reliability",
		"--disable-breakpad", "--metrics-recording-only", "--safebrowsing-disable-auto-update",
		"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
		"--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1",
	}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+profile)
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("chromium %v: %v\n%s", args, err, tail(stderr, 4000))
	}
	return string(out)
}
