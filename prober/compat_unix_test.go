package prober

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// unixSocket serves on dir/name (dir from t.TempDir()) and returns its
// path; the server stops when the test ends.
func unixSocket(t testing.TB, dir, name string, serve func(net.Conn)) (string, *lineServer) {
	t.Helper()
	path := filepath.Join(dir, name)
	if len(path) > maxUnixPath {
		t.Skipf("temporary directory too deep for a unix socket path: %s", path)
	}
	return path, newLineServer(t, "unix", path, serve)
}

func TestUnixCompat(t *testing.T) {
	cert := newTestCert(t)
	dir := t.TempDir()
	plain, _ := unixSocket(t, dir, "plain.sock", writeLines("SSH-2.0-OpenSSH_9.6\r\n"))
	banner, _ := unixSocket(t, dir, "banner.sock", func(c net.Conn) { io.WriteString(c, "SSH-2.0-OpenSSH_9.6\r\n") })
	smtp, _ := unixSocket(t, dir, "smtp.sock", smtpLike(cert))
	bytesSock, _ := unixSocket(t, dir, "bytes.sock", writeLines("\x00\x01\x02\x03"))
	tlsSock, _ := unixSocket(t, dir, "tls.sock", func(c net.Conn) {
		tc := tls.Server(c, cert.serverConfig())
		if tc.Handshake() != nil {
			return
		}
		io.WriteString(tc, "+OK tls\r\n")
		_, _ = io.Copy(io.Discard, tc)
	})
	gone, srv := unixSocket(t, dir, "gone.sock", func(net.Conn) {})
	srv.Close()
	_ = os.Remove(gone)
	// A link in the allowed directory to a socket outside it.
	outside, _ := unixSocket(t, t.TempDir(), "outside.sock", writeLines("outside\n"))
	link := filepath.Join(dir, "link.sock")
	if err := os.Symlink(outside, link); err != nil {
		t.Fatal(err)
	}
	// A link inside the allowlist to an allowed socket is followed.
	inner := filepath.Join(dir, "inner.sock")
	if err := os.Symlink(plain, inner); err != nil {
		t.Fatal(err)
	}

	allow := fmt.Sprintf("allowed_paths: [%q]", dir+"/*.sock")
	module := func(extra string) string {
		return "prober: unix\nunix: {" + allow + extra + "}"
	}
	tlsWants := func(verified bool) []want { return tlsMetricWants(cert, verified) }

	runCompat(t, probeUnix, nil, []compatCase{
		{name: "connect", module: module(""), target: plain, ok: true, wants: []want{
			{name: "probe_failed_due_to_regex", value: 0},
			{name: "probe_failed_due_to_bytes", value: 0},
			// No address: blackbox's unix prober has no IP metrics.
			{name: "probe_ip_protocol", absent: true},
			{name: "probe_tls_version_info", absent: true},
		}},
		{name: "exact path allowed", module: fmt.Sprintf("prober: unix\nunix: {allowed_paths: [%q]}", plain), target: plain, ok: true},
		{name: "socket gone", module: module(""), target: gone, ok: false, log: "dialing the unix socket failed"},
		{name: "expect and labels", module: module(`, query_response: [
      {expect: "^220 ([^ ]+) ESMTP (.+)$", labels: [{name: host, value: "${1}"}, {name: version, value: "${2}"}]},
      {send: "EHLO prober"},
      {expect: "^250 STARTTLS"}]`), target: smtp, ok: true, wants: []want{
			{name: "probe_expect_info", labels: map[string]string{"host": "mail.greybox.test", "version": "Greybox-1.2.3"}, value: 1},
			{name: "probe_failed_due_to_regex", value: 0},
		}},
		{name: "expect does not match", module: module(`, query_response: [{expect: "^SSH-1"}]`), target: banner, ok: false, wants: []want{
			{name: "probe_failed_due_to_regex", value: 1},
		}, log: "did not match"},
		{name: "expect_bytes", module: module(`, query_response: [{expect_bytes: "\x00\x01\x02\x03"}]`), target: bytesSock, ok: true, wants: []want{
			{name: "probe_failed_due_to_bytes", value: 0},
		}},
		{name: "expect_bytes mismatch", module: module(`, query_response: [{expect_bytes: "SSH-1"}]`), target: plain, ok: false, wants: []want{
			{name: "probe_failed_due_to_bytes", value: 1},
		}},
		{name: "starttls", module: module(fmt.Sprintf(`, query_response: [
      {expect: "^220 "}, {send: "EHLO prober"}, {expect: "^250 STARTTLS"}, {send: "STARTTLS"},
      {expect: "^220 go ahead", starttls: true}, {expect: "^250 secure"}],
    tls_config: {ca_file: %s, server_name: greybox.test}`, cert.caFile)), target: smtp, ok: true, wants: tlsWants(true)},
		{name: "tls verified", module: module(fmt.Sprintf(", tls: true, tls_config: {ca_file: %s, server_name: greybox.test}, query_response: [{expect: '^\\+OK'}]", cert.caFile)),
			target: tlsSock, ok: true, wants: tlsWants(true)},
		{name: "tls insecure: no chain expiry", module: module(", tls: true, tls_config: {insecure_skip_verify: true}"), target: tlsSock, ok: true, wants: tlsWants(false)},
		{name: "tls wrong name", module: module(fmt.Sprintf(", tls: true, tls_config: {ca_file: %s, server_name: other.test}", cert.caFile)), target: tlsSock, ok: false, log: "TLS handshake failed"},
		{name: "outside allowed_paths", module: module(""), target: outside, ok: false, log: "not in unix.allowed_paths"},
		{name: "symlink out of allowed_paths", module: module(""), target: link, ok: false, log: "is a symlink to"},
		{name: "symlink within allowed_paths", module: module(`, query_response: [{expect: "^SSH-2"}]`), target: inner, ok: true},
		{name: "no allowed_paths", module: "prober: unix", target: plain, ok: false, log: "has no unix.allowed_paths"},
	})
}

