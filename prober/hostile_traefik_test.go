package prober

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// hugeRouterList streams a router list of size bytes, generated on the
// fly (never held in memory), until the size is reached or the client goes.
// It returns how many bytes went out.
func hugeRouterList(w io.Writer, size int64) int64 {
	var sent int64
	write := func(s string) bool {
		n, err := io.WriteString(w, s)
		sent += int64(n)
		return err == nil
	}
	if !write("[") {
		return sent
	}
	for i := 0; sent < size; i++ {
		sep := ","
		if i == 0 {
			sep = ""
		}
		if !write(fmt.Sprintf(`%s{"name":"r%09d@file","provider":"file","status":"enabled","rule":"Host(%s)","service":"s"}`, sep, i, strings.Repeat("h", 200))) {
			return sent
		}
	}
	write("]")
	return sent
}

// traefikAPI answers /api/version properly and hands router lists to
// routers.
func traefikAPI(routers http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/api/version":
			io.WriteString(w, `{"Version":"3.7.9","Codename":"hostile"}`)
		case "/api/http/routers":
			routers(w, r)
		default:
			http.NotFound(w, r)
		}
	}
}

func TestHostileTraefikParity(t *testing.T) {
	const timeout = 800 * time.Millisecond
	module := func(extra string) string {
		return fmt.Sprintf("prober: traefik_parity\ntimeout: %dms\nallowed_targets: [127.0.0.0/8]\ntraefik_parity: {%s}", timeout.Milliseconds(), extra)
	}
	var sent atomic.Int64
	for _, tc := range []struct {
		name    string
		module  string
		serve   func(c net.Conn, stop <-chan struct{})
		handler http.HandlerFunc
		reasons []string
		check   func(t *testing.T)
	}{{
		// 100 MB of valid router JSON: max_response_bytes must cut it
		// long before the end, and the server must not get to send it all.
		name: "100 MB router list", module: module("max_response_bytes: 1MiB"),
		handler: traefikAPI(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Next-Page", "1")
			sent.Store(hugeRouterList(w, 100<<20))
		}),
		reasons: []string{"larger than max_response_bytes"},
		check: func(t *testing.T) {
			// Socket buffers hold a few MB at most.
			if n := sent.Load(); n > 50<<20 {
				t.Errorf("the server sent %d bytes: the probe read far past max_response_bytes", n)
			}
		},
	}, {
		// The same with the default limit (8MiB).
		name: "100 MB router list, default limit", module: module(""),
		handler: traefikAPI(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Next-Page", "1")
			hugeRouterList(w, 100<<20)
		}),
		reasons: []string{"larger than max_response_bytes", "deadline"},
	}, {
		// One string that never ends, inside an otherwise fine router.
		name: "endless router name", module: module("max_response_bytes: 1MiB"),
		handler: traefikAPI(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Next-Page", "1")
			io.WriteString(w, `[{"name":"`)
			endless(w, r.Context().Done(), []byte(strings.Repeat("n", 4096)))
		}),
		reasons: []string{"larger than max_response_bytes"},
	}, {
		// Pages forever: every page says there is another one.
		name: "endless pagination", module: module("max_pages: 20"),
		handler: traefikAPI(func(w http.ResponseWriter, r *http.Request) {
			page, _ := strconv.Atoi(r.URL.Query().Get("page"))
			w.Header().Set("X-Next-Page", strconv.Itoa(page+1))
			fmt.Fprintf(w, `[{"name":"p%d@file","provider":"file"}]`, page)
		}),
		reasons: []string{"more than max_pages"},
	}, {
		name: "router list trickles", module: module(""),
		serve: func(c net.Conn, stop <-chan struct{}) {
			br := bufio.NewReader(c)
			for {
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				if req.URL.Path == "/api/version" {
					body := `{"Version":"3.7.9"}`
					fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
					continue
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Next-Page: 1\r\nContent-Length: 1000000\r\n\r\n")
				trickle(c, stop, `[{"name":"slow@file"},`, 10*time.Millisecond)
				return
			}
		},
		reasons: []string{"before the probe deadline"},
	}, {
		name: "API never answers", module: module(""),
		serve: func(c net.Conn, stop <-chan struct{}) {
			readRequestHead(c)
			<-stop
		},
		reasons: []string{"before the probe deadline"},
	}, {
		name: "slowloris headers", module: module(""),
		serve: func(c net.Conn, stop <-chan struct{}) {
			readRequestHead(c)
			trickle(c, stop, "HTTP/1.1 200 OK\r\nX-Slow: "+strings.Repeat("z", 64), 10*time.Millisecond)
		},
		reasons: []string{"before the probe deadline"},
	}, {
		name: "TLS handshake never completes", module: module("http_client_config: {tls_config: {insecure_skip_verify: true}}"),
		serve:   func(c net.Conn, stop <-chan struct{}) { io.Copy(io.Discard, c) },
		reasons: []string{"before the probe deadline"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			scheme := ""
			if strings.Contains(tc.name, "TLS") {
				scheme = "https"
			}
			target := hostileTarget(t, scheme, tc.serve, tc.handler)
			r := runProbeDirect(t, ProbeTraefikParity, target, testModule(t, tc.module), Env{})
			assertBoundedFailure(t, r, timeout, tc.reasons...)
			mustMetric(t, r.reg, "probe_traefik_replica_up", map[string]string{"replica": target}, 0)
			if tc.check != nil {
				tc.check(t)
			}
		})
	}
}

// A router with an unknown field nested a million levels deep is valid
// JSON. The scanner skips it without recursion (encoding/json would give up
// at depth 10000); what matters is that the stack stays put and the probe
// answers in time, whichever way it decides.
func TestHostileTraefikParityDeepNesting(t *testing.T) {
	const depth = 1 << 20
	target := hostileTarget(t, "", nil, traefikAPI(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Next-Page", "1")
		io.WriteString(w, `[{"name":"a@file","x":`+strings.Repeat("[", depth)+strings.Repeat("]", depth)+`}]`)
	}))
	m := testModule(t, "prober: traefik_parity\ntimeout: 2s\nallowed_targets: [127.0.0.0/8]\ntraefik_parity: {max_response_bytes: 4MiB}")
	r := runProbeDirect(t, ProbeTraefikParity, target, m, Env{})
	if r.elapsed > 2*time.Second+hostileSlack {
		t.Errorf("probe took %v with a 2s budget", r.elapsed)
	}
	if r.ok {
		mustMetric(t, r.reg, "probe_traefik_consensus_routers", nil, 1)
	}
}
