package e2e

import (
	"net/http"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// --web.config.file (exporter-toolkit) protects greybox's own endpoints,
// /probe included: Prometheus then scrapes with basic_auth.
func TestWebConfigBasicAuth(t *testing.T) {
	dir := t.TempDir()
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	web := writeFile(t, dir, "web.yml", "basic_auth_users:\n  prom: '"+string(hash)+"'\n")
	cfg := writeFile(t, dir, "greybox.yml", probeConfig)
	addr := freeAddr(t)
	startProc(t, "greybox", greyboxBin, "--config.file="+cfg, "--web.listen-address="+addr, "--web.config.file="+web)

	status := func(path, user, pass string) (int, string) {
		req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := httpClient().Do(req)
		if err != nil {
			return 0, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Status
	}
	poll(t, 60*time.Second, "greybox answering with basic auth", func() (bool, string) {
		code, s := status("/-/healthy", "", "")
		return code == http.StatusUnauthorized, s
	})
	for _, tc := range []struct {
		path, user, pass string
		want             int
	}{
		{"/metrics", "", "", http.StatusUnauthorized},
		{"/metrics", "prom", "wrong", http.StatusUnauthorized},
		{"/metrics", "prom", "s3cret", http.StatusOK},
		{"/probe?module=http_2xx&target=http://127.0.0.1:1/", "", "", http.StatusUnauthorized},
		{"/config", "prom", "s3cret", http.StatusOK},
	} {
		if code, s := status(tc.path, tc.user, tc.pass); code != tc.want {
			t.Errorf("GET %s as %q: %s, want %d", tc.path, tc.user, s, tc.want)
		}
	}
}
