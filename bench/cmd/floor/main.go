// Command floor is the least an HTTP probe server can do per probe: parse
// target, make one GET on a fresh connection, answer three metric lines.
// `make bench` divides greybox's and blackbox_exporter's cost by its cost,
// so the report shows how far each is from the floor.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "Address to listen on (loopback only).")
	flag.Parse()
	if h, _, err := net.SplitHostPort(*listen); err != nil || !net.ParseIP(h).IsLoopback() {
		log.Fatalf("floor: -listen must be a loopback address, got %q", *listen)
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(l.Addr()) // the bench reads the bound port from here
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	log.Fatal(http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start, ok, target := time.Now(), 0, r.URL.Query().Get("target")
		if u, err := url.Parse(target); err != nil || !net.ParseIP(u.Hostname()).IsLoopback() {
			http.Error(w, "floor: loopback targets only", http.StatusBadRequest)
			return
		}
		if resp, err := client.Get(target); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				ok = 1
			}
		}
		fmt.Fprintf(w, "probe_duration_seconds %g\nprobe_success %d\nprobe_http_status_code 200\n", time.Since(start).Seconds(), ok)
	})))
}
