package prober

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/greybox-probe/greybox/config"
)

// fuzzHTTPConfig: every module has allowed_targets and a short timeout, so a
// fuzzed target can only ever reach 127.0.0.0/8 or ::1, and only briefly.
// fuzz_names allows one name only, so any other host name sent to it is
// refused without a DNS lookup.
const fuzzHTTPConfig = `
modules:
  fuzz_loop:
    prober: http
    timeout: 200ms
    allowed_targets: ["127.0.0.0/8", "::1/128"]
  fuzz_names:
    prober: http
    timeout: 200ms
    allowed_targets: ["fuzz.invalid"]
  fuzz_regexp:
    prober: http
    timeout: 200ms
    allowed_targets: ["127.0.0.1"]
    http:
      method: POST
      body: "x"
      valid_status_codes: [200, 302]
      fail_if_body_matches_regexp: ["err(or)?"]
      fail_if_body_not_matches_regexp: ["ok"]
      body_size_limit: 4KiB
`

// fuzzNoDNS reports whether the handler can serve module/target without a
// DNS lookup: the tests must stay on loopback, and the fuzzer invents host
// names freely. It mirrors checkTarget and Allowlist.Resolve: an IP literal
// is checked as is; a name is looked up when the module allows it by name
// or lists networks. Requests for a name go to namesOnly instead, a module
// whose allowlist holds one name and no network, which refuses any other
// name without a lookup. Only for probers without a CheckTarget (URL
// targets).
func fuzzNoDNS(cfg *config.Config, namesOnly, module, target string) (string, bool) {
	m, ok := cfg.Modules[module]
	if !ok {
		return module, true // refused before any network step
	}
	u, err := ParseHTTPTarget(target)
	if err != nil {
		return module, true
	}
	host := strings.ToLower(strings.Trim(u.Hostname(), "[]"))
	if _, err := netip.ParseAddr(host); err == nil {
		return module, true
	}
	module, m = namesOnly, cfg.Modules[namesOnly]
	return module, !m.AllowedTargets.AllowsName(host)
}

// fuzzTargetServer answers the fuzzer's requests for the "SRV" placeholder:
// a few shapes of answer chosen by path, all bounded.
func fuzzTargetServer() *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/slow"):
			<-r.Context().Done()
		case strings.HasPrefix(r.URL.Path, "/big"):
			chunk := strings.Repeat("x", 1024)
			for range 64 {
				if _, err := io.WriteString(w, chunk); err != nil {
					return
				}
			}
		case strings.HasPrefix(r.URL.Path, "/redirect"):
			// Relative only: a redirect to a name would need DNS.
			http.Redirect(w, r, "/ok", http.StatusFound)
		case strings.HasPrefix(r.URL.Path, "/error"):
			http.Error(w, "error", http.StatusInternalServerError)
		default:
			io.WriteString(w, "ok")
		}
	}))
}

