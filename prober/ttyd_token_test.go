package prober

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"

	"github.com/greybox-probe/greybox/config"
	"github.com/greybox-probe/greybox/internal/testpeer/ttyd"
)

// ttydCred is the fake terminal's -c; its password must never show up in
// probe output.
const ttydCred = "probe:hunter2-not-real"

func TestTTYDToken(t *testing.T) {
	plain := ttyd.NewServer(ttyd.Options{})
	defer plain.Close()
	authed := ttyd.NewServer(ttyd.Options{Credential: ttydCred})
	defer authed.Close()
	based := ttyd.NewServer(ttyd.Options{BasePath: "/terminal"})
	defer based.Close()
	unrouted := ttyd.NewUnrouted()
	defer unrouted.Close()
	fwd := ttyd.NewForwardAuth(ttyd.ForwardAuthOptions{AuthURL: "https://auth.example.com/oauth2/start"})
	defer fwd.Close()
	odd := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json;charset=utf-8")
		switch r.URL.Path {
		case "/garbage/token":
			io.WriteString(w, `{"token": "abc"`)
		case "/missing/token":
			io.WriteString(w, `{"tok": "abc"}`)
		case "/number/token":
			io.WriteString(w, `{"token": 42}`)
		case "/huge/token":
			io.WriteString(w, `{"token": "`+strings.Repeat("a", 100<<10)+`"}`)
		case "/gonotfound/token": // a Go backend's own 404 without text/plain
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, "404 page not found\n")
		}
	}))
	defer odd.Close()

	creds := "ttyd_token:\n  http_client_config:\n    basic_auth: {username: probe, password: hunter2-not-real}"
	for _, tc := range []struct {
		name    string
		target  string
		module  string
		success bool
		metrics map[string]float64
		absent  []string
		logHas  string
	}{
		{name: "token without -c", target: plain.URL, success: true,
			metrics: map[string]float64{"probe_ttyd_token_status_code": 200, "probe_ttyd_token_routed": 1, "probe_ttyd_token_received": 1},
			absent:  []string{"probe_ttyd_token_redirect_allowed"}},
		{name: "token with basic auth", target: authed.URL, module: creds, success: true,
			metrics: map[string]float64{"probe_ttyd_token_status_code": 200, "probe_ttyd_token_received": 1}},
		{name: "ttyd 401 without credentials", target: authed.URL, success: false,
			metrics: map[string]float64{"probe_ttyd_token_status_code": 401, "probe_ttyd_token_routed": 1, "probe_ttyd_token_received": 0},
			logHas:  "basic_auth"},
		{name: "base path", target: based.URL + "/", success: true,
			metrics: map[string]float64{"probe_ttyd_token_received": 1}},
		{name: "ttyd own 404 is routed", target: based.URL + "/wrong", success: false,
			metrics: map[string]float64{"probe_ttyd_token_status_code": 404, "probe_ttyd_token_routed": 1}},
		{name: "traefik no router", target: unrouted.URL, success: false,
			metrics: map[string]float64{"probe_ttyd_token_status_code": 404, "probe_ttyd_token_routed": 0, "probe_ttyd_token_received": 0},
			logHas:  "no router"},
		{name: "no router even when 404 is listed", target: unrouted.URL, module: "ttyd_token: {valid_status_codes: [200, 404]}", success: false,
			metrics: map[string]float64{"probe_ttyd_token_routed": 0}},
		{name: "json 404 is not the proxy's", target: odd.URL + "/gonotfound", success: false,
			metrics: map[string]float64{"probe_ttyd_token_routed": 1}},
		{name: "forward auth 302 not listed", target: fwd.URL, success: false,
			metrics: map[string]float64{"probe_ttyd_token_status_code": 302}, logHas: "redirect_host"},
		{name: "forward auth 302 pinned to auth host", target: fwd.URL, module: "ttyd_token: {valid_status_codes: [302], redirect_host: auth.example.com}", success: true,
			metrics: map[string]float64{"probe_ttyd_token_status_code": 302, "probe_ttyd_token_redirect_allowed": 1, "probe_ttyd_token_routed": 1, "probe_ttyd_token_received": 0}},
		{name: "forward auth 302 pinned with port", target: fwd.URL, module: "ttyd_token: {valid_status_codes: [302], redirect_host: 'AUTH.example.com:443'}", success: true,
			metrics: map[string]float64{"probe_ttyd_token_redirect_allowed": 1}},
		{name: "forward auth 302 to the wrong host", target: fwd.URL, module: "ttyd_token: {valid_status_codes: [302], redirect_host: login.example.org}", success: false,
			metrics: map[string]float64{"probe_ttyd_token_redirect_allowed": 0}, logHas: "auth.example.com"},
		{name: "302 accepted without pin", target: fwd.URL, module: "ttyd_token: {valid_status_codes: [302]}", success: true,
			absent: []string{"probe_ttyd_token_redirect_allowed"}},
		{name: "malformed json", target: odd.URL + "/garbage", success: false,
			metrics: map[string]float64{"probe_ttyd_token_status_code": 200, "probe_ttyd_token_received": 0}, logHas: "not a JSON object"},
		{name: "missing token field", target: odd.URL + "/missing", success: false,
			metrics: map[string]float64{"probe_ttyd_token_received": 0}, logHas: `no \"token\" field`},
		{name: "token not a string", target: odd.URL + "/number", success: false,
			metrics: map[string]float64{"probe_ttyd_token_received": 0}, logHas: "not a string"},
		{name: "body over limit", target: odd.URL + "/huge", success: false, logHas: "body_size_limit"},
		{name: "body limit raised", target: odd.URL + "/huge", module: "ttyd_token: {body_size_limit: 1MiB}", success: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := testModule(t, "prober: ttyd_token\ntimeout: 5s\n"+tc.module)
			r := runProbeDirect(t, probeTTYDToken, tc.target, m, Env{})
			if r.ok != tc.success {
				t.Errorf("success = %v, want %v; logs:\n%s", r.ok, tc.success, r.logs)
			}
			for name, want := range tc.metrics {
				mustMetric(t, r.reg, name, nil, want)
			}
			for _, name := range tc.absent {
				if _, ok := metricValue(t, r.reg, name, nil); ok {
					t.Errorf("metric %s present, want absent", name)
				}
			}
			if tc.logHas != "" && !strings.Contains(r.logs, tc.logHas) {
				t.Errorf("logs lack %q:\n%s", tc.logHas, r.logs)
			}
			if _, ok := metricValue(t, r.reg, "probe_ttyd_token_duration_seconds", nil); !ok {
				t.Error("probe_ttyd_token_duration_seconds missing")
			}
		})
	}
}