func TestUnixConfigErrors(t *testing.T) {
	for _, c := range []struct{ yml, want string }{
		{"unix: {allowed_paths: [run/x.sock]}", `allowed_paths[0]: "run/x.sock" is not an absolute path`},
		{"unix: {allowed_paths: [/run//x.sock]}", `is not in clean form (write "/run/x.sock")`},
		{"unix: {allowed_paths: ['/run/[x.sock']}", "is not a valid pattern"},
		{"unix: {tls: true}", "needs server_name"},
		{"unix: {query_response: [{expect: '^220', starttls: true}]}", "needs server_name"},
		{"unix: {query_response: [{expect: a, expect_bytes: b}]}", "expect and expect_bytes are mutually exclusive"},
		{"unix: {query_response: [{expect: '('}]}", "invalid regular expression"},
		{"unix: {tls: true, tls_config: {server_name: x, ca_file: /nonexistent/ca.pem}}", "unix.tls_config.ca_file: /nonexistent/ca.pem"},
		{"unix: {preferred_ip_protocol: ip4}", "preferred_ip_protocol"},
	} {
		_, err := parseModule("prober: unix\n" + c.yml)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", c.yml, err, c.want)
		}
	}
	if _, err := parseModule("prober: unix\nunix: {tls: true, tls_config: {insecure_skip_verify: true}, allowed_paths: [/run/*.sock, /var/run/app.sock]}"); err != nil {
		t.Errorf("valid module refused: %v", err)
	}
}

// The handler refuses before any dial: 403 for a path no allowed_paths
// lets through (or no allowed_paths at all), 400 for a target that is no
// socket path.
func TestUnixTargetRefusals(t *testing.T) {
	var dialled atomic.Int32
	outside, _ := unixSocket(t, t.TempDir(), "outside.sock", func(net.Conn) { dialled.Add(1) })
	allowedDir := t.TempDir()
	yml := fmt.Sprintf("modules:\n  open:\n    prober: unix\n  listed:\n    prober: unix\n    unix: {allowed_paths: [%q]}\n", allowedDir+"/*")
	h, _, _ := newTestHandler(t, yml, 10)
	for _, c := range []struct {
		module, target string
		code           int
		reason         string
	}{
		{"open", outside, http.StatusForbidden, "no unix.allowed_paths"},
		{"listed", outside, http.StatusForbidden, "not in unix.allowed_paths"},
		{"listed", "run/app.sock", http.StatusBadRequest, "absolute path"},
		{"listed", "@abstract", http.StatusBadRequest, "abstract sockets"},
		{"listed", allowedDir + "/a\x00b", http.StatusBadRequest, "NUL byte"},
		{"listed", allowedDir + "/" + strings.Repeat("a", maxUnixPath), http.StatusBadRequest, fmt.Sprintf("at most %d", maxUnixPath)},
		{"listed", allowedDir + "/../x.sock", http.StatusBadRequest, "clean form"},
	} {
		rec := get(h, "/probe?module="+c.module+"&target="+url.QueryEscape(c.target), nil)
		if rec.Code != c.code || !strings.Contains(rec.Body.String(), c.reason) {
			t.Errorf("%s %q: %d %s, want %d naming %q", c.module, c.target, rec.Code, rec.Body, c.code, c.reason)
		}
	}
	if n := dialled.Load(); n != 0 {
		t.Errorf("the denied socket got %d connections", n)
	}
}
