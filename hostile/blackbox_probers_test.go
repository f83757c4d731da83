package hostile

import (
	"net"
	"net/http"
	"strings"
	"testing"
)

// The blackbox-compatible probers through the whole server: secrets in
// their modules (an inline TLS key, gRPC metadata, WebSocket header
// secrets and basic auth, DNS over TLS's key) never reach /config, a
// probe answer, debug output or the process log; a peer that accepts and
// never answers is a failed probe, answered in time, for each of them.
func TestBlackboxProbersSecretsAndSilence(t *testing.T) {
	silent := newPeer(t, "127.0.0.1:0", hang)
	port := silent.addr()[strings.LastIndex(silent.addr(), ":")+1:]
	secrets := []string{"tlsk3yinline", "grpcm3tadata", "wshdrs3cret", "wsbas1cpass"}
	yml := `
modules:
  tcp:
    prober: tcp
    timeout: 500ms
    allowed_targets: [127.0.0.1]
    tcp: {tls: true, tls_config: {key: tlsk3yinline, cert: notacert}, query_response: [{expect: "^x"}]}
  dns:
    prober: dns
    timeout: 500ms
    allowed_targets: [127.0.0.1]
    dns: {query_name: example.test, transport_protocol: tcp}
  grpc:
    prober: grpc
    timeout: 500ms
    allowed_targets: [127.0.0.1]
    grpc: {metadata: {authorization: [grpcm3tadata]}}
  websocket:
    prober: websocket
    timeout: 500ms
    allowed_targets: [127.0.0.1]
    websocket:
      headers: {X-Token: {secrets: [wshdrs3cret]}}
      http_config: {basic_auth: {username: u, password: wsbas1cpass}}
`
	gb := newGreybox(t, yml, gbOptions{})
	var outputs []string
	for module, target := range map[string]string{
		"tcp":       silent.addr(),
		"dns":       silent.addr(),
		"grpc":      silent.addr(),
		"websocket": "ws://" + net.JoinHostPort("127.0.0.1", port) + "/",
	} {
		code, body := gb.probe(t, module, target)
		if code != http.StatusOK {
			t.Errorf("%s: %d %s", module, code, body)
		}
		assertSuccess(t, body, 0)
		outputs = append(outputs, body, gb.debug(t, module, target))
	}
	_, cfg := gb.get(t, "/config")
	outputs = append(outputs, cfg, gb.log.String())
	all := strings.Join(outputs, "\n")
	for _, s := range secrets {
		if strings.Contains(all, s) {
			t.Errorf("secret %q printed", s)
		}
	}
	if !strings.Contains(cfg, "<secret>") {
		t.Errorf("/config shows no redacted value:\n%s", cfg)
	}
}
