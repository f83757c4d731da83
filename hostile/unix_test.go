package hostile

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// newUnixPeer is a peer on the socket dir/peer.sock.
func newUnixPeer(t *testing.T, dir string, serve func(p *peer, c net.Conn)) *peer {
	t.Helper()
	return startPeer(t, "unix", filepath.Join(dir, "peer.sock"), serve)
}

// The unix prober through the whole server: a socket outside
// allowed_paths is a 403 and never dialled; a socket that accepts and
// never speaks is a failed probe answered by the deadline; a banner that
// never ends is cut at the line bound, so the probe holds 64 KiB of it
// and not whatever the peer can send before the deadline.
func TestUnixHostileSockets(t *testing.T) {
	allowed, outside := t.TempDir(), t.TempDir()
	denied := newUnixPeer(t, outside, func(*peer, net.Conn) {})
	silent := newUnixPeer(t, allowed, func(p *peer, _ net.Conn) { <-p.stop })
	var flooded atomic.Int64
	floodDir := filepath.Join(allowed, "flood")
	if err := os.Mkdir(floodDir, 0o700); err != nil {
		t.Fatal(err)
	}
	flood := newUnixPeer(t, floodDir, func(p *peer, c net.Conn) {
		chunk := []byte(strings.Repeat("x", 32<<10))
		for {
			n, err := c.Write(chunk)
			flooded.Add(int64(n))
			if err != nil {
				return
			}
		}
	})
	yml := fmt.Sprintf(`
modules:
  unix:
    prober: unix
    timeout: 500ms
    unix:
      allowed_paths: [%q, %q]
      query_response: [{expect: "^220 "}]
  unlisted:
    prober: unix
    timeout: 500ms
`, allowed+"/*.sock", floodDir+"/*.sock")
	gb := newGreybox(t, yml, gbOptions{})

	for _, module := range []string{"unix", "unlisted"} {
		code, body := gb.probe(t, module, denied.addr())
		if code != http.StatusForbidden || !strings.Contains(body, "allowed_paths") {
			t.Errorf("%s, socket outside allowed_paths: %d %s, want 403 naming allowed_paths", module, code, body)
		}
	}
	if n := denied.accepted(); n != 0 {
		t.Errorf("the denied socket got %d connections", n)
	}

	debug := gb.debug(t, "unix", silent.addr())
	if !strings.Contains(debug, "probe_success 0") || !strings.Contains(debug, "did not match before the probe deadline") {
		t.Errorf("silent socket, debug output:\n%s", debug)
	}

	debug = gb.debug(t, "unix", flood.addr())
	if !strings.Contains(debug, "probe_success 0") || !strings.Contains(debug, "a line longer than 64 KiB") {
		t.Errorf("endless banner, debug output:\n%s", debug)
	}
	// The peer's writes fail once the probe has closed its end.
	flood.Close()
	// What the peer got rid of is the probe's 64 KiB plus the socket
	// buffers in between; reading on to the deadline would be far more.
	n := flooded.Load()
	t.Logf("the peer wrote %d bytes of its endless banner", n)
	if n > 8<<20 {
		t.Errorf("the probe took %d bytes of an endless banner", n)
	}
	gb.waitIdle(t, time.Second)
}
