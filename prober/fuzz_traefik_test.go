package prober

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/greybox-probe/greybox/internal/testpeer/traefik"
)

// fuzzParityPages is what the fake replica serves for one fuzz input:
// pages 1 and 2 of /api/http/routers with their X-Next-Page (0: header
// left out); any other page is Traefik's 404.
type fuzzParityPages struct {
	body [2][]byte
	next [2]int
}

const fuzzParityMaxBytes = 64 << 10

// fuzzParityRouter is the reference's view of one router, decoded with
// encoding/json and exact key names, like Traefik writes them.
type fuzzParityRouter struct {
	name, provider string
	broken         bool
}

func fuzzParityDecode(page []byte) ([]fuzzParityRouter, bool) {
	// A list, not null: Traefik always sends [] for no routers.
	var objs []map[string]json.RawMessage
	if err := json.Unmarshal(page, &objs); err != nil || objs == nil {
		return nil, false
	}
	var out []fuzzParityRouter
	for _, o := range objs {
		var r fuzzParityRouter
		var status string
		var errs []string
		for key, dst := range map[string]any{"name": &r.name, "provider": &r.provider, "status": &status, "error": &errs} {
			if raw, ok := o[key]; ok {
				if err := json.Unmarshal(raw, dst); err != nil {
					return nil, false
				}
			}
		}
		if r.name == "" {
			return nil, false
		}
		r.broken = status == "disabled" || len(errs) > 0
		out = append(out, r)
	}
	return out, true
}

// fuzzParityExpect follows the pages the way Traefik's API means them and
// says whether the replica must be up and with which routers. decided is
// false when a visited page is not valid JSON: the prober's scanner may be
// more lenient than encoding/json there, so only "no panic, bounded" holds.
func fuzzParityExpect(p *fuzzParityPages, maxPages int) (routers []fuzzParityRouter, up, decided bool) {
	for page := 1; ; {
		if page > maxPages || page > 2 {
			return nil, false, true // past max_pages, or a 404
		}
		body := p.body[page-1]
		if len(body) > fuzzParityMaxBytes {
			return nil, false, true
		}
		if !json.Valid(body) || !utf8.Valid(body) {
			return nil, false, false
		}
		rs, ok := fuzzParityDecode(body)
		if !ok {
			return nil, false, true
		}
		routers = append(routers, rs...)
		n := p.next[page-1]
		switch {
		case n < 1:
			return nil, false, true
		case n == 1:
			return routers, true, true
		case n <= page:
			return nil, false, true
		}
		page = n
	}
}

