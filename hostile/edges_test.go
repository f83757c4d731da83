package hostile

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// X-Prometheus-Scrape-Timeout-Seconds is a float from the network: a huge
// one must cap at the module's timeout, not overflow into a negative one.
func TestEdgeScrapeTimeoutHeader(t *testing.T) {
	srv, _ := okServer(t)
	gb := newGreybox(t, "modules:\n  web: {prober: http, timeout: 3s}\n", gbOptions{})
	for _, v := range []string{"9.3e9", "1e10", "1.7976931348623157e308", "9223372036.854775807"} {
		code, body := gb.probe(t, "web", srv.URL, "X-Prometheus-Scrape-Timeout-Seconds", v)
		if code != http.StatusOK {
			t.Fatalf("header %s: %d %s", v, code, body)
		}
		if got := mustSample(t, body, "probe_timeout_seconds"); got != 3 {
			t.Errorf("header %s: probe_timeout_seconds = %v, want the module's 3", v, got)
		}
		assertSuccess(t, body, 1)
	}
	for _, v := range []string{"-1", "0", "NaN", "Inf", "1e"} {
		if code, _ := gb.probe(t, "web", srv.URL, "X-Prometheus-Scrape-Timeout-Seconds", v); code != http.StatusBadRequest {
			t.Errorf("header %q: %d, want 400", v, code)
		}
	}
}

// traefikReplica serves the two API paths traefik_parity reads, with a
// router list given raw (bytes Traefik would never send included).
func traefikReplica(t *testing.T, routers string) string {
	srv := newLoopbackHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/api/version":
			fmt.Fprint(w, `{"Version":"3.7.9","Codename":"x"}`)
		case "/api/http/routers":
			w.Header().Set("X-Next-Page", "1")
			fmt.Fprint(w, routers)
		default:
			http.NotFound(w, r)
		}
	}))
	return srv.URL
}

// Upstream bytes become label values: a replica whose router names or
// providers are not UTF-8 is reported down for its bad data; the others
// are still read and compared, and the probe does not panic.
func TestEdgeTraefikInvalidUTF8(t *testing.T) {
	good := `[{"name":"a@file","provider":"file","status":"enabled","rule":"Host(` + "`a`" + `)","service":"s"}]`
	bad := "[{\"name\":\"a@file\",\"provider\":\"fi\xffle\",\"status\":\"enabled\"}]"
	badName := "[{\"name\":\"a\xfe@file\",\"provider\":\"file\",\"status\":\"enabled\"}]"
	r1, r2, r3, r4 := traefikReplica(t, good), traefikReplica(t, good), traefikReplica(t, bad), traefikReplica(t, badName)
	gb := newGreybox(t, "modules:\n  parity: {prober: traefik_parity, timeout: 2s}\n", gbOptions{})
	code, body := gb.probe(t, "parity", strings.Join([]string{r1, r2, r3, r4}, ","))
	if code != http.StatusOK {
		t.Fatalf("status %d: %s", code, body)
	}
	for replica, up := range map[string]float64{r1: 1, r2: 1, r3: 0, r4: 0} {
		if got := mustSample(t, body, "probe_traefik_replica_up", "replica", replica); got != up {
			t.Errorf("replica %s up = %v, want %v", replica, got, up)
		}
	}
	assertSuccess(t, body, 0)
	if debug := gb.debug(t, "parity", strings.Join([]string{r1, r2, r3}, ",")); !strings.Contains(debug, "invalid UTF-8") {
		t.Errorf("debug output does not say what was wrong with the replica:\n%s", debug)
	}
	if strings.Contains(gb.log.String(), "panicked") {
		t.Error("the prober panicked")
	}
}
