package traefik

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func fixtureDir(t *testing.T) string {
	t.Helper()
	return FixtureDir()
}

// recorded reads a .headers file into a status line and the headers a
// test compares (Date varies).
func recorded(t *testing.T, path string) (string, http.Header) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(data)), nil)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	h := resp.Header.Clone()
	if len(resp.TransferEncoding) > 0 {
		h.Set("Transfer-Encoding", strings.Join(resp.TransferEncoding, ","))
	}
	if resp.ContentLength >= 0 {
		h.Set("Content-Length", resp.Header.Get("Content-Length"))
	}
	return resp.Status, h
}

func get(t *testing.T, url string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.TransferEncoding) > 0 {
		resp.Header.Set("Transfer-Encoding", strings.Join(resp.TransferEncoding, ","))
	}
	return resp, body
}

func TestServesFixturesLikeTraefik(t *testing.T) {
	dir := fixtureDir(t)
	table, err := LoadFixtures(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(table.HTTP) != 234 || len(table.TCP) != 1 {
		t.Fatalf("loaded %d http, %d tcp routers; want 234, 1", len(table.HTTP), len(table.TCP))
	}
	s := Start(t, table)

	for _, tc := range []struct {
		query, fixture, headers string
	}{
		{"", "routers-default.json", "routers-default.headers"},
		{"?page=1&per_page=100", "routers-page1.json", "routers-page1.headers"},
		{"?page=2&per_page=100", "routers-page2.json", "routers-page2.headers"},
		{"?page=3&per_page=100", "routers-page3.json", "routers-page3.headers"},
		{"?page=4&per_page=100", "routers-page4-past-end.json", "routers-page4-past-end.headers"},
	} {
		t.Run(tc.fixture, func(t *testing.T) {
			want, err := os.ReadFile(filepath.Join(dir, tc.fixture))
			if err != nil {
				t.Fatal(err)
			}
			status, wantH := recorded(t, filepath.Join(dir, tc.headers))
			resp, body := get(t, s.URL+"/api/http/routers"+tc.query)
			if !bytes.Equal(body, want) {
				t.Errorf("body differs from %s (got %d bytes, want %d)", tc.fixture, len(body), len(want))
			}
			if resp.Status != status {
				t.Errorf("status %q, want %q", resp.Status, status)
			}
			for _, k := range []string{"Content-Type", "X-Next-Page", "X-Content-Type-Options", "Content-Length", "Transfer-Encoding"} {
				if got, w := resp.Header.Get(k), wantH.Get(k); got != w {
					t.Errorf("%s: %q, want %q", k, got, w)
				}
			}
		})
	}

	t.Run("tcp", func(t *testing.T) {
		want, _ := os.ReadFile(filepath.Join(dir, "tcp-routers.json"))
		_, wantH := recorded(t, filepath.Join(dir, "tcp-routers.headers"))
		resp, body := get(t, s.URL+"/api/tcp/routers")
		if !bytes.Equal(body, want) || resp.Header.Get("X-Next-Page") != "1" || resp.Header.Get("Content-Length") != wantH.Get("Content-Length") {
			t.Errorf("tcp routers: %q %v", body, resp.Header)
		}
	})
	t.Run("udp empty", func(t *testing.T) {
		resp, body := get(t, s.URL+"/api/udp/routers")
		if string(body) != "[]\n" || resp.Header.Get("X-Next-Page") != "1" {
			t.Errorf("udp routers: %q %v", body, resp.Header)
		}
	})
	t.Run("version and overview", func(t *testing.T) {
		for path, file := range map[string]string{"/api/version": "version.json", "/api/overview": "overview.json"} {
			want, _ := os.ReadFile(filepath.Join(dir, file))
			_, body := get(t, s.URL+path)
			if !bytes.Equal(body, want) {
				t.Errorf("%s: %q", path, body)
			}
		}
	})
	t.Run("per_page=0", func(t *testing.T) {
		resp, body := get(t, s.URL+"/api/http/routers?per_page=0")
		if resp.StatusCode != 400 || string(body) != `{"message":"invalid request: per_page: 0"}`+"\n" {
			t.Errorf("%d %q", resp.StatusCode, body)
		}
	})
	t.Run("unknown path", func(t *testing.T) {
		want, _ := os.ReadFile(filepath.Join(dir, "unrouted-404.body"))
		resp, body := get(t, s.URL+"/api/nope")
		if resp.StatusCode != 404 || !bytes.Equal(body, want) || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%d %q %v", resp.StatusCode, body, resp.Header)
		}
	})
}

