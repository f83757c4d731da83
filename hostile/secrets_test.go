package hostile

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// Secrets in a target (userinfo, a credential-named query parameter) and
// in a module (headers, basic auth, bearer tokens) must not appear in any
// surface greybox prints: the probe answer, debug output, /logs, the
// landing page, /config, /metrics and the process log.
func TestSecretsInEveryOutput(t *testing.T) {
	srv := newLoopbackHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusInternalServerError) // failures are kept longest and logged most
	}))
	u, _ := url.Parse(srv.URL)
	secrets := []string{"hunter2target", "tok3nquery", "c00kieheader", "ap1keyheader", "bas1cpass", "bear3rtoken", "hdrs3cret"}
	yml := `
modules:
  web:
    prober: http
    timeout: 2s
    http:
      headers: {Cookie: "session=c00kieheader", X-Api-Key: ap1keyheader, Accept: text/plain}
      http_client_config:
        basic_auth: {username: probe, password: bas1cpass}
        http_headers: {X-Token: {secrets: [hdrs3cret]}}
  token:
    prober: ttyd_token
    timeout: 2s
    ttyd_token:
      headers: {Cookie: "_forward_auth=c00kieheader"}
      http_client_config: {authorization: {credentials: bear3rtoken}}
  ws:
    prober: ttyd_ws
    timeout: 2s
    ttyd_ws:
      headers: {Cookie: "_forward_auth=c00kieheader"}
`
	gb := newGreybox(t, yml, gbOptions{})
	targets := []string{
		fmt.Sprintf("http://probe:hunter2target@%s/health?token=tok3nquery&x=1", u.Host),
		fmt.Sprintf("http://hunter2target@%s/?api_key=tok3nquery", u.Host),
	}
	var outputs []string
	for _, m := range []string{"web", "token", "ws"} {
		for _, target := range targets {
			_, body := gb.probe(t, m, target)
			outputs = append(outputs, body, gb.debug(t, m, target))
			_, logs := gb.get(t, "/logs?"+url.Values{"module": {m}, "target": {target}}.Encode())
			if !strings.Contains(logs, "Logs for the probe") {
				t.Errorf("/logs?module=%s&target=<with credentials> found nothing: %s", m, logs)
			}
			outputs = append(outputs, logs)
		}
	}
	// Refusals too: a 400 quotes what it refuses.
	for _, bad := range []string{"ftp://probe:hunter2target@example.invalid/", "http://probe:hunter2target@host:99999/"} {
		code, body := gb.probe(t, "web", bad)
		if code != http.StatusBadRequest {
			t.Errorf("%q: %d, want 400", bad, code)
		}
		outputs = append(outputs, body)
	}
	_, landing := gb.get(t, "/")
	_, cfg := gb.get(t, "/config")
	_, metrics := gb.get(t, "/metrics")
	outputs = append(outputs, landing, cfg, metrics, gb.log.String())
	for id := range 20 {
		_, l := gb.get(t, fmt.Sprintf("/logs?id=%d", id))
		outputs = append(outputs, l)
	}
	all := strings.Join(outputs, "\n")
	for _, s := range secrets {
		if i := strings.Index(all, s); i >= 0 {
			t.Errorf("secret %q printed: …%s…", s, all[max(0, i-120):min(len(all), i+40)])
		}
	}
	// What is not secret stays readable: the host, the path, the plain
	// header, and the redaction marks.
	for _, want := range []string{u.Host + "/health", "Accept: text/plain", "//xxxxx@", "token=xxxxx", "<secret>"} {
		if !strings.Contains(all, want) {
			t.Errorf("outputs lost %q", want)
		}
	}
	if regexp.MustCompile(`Cookie: session`).MatchString(cfg) {
		t.Errorf("/config shows the Cookie header's value:\n%s", cfg)
	}
}
