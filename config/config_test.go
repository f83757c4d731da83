package config_test

import (
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/greybox-probe/greybox/config"
	_ "github.com/greybox-probe/greybox/prober" // registers the probers
)

// goTypeName matches a package-qualified Go type such as prober.HTTPSettings.
var goTypeName = regexp.MustCompile(`\b(config|prober|remediate|kube|yaml)\.[A-Z]`)

func TestParseErrorsNameFileLineAndKey(t *testing.T) {
	for _, tc := range []struct {
		name, yml string
		want      []string
	}{
		{"unknown top-level key", "modulez: {}\n", []string{"t.yml:1", `unknown key "modulez"`}},
		{"no modules", "modules: {}\n", []string{"t.yml", "no modules"}},
		{"empty file", "", []string{"t.yml", "no modules"}},
		{"missing prober", "modules:\n  a:\n    timeout: 5s\n", []string{"t.yml:3", `module "a"`, `missing key "prober"`}},
		{"unknown prober", "modules:\n  a:\n    prober: smtp\n", []string{"t.yml:3", `unknown prober "smtp"`, "http"}},
		{"unknown module key", "modules:\n  a:\n    prober: http\n    retries: 3\n", []string{"t.yml:4", `module "a"`, `unknown key "retries"`}},
		{"unknown key that is no prober's section", "modules:\n  a:\n    prober: http\n    ttyd: {}\n", []string{"t.yml:4", `unknown key "ttyd"`}},
		{"unknown key inside section", "modules:\n  ok:\n    prober: http\n  a:\n    prober: http\n    http:\n      methd: GET\n", []string{"t.yml:7", `module "a"`, `unknown key "methd"`}},
		{"unknown key in http_client_config", "modules:\n  a:\n    prober: http\n    http:\n      http_client_config:\n        basic_auth: {usr: x}\n", []string{"t.yml:6", `unknown key "usr"`}},
		{"bad regexp", "modules:\n  a:\n    prober: http\n    http:\n      fail_if_body_matches_regexp: ['(']\n", []string{"t.yml:5", `module "a"`, "invalid regular expression"}},
		{"bad status code", "modules:\n  a:\n    prober: http\n    http:\n      valid_status_codes: [2000]\n", []string{"t.yml:4", "valid_status_codes"}},
		{"bad timeout", "modules:\n  a:\n    prober: http\n    timeout: soon\n", []string{"t.yml:4", "soon"}},
		{"bad allowlist", "modules:\n  a:\n    prober: http\n    allowed_targets: ['10.0.0.0/33']\n", []string{"t.yml:4", "not a CIDR"}},
		{"bad size", "modules:\n  a:\n    prober: http\n    http: {body_size_limit: lots}\n", []string{"t.yml:4", "invalid size"}},
		{"bad default module", "default_module: nope\nmodules:\n  a: {prober: http}\n", []string{"t.yml", `default_module "nope"`}},
		{"not yaml", "modules: [\n", []string{"t.yml:1: did not find expected node content"}},
		{"syntax error names file:line", "modules:\n  a: {prober: http}\n b: c: d\n", []string{"t.yml:2: did not find expected key"}},
		{"module defined twice", "modules:\n  a: {prober: http}\n  b: {prober: http}\n  a: {prober: http}\n", []string{"t.yml:4", `module "a" is defined twice (first at t.yml:2)`}},
		{"errors in two modules", "modules:\n  a:\n    prober: http\n    http: {methd: GET}\n  b:\n    prober: http\n    http: {bdy: x}\n", []string{"t.yml:4", `unknown key "methd"`, "t.yml:7", `unknown key "bdy"`}},
		{"wrong type names no Go type", "modules:\n  a:\n    prober: http\n    http: {headers: [x]}\n", []string{"t.yml:4", "headers"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Parse([]byte(tc.yml), "t.yml")
			if err == nil {
				t.Fatal("want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
			if goTypeName.MatchString(err.Error()) || strings.Contains(err.Error(), " line ") {
				t.Errorf("error names a Go type or uses the \"line N\" form: %q", err)
			}
		})
	}
}

func TestParseDefaultsAndSettings(t *testing.T) {
	cfg, err := config.Parse([]byte(`
modules:
  plain:
    prober: http
  tuned:
    prober: http
    timeout: 3s
    allowed_targets: ["*.example.com", "127.0.0.0/8"]
    http:
      method: post
      body_size_limit: 1KiB
      http_client_config:
        basic_auth: {username: u, password: hunter2}
`), "t.yml")
	if err != nil {
		t.Fatal(err)
	}
	plain := cfg.Modules["plain"]
	if plain.Name != "plain" || plain.Timeout.String() != "10s" {
		t.Errorf("defaults: name=%q timeout=%s", plain.Name, plain.Timeout)
	}
	out, err := cfg.Redacted()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"method: POST", "body_size_limit: 1KiB", "<secret>", "'*.example.com'", "timeout: 3s"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("redacted config lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "hunter2") {
		t.Fatalf("secret leaked into /config output:\n%s", out)
	}
	// The redacted output is itself a valid config (secrets aside).
	var again map[string]any
	if err := yaml.Unmarshal(out, &again); err != nil {
		t.Fatal(err)
	}
}

func TestHTTPClientConfigKeepsProberDefaultForFollowRedirects(t *testing.T) {
	c := config.NewHTTPClientConfig(false)
	if err := yaml.Unmarshal([]byte("basic_auth: {username: u, password: p}\n"), &c); err != nil {
		t.Fatal(err)
	}
	if c.FollowRedirects {
		t.Error("follow_redirects flipped to true although the user did not set it")
	}
	c = config.NewHTTPClientConfig(false)
	if err := yaml.Unmarshal([]byte("follow_redirects: true\n"), &c); err != nil {
		t.Fatal(err)
	}
	if !c.FollowRedirects {
		t.Error("explicit follow_redirects: true was ignored")
	}
}

func TestAllowlist(t *testing.T) {
	a, err := config.ParseAllowlist([]string{"terminal.example.com", "*.svc.cluster.local", "10.0.0.0/8", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]bool{
		"terminal.example.com":            true,
		"TERMINAL.example.com.":           true,
		"ttyd.terminal.svc.cluster.local": true,
		"svc.cluster.local":               false,
		"evil.example.com":                false,
	} {
		if got := a.AllowsName(host); got != want {
			t.Errorf("AllowsName(%q) = %v, want %v", host, got, want)
		}
	}
	for _, bad := range []string{"", "10.0.0.0/99", "a b", "*"} {
		if _, err := config.ParseAllowlist([]string{bad}); err == nil {
			t.Errorf("ParseAllowlist(%q) accepted", bad)
		}
	}
}

func TestThirdPartyValidationErrorsGetALine(t *testing.T) {
	_, err := config.Parse([]byte("modules:\n  a:\n    prober: http\n    http:\n      http_client_config:\n        basic_auth: {username: u, password: p}\n        authorization: {credentials: c}\n"), "t.yml")
	if err == nil || !strings.Contains(err.Error(), "t.yml:4") || !strings.Contains(err.Error(), "at most one of basic_auth") {
		t.Fatalf("got %v", err)
	}
}

// blackbox accepts, and ignores, other probers' sections in a module
// (an http: block left in a tcp module); so does greybox, saying so.
func TestOtherProberSectionIgnored(t *testing.T) {
	// The unix section would not load in a unix module (a relative
	// allowed_paths entry); in a tcp module it is not decoded at all. And
	// the other way round: a unix module ignores a tcp section.
	yml := "modules:\n  a:\n    prober: tcp\n    http:\n      no_such_key: 1\n    unix: {allowed_paths: [relative.sock]}\n    tcp: {preferred_ip_protocol: ip4}\n  b: {prober: http}\n" +
		"  u:\n    prober: unix\n    tcp: {preferred_ip_protocol: ipv9}\n    unix: {allowed_paths: [/run/u.sock]}\n"
	cfg, err := config.Parse([]byte(yml), "t.yml")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`t.yml:4: module "a": http section ignored: a tcp module uses only its tcp section`,
		`t.yml:6: module "a": unix section ignored: a tcp module uses only its tcp section`,
		`t.yml:11: module "u": tcp section ignored: a unix module uses only its unix section`,
	}
	if len(cfg.Warnings) != len(want) {
		t.Fatalf("warnings %q, want %d", cfg.Warnings, len(want))
	}
	for i, w := range want {
		if !strings.Contains(cfg.Warnings[i], w) {
			t.Errorf("warning %q does not contain %q", cfg.Warnings[i], w)
		}
	}
	if y := cfg.Modules["a"].YAML(); strings.Contains(y, "http") || strings.Contains(y, "relative.sock") {
		t.Errorf("ignored section rendered:\n%s", y)
	}
	if y := cfg.Modules["u"].YAML(); strings.Contains(y, "ipv9") || !strings.Contains(y, "/run/u.sock") {
		t.Errorf("unix module rendered:\n%s", y)
	}
}
