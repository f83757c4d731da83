package prober

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
)

// The http rows of the compatibility table: blackbox_exporter's http
// options against local servers, asserting blackbox's metric names and
// values.

// newHTTPCompatServer serves h on 127.0.0.1: plain, TLS with cert, or
// TLS with HTTP/2 offered.
func newHTTPCompatServer(t *testing.T, h http.Handler, cert *testCert, h2 bool) *httptest.Server {
	t.Helper()
	s := httptest.NewUnstartedServer(h)
	if cert == nil {
		s.Start()
	} else {
		s.TLS = cert.serverConfig()
		s.EnableHTTP2 = h2
		s.StartTLS()
	}
	t.Cleanup(s.Close)
	return s
}

func okHandler(body string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, body) })
}

func TestHTTPCompat(t *testing.T) {
	cert := newTestCert(t)
	plain := newHTTPCompatServer(t, okHandler("hello"), nil, false)
	tls1 := newHTTPCompatServer(t, okHandler("hello"), cert, false)
	h2 := newHTTPCompatServer(t, okHandler("hello"), cert, true)

	tlsWants := func(verified bool) []want {
		return []want{
			{name: "probe_http_ssl", value: 1},
			{name: "probe_ssl_earliest_cert_expiry", value: float64(cert.notAfter.Unix())},
			{name: "probe_tls_version_info", labels: map[string]string{"version": "TLS 1.3"}, value: 1},
			{name: "probe_tls_cipher_info", labels: map[string]string{"cipher": "TLS_AES_128_GCM_SHA256"}, value: 1},
			{name: "probe_ssl_last_chain_info", labels: map[string]string{"subject": "CN=greybox.test", "issuer": "CN=greybox.test", "subjectalternative": "greybox.test", "serialnumber": "0abc"}, value: 1},
			{name: "probe_ssl_last_chain_expiry_timestamp_seconds", value: float64(cert.notAfter.Unix()), absent: !verified},
		}
	}
	caClient := fmt.Sprintf("http_client_config: {tls_config: {ca_file: %s}}", cert.caFile)

	runCompat(t, ProbeHTTP, nil, []compatCase{
		{name: "plain: no TLS metrics", module: "prober: http", target: plain.URL, ok: true, wants: []want{
			{name: "probe_http_ssl", value: 0},
			{name: "probe_tls_version_info", absent: true},
			{name: "probe_ssl_last_chain_info", absent: true},
			{name: "probe_ssl_last_chain_expiry_timestamp_seconds", absent: true},
		}},
		{name: "tls verified", module: "prober: http\nhttp: {" + caClient + "}", target: tls1.URL, ok: true, wants: tlsWants(true)},
		{name: "tls insecure: no chain expiry", module: "prober: http\nhttp: {http_client_config: {tls_config: {insecure_skip_verify: true}}}", target: tls1.URL, ok: true, wants: tlsWants(false)},
		{name: "tls max_version", module: "prober: http\nhttp: {http_client_config: {tls_config: {insecure_skip_verify: true, max_version: TLS12}}}", target: tls1.URL, ok: true, wants: []want{
			{name: "probe_tls_version_info", labels: map[string]string{"version": "TLS 1.2"}, value: 1},
		}},
		{name: "tls untrusted", module: "prober: http", target: tls1.URL, ok: false, wants: []want{
			{name: "probe_tls_version_info", absent: true},
		}},
		{name: "http2", module: "prober: http\nhttp: {" + caClient + "}", target: h2.URL, ok: true, wants: append(tlsWants(true), want{name: "probe_http_version", value: 2})},
	})
}
