// Command ttyd is the fake ttyd both exporters probe in bench/ttyd.sh: the
// test peer of internal/testpeer/ttyd (ttyd's HTTP and WebSocket protocol,
// byte for byte where a client can tell), on loopback, until killed.
package main

import (
	"flag"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/greybox-probe/greybox/internal/testpeer/ttyd"
)

func main() {
	addrFile := flag.String("addr-file", "", "Write the base URL here once listening.")
	credential := flag.String("credential", "", "ttyd's -c user:pass; empty for none.")
	flag.Parse()
	srv := ttyd.NewServer(ttyd.Options{Credential: *credential})
	defer srv.Close()
	// The peer keeps a record of each session for tests; nobody reads it
	// here, so drain it.
	go func() {
		for range srv.Sessions() {
		}
	}()
	if *addrFile != "" {
		if err := os.WriteFile(*addrFile, []byte(srv.URL), 0o644); err != nil {
			log.Fatal(err)
		}
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
}
