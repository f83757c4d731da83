package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/greybox-probe/greybox/config"
	_ "github.com/greybox-probe/greybox/prober" // registers the probers
)

// FuzzParse feeds arbitrary bytes to the config loader. Whatever the input,
// Parse must not panic, and a refusal must be one line that starts with the
// file name: it is printed by --config.check and logged on a failed reload,
// where a multi-line message (or one without the file) is a puzzle.
func FuzzParse(f *testing.F) {
	seeds := []string{
		"",
		"modules: {}\n",
		"modules:\n  a:\n    prober: http\n",
		"modules:\n  a:\n    prober: http\n    timeout: 5s\n    allowed_targets: ['127.0.0.0/8', '*.svc', 'localhost']\n    http:\n      method: post\n      valid_status_codes: [200, 302]\n      fail_if_body_matches_regexp: ['err(or)?']\n      body_size_limit: 1MiB\n      http_client_config:\n        basic_auth: {username: u, password: p}\n",
		"modules:\n  a:\n    prober: http\n    timeout: \"1\\n2s\"\n",
		"modules:\n  a:\n    prober: \"ht\\ntp\"\n",
		"modules:\n  \"a\\nb\":\n    prober: http\n    retries: 3\n",
		"modules:\n  a:\n    prober: http\n    allowed_targets: [\"10.0.0.0/33\\n\"]\n",
		"default_module: \"x\\ny\"\nmodules:\n  a: {prober: http}\n",
		"modules:\n  a:\n    prober: ttyd_ws\n    ttyd_ws: {columns: 0}\n",
		"modules:\n  a:\n    prober: ttyd_token\n    ttyd_token: {redirect_host: \"a/b\"}\n",
		"modules:\n  a:\n    prober: traefik_parity\n    traefik_parity: {compare: [rule, \"x\\ny\"], namespaces: [\"Bad_NS\"]}\n",
		"modules:\n  a:\n    prober: k8s_log_errors\n    k8s_log_errors: {patterns: ['failed to stream flows', '('], window: 11m, threshold: 10}\n",
		"modules:\n  a: &x {prober: http}\n  b: *x\n",
		"modules:\n  a:\n    <<: {prober: http}\n",
		"modules: [\n",
		"\t\x00\xff",
		"modules:\n  a: null\n",
		"modules:\n  a:\n    prober: http\n    http: [1, 2]\n",
		"modules:\n  a:\n    prober: http\n    http:\n      body_size_limit: -1\n",
		"modules:\n  a:\n    prober: http\n    timeout: -5s\n",
		"--- \nmodules:\n  a: {prober: http}\n---\nmodules: {}\n",
		"modules:\n  a:\n    prober: http\n    via: {replicas: \"k8s:traefik/app=traefik:web\", min_success: 50%}\n",
		"modules:\n  a:\n    prober: http\n    via: {replicas: \"a:1,b:2\", min_success: [1]}\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	for _, p := range []string{"../examples/greybox.yml"} {
		if b, err := os.ReadFile(filepath.FromSlash(p)); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		const name = "fuzz.yml"
		cfg, err := config.Parse(data, name)
		if err != nil {
			msg := err.Error()
			if !strings.HasPrefix(msg, name) {
				t.Errorf("error does not start with the file name: %q", msg)
			}
			if strings.ContainsAny(msg, "\n\r") {
				t.Errorf("error is not one line: %q", msg)
			}
			return
		}
		if len(cfg.Modules) == 0 {
			t.Fatal("Parse accepted a config without modules")
		}
		for n, m := range cfg.Modules {
			if m == nil || m.Name != n || m.Settings == nil || m.Timeout <= 0 {
				t.Fatalf("module %q accepted half-built: %+v", n, m)
			}
		}
		// What loaded must render for /config without failing.
		if _, err := cfg.Redacted(); err != nil {
			t.Errorf("Redacted: %v", err)
		}
	})
}

// Inputs FuzzParse found whose errors span lines: yaml.v3 quotes the
// offending value raw in a TypeError, and regexp errors quote the expression
// raw. Parse should escape line breaks in what it returns.
func TestParseErrorIsOneLineRegressions(t *testing.T) {
	for _, yml := range []string{
		"\"\\n\"",
		"modules:\n  a:\n    prober: http\n    http:\n      valid_status_codes: \"a\\nb\"\n",
		"modules:\n  a:\n    prober: http\n    http:\n      fail_if_body_matches_regexp: [\"(\\n\"]\n",
	} {
		_, err := config.Parse([]byte(yml), "fuzz.yml")
		if err == nil || strings.ContainsAny(err.Error(), "\n\r") || !strings.HasPrefix(err.Error(), "fuzz.yml") {
			t.Errorf("Parse(%q) = %v; want a one-line error starting with the file name", yml, err)
		}
	}
}
