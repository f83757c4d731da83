package prober

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/greybox-probe/greybox/internal/testpeer/ttyd"
)

// BenchmarkProbe is one probe per op of the probers that have no
// benchmark of their own, against loopback peers, for `make bench`'s
// allocations-per-probe table (run with -benchmem). The peers run in the
// same process: B/op and allocs/op include their share.
func BenchmarkProbe(b *testing.B) {
	b.Run("http", func(b *testing.B) {
		body := []byte("<html><body>ok</body></html>\n")
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(body) }))
		defer srv.Close()
		m := testModule(b, "prober: http\ntimeout: 5s\nhttp:\n  fail_if_body_matches_regexp: ['(?i)internal server error']")
		for b.Loop() {
			if r := runProbeDirect(b, ProbeHTTP, srv.URL, m, Env{}); !r.ok {
				b.Fatalf("probe failed:\n%s", r.logs)
			}
		}
	})
	b.Run("ttyd_token", func(b *testing.B) {
		srv := ttyd.NewServer(ttyd.Options{})
		defer srv.Close()
		m := testModule(b, "prober: ttyd_token\ntimeout: 5s")
		for b.Loop() {
			if r := runProbeDirect(b, probeTTYDToken, srv.URL, m, Env{}); !r.ok {
				b.Fatalf("probe failed:\n%s", r.logs)
			}
		}
	})
	banner := func(c net.Conn) { _, _ = io.WriteString(c, "SSH-2.0-OpenSSH_9.2\r\n") }
	// The blackbox probers, each against a peer like its compat test's.
	for _, c := range []struct {
		name  string
		fn    ProbeFunc
		setup func(b *testing.B) (module, target string)
	}{
		{"tcp", probeTCP, func(b *testing.B) (string, string) {
			return "prober: tcp\ntcp: {query_response: [{expect: \"^SSH-\"}]}", newLineServer(b, "tcp", "127.0.0.1:0", banner).Addr()
		}},
		{"unix", probeUnix, func(b *testing.B) (string, string) {
			dir := b.TempDir()
			path, _ := unixSocket(b, dir, "bench.sock", banner)
			return fmt.Sprintf("prober: unix\nunix: {allowed_paths: [%q], query_response: [{expect: \"^SSH-\"}]}", dir+"/*.sock"), path
		}},
		{"dns", probeDNS, func(b *testing.B) (string, string) {
			return "prober: dns\ndns: {query_name: example.test, query_type: A}", newTestDNS(b).addr
		}},
		{"grpc", probeGRPC, func(b *testing.B) (string, string) {
			return "prober: grpc\ngrpc: {service: up}", newGRPCHealthServer(b, nil).addr
		}},
		{"websocket", probeWebsocket, func(b *testing.B) (string, string) {
			return "prober: websocket", newWSServer(b, nil, func(*websocket.Conn) {}).wsURL("/")
		}},
		{"icmp", probeICMP, func(*testing.B) (string, string) { return "prober: icmp", "127.0.0.1" }},
	} {
		b.Run(c.name, func(b *testing.B) {
			module, target := c.setup(b)
			m := testModule(b, "timeout: 5s\n"+module)
			if r := runProbeDirect(b, c.fn, target, m, Env{}); !r.ok {
				if c.name == "icmp" {
					b.Skipf("no ICMP echo to 127.0.0.1 here:\n%s", r.logs)
				}
				b.Fatalf("probe failed:\n%s", r.logs)
			}
			for b.Loop() {
				if r := runProbeDirect(b, c.fn, target, m, Env{}); !r.ok {
					b.Fatalf("probe failed:\n%s", r.logs)
				}
			}
		})
	}
}
