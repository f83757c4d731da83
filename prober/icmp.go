package prober

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/greybox-probe/greybox/config"
)

// ICMPSettings is the `icmp:` section of a module, blackbox_exporter's
// icmp_probe key for key.
type ICMPSettings struct {
	IPProtocol      `yaml:",inline"`
	SourceIPAddress string `yaml:"source_ip_address,omitempty"`
	PayloadSize     int    `yaml:"payload_size,omitempty"`
	DontFragment    bool   `yaml:"dont_fragment,omitempty"`
	// TTL of the request; blackbox's default is 64.
	TTL    int `yaml:"ttl"`
	source netip.Addr
}

// maxICMPPayload keeps an echo inside one IPv4 datagram.
const maxICMPPayload = 65535 - 20 - 8

func (s *ICMPSettings) Validate() error {
	if err := s.IPProtocol.validate(); err != nil {
		return err
	}
	var err error
	if s.source, err = parseSourceIP(s.SourceIPAddress); err != nil {
		return err
	}
	if s.TTL < 0 || s.TTL > 255 {
		return fmt.Errorf("ttl %d must be between 0 and 255", s.TTL)
	}
	if s.PayloadSize < 0 || s.PayloadSize > maxICMPPayload {
		return fmt.Errorf("payload_size %d must be between 0 and %d", s.PayloadSize, maxICMPPayload)
	}
	return nil
}

func init() {
	Register("icmp", Spec{
		Settings: func() config.Settings { return &ICMPSettings{IPProtocol: defaultIPProtocol(), TTL: 64} },
		Probe:    probeICMP,
		CheckTarget: func(ctx context.Context, target string, m config.Module, g *Guard) error {
			host, err := icmpTarget(target)
			if err != nil {
				return err
			}
			return checkHost(ctx, m, g, host)
		},
	})
}

// icmpTarget is a host name or an IP address, nothing else.
func icmpTarget(target string) (string, error) {
	host := strings.Trim(target, "[]")
	if _, err := netip.ParseAddr(host); err == nil {
		return host, nil
	}
	if badHost(host) || strings.Contains(host, ":") {
		return "", &TargetError{Reason: fmt.Sprintf("target %q must be a host name or IP address (no port or URL)", oneLine(target))}
	}
	return host, nil
}

// icmpSeq is shared by all probes so concurrent echoes to one host differ.
var icmpSeq atomic.Uint32

func init() { icmpSeq.Store(rand.Uint32()) }

// icmpPayload starts with a marker so a capture shows who sent it.
const icmpMarker = "greybox ICMP probe"

// icmpSocket is the one socket a probe uses: datagram ICMP where the
// system allows it (net.ipv4.ping_group_range), raw otherwise.
type icmpSocket struct {
	pc       *icmp.PacketConn
	raw      *ipv4.RawConn // dont_fragment on IPv4: needs an IP header of our own
	rawPC    net.PacketConn
	datagram bool
}

func (s *icmpSocket) Close() {
	if s.pc != nil {
		_ = s.pc.Close()
	}
	if s.raw != nil {
		_ = s.raw.Close()
	}
	if s.rawPC != nil {
		_ = s.rawPC.Close()
	}
}

func openICMP(v6, dontFragment bool, source string) (*icmpSocket, error) {
	if !v6 && dontFragment {
		// The DF bit needs our own IPv4 header, as in blackbox.
		pc, err := net.ListenPacket("ip4:icmp", source)
		if err != nil {
			return nil, fmt.Errorf("dont_fragment needs a raw socket (root or CAP_NET_RAW): %w", err)
		}
		raw, err := ipv4.NewRawConn(pc)
		if err != nil {
			pc.Close()
			return nil, err
		}
		return &icmpSocket{raw: raw, rawPC: pc}, nil
	}
	dgram, rawNet := "udp4", "ip4:icmp"
	if v6 {
		dgram, rawNet = "udp6", "ip6:ipv6-icmp"
	}
	pc, derr := icmp.ListenPacket(dgram, source)
	if derr == nil {
		return &icmpSocket{pc: pc, datagram: true}, nil
	}
	pc, rerr := icmp.ListenPacket(rawNet, source)
	if rerr == nil {
		return &icmpSocket{pc: pc}, nil
	}
	return nil, fmt.Errorf("no ICMP socket: unprivileged ICMP is not allowed for group %d (net.ipv4.ping_group_range is %q: %v) and a raw socket needs root or CAP_NET_RAW (%v)",
		os.Getegid(), pingGroupRange(), derr, rerr)
}