// FuzzHTTPTarget drives /probe with arbitrary module, target, debug and
// scrape-timeout values. Whatever comes in: no panic, an answer from
// {200, 400, 403, 503}, refusals on one line, and an answer within the
// module timeout plus generous slack.
func FuzzHTTPTarget(f *testing.F) {
	for _, s := range [][4]string{
		{"fuzz_loop", "http://SRV/", "", ""},
		{"fuzz_loop", "http://SRV/slow", "true", "0.3"},
		{"fuzz_loop", "http://SRV/big", "true", ""},
		{"fuzz_regexp", "http://SRV/redirect", "", "1"},
		{"fuzz_regexp", "http://SRV/error", "true", ""},
		{"fuzz_loop", "https://SRV/", "", ""},
		{"fuzz_loop", "http://127.0.0.1:1/", "", ""},
		{"fuzz_loop", "http://[::1]:1/", "", ""},
		{"fuzz_loop", "http://[::1%25lo]:1/", "", ""},
		{"fuzz_loop", "http://10.0.0.1/", "", ""},
		{"fuzz_loop", "http://example.com/", "", ""},
		{"fuzz_names", "http://fuzz.invalid.evil/", "", ""},
		{"fuzz_loop", "http://user:pass@127.0.0.1:1/", "", ""},
		{"fuzz_loop", "ftp://127.0.0.1/", "", ""},
		{"fuzz_loop", "http://", "", ""},
		{"fuzz_loop", "http://127.0.0.1:99999/", "", ""},
		{"fuzz_loop", "http://127.0.0.1:0/", "", ""},
		{"fuzz_loop", "%zz", "", ""},
		{"fuzz_loop", "http://127.0.0.1/\n", "", ""},
		{"fuzz_loop", "http://127.0.0.1\r\n:80/", "", ""},
		{"fuzz_loop", "http://SRV/", "", "NaN"},
		{"fuzz_loop", "http://SRV/", "", "-1"},
		{"fuzz_loop", "http://SRV/", "", "1e-300"},
		{"fuzz_loop", "http://SRV/", "", "+Inf"},
		{"nope\nnope", "http://SRV/", "", ""},
		{"", "http://SRV/", "", ""},
		{"fuzz_loop", "", "", ""},
	} {
		f.Add(s[0], s[1], s[2], s[3])
	}
	dns := fuzzBlockDNS(f)
	srv := fuzzTargetServer()
	defer srv.Close()
	srvHost := srv.Listener.Addr().String()
	h, cfg := fuzzHandler(f, fuzzHTTPConfig)

	f.Fuzz(func(t *testing.T, module, target, debug, scrapeTimeout string) {
		target = strings.ReplaceAll(target, "SRV", srvHost)

		// The parser alone: a URL it accepts is one the probers can dial.
		if u, err := ParseHTTPTarget(target); err == nil {
			if u.Scheme != "http" && u.Scheme != "https" || u.Hostname() == "" {
				t.Fatalf("ParseHTTPTarget(%q) accepted %+v", target, u)
			}
			if p := u.Port(); p != "" {
				if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
					t.Fatalf("ParseHTTPTarget(%q) accepted port %q", target, p)
				}
			}
		} else if te, ok := err.(*TargetError); !ok || te.Forbidden {
			t.Fatalf("ParseHTTPTarget(%q) error %T %v, want a 400 *TargetError", target, err, err)
		}

		module, ok := fuzzNoDNS(cfg, "fuzz_names", module, target)
		if !ok {
			return
		}
		fuzzProbe(t, h, dns, module, target, debug, scrapeTimeout, 200*time.Millisecond)
	})
}

// fuzzBlockDNS makes every DNS query in the fuzz process fail and count:
// should fuzzNoDNS miss a case, the lookup never leaves the machine and
// fuzzProbe fails the input. Guards built by the handler use
// net.DefaultResolver; /etc/hosts (localhost) still answers.
func fuzzBlockDNS(f *testing.F) *atomic.Int64 {
	var attempts atomic.Int64
	old := net.DefaultResolver
	net.DefaultResolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
		attempts.Add(1)
		return nil, errors.New("fuzz: DNS is off limits")
	}}
	f.Cleanup(func() { net.DefaultResolver = old })
	return &attempts
}

func fuzzHandler(f *testing.F, yml string) (*Handler, *config.Config) {
	cfg, err := config.Parse([]byte(yml), "fuzz.yml")
	if err != nil {
		f.Fatal(err)
	}
	return NewHandler(HandlerOptions{
		Config: func() *config.Config { return cfg }, History: NewHistory(4, 0),
		MaxInFlight: 1000, TimeoutOffset: 100 * time.Millisecond,
	}), cfg
}

// fuzzProbe sends one /probe request and checks what any request must get:
// an answer in time, from {200, 400, 403, 503}, refusals on one line, no
// DNS query.
func fuzzProbe(t *testing.T, h http.Handler, dns *atomic.Int64, module, target, debug, scrapeTimeout string, timeout time.Duration) *httptest.ResponseRecorder {
	t.Helper()
	q := url.Values{"module": {module}, "target": {target}, "debug": {debug}}
	req := httptest.NewRequest(http.MethodGet, "/probe?"+q.Encode(), nil)
	if scrapeTimeout != "" {
		req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", scrapeTimeout)
	}
	rec := httptest.NewRecorder()
	start := time.Now()
	before := dns.Load()
	h.ServeHTTP(rec, req)
	if dns.Load() != before {
		t.Errorf("module %q target %q made a DNS query", module, target)
	}
	if elapsed := time.Since(start); elapsed > timeout+5*time.Second {
		t.Errorf("answer took %v with a %v module timeout", elapsed, timeout)
	}
	body := rec.Body.String()
	switch rec.Code {
	case http.StatusOK:
		want := "probe_success"
		if debug == "true" {
			want = "Logs for the probe:"
		}
		if !strings.Contains(body, want) {
			t.Errorf("200 without %q: %q", want, body)
		}
	case http.StatusBadRequest, http.StatusForbidden, http.StatusServiceUnavailable:
		if line := strings.TrimSuffix(body, "\n"); line == "" || strings.ContainsAny(line, "\r\n") {
			t.Errorf("%d answer is not one line: %q", rec.Code, body)
		}
	default:
		t.Errorf("unexpected status %d: %q", rec.Code, body)
	}
	return rec
}
