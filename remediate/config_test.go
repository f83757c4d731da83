package remediate

import (
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
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
		{"unknown rule key", base + rule + "    cooldwn: 5m\n", "test.yml:7: rule \"r\": unknown key \"cooldwn\""},
		{"bad action", base + strings.Replace(rule, "delete_pod", "reboot_node", 1), "test.yml:3: rule \"r\": action \"reboot_node\""},
		{"no namespaces", base + strings.Replace(rule, "    namespaces: [a]\n", "", 1), "namespaces must list"},
		{"bad selector", base + rule + "    selector: 'a in (b'\n", "selector"},
		{"duplicate", base + rule + rule, "test.yml:7: duplicate rule name"},
		{"no url", "rules:\n" + rule, "prometheus.url"},
		{"no rules", "prometheus: {url: http://localhost:9090}\n", "no rules"},
		{"bad duration", base + rule + "    for: 10 minutes\n", "test.yml:7: rule \"r\": for: unknown unit"},
		{"bad leader timings", "prometheus: {url: http://localhost:9090}\nleader_election: {lease_duration: 1s, renew_deadline: 2s}\nrules:\n" + rule, "test.yml:2: leader_election"},
		{"zero budget", base + rule + "    max_actions: 0\n", "max_actions"},
		{"bad tls", "prometheus:\n  url: http://localhost:9090\n  http_client_config: {bearer_token: a, bearer_token_file: b}\nrules:\n" + rule, "test.yml:3: prometheus.http_client_config: at most one of bearer_token"},
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

// Errors name what the user wrote — the rule, the section, the key — and
// never a Go type of this program or its libraries.
var goTypeName = regexp.MustCompile(`(^|[^\w])(remediate|config|model|time|v1)\.\w+|\bplain\b|\[\]\*?\w|map\[|\bint64\b|!!\w+|unmarshal`)

func TestConfigErrorsNameNoGoTypes(t *testing.T) {
	base := "prometheus: {url: http://localhost:9090}\nrules:\n"
	rule := "  - name: r\n    expr: up == 0\n    action: delete_pod\n    namespaces: [a]\n"
	hc := "prometheus:\n  url: http://localhost:9090\n  http_client_config: "
	for _, tc := range []struct{ name, yml, want string }{
		{"unknown rule key", base + rule + "    cooldwn: 5m\n", `test.yml:7: rule "r": unknown key "cooldwn"`},
		{"unknown key in unnamed rule", "prometheus: {url: http://x}\nrules:\n  - {expr: up, selectr: x}\n", `test.yml:3: rules[0]: unknown key "selectr"`},
		{"unknown target_labels key", base + rule + "    target_labels: {ns: x}\n", `test.yml:7: rule "r": target_labels: unknown key "ns"`},
		{"unknown prometheus key", "prometheus: {urll: x}\n", `test.yml:1: prometheus: unknown key "urll"`},
		{"unknown http_client_config key", hc + "{basic_authx: foo}\nrules:\n" + rule, `test.yml:3: prometheus.http_client_config: unknown key "basic_authx"`},
		{"rule not a mapping", base + "  - foo\n", `test.yml:3: rules[0]: expected a mapping, got "foo"`},
		{"rules not a list", "prometheus: {url: http://x}\nrules: {a: 1}\n", `test.yml:2: rules: expected a list, got a mapping`},
		{"prometheus not a mapping", "prometheus: []\n", `test.yml:1: prometheus: expected a mapping, got a list`},
		{"state not a mapping", "state: []\nprometheus: {url: http://x}\nrules:\n" + rule, `test.yml:1: state: expected a mapping, got a list`},
		{"document not a mapping", "- a\n", `test.yml:1: the configuration must be a mapping of settings, got a list`},
		{"target_labels not a mapping", base + rule + "    target_labels: foo\n", `test.yml:7: rule "r": target_labels: expected a mapping, got "foo"`},
		{"flow rule, second list on the line", "rules:\n  - {name: r, expr: up, action: delete_pod, namespaces: [a], target_labels: [x]}\nprometheus: {url: http://x}\n",
			`test.yml:2: rule "r": target_labels: expected a mapping, got a list`},
		{"max_actions not an integer", base + rule + "    max_actions: lots\n", `test.yml:7: rule "r": max_actions: expected an integer, got "lots"`},
		{"dry_run not a boolean", "dry_run: 3\nprometheus: {url: http://x}\nrules:\n" + rule, `test.yml:1: dry_run: expected true or false, got "3"`},
		{"guards not a list", base + rule + "    guards: {a: b}\n", `test.yml:7: rule "r": guards: expected a list, got a mapping`},
		{"for not a duration", base + rule + "    for: [1]\n", `test.yml:7: rule "r": for: expected a duration`},
		{"timeout not a duration", "prometheus:\n  url: http://x\n  timeout: [1]\nrules:\n" + rule, `test.yml:3: prometheus.timeout: expected a duration`},
		{"bad lease duration", "leader_election: {lease_duration: forever}\nprometheus: {url: http://x}\nrules:\n" + rule, `test.yml:1: leader_election.lease_duration: not a valid duration`},
		{"basic_auth not a mapping", hc + "{basic_auth: foo}\nrules:\n" + rule, `test.yml:3: prometheus.http_client_config.basic_auth: expected a mapping, got "foo"`},
		{"password not a string", hc + "{basic_auth: {password: [a]}}\nrules:\n" + rule, `test.yml:3: prometheus.http_client_config.basic_auth.password: expected a string, got a list`},
		{"proxy_url not a string", hc + "{proxy_url: [1]}\nrules:\n" + rule, `test.yml:3: prometheus.http_client_config.proxy_url: expected a string, got a list`},
		{"follow_redirects not a boolean", hc + "{follow_redirects: maybe}\nrules:\n" + rule, `test.yml:3: prometheus.http_client_config.follow_redirects: expected true or false`},
		{"bad max_sample_age", "max_sample_age: 0s\nprometheus: {url: http://x}\nrules:\n" + rule, `test.yml:1: max_sample_age must be positive`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yml), "test.yml")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want it to contain %q", err, tc.want)
			}
			if err != nil {
				if leak := goTypeName.FindString(err.Error()); leak != "" {
					t.Errorf("error %q names a Go type or YAML internals (%q)", err, leak)
				}
			}
		})
	}
}