// FuzzTraefikParityPages serves fuzzed router pages and X-Next-Page values
// to the whole traefik_parity probe over HTTP. The probe must never panic
// or hang, and whenever the pages are valid JSON it must agree with a
// reference reading of them: replica up exactly when every page it had to
// read was a router list and the pagination ended properly, with the same
// router, provider and broken counts, page state never leaking into the
// next page.
func FuzzTraefikParityPages(f *testing.F) {
	fixture := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(traefik.FixtureDir(), name))
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	f.Add(fixture("routers-page1.json"), 2, fixture("routers-page2.json"), 1)
	f.Add(fixture("routers-default.json"), 1, []byte(nil), 0)
	f.Add(fixture("routers-page1.json"), 3, fixture("routers-page2.json"), 1)
	f.Add([]byte(`[{"name":"a@file","provider":"file","error":["boom"]}]`), 2, []byte(`[{"name":"b@file","provider":"file"}]`), 1)
	f.Add([]byte(`[{"name":"a@file","status":"disabled"}]`), 2, []byte(`[{"name":"a@file","status":"enabled"}]`), 1)
	f.Add([]byte(`[{"name":"ping@internal","provider":"internal"}]`), 1, []byte(nil), 0)
	f.Add([]byte(`[]`), 2, []byte(`null`), 1)
	f.Add([]byte(`[]`), 2, []byte(`[]`), 2)
	f.Add([]byte(`[]`), 0, []byte(nil), 0)
	f.Add([]byte(`[]`), -1, []byte(nil), 0)
	f.Add([]byte(`{"message":"x"}`), 1, []byte(nil), 0)
	f.Add([]byte(`[{"name":1}]`), 1, []byte(nil), 0)
	f.Add([]byte(`[{"name":"a"}`), 1, []byte(nil), 0)
	f.Add([]byte(`[{"name":"a","name":"b","error":null}] `), 1, []byte(nil), 0)
	f.Add([]byte(strings.Repeat("[", 10000)), 1, []byte(nil), 0)

	var (
		pages sync.Map // id → *fuzzParityPages
		ids   atomic.Int64
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		v, ok := pages.Load(id)
		if !ok {
			http.NotFound(w, r)
			return
		}
		p := v.(*fuzzParityPages)
		w.Header().Set("Content-Type", "application/json")
		switch rest {
		case "api/version":
			w.Write([]byte(`{"Version":"3.7.9","Codename":"fuzz"}`))
		case "api/http/routers":
			page, _ := strconv.Atoi(r.URL.Query().Get("page"))
			if page < 1 || page > 2 {
				w.Header().Set("Content-Type", "text/plain; charset=utf-8")
				w.WriteHeader(http.StatusNotFound)
				w.Write([]byte("404 page not found\n"))
				return
			}
			if n := p.next[page-1]; n != 0 {
				w.Header().Set("X-Next-Page", strconv.Itoa(n))
			}
			w.Write(p.body[page-1])
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	m := testModule(f, "prober: traefik_parity\ntimeout: 5s\nallowed_targets: [127.0.0.0/8]\ntraefik_parity: {max_pages: 3, max_response_bytes: 64KiB}")
	env := Env{} // runProbeDirect gives each probe its own guard

	f.Fuzz(func(t *testing.T, page1 []byte, next1 int, page2 []byte, next2 int) {
		p := &fuzzParityPages{body: [2][]byte{page1, page2}, next: [2]int{next1, next2}}
		id := strconv.FormatInt(ids.Add(1), 10)
		pages.Store(id, p)
		defer pages.Delete(id)
		target := srv.URL + "/" + id

		r := runProbeDirect(t, ProbeTraefikParity, target, m, env)
		if r.elapsed > 5*time.Second+hostileSlack {
			t.Errorf("probe took %v", r.elapsed)
		}
		want, up, decided := fuzzParityExpect(p, 3)
		replica := map[string]string{"replica": target}
		gotUp, _ := metricValue(t, r.reg, "probe_traefik_replica_up", replica)
		if !decided {
			return
		}
		if (gotUp == 1) != up || r.ok != up {
			t.Fatalf("replica up %v (probe ok %v), reference says %v\npage1 %q next %d\npage2 %q next %d\n%s", gotUp, r.ok, up, page1, next1, page2, next2, r.logs)
		}
		if !up {
			return
		}
		var routers, broken float64
		names := map[string]bool{}
		for _, rt := range want {
			if rt.provider == "internal" {
				continue
			}
			routers++
			names[rt.name] = true
			if rt.broken {
				broken++
			}
		}
		if got := fuzzParitySum(t, r.reg, "probe_traefik_replica_routers"); got != routers {
			t.Errorf("routers = %v, reference %v\n%s", got, routers, r.logs)
		}
		mustMetric(t, r.reg, "probe_traefik_replica_broken_routers", replica, broken)
		mustMetric(t, r.reg, "probe_traefik_consensus_routers", nil, float64(len(names)))
	})
}

// fuzzParitySum adds up every series of a metric.
func fuzzParitySum(t *testing.T, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

// FuzzTraefikParityTarget: arbitrary replica-set targets through the
// prober's registered CheckTarget. Whatever it accepts, the probe can act
// on: static base URLs are http(s) with a host and nothing else, address
// hosts are inside allowed_targets, k8s namespaces inside namespaces.
func FuzzTraefikParityTarget(f *testing.F) {
	for _, s := range []string{
		"http://127.0.0.1:9000,http://127.0.0.2:9000", "http://127.0.0.1:9000/", "https://[::1]:8443/api-prefix",
		"http://10.0.0.1:9000", "http://u:hunter2@127.0.0.1:1", "http://127.0.0.1:1?x=1", "http://127.0.0.1:1,http://127.0.0.1:1/",
		"dns:traefik.kube-system.svc:9000", "dns:127.0.0.1:9000", "dns:10.1.1.1:9000", "dns::9000", "dns:[::1]:0",
		"k8s:kube-system/app.kubernetes.io/name=traefik:9000", "k8s:other/app=traefik:9000", "k8s:kube-system/:9000",
		"k8s:kube-system/app=traefik", "", ",", "http://", "http://127.0.0.1:99999",
	} {
		f.Add(s)
	}
	m := testModule(f, "prober: traefik_parity\ntimeout: 1s\nallowed_targets: [127.0.0.0/8, \"::1/128\"]\ntraefik_parity: {namespaces: [kube-system]}")
	f.Fuzz(func(t *testing.T, target string) {
		refused, _ := fuzzCheckTarget(t, "traefik_parity", target, m)
		if refused {
			return
		}
		set, err := parseParitySet(target)
		if err != nil {
			t.Fatalf("CheckTarget accepted %q but parseParitySet refuses it: %v", target, err)
		}
		inAllowed := func(host string) bool {
			ip, err := netip.ParseAddr(strings.Trim(host, "[]"))
			return err != nil || m.AllowedTargets.AllowsAddr(ip)
		}
		switch set.kind {
		case "static":
			if len(set.urls) == 0 {
				t.Fatalf("%q: no replicas", target)
			}
			for _, u := range set.urls {
				// u.Host, not u.Hostname(): see TestTraefikParityTargetWithoutHost.
				if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
					t.Fatalf("%q: accepted base URL %#v", target, u)
				}
				if !inAllowed(u.Hostname()) {
					t.Fatalf("%q: address %s outside allowed_targets accepted", target, u.Hostname())
				}
			}
		case "dns":
			if set.host == "" || !inAllowed(set.host) {
				t.Fatalf("%q: host %q accepted", target, set.host)
			}
		case "k8s":
			if set.namespace != "kube-system" || set.selector == nil || set.selector.Empty() {
				t.Fatalf("%q: accepted namespace %q selector %v", target, set.namespace, set.selector)
			}
		default:
			t.Fatalf("%q: kind %q", target, set.kind)
		}
	})
}

// Found by FuzzTraefikParityTarget: a static base URL with a port but no
// host ("http://:9000") passes the target check, so /probe answers 200 with
// a replica that can never be reached instead of a 400 naming the mistake
// (the http and ttyd probers refuse it via ParseHTTPTarget).
func TestTraefikParityTargetWithoutHost(t *testing.T) {
	m := testModule(t, "prober: traefik_parity\ntimeout: 1s\ntraefik_parity: {}")
	for _, target := range []string{"http://:9000", "http://:", "http://127.0.0.1:9000,https://:443"} {
		if refused, _ := fuzzCheckTarget(t, "traefik_parity", target, m); !refused {
			t.Errorf("CheckTarget(%q) accepted a URL without a host", target)
		}
	}
}
