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

// HTTP/3 through the whole server: a UDP peer that never answers is a
// failed probe answered in time, an address outside allowed_targets is
// refused before any datagram is sent, and the inline TLS key stays out
// of every output.
func TestHTTP3SilenceAllowlistAndSecrets(t *testing.T) {
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	yml := `
modules:
  h3:
    prober: http
    timeout: 500ms
    allowed_targets: [127.0.0.1]
    http: {enable_http3: true, enable_http2: false, valid_http_versions: [HTTP/3.0]}
  h3key:
    prober: http
    timeout: 500ms
    allowed_targets: [127.0.0.1]
    http:
      enable_http3: true
      enable_http2: false
      tls_config: {key: h3tlsk3yinline, cert: notacert}
`
	gb := newGreybox(t, yml, gbOptions{})
	target := "https://" + silent.LocalAddr().String() + "/"
	code, body := gb.probe(t, "h3", target)
	if code != http.StatusOK {
		t.Fatalf("silent peer: %d %s", code, body)
	}
	assertSuccess(t, body, 0)
	debug := gb.debug(t, "h3", target)
	if !strings.Contains(debug, "deadline") && !strings.Contains(debug, "timeout") {
		t.Errorf("the silent peer's probe did not end at its deadline:\n%s", debug)
	}
	outputs := []string{body, debug}
	for _, tgt := range []string{target, "https://127.0.0.2:443/"} {
		_, b := gb.probe(t, "h3key", tgt)
		outputs = append(outputs, b, gb.debug(t, "h3key", tgt))
	}
	if code, body := gb.probe(t, "h3", "https://127.0.0.2:443/"); code != http.StatusForbidden {
		t.Errorf("127.0.0.2: %d %s, want 403", code, body)
	}
	_, cfg := gb.get(t, "/config")
	outputs = append(outputs, cfg, gb.log.String())
	if all := strings.Join(outputs, "\n"); strings.Contains(all, "h3tlsk3yinline") {
		t.Error("the inline TLS key was printed")
	}
}
