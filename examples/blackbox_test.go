package examples

import (
	"os"
	"strings"
	"testing"

	"github.com/greybox-probe/greybox/config"
	_ "github.com/greybox-probe/greybox/prober"
)

// examples/blackbox.yml is a blackbox_exporter file for the http, tcp, dns,
// icmp, grpc, unix and websocket probers: it loads as greybox --config.check loads it,
// and it uses every option blackbox documents for them, so an option greybox
// stopped accepting fails here.
func TestBlackboxConfigLoads(t *testing.T) {
	cfg, err := config.Load("blackbox.yml")
	if err != nil {
		t.Fatal(err)
	}
	// The leftover http: section of tcp_with_leftover_http, and only it.
	if len(cfg.Warnings) != 1 || !strings.Contains(cfg.Warnings[0], `module "tcp_with_leftover_http": http section ignored`) {
		t.Errorf("warnings %q", cfg.Warnings)
	}
	raw, err := os.ReadFile("blackbox.yml")
	if err != nil {
		t.Fatal(err)
	}
	probers := map[string]bool{}
	for _, m := range cfg.Modules {
		probers[m.Prober] = true
	}
	for _, p := range []string{"http", "tcp", "dns", "icmp", "grpc", "unix", "websocket"} {
		if !probers[p] {
			t.Errorf("no %s module", p)
		}
	}
	// blackbox's CONFIGURATION.md, <http_probe> … <websocket_probe>.
	for _, key := range []string{
		"valid_status_codes:", "valid_http_versions:", "method:", "headers:", "http_headers:",
		"body_size_limit:", "compression:", "follow_redirects:", "no_follow_redirects:",
		"fail_if_ssl:", "fail_if_not_ssl:", "fail_if_body_json_matches_cel:",
		"fail_if_body_json_not_matches_cel:", "fail_if_body_matches_regexp:",
		"fail_if_body_not_matches_regexp:", "fail_if_header_matches:", "fail_if_header_not_matches:",
		"header:", "regexp:", "allow_missing:", "basic_auth:", "authorization:", "proxy_url:",
		"no_proxy:", "proxy_from_environment:", "proxy_connect_header:",
		"skip_resolve_phase_with_proxy:", "enable_http2:", "enable_http3:", "body:", "body_file:",
		"preferred_ip_protocol:", "ip_protocol_fallback:", "source_ip_address:", "query_response:",
		"expect:", "expect_bytes:", "labels:", "send:", "starttls:", "tls:", "tls_config:",
		"insecure_skip_verify:", "server_name:", "min_version:", "max_version:",
		"transport_protocol:", "dns_over_tls:", "query_name:", "query_type:", "query_class:",
		"recursion_desired:", "valid_rcodes:", "validate_answer_rrs:", "validate_authority_rrs:",
		"validate_additional_rrs:", "fail_if_matches_regexp:", "fail_if_all_match_regexp:",
		"fail_if_not_matches_regexp:", "fail_if_none_matches_regexp:",
		"dont_fragment:", "payload_size:", "ttl:",
		"service:", "metadata:",
		"http_config:", "headers:", "values:", "secrets:",
	} {
		if !strings.Contains(string(raw), key) {
			t.Errorf("blackbox.yml does not use %s", key)
		}
	}
}
