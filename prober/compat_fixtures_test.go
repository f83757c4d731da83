package prober

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Fixtures for the blackbox-compatible probers: a certificate, a line
// server, and a DNS server that also answers the guard's own lookups, so
// address-family cases do not depend on this machine's /etc/hosts.

// testCert is a self-signed certificate for 127.0.0.1, ::1 and
// "greybox.test", written to a CA file for tls_config.ca_file.
type testCert struct {
	tls      tls.Certificate
	notAfter time.Time
	caFile   string
	serial   *big.Int
}

func newTestCert(t testing.TB) *testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	notAfter := time.Now().Add(48 * time.Hour).Truncate(time.Second)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(0x0abc),
		Subject:               pkix.Name{CommonName: "greybox.test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              notAfter,
		DNSNames:              []string{"greybox.test"},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return &testCert{tls: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, notAfter: notAfter, caFile: caFile, serial: tmpl.SerialNumber}
}

func (c *testCert) serverConfig() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{c.tls}}
}

// lineServer accepts on 127.0.0.1 (or ::1) and runs serve per connection;
// Close waits for every handler, so no goroutine outlives the test.
type lineServer struct {
	l     net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
	once  sync.Once
}

func newLineServer(t testing.TB, network, addr string, serve func(c net.Conn)) *lineServer {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("cannot listen on %s %s: %v", network, addr, err)
	}
	s := &lineServer{l: l}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				serve(c)
			}()
		}
	}()
	t.Cleanup(s.Close)
	return s
}

func (s *lineServer) Addr() string { return s.l.Addr().String() }

func (s *lineServer) Close() {
	s.once.Do(func() {
		s.l.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
	})
	s.wg.Wait()
}

// testDNS is a miekg/dns server on 127.0.0.1, UDP and TCP on one port,
// answering from a fixed zone.
type testDNS struct {
	addr     string
	udp, tcp *dns.Server
	// lastQuery is the last request seen, for asserting what was sent.
	mu        sync.Mutex
	lastQuery *dns.Msg
	lastNet   string
}

// testZone answers the names the compat cases use.
func testZone(w dns.ResponseWriter, r *dns.Msg, d *testDNS) {
	d.mu.Lock()
	d.lastQuery = r.Copy()
	d.lastNet = w.LocalAddr().Network()
	d.mu.Unlock()
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	q := r.Question[0]
	rr := func(s string) dns.RR {
		x, err := dns.NewRR(s)
		if err != nil {
			panic(err)
		}
		return x
	}
	switch {
	case q.Name == "dual.test." && q.Qtype == dns.TypeA, q.Name == "v4.test." && q.Qtype == dns.TypeA:
		m.Answer = append(m.Answer, rr(q.Name+" 60 IN A 127.0.0.1"))
	case q.Name == "dual.test." && q.Qtype == dns.TypeAAAA, q.Name == "v6.test." && q.Qtype == dns.TypeAAAA:
		m.Answer = append(m.Answer, rr(q.Name+" 60 IN AAAA ::1"))
	case q.Name == "example.test." && q.Qtype == dns.TypeA:
		m.Answer = append(m.Answer, rr("example.test. 300 IN A 192.0.2.10"), rr("example.test. 300 IN A 192.0.2.11"))
		m.Ns = append(m.Ns, rr("example.test. 300 IN NS ns1.example.test."))
		m.Extra = append(m.Extra, rr("ns1.example.test. 300 IN A 192.0.2.53"))
	case q.Name == "example.test." && q.Qtype == dns.TypeSOA:
		m.Answer = append(m.Answer, rr("example.test. 300 IN SOA ns1.example.test. hostmaster.example.test. 2026120201 3600 600 86400 300"))
	case q.Name == "example.test." && q.Qtype == dns.TypeMX && q.Qclass == dns.ClassCHAOS:
		m.Answer = append(m.Answer, rr("example.test. 300 CH MX 10 mail.example.test."))
	case q.Name == "nx.test.":
		m.Rcode = dns.RcodeNameError
		m.Ns = append(m.Ns, rr("test. 300 IN SOA ns1.test. hostmaster.test. 1 3600 600 86400 300"))
	case q.Name == "refused.test.":
		m.Rcode = dns.RcodeRefused
	}
	if o := r.IsEdns0(); o != nil {
		m.SetEdns0(o.UDPSize(), o.Do())
	}
	_ = w.WriteMsg(m)
}

func newTestDNS(t testing.TB) *testDNS {
	return serveTestDNS(t, func(d *testDNS) dns.Handler {
		return dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) { testZone(w, r, d) })
	})
}

// serveTestDNS serves the handler on 127.0.0.1, UDP and TCP on one port.
func serveTestDNS(t testing.TB, handler func(*testDNS) dns.Handler) *testDNS {
	t.Helper()
	// UDP and TCP on one port: a UDP port whose TCP twin is taken is
	// given back and another tried.
	var (
		pc  net.PacketConn
		l   net.Listener
		err error
	)
	for range 20 {
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if l, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		t.Skipf("no port free for both UDP and TCP: %v", err)
	}
	d := &testDNS{addr: pc.LocalAddr().String()}
	h := handler(d)
	udpUp, tcpUp := make(chan struct{}), make(chan struct{})
	d.udp = &dns.Server{PacketConn: pc, Handler: h, NotifyStartedFunc: func() { close(udpUp) }}
	d.tcp = &dns.Server{Listener: l, Handler: h, NotifyStartedFunc: func() { close(tcpUp) }}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = d.udp.ActivateAndServe() }()
	go func() { defer wg.Done(); _ = d.tcp.ActivateAndServe() }()
	<-udpUp
	<-tcpUp
	t.Cleanup(func() {
		_ = d.udp.Shutdown()
		_ = d.tcp.Shutdown()
		wg.Wait()
	})
	return d
}

// tlsMetricWants is blackbox's TLS metric set for a TLS 1.3 handshake
// with cert; the last chain's expiry only from a verified chain.
func tlsMetricWants(cert *testCert, verified bool) []want {
	return []want{
		{name: "probe_ssl_earliest_cert_expiry", value: float64(cert.notAfter.Unix())},
		{name: "probe_tls_version_info", labels: map[string]string{"version": "TLS 1.3"}, value: 1},
		{name: "probe_tls_cipher_info", labels: map[string]string{"cipher": "TLS_AES_128_GCM_SHA256"}, value: 1},
		{name: "probe_ssl_last_chain_info", labels: map[string]string{"subject": "CN=greybox.test", "issuer": "CN=greybox.test", "subjectalternative": "greybox.test", "serialnumber": "0abc"}, value: 1},
		{name: "probe_ssl_last_chain_expiry_timestamp_seconds", value: float64(cert.notAfter.Unix()), absent: !verified},
	}
}

// newDoTFront is DNS over TLS: a TLS listener in front of the DNS
// fixture's TCP side.
func newDoTFront(t *testing.T, cert *testCert, dnsAddr string) *lineServer {
	return newLineServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		tc := tls.Server(c, cert.serverConfig())
		if tc.Handshake() != nil {
			return
		}
		up, err := net.Dial("tcp", dnsAddr)
		if err != nil {
			return
		}
		defer up.Close()
		go func() { _, _ = io.Copy(up, tc); up.Close() }()
		_, _ = io.Copy(tc, up)
	})
}

func (d *testDNS) last() (*dns.Msg, string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lastQuery, d.lastNet
}

// resolver is a Go resolver asking only this server, for the guard.
func (d *testDNS) resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, network, d.addr)
	}}
}
