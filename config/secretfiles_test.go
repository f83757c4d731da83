package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/greybox-probe/greybox/config"
)

// The shipped example loads once its secret exists next to it, and
// --config.check refuses it, naming module, key and file, when it does not.
func TestExampleSecretFilesAreChecked(t *testing.T) {
	data, err := os.ReadFile("../examples/greybox.yml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "greybox.yml")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = config.Load(path)
	want := `module "ttyd_token_incluster": ttyd_token.http_client_config.basic_auth.password_file: ` + filepath.Join(dir, "secrets", "ttyd-password") + ": no such file or directory"
	if err == nil || !strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), path+":") {
		t.Fatalf("without the secret: %v\nwant %q", err, want)
	}
	secret := filepath.Join(dir, "secrets", "ttyd-password")
	if err := os.MkdirAll(secret, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := config.Load(path); err == nil || !strings.Contains(err.Error(), "a directory, not a file") {
		t.Fatalf("secret path is a directory: %v", err)
	}
	if err := os.Remove(secret); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(secret, []byte("pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("with the secret: %v", err)
	}
	// The relative path was resolved against the config file's directory.
	if out, _ := cfg.Redacted(); !strings.Contains(string(out), secret) {
		t.Errorf("password_file not resolved to %s:\n%s", secret, out)
	}
}