func pingGroupRange() string {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ping_group_range")
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(string(b)), " ")
}

func probeICMP(ctx context.Context, target string, module config.Module, reg *Metrics, logger *slog.Logger, env Env) bool {
	s := module.Settings.(*ICMPSettings)
	phases := newGaugeVec("probe_icmp_duration_seconds", "Duration of the ICMP echo by phase, in seconds.", "phase")
	reg.MustRegister(phases)
	for _, p := range []string{"resolve", "setup", "rtt"} {
		phases.WithLabelValues(p)
	}
	host, err := icmpTarget(target)
	if err != nil {
		logger.Error("invalid target", "err", err)
		return false
	}
	addr, ok := resolveTarget(ctx, env.Guard, host, s.IPProtocol, reg, logger, phases, "target")
	if !ok {
		return false
	}
	v6 := addr.Is6()
	if v6 && s.DontFragment {
		logger.Debug("dont_fragment has no effect on IPv6: routers never fragment IPv6")
	}

	setupStart := time.Now()
	source := ""
	if s.source.IsValid() {
		source = s.source.String()
	} else if v6 {
		source = "::"
	} else {
		source = "0.0.0.0"
	}
	sock, err := openICMP(v6, s.DontFragment && !v6, source)
	if err != nil {
		logger.Error("opening an ICMP socket failed", "err", err)
		return false
	}
	defer sock.Close()
	// A blocked read ends when the probe does, deadline or cancellation.
	stop := context.AfterFunc(ctx, sock.Close)
	defer stop()
	logger.Debug("ICMP socket open", "datagram", sock.datagram, "raw_ipv4_header", sock.raw != nil)

	seq := int(uint16(icmpSeq.Add(1)))
	id := rand.IntN(1 << 16)
	data := make([]byte, max(s.PayloadSize, len(icmpMarker)))
	if s.PayloadSize > 0 {
		data = data[:s.PayloadSize]
	}
	copy(data, icmpMarker)
	req := icmp.Message{Code: 0, Body: &icmp.Echo{ID: id, Seq: seq, Data: data}}
	reply, proto := icmp.Type(ipv4.ICMPTypeEchoReply), 1
	req.Type = ipv4.ICMPTypeEcho
	if v6 {
		req.Type, reply, proto = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply, 58
	}
	wb, err := req.Marshal(nil)
	if err != nil {
		logger.Error("building the echo request failed", "err", err)
		return false
	}
	hopLimitKnown := true
	var dst net.Addr = &net.IPAddr{IP: addr.AsSlice()}
	if sock.datagram {
		dst = &net.UDPAddr{IP: addr.AsSlice()}
	}
	switch {
	case sock.raw != nil:
		hopLimitKnown = sock.raw.SetControlMessage(ipv4.FlagTTL, true) == nil
	case v6:
		p := sock.pc.IPv6PacketConn()
		hopLimitKnown = p.SetControlMessage(ipv6.FlagHopLimit, true) == nil
		if s.TTL > 0 {
			err = p.SetHopLimit(s.TTL)
		}
	default:
		p := sock.pc.IPv4PacketConn()
		hopLimitKnown = p.SetControlMessage(ipv4.FlagTTL, true) == nil
		if s.TTL > 0 {
			err = p.SetTTL(s.TTL)
		}
	}
	if err != nil {
		logger.Error("setting the ttl failed", "ttl", s.TTL, "err", err)
		return false
	}
	if d, ok := ctx.Deadline(); ok {
		if sock.raw != nil {
			err = sock.raw.SetReadDeadline(d)
		} else {
			err = sock.pc.SetReadDeadline(d)
		}
		if err != nil {
			logger.Error("setting the read deadline failed", "err", err)
			return false
		}
	}
	phases.WithLabelValues("setup").Set(time.Since(setupStart).Seconds())

	logger.Debug("sending echo request", "address", addr.String(), "id", id, "seq", seq, "payload_bytes", len(data), "ttl", s.TTL)
	rttStart := time.Now()
	if sock.raw != nil {
		ttl := s.TTL
		if ttl == 0 {
			ttl = 64
		}
		h := &ipv4.Header{Version: ipv4.Version, Len: ipv4.HeaderLen, Protocol: 1, TotalLen: ipv4.HeaderLen + len(wb),
			TTL: ttl, Flags: ipv4.DontFragment, Dst: addr.AsSlice()}
		if s.source.IsValid() {
			h.Src = s.source.AsSlice()
		}
		err = sock.raw.WriteTo(h, wb, nil)
	} else {
		_, err = sock.pc.WriteTo(wb, dst)
	}
	if err != nil {
		logger.Error("sending the echo request failed", "err", err)
		return false
	}

	rb := make([]byte, len(wb)+128)
	for {
		n, peer, hop, err := sock.read(rb, v6)
		if err != nil {
			if isTimeout(ctx, err) || errors.Is(err, net.ErrClosed) && ctx.Err() != nil {
				logger.Error("no echo reply before the probe deadline", "address", addr.String(), "err", context.Cause(ctx))
			} else {
				// blackbox retries any read error at once, forever; a
				// socket that fails once fails the probe here.
				logger.Error("reading the ICMP socket failed", "err", err)
			}
			return false
		}
		if peerAddr(peer) != addr {
			continue
		}
		m, err := icmp.ParseMessage(proto, rb[:n])
		if err != nil || m.Type != reply {
			continue
		}
		echo, ok := m.Body.(*icmp.Echo)
		// A datagram socket's kernel picks the ID (and filters by it).
		if !ok || echo.Seq != seq || !sock.datagram && echo.ID != id || !bytes.Equal(echo.Data, data) {
			continue
		}
		phases.WithLabelValues("rtt").Set(time.Since(rttStart).Seconds())
		if hopLimitKnown && hop >= 0 {
			gauge(reg, "probe_icmp_reply_hop_limit", "Hop limit (TTL for IPv4) of the reply.").Set(float64(hop))
		}
		logger.Debug("echo reply received", "hop_limit", hop)
		return true
	}
}

