package examples

import (
	"os"
	"strings"
	"testing"

	"github.com/greybox-probe/greybox/config"
	_ "github.com/greybox-probe/greybox/prober"
)

// examples/blackbox.yml is a blackbox_exporter file for the tcp, dns, icmp,
// grpc and websocket probers: it loads as greybox --config.check loads it,
// and it uses every option blackbox documents for them, so an option greybox
// stopped accepting fails here.
func TestBlackboxConfigLoads(t *testing.T) {
	cfg, err := config.Load("blackbox.yml")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("blackbox.yml")
	if err != nil {
		t.Fatal(err)
	}
	probers := map[string]bool{}
	for _, m := range cfg.Modules {
		probers[m.Prober] = true
	}
	for _, p := range []string{"tcp", "dns", "icmp", "grpc", "websocket"} {
		if !probers[p] {
			t.Errorf("no %s module", p)
		}
	}
	// blackbox's CONFIGURATION.md, <tcp_probe> … <websocket_probe>.
	for _, key := range []string{
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
