package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestConfigCheck(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, config string
		wantOK       bool
		wantLine     int // the file:line the error must name
	}{
		{name: "good", config: probeConfig, wantOK: true},
		{name: "unknown_key", wantLine: 6, config: `modules:
  http_2xx:
    prober: http
    timeout: 5s
    http:
      no_such_key: 1
`},
		{name: "bad_regexp", wantLine: 5, config: `modules:
  http_2xx:
    prober: http
    http:
      fail_if_body_matches_regexp: ["(("]
`},
		{name: "unknown_prober", wantLine: 3, config: `modules:
  x:
    prober: no_such_prober
`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, dir, tc.name+".yml", tc.config)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, greyboxBin, "--config.check", "--config.file="+path).CombinedOutput()
			if tc.wantOK {
				if err != nil {
					t.Fatalf("--config.check on a good file: %v\n%s", err, out)
				}
				return
			}
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() == 0 {
				t.Fatalf("--config.check on a bad file: err %v, want a non-zero exit\n%s", err, out)
			}
			if want := fmt.Sprintf("%s:%d:", path, tc.wantLine); !strings.Contains(string(out), want) {
				t.Errorf("output does not name %q:\n%s", want, out)
			}
		})
	}
}

// TestReloadKeepsServing: a broken file on SIGHUP leaves the running
// config in place and says so in greybox_config_last_reload_successful; a
// fixed file afterwards is picked up.
func TestReloadKeepsServing(t *testing.T) {
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	t.Cleanup(target.Close)
	dir := t.TempDir()
	cfgPath := writeFile(t, dir, "greybox.yml", probeConfig)
	gb, addr := startGreybox(t, cfgPath)
	base := "http://" + addr

	reloadState := func(want float64) {
		t.Helper()
		poll(t, 30*time.Second, fmt.Sprintf("greybox_config_last_reload_successful %v", want), func() (bool, string) {
			_, body, err := get(context.Background(), base+"/metrics")
			if err != nil {
				return false, err.Error()
			}
			v, ok := metricValue(body, "greybox_config_last_reload_successful")
			return ok && v == want, fmt.Sprintf("found=%v value=%v", ok, v)
		})
	}
	probeOK := func(module string) {
		t.Helper()
		code, body, err := get(context.Background(), base+"/probe?module="+module+"&target="+url.QueryEscape(target.URL))
		if err != nil || code != http.StatusOK {
			t.Fatalf("/probe?module=%s: %d %v\n%s", module, code, err, body)
		}
		if v, ok := metricValue(body, "probe_success"); !ok || v != 1 {
			t.Fatalf("/probe?module=%s: probe_success %v (found %v), want 1\n%s", module, v, ok, body)
		}
	}

	reloadState(1)
	probeOK("http_2xx")

	writeFile(t, dir, "greybox.yml", "modules:\n  http_2xx:\n    prober: http\n    bogus: true\n")
	gb.signal(t, syscall.SIGHUP)
	reloadState(0)
	probeOK("http_2xx")
	if code, _, err := get(context.Background(), base+"/-/healthy"); err != nil || code != http.StatusOK {
		t.Errorf("/-/healthy after a failed reload: %d %v", code, err)
	}

	writeFile(t, dir, "greybox.yml", probeConfig+"  http_again:\n    prober: http\n")
	gb.signal(t, syscall.SIGHUP)
	reloadState(1)
	probeOK("http_again")
}

// TestSIGTERMFinishesInFlightProbe: a probe running when SIGTERM arrives
// still gets its answer, new connections are refused, and the process
// exits 0 once the probe is done.
func TestSIGTERMFinishesInFlightProbe(t *testing.T) {
	arrived := make(chan struct{}, 1)
	release := make(chan struct{})
	var releaseOnce sync.Once
	releaseTarget := func() { releaseOnce.Do(func() { close(release) }) }
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case arrived <- struct{}{}:
		default:
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(target.Close)
	t.Cleanup(releaseTarget) // runs before target.Close, which waits for handlers

	dir := t.TempDir()
	cfg := strings.Replace(probeConfig, "timeout: 5s", "timeout: 60s", 1)
	gb, addr := startGreybox(t, writeFile(t, dir, "greybox.yml", cfg))

	type answer struct {
		code int
		body string
		err  error
	}
	answers := make(chan answer, 1)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() {
		code, body, err := get(ctx, "http://"+addr+"/probe?module=http_2xx&target="+url.QueryEscape(target.URL))
		answers <- answer{code, body, err}
	}()
	t.Cleanup(func() { cancel(); <-answers })

	select {
	case <-arrived:
	case <-time.After(30 * time.Second):
		t.Fatal("the probe never reached the target")
	}
	gb.signal(t, syscall.SIGTERM)

	// Shutdown closes the listener first: once new connections are refused
	// greybox is provably draining while the probe is still held.
	poll(t, 30*time.Second, "listener closed after SIGTERM", func() (bool, string) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return true, ""
		}
		c.Close()
		return false, "still accepting connections"
	})
	if gb.exited() {
		t.Fatal("greybox exited while a probe was in flight")
	}
	releaseTarget()

	var a answer
	select {
	case a = <-answers:
		answers <- a // for the cleanup
	case <-time.After(30 * time.Second):
		t.Fatal("the in-flight probe got no answer after SIGTERM")
	}
	if a.err != nil || a.code != http.StatusOK {
		t.Fatalf("in-flight probe: %d %v\n%s", a.code, a.err, a.body)
	}
	if v, ok := metricValue(a.body, "probe_success"); !ok || v != 1 {
		t.Errorf("in-flight probe: probe_success %v (found %v), want 1\n%s", v, ok, a.body)
	}
	if code := gb.wait(t, 30*time.Second); code != 0 {
		t.Errorf("greybox exit code after SIGTERM = %d, want 0", code)
	}
}

// --version shows what `make build` stamps in: version, revision, build
// user and date.
func TestVersionShowsBuildUserAndDate(t *testing.T) {
	out, err := exec.Command(greyboxBin, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, re := range []string{`(?m)^greybox, version \S+ \(branch: \S+, revision: \S+\)$`, `(?m)^\s+build user:\s+\S+@\S+$`, `(?m)^\s+build date:\s+\d{8}-\d\d:\d\d:\d\d$`} {
		if !regexp.MustCompile(re).Match(out) {
			t.Errorf("--version lacks %s:\n%s", re, out)
		}
	}
}
