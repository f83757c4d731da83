package prober

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"

	pconfig "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"

	"github.com/greybox-probe/greybox/config"
)

// TCPSettings is the `tcp:` section of a module, blackbox_exporter's
// tcp_probe key for key.
type TCPSettings struct {
	IPProtocol      `yaml:",inline"`
	SourceIPAddress string            `yaml:"source_ip_address,omitempty"`
	QueryResponse   []QueryResponse   `yaml:"query_response,omitempty"`
	TLS             bool              `yaml:"tls,omitempty"`
	TLSConfig       pconfig.TLSConfig `yaml:"tls_config,omitempty"`
	TLSFiles        `yaml:"-"`
	source          netip.Addr
	expectLabels    []string
}

// QueryResponse is one step of a line-oriented dialogue (tcp) or a message
// exchange (websocket), as in blackbox.
type QueryResponse struct {
	Expect      config.Regexp `yaml:"expect,omitempty"`
	ExpectBytes string        `yaml:"expect_bytes,omitempty"`
	Labels      []ExpectLabel `yaml:"labels,omitempty"`
	Send        string        `yaml:"send,omitempty"`
	StartTLS    bool          `yaml:"starttls,omitempty"`
}

// ExpectLabel is a probe_expect_info label; its value may use the expect
// regexp's groups (${1}).
type ExpectLabel struct {
	Name  string `yaml:"name"`
	Value string `yaml:"value"`
}

// maxLineBytes is the longest line an expect regexp is run on; blackbox's
// bufio.Scanner has the same bound, but greybox says so when it is hit.
const maxLineBytes = 64 << 10

// validateQueryResponses checks a query_response list at load and returns
// the probe_expect_info label names (one set: a registry cannot hold one
// metric name with two label sets, which blackbox finds out by panicking).
func validateQueryResponses(qrs []QueryResponse) ([]string, error) {
	var names []string
	for i, qr := range qrs {
		if !qr.Expect.IsZero() && qr.ExpectBytes != "" {
			return nil, fmt.Errorf("query_response[%d]: expect and expect_bytes are mutually exclusive", i)
		}
		if len(qr.Labels) == 0 {
			continue
		}
		if qr.Expect.IsZero() {
			return nil, fmt.Errorf("query_response[%d]: labels need an expect regexp to take their values from", i)
		}
		var these []string
		for _, l := range qr.Labels {
			if !model.LegacyValidation.IsValidLabelName(l.Name) || strings.HasPrefix(l.Name, "__") {
				return nil, fmt.Errorf("query_response[%d]: %q is not a valid label name", i, l.Name)
			}
			if slices.Contains(these, l.Name) {
				return nil, fmt.Errorf("query_response[%d]: label %q given twice", i, l.Name)
			}
			these = append(these, l.Name)
		}
		if names == nil {
			names = these
		} else if !slices.Equal(names, these) {
			return nil, fmt.Errorf("query_response[%d]: labels %v differ from an earlier step's %v; probe_expect_info can have only one set of label names", i, these, names)
		}
	}
	return names, nil
}

func (s *TCPSettings) Validate() error {
	if err := s.IPProtocol.validate(); err != nil {
		return err
	}
	var err error
	if s.source, err = parseSourceIP(s.SourceIPAddress); err != nil {
		return err
	}
	if s.expectLabels, err = validateQueryResponses(s.QueryResponse); err != nil {
		return err
	}
	return s.TLSFiles.set(s.TLSConfig)
}

func init() {
	Register("tcp", Spec{
		Settings:    func() config.Settings { return &TCPSettings{IPProtocol: defaultIPProtocol()} },
		Probe:       probeTCP,
		CheckTarget: checkHostPortTarget,
	})
}

// checkHostPortTarget is the target check of probers whose target is
// host:port.
func checkHostPortTarget(ctx context.Context, target string, m config.Module, g *Guard) error {
	host, _, err := splitHostPortTarget(target)
	if err != nil {
		return err
	}
	return checkHost(ctx, m, g, host)
}

func probeTCP(ctx context.Context, target string, module config.Module, reg *Metrics, logger *slog.Logger, env Env) bool {
	s := module.Settings.(*TCPSettings)
	host, port, err := splitHostPortTarget(target)
	if err != nil {
		logger.Error("invalid target", "err", err)
		return false
	}
	addr, err := chooseAddr(ctx, env.Guard, host, s.IPProtocol, reg, logger)
	if err != nil {
		logger.Error("resolving the target failed", "err", err)
		return false
	}
	network := "tcp4"
	if addr.Is6() {
		network = "tcp6"
	}
	logger.Debug("dialing TCP", "address", net.JoinHostPort(addr.String(), port), "tls", s.TLS)
	conn, err := dialAddr(ctx, env.Guard, network, addr, port, s.source)
	if err != nil {
		logger.Error("dialing TCP failed", "err", err)
		return false
	}
	defer conn.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(d)
	}
	tm := &tlsMetrics{reg: reg}
	if s.TLS {
		tc, err := tcpHandshake(ctx, conn, s, host, tm)
		if err != nil {
			logger.Error("TLS handshake failed", "err", err)
			return false
		}
		conn = tc
	}
	logger.Debug("connected")
	return runQueryResponses(ctx, conn, s, host, tm, reg, logger)
}

func tcpHandshake(ctx context.Context, conn net.Conn, s *TCPSettings, host string, tm *tlsMetrics) (*tls.Conn, error) {
	cfg, err := s.tlsConfig(ctx, host)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	tm.record(tc.ConnectionState())
	return tc, nil
}

