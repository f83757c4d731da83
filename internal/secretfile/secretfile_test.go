package secretfile

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	pconfig "github.com/prometheus/common/config"
)

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "password")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	for _, tc := range []struct {
		name string
		cfg  pconfig.HTTPClientConfig
		want string // "" = accepted
	}{
		{"regular file", pconfig.HTTPClientConfig{BasicAuth: &pconfig.BasicAuth{Username: "u", PasswordFile: file}}, ""},
		{"missing password_file", pconfig.HTTPClientConfig{BasicAuth: &pconfig.BasicAuth{Username: "u", PasswordFile: missing}}, "x.basic_auth.password_file: " + missing + ": no such file or directory"},
		{"directory as password_file", pconfig.HTTPClientConfig{BasicAuth: &pconfig.BasicAuth{Username: "u", PasswordFile: dir}}, "a directory"},
		{"FIFO as credentials_file", pconfig.HTTPClientConfig{Authorization: &pconfig.Authorization{CredentialsFile: fifo}}, "x.authorization.credentials_file: " + fifo + ": a named pipe"},
		{"bearer_token_file", pconfig.HTTPClientConfig{BearerTokenFile: missing}, "x.bearer_token_file"},
		{"username_file", pconfig.HTTPClientConfig{BasicAuth: &pconfig.BasicAuth{UsernameFile: missing}}, "x.basic_auth.username_file"},
		{"tls ca_file", pconfig.HTTPClientConfig{TLSConfig: pconfig.TLSConfig{CAFile: missing}}, "x.tls_config.ca_file"},
		{"tls key_file", pconfig.HTTPClientConfig{TLSConfig: pconfig.TLSConfig{CertFile: file, KeyFile: dir}}, "x.tls_config.key_file"},
		{"oauth2 client_secret_file", pconfig.HTTPClientConfig{OAuth2: &pconfig.OAuth2{ClientID: "a", TokenURL: "http://127.0.0.1/", ClientSecretFile: missing}}, "x.oauth2.client_secret_file"},
		{"oauth2 tls cert_file", pconfig.HTTPClientConfig{OAuth2: &pconfig.OAuth2{ClientID: "a", TokenURL: "http://127.0.0.1/", TLSConfig: pconfig.TLSConfig{CertFile: missing}}}, "x.oauth2.tls_config.cert_file"},
		{"http_headers files", pconfig.HTTPClientConfig{HTTPHeaders: &pconfig.Headers{Headers: map[string]pconfig.Header{"X-Token": {Files: []string{file, missing}}}}}, "x.http_headers.X-Token.files: " + missing},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Check(&tc.cfg, "x")
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
