// Command loadgen drives an exporter's /probe endpoint for `make bench`: a
// fixed number of workers, each sending one request after another for a
// fixed duration (or count), like Prometheus scraping many targets at once.
// It prints one JSON object: requests, errors, probes/s and latency
// percentiles. A request counts as an error unless it is a 200 whose body
// reports probe_success 1. A 503 (the exporter refused: too many probes in
// flight) is no probe at all: it is counted apart, left out of requests,
// probes/s and latencies, and makes loadgen exit 3, so a benchmark cannot
// pass off cheap refusals as fast probes.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

type result struct {
	Requests  int     `json:"requests"`
	Errors    int     `json:"errors"`
	Refused   int     `json:"refused_503"`
	Seconds   float64 `json:"seconds"`
	ProbesSec float64 `json:"probes_per_second"`
	P50ms     float64 `json:"p50_ms"`
	P99ms     float64 `json:"p99_ms"`
	MaxMs     float64 `json:"max_ms"`
	FirstErr  string  `json:"first_error,omitempty"`
}

func main() {
	url := flag.String("url", "", "URL to request (an exporter's /probe?module=&target=).")
	concurrency := flag.Int("c", 8, "Workers sending requests concurrently.")
	duration := flag.Duration("d", 10*time.Second, "How long to send requests (ignored when -n is set).")
	count := flag.Int("n", 0, "Send exactly this many requests instead of running for -d.")
	scrapeTimeout := flag.String("scrape-timeout", "10", "X-Prometheus-Scrape-Timeout-Seconds sent with each request.")
	wait := flag.Duration("wait", 0, "Only poll -url until it answers 200 (at most this long), then exit 0.")
	flag.Parse()
	if *url == "" || *concurrency < 1 {
		fmt.Fprintln(os.Stderr, "loadgen: -url and -c >= 1 are required")
		os.Exit(2)
	}

	// Keep-alive towards the exporter, as Prometheus does; each probe still
	// opens its own connection to the target.
	client := &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: *concurrency, MaxIdleConns: *concurrency},
	}
	if *wait > 0 {
		os.Exit(waitReady(client, *url, *wait))
	}

	var (
		mu        sync.Mutex
		latencies []time.Duration
		errs      int
		refused   int
		firstErr  string
		sent      int
	)
	// next reports whether a worker may send another request.
	deadline := time.Now().Add(*duration)
	next := func() bool {
		mu.Lock()
		defer mu.Unlock()
		if *count > 0 {
			if sent >= *count {
				return false
			}
			sent++
			return true
		}
		return time.Now().Before(deadline)
	}
	start := time.Now()
	var wg sync.WaitGroup
	for range *concurrency {
		wg.Go(func() {
			local := make([]time.Duration, 0, 4096)
			for next() {
				t0 := time.Now()
				err := probe(client, *url, *scrapeTimeout)
				d := time.Since(t0)
				mu.Lock()
				if errors.Is(err, errRefused) {
					refused++
					mu.Unlock()
					continue
				}
				if err != nil {
					errs++
					if firstErr == "" {
						firstErr = err.Error()
					}
				}
				mu.Unlock()
				local = append(local, d)
			}
			mu.Lock()
			latencies = append(latencies, local...)
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(latencies)
	r := result{
		Requests:  len(latencies),
		Errors:    errs,
		Refused:   refused,
		Seconds:   elapsed.Seconds(),
		ProbesSec: float64(len(latencies)) / elapsed.Seconds(),
		P50ms:     ms(percentile(latencies, 0.50)),
		P99ms:     ms(percentile(latencies, 0.99)),
		FirstErr:  firstErr,
	}
	if n := len(latencies); n > 0 {
		r.MaxMs = ms(latencies[n-1])
	}
	_ = json.NewEncoder(os.Stdout).Encode(r)
	if refused > 0 {
		fmt.Fprintf(os.Stderr, "loadgen: %d requests answered 503 (refused, not probed): the run does not measure probes\n", refused)
		os.Exit(3)
	}
}

var errRefused = errors.New("503: refused, not probed")

func probe(client *http.Client, url, scrapeTimeout string) error {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", scrapeTimeout)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode == http.StatusServiceUnavailable {
		return errRefused
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d: %.200s", resp.StatusCode, body)
	}
	if !strings.Contains(string(body), "\nprobe_success 1\n") {
		return fmt.Errorf("probe failed: %.300s", body)
	}
	return nil
}

func waitReady(client *http.Client, url string, limit time.Duration) int {
	deadline := time.Now().Add(limit)
	for {
		resp, err := client.Get(url)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return 0
			}
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "loadgen: %s not ready after %v (last error: %v)\n", url, limit, err)
			return 1
		}
		time.Sleep(100 * time.Millisecond) // polling a process we just started
	}
}

// percentile is the nearest-rank percentile of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
