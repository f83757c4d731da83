package server

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

func newPrefixedServer(t *testing.T, external, prefix string) *Server {
	t.Helper()
	var u *url.URL
	if external != "" {
		var err error
		if u, err = url.Parse(external); err != nil {
			t.Fatal(err)
		}
	}
	s, _ := newTestServerWith(t, Options{ExternalURL: u, RoutePrefix: prefix})
	return s
}

// The landing page's current state names each module × target once, its
// last result and the last failure's reason in one line; refusals show
// their status.
func TestLandingCurrentState(t *testing.T) {
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(503) }))
	defer down.Close()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }))
	defer up.Close()
	s, _ := newTestServer(t)
	do(s, http.MethodGet, "/probe?module=http_2xx&target="+down.URL)
	do(s, http.MethodGet, "/probe?module=http_2xx&target="+down.URL)
	do(s, http.MethodGet, "/probe?module=http_2xx&target="+up.URL)
	do(s, http.MethodGet, "/probe?module=http_2xx&target=ftp://127.0.0.1/")
	page := do(s, http.MethodGet, "/").Body.String()
	state := page[strings.Index(page, `id="state-table"`):strings.Index(page, "Try a probe")]
	if n := strings.Count(state, `class="state-row"`); n != 3 {
		t.Errorf("%d state rows, want 3 (one per module × target):\n%s", n, state)
	}
	for _, want := range []string{
		"invalid HTTP status code: status_code=503", // the first error, one line
		"refused 400", "must be an http:// or https:// URL",
		`/probe?module=http_2xx&amp;target=` + url.QueryEscape(up.URL)[:4], "debug=true",
	} {
		if !strings.Contains(state, want) {
			t.Errorf("current state lacks %q:\n%s", want, state)
		}
	}
	if strings.Index(state, "failure") > strings.Index(state, `class="ok"`) {
		t.Errorf("failing rows should come first:\n%s", state)
	}
	if strings.Contains(state, "Logs for the probe") {
		t.Errorf("the state table carries the debug dump")
	}
}

// The same target under two hostnames is two things probed: two rows, each
// with its Host and links that probe it again with that Host.
func TestLandingStateSeparatesHostnames(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host != "a.example" {
			w.WriteHeader(404)
		}
	}))
	defer up.Close()
	s, _ := newTestServer(t)
	do(s, http.MethodGet, "/probe?module=http_2xx&target="+up.URL+"&hostname=a.example")
	do(s, http.MethodGet, "/probe?module=http_2xx&target="+up.URL+"&hostname=b.example")
	page := do(s, http.MethodGet, "/").Body.String()
	state := page[strings.Index(page, `id="state-table"`):strings.Index(page, "Try a probe")]
	if n := strings.Count(state, `class="state-row"`); n != 2 {
		t.Errorf("%d state rows, want 2 (one per hostname):\n%s", n, state)
	}
	for _, want := range []string{"Host: <code>a.example</code>", "Host: <code>b.example</code>", "&amp;hostname=b.example&amp;debug=true", "status_code=404"} {
		if !strings.Contains(state, want) {
			t.Errorf("current state lacks %q:\n%s", want, state)
		}
	}
	if !strings.Contains(page, `name="hostname"`) {
		t.Error("the probe form has no hostname field")
	}
	// /logs narrows to the hostname: a.example answered 200, b.example 404.
	for host, want := range map[string]string{"a.example": "status_code=200", "b.example": "status_code=404"} {
		logs := do(s, http.MethodGet, "/logs?module=http_2xx&target="+url.QueryEscape(up.URL)+"&hostname="+host).Body.String()
		if !strings.Contains(logs, want) {
			t.Errorf("/logs for hostname %s lacks %q:\n%s", host, want, logs)
		}
	}
}

func TestHuman(t *testing.T) {
	for d, want := range map[time.Duration]string{
		840 * time.Microsecond: "840 µs", 2500 * time.Microsecond: "2.5 ms", 120 * time.Millisecond: "120 ms",
		1250 * time.Millisecond: "1.25 s", 90 * time.Second: "1 min 30 s", 0: "0",
	} {
		if got := human(d); got != want {
			t.Errorf("human(%v) = %q, want %q", d, got, want)
		}
	}
}

// /logs is text for curl and a page with a way back for a browser.
func TestLogsPageLinksBack(t *testing.T) {
	s := newPrefixedServer(t, "https://proxy.example/gb/", "/gb")
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }))
	defer up.Close()
	do(s, http.MethodGet, "/gb/probe?module=http_2xx&target="+up.URL)
	req := httptest.NewRequest(http.MethodGet, "/gb/logs?id=0", nil)
	req.Header.Set("Accept", "text/html,application/xhtml+xml")
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	if body := rec.Body.String(); rec.Code != 200 || !strings.Contains(body, `<a href="/gb/">`) || !strings.Contains(body, "making HTTP request") {
		t.Errorf("HTML /logs: %d\n%s", rec.Code, body)
	}
	if rec := do(s, http.MethodGet, "/gb/logs?id=0"); !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/plain") {
		t.Errorf("curl's /logs is %s", rec.Header().Get("Content-Type"))
	}
}

// Under --web.route-prefix every endpoint moves; / redirects there; every
// link and redirect carries --web.external-url's path.
func TestRoutePrefixAndExternalURL(t *testing.T) {
	for _, tc := range []struct {
		external, prefix, probe, base string
	}{
		{"http://proxy.example/greybox", "/greybox", "/greybox/probe", "/greybox"},
		// The proxy strips /greybox: routes at the root, links with it.
		{"http://proxy.example/greybox", "", "/probe", "/greybox"},
		{"", "/p", "/p/probe", "/p"},
	} {
		s := newPrefixedServer(t, tc.external, tc.prefix)
		up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }))
		if rec := do(s, http.MethodGet, tc.probe+"?module=http_2xx&target="+up.URL); !strings.Contains(rec.Body.String(), "probe_success 1") {
			t.Errorf("%+v: probe at %s: %d %s", tc, tc.probe, rec.Code, rec.Body)
		}
		up.Close()
		page := do(s, http.MethodGet, tc.probe[:len(tc.probe)-len("probe")]).Body.String()
		for _, want := range []string{`href="` + tc.base + `/metrics"`, `action="` + tc.base + `/probe"`, `href="` + tc.base + `/logs?module=http_2xx`} {
			if !strings.Contains(page, want) {
				t.Errorf("%+v: landing page lacks %s", tc, want)
			}
		}
		if tc.prefix != "" {
			if rec := do(s, http.MethodGet, "/"); rec.Code != http.StatusFound || rec.Header().Get("Location") != tc.base+"/" {
				t.Errorf("%+v: / = %d → %q", tc, rec.Code, rec.Header().Get("Location"))
			}
			if rec := do(s, http.MethodGet, "/probe?module=http_2xx&target=x"); rec.Code != 404 {
				t.Errorf("%+v: /probe outside the prefix = %d", tc, rec.Code)
			}
			if rec := do(s, http.MethodGet, tc.prefix+"x/metrics"); rec.Code != 404 {
				t.Errorf("%+v: a path that only starts like the prefix = %d", tc, rec.Code)
			}
		}
	}
}