func TestPaginationSmallPages(t *testing.T) {
	s := Start(t, Generate(10)) // 13 with internal routers
	var names []string
	page := "1"
	for range 10 {
		resp, body := get(t, s.URL+"/api/http/routers?per_page=4&page="+page)
		var rs []struct{ Name string }
		if err := json.Unmarshal(body, &rs); err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			names = append(names, r.Name)
		}
		page = resp.Header.Get("X-Next-Page")
		if page == "1" {
			break
		}
	}
	if len(names) != 13 {
		t.Fatalf("read %d routers, want 13", len(names))
	}
	for i := 1; i < len(names); i++ {
		if names[i-1] >= names[i] {
			t.Fatalf("not sorted: %q >= %q", names[i-1], names[i])
		}
	}
	if got := s.PathRequests("/api/http/routers"); got != 4 {
		t.Errorf("%d page requests, want 4", got)
	}
}

func TestGenerateProviders(t *testing.T) {
	tb := Generate(300)
	count := map[string]int{}
	for _, r := range tb.HTTP {
		count[r.Provider]++
	}
	if count["kubernetes"] != 100 || count["kubernetescrd"] != 100 || count["file"] != 100 || count["internal"] != 3 {
		t.Errorf("providers: %v", count)
	}
	if n := len(tb.Without(ByProvider("kubernetes")).HTTP); n != 203 {
		t.Errorf("without kubernetes: %d", n)
	}
	if len(tb.HTTP) != 303 {
		t.Error("Without modified the original table")
	}
}

func TestFailureModes(t *testing.T) {
	s := Start(t, Generate(50))
	client := &http.Client{Timeout: 5 * time.Second}
	for _, tc := range []struct {
		mode  Mode
		check func(resp *http.Response, body []byte, err error) bool
	}{
		{HTML, func(r *http.Response, b []byte, err error) bool {
			return err == nil && strings.HasPrefix(r.Header.Get("Content-Type"), "text/html")
		}},
		{Truncated, func(r *http.Response, b []byte, err error) bool {
			return err == nil && json.Unmarshal(b, new([]any)) != nil
		}},
		{WrongContent, func(r *http.Response, b []byte, err error) bool {
			return err == nil && json.Unmarshal(b, new([]any)) != nil && json.Valid(b)
		}},
		{NoNextPage, func(r *http.Response, b []byte, err error) bool {
			return err == nil && r.Header.Get("X-Next-Page") == "" && json.Valid(b)
		}},
		{GarbledNextPage, func(r *http.Response, b []byte, err error) bool {
			return err == nil && r.Header.Get("X-Next-Page") == "two"
		}},
	} {
		s.SetMode(tc.mode)
		resp, err := client.Get(s.URL + "/api/http/routers")
		var body []byte
		if err == nil {
			body, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		if !tc.check(resp, body, err) {
			t.Errorf("mode %d: unexpected answer: %v %q", tc.mode, err, body)
		}
	}

	s.SetMode(Huge)
	resp, err := client.Get(s.URL + "/api/http/routers")
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if n != 1<<20 {
		t.Errorf("huge: read %d bytes", n)
	}

	s.SetMode(Slow)
	c := &http.Client{Timeout: 100 * time.Millisecond}
	if _, err := c.Get(s.URL + "/api/version"); err == nil {
		t.Error("slow: got an answer")
	}

	down := DownURL()
	if _, err := client.Get(down + "/api/version"); err == nil {
		t.Error("down: got an answer")
	}
}