func TestConfigMaxSampleAge(t *testing.T) {
	rule := "rules:\n  - {name: r, expr: up, action: delete_pod, namespaces: [a]}\n"
	cfg, err := Parse([]byte("prometheus: {url: http://x}\n"+rule), "t.yml")
	if err != nil || time.Duration(cfg.MaxSampleAge) != DefaultMaxSampleAge || DefaultMaxSampleAge != 5*time.Minute {
		t.Fatalf("default max_sample_age: %v, %v", cfg, err)
	}
	cfg, err = Parse([]byte("max_sample_age: 90s\nprometheus: {url: http://x}\n"+rule), "t.yml")
	if err != nil || time.Duration(cfg.MaxSampleAge) != 90*time.Second {
		t.Fatalf("max_sample_age 90s: %v, %v", cfg, err)
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

// A credentials file the Prometheus client would read at every query must
// exist and be a file when the config is checked.
func TestConfigChecksSecretFiles(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ file, want string }{
		{filepath.Join(dir, "missing"), "no such file or directory"},
		{dir, "a directory, not a file"},
	} {
		yml := "prometheus:\n  url: http://127.0.0.1:9090\n  http_client_config:\n    authorization:\n      credentials_file: " + tc.file + "\nrules: []\n"
		_, err := Parse([]byte(yml), "r.yml")
		if err == nil || !strings.Contains(err.Error(), "r.yml:3: prometheus.http_client_config.authorization.credentials_file: "+tc.file+": "+tc.want) {
			t.Errorf("credentials_file %s: %v", tc.file, err)
		}
	}
}

// The remediator's config path gets the same refusal as greybox's: a FIFO
// (or a directory) is named, never read, so a reload cannot hang.
func TestLoadRefusesWhatIsNotAConfigFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.yml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		fifo: "a named pipe, not a file",
		dir:  "a directory, not a file",
	} {
		if _, err := Load(path); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Load(%s) = %v, want %q", path, err, want)
		}
	}
}

// --prometheus.url replaces the file's URL, may stand in for a missing
// one, and a bad value names the flag, not the file.
func TestPrometheusURLOverride(t *testing.T) {
	rule := "rules:\n  - name: r\n    expr: up == 0\n    action: delete_pod\n    namespaces: [a]\n"
	cfg, err := ParseWith([]byte("prometheus: {url: http://file:9090}\n"+rule), "test.yml", Overrides{PrometheusURL: "https://flag.example/prom"})
	if err != nil || cfg.Prometheus.URL != "https://flag.example/prom" {
		t.Fatalf("override: %v, url %q", err, cfg.Prometheus.URL)
	}
	if cfg, err := ParseWith([]byte(rule), "test.yml", Overrides{PrometheusURL: "http://flag:9090"}); err != nil || cfg.Prometheus.URL != "http://flag:9090" {
		t.Errorf("a file without prometheus.url and the flag: %v", err)
	}
	for _, bad := range []string{"flag:9090", "ftp://flag", "http://", "http:///x", "://x"} {
		_, err := ParseWith([]byte("prometheus: {url: http://file:9090}\n"+rule), "test.yml", Overrides{PrometheusURL: bad})
		if err == nil || !strings.HasPrefix(err.Error(), "--prometheus.url must be an http(s) URL") || strings.Contains(err.Error(), "test.yml") {
			t.Errorf("--prometheus.url=%q: %v", bad, err)
		}
	}
	_, err = Parse([]byte(rule), "test.yml")
	if err == nil || !strings.Contains(err.Error(), "test.yml:1: prometheus.url must be an http(s) URL with a host") || !strings.Contains(err.Error(), "--prometheus.url") {
		t.Errorf("no URL anywhere: %v", err)
	}
}

func TestProbeLabelsDefault(t *testing.T) {
	cfg, err := Load("../examples/remediator.yml")
	if err != nil {
		t.Fatal(err)
	}
	if pl := cfg.Rules[0].ProbeLabels; pl.Module != "module" || pl.Target != "instance" {
		t.Errorf("default probe labels %+v", pl)
	}
}