// read returns one ICMP message (IP header stripped), its sender and its
// hop limit (-1 when unknown).
func (s *icmpSocket) read(b []byte, v6 bool) (int, net.Addr, int, error) {
	switch {
	case s.raw != nil:
		h, p, cm, err := s.raw.ReadFrom(b)
		if err != nil {
			return 0, nil, -1, err
		}
		n := copy(b, p)
		hop := -1
		if cm != nil {
			hop = cm.TTL
		} else if h != nil {
			hop = h.TTL
		}
		return n, &net.IPAddr{IP: h.Src}, hop, nil
	case v6:
		n, cm, peer, err := s.pc.IPv6PacketConn().ReadFrom(b)
		hop := -1
		if cm != nil {
			hop = cm.HopLimit
		}
		return n, peer, hop, err
	default:
		n, cm, peer, err := s.pc.IPv4PacketConn().ReadFrom(b)
		hop := -1
		if cm != nil {
			hop = cm.TTL
		}
		return n, peer, hop, err
	}
}

func peerAddr(a net.Addr) netip.Addr {
	var ip net.IP
	switch a := a.(type) {
	case *net.IPAddr:
		ip = a.IP
	case *net.UDPAddr:
		ip = a.IP
	}
	p, _ := netip.AddrFromSlice(ip)
	return p.Unmap()
}
