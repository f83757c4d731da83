package prober

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// Probes of one module share its plain-HTTP client, and still each dial
// their own connection through their own guard: none rides another's.
func TestSharedClientOwnConnections(t *testing.T) {
	var mu sync.Mutex
	remotes := map[string]int{}
	release := make(chan struct{})
	var arrived sync.WaitGroup
	const probes = 4
	arrived.Add(probes)
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		remotes[r.RemoteAddr]++
		mu.Unlock()
		arrived.Done()
		<-release // every probe is in flight at once
		fmt.Fprint(w, "ok")
	}))
	defer target.Close()
	m := testModule(t, "prober: http\ntimeout: 5s")
	guards := make([]*Guard, probes)
	results := make([]probeResult, probes)
	var done sync.WaitGroup
	for i := range probes {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		guards[i] = NewGuard(ctx, m.AllowedTargets)
		done.Add(1)
		go func() {
			defer done.Done()
			results[i] = runProbeDirect(t, ProbeHTTP, target.URL, m, Env{Guard: guards[i]})
		}()
	}
	arrived.Wait()
	close(release)
	done.Wait()
	for i, r := range results {
		if !r.ok {
			t.Errorf("probe %d failed:\n%s", i, r.logs)
		}
		if n := guardDials(guards[i]); n != 1 {
			t.Errorf("probe %d: its guard dialled %d connections, want 1", i, n)
		}
	}
	if len(remotes) != probes {
		t.Errorf("%d client connections for %d probes: %v", len(remotes), probes, remotes)
	}
	if m.Settings.(*HTTPSettings).shared.client == nil {
		t.Error("the module's shared client was never built")
	}
	// One after another too: no connection is left for the next probe.
	for i := range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		g := NewGuard(ctx, m.AllowedTargets)
		arrived.Add(1)
		r := runProbeDirect(t, ProbeHTTP, target.URL, m, Env{Guard: g})
		cancel()
		if !r.ok || guardDials(g) != 1 {
			t.Errorf("sequential probe %d: ok=%v, dialled %d connections, want 1", i, r.ok, guardDials(g))
		}
	}
}

// A redirect from plain HTTP to HTTPS leaves the shared client for one of
// the probe's own, with the module's TLS settings; follow_redirects: false
// still stops at the 3xx.
func TestSharedClientHTTPSRedirect(t *testing.T) {
	cert := newTestCert(t)
	tlsTarget := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "secure") }))
	tlsTarget.TLS = cert.serverConfig()
	tlsTarget.StartTLS()
	defer tlsTarget.Close()
	front := httptest.NewServer(http.RedirectHandler(tlsTarget.URL+"/", http.StatusFound))
	defer front.Close()

	m := testModule(t, fmt.Sprintf("prober: http\ntimeout: 5s\nhttp:\n  http_client_config:\n    tls_config: {ca_file: %s, server_name: greybox.test}\n", cert.caFile))
	r := runProbeDirect(t, ProbeHTTP, front.URL, m, Env{})
	if !r.ok {
		t.Fatalf("probe failed:\n%s", r.logs)
	}
	mustMetric(t, r.reg, "probe_http_ssl", nil, 1)
	mustMetric(t, r.reg, "probe_http_redirects", nil, 1)

	m = testModule(t, "prober: http\ntimeout: 5s\nhttp:\n  valid_status_codes: [302]\n  http_client_config: {follow_redirects: false}\n")
	r = runProbeDirect(t, ProbeHTTP, front.URL, m, Env{})
	if !r.ok {
		t.Fatalf("probe failed:\n%s", r.logs)
	}
	mustMetric(t, r.reg, "probe_http_status_code", nil, 302)
	mustMetric(t, r.reg, "probe_http_ssl", nil, 0)
}

// A module with nothing for common to wrap around its transport but the
// User-Agent gets a transport of greybox's own (bareTransport, without
// go-conntrack); the request a target receives from it is the one common's
// transport sends, header for header.
func TestSharedClientBareTransportSendsCommonsRequest(t *testing.T) {
	seen := make(chan http.Header, 1)
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Clone()
		h.Del("Authorization")
		h.Set("X-Proto", r.Proto)
		seen <- h
		fmt.Fprint(w, "ok")
	}))
	defer target.Close()
	headersFor := func(module string) http.Header {
		t.Helper()
		m := testModule(t, module)
		if r := runProbeDirect(t, ProbeHTTP, target.URL, m, Env{}); !r.ok {
			t.Fatalf("%s: probe failed:\n%s", module, r.logs)
		}
		return <-seen
	}
	plain := "prober: http\ntimeout: 5s"
	withAuth := "prober: http\ntimeout: 5s\nhttp:\n  http_client_config: {basic_auth: {username: u, password: p}}"
	if !bare(testModule(t, plain).Settings.(*HTTPSettings).HTTPClientConfig.HTTPClientConfig) {
		t.Fatal("a module without credentials or headers does not get the bare transport")
	}
	if bare(testModule(t, withAuth).Settings.(*HTTPSettings).HTTPClientConfig.HTTPClientConfig) {
		t.Fatal("a module with basic_auth gets the bare transport")
	}
	got, want := headersFor(plain), headersFor(withAuth)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("bare transport sent headers\n%v\ncommon's transport sent\n%v", got, want)
	}
	if got.Get("User-Agent") != UserAgent {
		t.Errorf("User-Agent %q, want %q", got.Get("User-Agent"), UserAgent)
	}
}

// A module's User-Agent header is the one sent, as in blackbox, whichever
// client carries the request: the bare shared one, common's chain (basic
// auth), or the probe's own after a redirect to HTTPS. Without one it is
// greybox's.
func TestHTTPModuleUserAgent(t *testing.T) {
	cert := newTestCert(t)
	agents := make(chan string, 4)
	record := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		agents <- r.Header.Get("User-Agent")
		fmt.Fprint(w, "ok")
	})
	tlsTarget := httptest.NewUnstartedServer(record)
	tlsTarget.TLS = cert.serverConfig()
	tlsTarget.StartTLS()
	defer tlsTarget.Close()
	plain := httptest.NewServer(record)
	defer plain.Close()
	redirect := httptest.NewServer(http.RedirectHandler(tlsTarget.URL+"/", http.StatusFound))
	defer redirect.Close()
	tls := fmt.Sprintf("tls_config: {ca_file: %s, server_name: greybox.test}", cert.caFile)
	for _, c := range []struct {
		name, module, target, want string
	}{
		{"bare", "prober: http\nhttp: {headers: {user-agent: custom/1}}", plain.URL, "custom/1"},
		{"basic auth", "prober: http\nhttp: {headers: {User-Agent: custom/2}, http_client_config: {basic_auth: {username: u, password: p}}}", plain.URL, "custom/2"},
		{"redirect to https", "prober: http\nhttp: {headers: {User-Agent: custom/3}, http_client_config: {" + tls + "}}", redirect.URL, "custom/3"},
		{"default", "prober: http", plain.URL, UserAgent},
	} {
		m := testModule(t, "timeout: 5s\n"+c.module)
		if r := runProbeDirect(t, ProbeHTTP, c.target, m, Env{}); !r.ok {
			t.Fatalf("%s: probe failed:\n%s", c.name, r.logs)
		}
		if got := <-agents; got != c.want {
			t.Errorf("%s: User-Agent %q, want %q", c.name, got, c.want)
		}
	}
}