// runQueryResponses plays query_response over conn. One buffered reader
// serves both expect and expect_bytes, so bytes read ahead for a line are
// not lost to the next step (blackbox reads expect_bytes from the raw
// connection behind its scanner's buffer, and with a single Read, so a
// short read fails a correct answer).
func runQueryResponses(ctx context.Context, conn net.Conn, s *TCPSettings, host string, tm *tlsMetrics, reg *Metrics, logger *slog.Logger) bool {
	regexFailed := gauge(reg, "probe_failed_due_to_regex", "1 if an expect regexp did not match.")
	bytesFailed := gauge(reg, "probe_failed_due_to_bytes", "1 if expect_bytes did not match.")
	var expectInfo *gaugeFamily
	if len(s.expectLabels) > 0 {
		expectInfo = newGaugeVec("probe_expect_info", "Values taken from the text an expect regexp matched.", s.expectLabels...)
		reg.MustRegister(expectInfo)
	}
	r := lineReader(conn)
	defer func() { putLineReader(r) }() // r changes at starttls
	for i, qr := range s.QueryResponse {
		send := qr.Send
		if !qr.Expect.IsZero() {
			line, match, err := expectLine(r, qr.Expect, logger)
			if err != nil {
				switch {
				case errors.Is(err, io.EOF):
					regexFailed.Set(1)
					logger.Error("expect regexp did not match before the connection closed", "step", i, "regexp", qr.Expect.String())
				case isTimeout(ctx, err):
					// The expected text never came: the same answer
					// as a closed connection, whatever the server does.
					regexFailed.Set(1)
					logger.Error("expect regexp did not match before the probe deadline", "step", i, "regexp", qr.Expect.String(), "err", err)
				default:
					logger.Error("reading from the connection failed", "step", i, "waiting_for", qr.Expect.String(), "err", describeReadErr(ctx, err))
				}
				return false
			}
			send = string(qr.Expect.Expand(nil, []byte(send), line, match))
			if expectInfo != nil && len(qr.Labels) > 0 {
				vals := make([]string, len(qr.Labels))
				for j, l := range qr.Labels {
					// A label value must be UTF-8; what a server sends
					// need not be (blackbox panics on it).
					vals[j] = strings.ToValidUTF8(string(qr.Expect.Expand(nil, []byte(l.Value), line, match)), "\uFFFD")
				}
				expectInfo.WithLabelValues(vals...).Set(1)
			}
		}
		if qr.ExpectBytes != "" {
			want := []byte(qr.ExpectBytes)
			got := make([]byte, len(want))
			n, err := io.ReadFull(r, got)
			if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
				logger.Error("reading from the connection failed", "step", i, "waiting_for_bytes", len(want), "got_bytes", n, "err", describeReadErr(ctx, err))
				return false
			}
			if !bytes.Equal(got[:n], want) {
				bytesFailed.Set(1)
				logger.Error("expect_bytes did not match", "step", i, "expected", fmt.Sprintf("%q", want), "got", fmt.Sprintf("%q", got[:n]))
				return false
			}
			logger.Debug("expect_bytes matched", "step", i)
		}
		if send != "" {
			logger.Debug("sending", "step", i, "line", send)
			if _, err := io.WriteString(conn, send+"\n"); err != nil {
				logger.Error("sending failed", "step", i, "err", describeReadErr(ctx, err))
				return false
			}
		}
		if qr.StartTLS {
			// Plaintext the server sent after its go-ahead would be
			// read as if it came over TLS: the STARTTLS injection flaw.
			if r.Buffered() > 0 {
				logger.Error("server sent data before the TLS handshake of starttls; refusing to treat it as protected", "step", i, "bytes", r.Buffered())
				return false
			}
			tc, err := tcpHandshake(ctx, conn, s, host, tm)
			if err != nil {
				logger.Error("starttls handshake failed", "step", i, "err", err)
				return false
			}
			logger.Debug("starttls handshake succeeded", "step", i)
			conn = tc
			putLineReader(r)
			r = lineReader(conn)
		}
	}
	return true
}

// expectReaders are query_response's 64 KiB line buffers, a probe's largest
// allocation by far when each probe made its own.
var expectReaders sync.Pool

func lineReader(c net.Conn) *bufio.Reader {
	if r, ok := expectReaders.Get().(*bufio.Reader); ok {
		r.Reset(c)
		return r
	}
	return bufio.NewReaderSize(c, maxLineBytes)
}

func putLineReader(r *bufio.Reader) {
	r.Reset(nil) // holds no connection while pooled
	expectReaders.Put(r)
}

// expectLine reads lines until one matches re. Lines end at \n, with a
// trailing \r dropped, as bufio.ScanLines does.
func expectLine(r *bufio.Reader, re config.Regexp, logger *slog.Logger) ([]byte, []int, error) {
	for {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, nil, fmt.Errorf("a line longer than %d KiB", maxLineBytes>>10)
		}
		if len(line) > 0 {
			line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
			logger.Debug("read line", "line", string(line))
			if m := re.FindSubmatchIndex(line); m != nil {
				return slices.Clone(line), m, nil
			}
		}
		if err != nil {
			return nil, nil, err
		}
	}
}

func describeReadErr(ctx context.Context, err error) error {
	if isTimeout(ctx, err) {
		return fmt.Errorf("probe deadline reached: %w", err)
	}
	return err
}
