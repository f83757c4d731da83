package remediate

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestExampleConfig(t *testing.T) {
	cfg, err := Load("../examples/remediator.yml")
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*Rule{}
	for _, r := range cfg.Rules {
		byName[r.Name] = r
	}
	w := byName["whisker_backend_wedged"]
	if w == nil || w.Action != ActionDeletePod || time.Duration(w.For) != 10*time.Minute || time.Duration(w.Cooldown) != 30*time.Minute ||
		!strings.Contains(w.Expr, "probe_k8s_log_matched_lines") || len(w.Guards) != 1 || !strings.Contains(w.Guards[0], `dependency="goldmane"`) {
		t.Errorf("whisker rule: %+v", w)
	}
	tr := byName["traefik_replica_missing_routers"]
	if tr == nil || tr.Action != ActionEvictPod || !tr.NamespaceAllowed("traefik") || tr.NamespaceAllowed("default") ||
		!tr.Matches(map[string]string{"app.kubernetes.io/name": "traefik"}) || tr.Matches(map[string]string{"app": "x"}) {
		t.Errorf("traefik rule: %+v", tr)
	}
	if tr.TargetLabels.Namespace != "namespace" || tr.TargetLabels.Pod != "pod" {
		t.Errorf("default target labels: %+v", tr.TargetLabels)
	}
}

func TestConfigErrors(t *testing.T) {
	base := "prometheus: {url: http://localhost:9090}\nrules:\n"
	rule := "  - name: r\n    expr: up == 0\n    action: delete_pod\n    namespaces: [a]\n"
	for _, tc := range []struct{ name, yml, want string }{
		{"unknown top key", "promethus: {}\n", "test.yml:1: unknown key \"promethus\""},
		{"unknown rule key", base + rule + "    cooldwn: 5m\n", "test.yml:7: unknown key \"cooldwn\""},
		{"bad action", base + strings.Replace(rule, "delete_pod", "reboot_node", 1), "test.yml:3: rule \"r\": action \"reboot_node\""},
		{"no namespaces", base + strings.Replace(rule, "    namespaces: [a]\n", "", 1), "namespaces must list"},
		{"bad selector", base + rule + "    selector: 'a in (b'\n", "selector"},
		{"duplicate", base + rule + rule, "test.yml:7: duplicate rule name"},
		{"no url", "rules:\n" + rule, "prometheus.url"},
		{"no rules", "prometheus: {url: http://localhost:9090}\n", "no rules"},
		{"bad duration", base + rule + "    for: 10 minutes\n", "test.yml:7: unknown unit"},
		{"bad leader timings", "prometheus: {url: http://localhost:9090}\nleader_election: {lease_duration: 1s, renew_deadline: 2s}\nrules:\n" + rule, "test.yml:2: leader_election"},
		{"zero budget", base + rule + "    max_actions: 0\n", "max_actions"},
		{"bad tls", "prometheus:\n  url: http://localhost:9090\n  http_client_config: {bearer_token: a, bearer_token_file: b}\nrules:\n" + rule, "test.yml:3: at most one of bearer_token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yml), "test.yml")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestConfigRedactsSecrets(t *testing.T) {
	cfg, err := Parse([]byte(`prometheus:
  url: http://localhost:9090
  http_client_config:
    basic_auth: {username: u, password: hunter2}
rules:
  - {name: r, expr: up, action: evict_pod, namespaces: [a]}
`), "t.yml")
	if err != nil {
		t.Fatal(err)
	}
	if out := cfg.Redacted(); strings.Contains(out, "hunter2") || !strings.Contains(out, "<secret>") {
		t.Errorf("secret not redacted:\n%s", out)
	}
}

func TestStatusPage(t *testing.T) {
	h := newHarness(t, "", whiskerPod("whisker-a", t0.Add(-time.Hour)))
	h.prom.set(goldmaneGuard, guardOK)
	h.prom.set(whiskerExpr, wedged("whisker-a", "whisker-<b>"))
	h.at(0)
	h.at(10 * time.Minute)
	rec := httptest.NewRecorder()
	h.engine.StatusHandler("1.2.3").ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	body := rec.Body.String()
	for _, want := range []string{"whisker", "calico-system/whisker-a", "2026-05-01T12:00:00Z", "success", "skipped_pod_gone",
		"calico-system/whisker-&lt;b&gt;", "firing", "1.2.3", "k8s-app=whisker"} {
		if !strings.Contains(body, want) {
			t.Errorf("status page lacks %q", want)
		}
	}
	if strings.Contains(body, "<script") || strings.Contains(body, "whisker-<b>") {
		t.Error("status page has scripts or unescaped input")
	}
	rec = httptest.NewRecorder()
	h.engine.StatusHandler("").ServeHTTP(rec, httptest.NewRequest("GET", "/nope", nil))
	if rec.Code != 404 {
		t.Errorf("GET /nope = %d", rec.Code)
	}
}

// Bad input gets an error, never a panic.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"prometheus: {url: http://localhost:9090}\nrules:\n  - {name: r, expr: up, action: evict_pod, namespaces: [a], for: 1m}\n",
		"rules: [~]\n", "prometheus: []\n", "rules:\n  - for: [1]\n", "storm_guard: {window: -1s}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data, "fuzz.yml")
		if err == nil && (cfg == nil || len(cfg.Rules) == 0) {
			t.Fatal("nil error without rules")
		}
	})
}
