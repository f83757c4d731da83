// Command logscan runs greybox's log scanner (the k8s_log_errors prober's)
// over a file and prints the number of matching lines, like grep -c. With
// -generate it writes a whisker-like log of the given size instead.
// bench/logscan.sh uses both to compare against grep -c -F.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"

	"github.com/greybox-probe/greybox/prober/logscan"
)

type patterns []string

func (p *patterns) String() string     { return fmt.Sprint(*p) }
func (p *patterns) Set(s string) error { *p = append(*p, s); return nil }

func main() {
	var pats patterns
	flag.Var(&pats, "e", "pattern (Go regexp; literals take the fast path); repeatable")
	generate := flag.Int64("generate", 0, "write a whisker-like log of this many bytes to the file instead of scanning it")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: logscan -e PATTERN [-e PATTERN...] FILE | logscan -generate BYTES FILE")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	if *generate > 0 {
		if err := generateLog(flag.Arg(0), *generate); err != nil {
			fmt.Fprintln(os.Stderr, "logscan:", err)
			os.Exit(1)
		}
		return
	}
	s, err := logscan.New(pats)
	if err != nil {
		fmt.Fprintln(os.Stderr, "logscan:", err)
		os.Exit(2)
	}
	f, err := os.Open(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "logscan:", err)
		os.Exit(1)
	}
	defer f.Close()
	res, err := s.Scan(f, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "logscan:", err)
		os.Exit(1)
	}
	fmt.Println(res.Matched)
}

// generateLog writes Calico-style whisker-backend lines; one in 100 is the
// incident's error.
func generateLog(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	var n int64
	for i := 0; n < size; i++ {
		ts := fmt.Sprintf("2026-11-21 %02d:%02d:%02d.%03d", i/3600000%24, i/60000%60, i/1000%60, i%1000)
		var k int
		switch {
		case i%100 == 37:
			k, err = fmt.Fprintf(w, "%s [ERROR][1] whisker-backend/pkg/handlers/v1/flows.go 92: failed to stream flows error=rpc error: code = Unavailable desc = connection error: desc = \"transport: Error while dialing: dial tcp: lookup goldmane.calico-system.svc on 10.96.0.10:53: read udp 10.244.%d.%d:%d->10.96.0.10:53: i/o timeout\"\n", ts, i%7, i%250, 30000+i%30000)
		case i%10 == 3:
			k, err = fmt.Fprintf(w, "%s [DEBUG][1] whisker-backend/pkg/handlers/v1/flows.go 120: Sending flow to client flow={\"source_namespace\":\"app-%d\",\"dest_namespace\":\"kube-system\",\"dest_port\":53,\"proto\":\"udp\",\"action\":\"Allow\",\"packets_in\":%d}\n", ts, i%13, i%1000)
		default:
			k, err = fmt.Fprintf(w, "%s [INFO][1] whisker-backend/pkg/handlers/v1/flows.go 85: Received flow batch from goldmane count=%d cluster=default filter={\"namespace\":\"app-%d\"} stream=%d\n", ts, i%97, i%13, i%5)
		}
		if err != nil {
			f.Close()
			return err
		}
		n += int64(k)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