// The token is base64(user:pass): neither it nor the password may leak.
func TestTTYDTokenSecretsStayOut(t *testing.T) {
	srv := ttyd.NewServer(ttyd.Options{Credential: ttydCred})
	defer srv.Close()
	m := testModule(t, "prober: ttyd_token\ntimeout: 5s\nttyd_token:\n  http_client_config:\n    basic_auth: {username: probe, password: hunter2-not-real}")
	r := runProbeDirect(t, probeTTYDToken, srv.URL, m, Env{})
	if !r.ok {
		t.Fatalf("probe failed:\n%s", r.logs)
	}
	assertNoTTYDSecrets(t, r, srv.Token())
}

func assertNoTTYDSecrets(t *testing.T, r probeResult, token string) {
	t.Helper()
	if token == "" {
		t.Fatal("test needs a non-empty token")
	}
	var metrics bytes.Buffer
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	enc := expfmt.NewEncoder(&metrics, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	for _, secret := range []string{token, "hunter2-not-real", url.QueryEscape(token)} {
		if strings.Contains(r.logs, secret) {
			t.Errorf("secret %q in logs:\n%s", secret, r.logs)
		}
		if strings.Contains(metrics.String(), secret) {
			t.Errorf("secret %q in metrics:\n%s", secret, metrics.String())
		}
	}
}

func TestTTYDTokenConfig(t *testing.T) {
	for _, tc := range []struct{ yml, errHas string }{
		{"ttyd_token: {valid_status_codes: [99]}", "not an HTTP status"},
		{"ttyd_token: {redirect_host: 'https://auth.example.com/'}", "not a URL"},
		{"ttyd_token: {body_size_limit: 0KiB}", "body_size_limit"},
		{"ttyd_token: {nope: 1}", "nope"},
	} {
		_, err := parseTTYDModule("prober: ttyd_token\n" + tc.yml)
		if err == nil || !strings.Contains(err.Error(), tc.errHas) {
			t.Errorf("%s: error %v, want one containing %q", tc.yml, err, tc.errHas)
		}
	}
	m := testModule(t, "prober: ttyd_token")
	s := m.Settings.(*TTYDTokenSettings)
	if s.HTTPClientConfig.FollowRedirects || len(s.ValidStatusCodes) != 1 || s.ValidStatusCodes[0] != 200 || s.BodySizeLimit != DefaultTTYDBodySizeLimit {
		t.Errorf("defaults: %+v", s)
	}
}

func parseTTYDModule(yml string) (*config.Config, error) {
	var b strings.Builder
	b.WriteString("modules:\n  m:\n")
	for _, line := range strings.Split(strings.TrimSpace(yml), "\n") {
		b.WriteString("    " + line + "\n")
	}
	return config.Parse([]byte(b.String()), "test.yml")
}
