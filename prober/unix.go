package prober

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	pconfig "github.com/prometheus/common/config"

	"github.com/greybox-probe/greybox/config"
)

// UnixSettings is the `unix:` section of a module: blackbox_exporter's
// unix_probe key for key, plus allowed_paths. The target is the socket's
// path.
type UnixSettings struct {
	QueryResponse []QueryResponse   `yaml:"query_response,omitempty"`
	TLS           bool              `yaml:"tls,omitempty"`
	TLSConfig     pconfig.TLSConfig `yaml:"tls_config,omitempty"`
	// AllowedPaths are the socket paths this module may connect to:
	// absolute paths or filepath.Match patterns ("/run/app/*.sock"; a *
	// does not cross a /). allowed_targets is about addresses and cannot
	// say which sockets are fair game, so a unix module without
	// allowed_paths refuses every target (403).
	AllowedPaths []string `yaml:"allowed_paths,omitempty"`
	TLSFiles     `yaml:"-"`
	expectLabels []string
}

// maxUnixPath is the longest socket path connect(2) takes: sun_path less
// the terminating NUL (107 bytes on Linux, 103 on the BSDs).
var maxUnixPath = len(syscall.RawSockaddrUnix{}.Path) - 1

func (s *UnixSettings) Validate() error {
	var err error
	if s.expectLabels, err = validateQueryResponses(s.QueryResponse); err != nil {
		return err
	}
	for i, p := range s.AllowedPaths {
		switch {
		case !filepath.IsAbs(p):
			return fmt.Errorf("allowed_paths[%d]: %q is not an absolute path", i, p)
		case filepath.Clean(p) != p:
			return fmt.Errorf("allowed_paths[%d]: %q is not in clean form (write %q)", i, p, filepath.Clean(p))
		}
		if _, err := filepath.Match(p, ""); err != nil {
			return fmt.Errorf("allowed_paths[%d]: %q is not a valid pattern: %v", i, p, err)
		}
	}
	starttls := slices.ContainsFunc(s.QueryResponse, func(qr QueryResponse) bool { return qr.StartTLS })
	if (s.TLS || starttls) && s.TLSConfig.ServerName == "" && !s.TLSConfig.InsecureSkipVerify {
		// blackbox verifies the certificate against the socket's path,
		// which no certificate names: every such probe fails there.
		return errors.New("tls_config: a TLS unix probe needs server_name (the name the certificate is checked against; a socket path is none) or insecure_skip_verify")
	}
	return s.TLSFiles.set(s.TLSConfig)
}

func init() {
	Register("unix", Spec{
		Settings:    func() config.Settings { return &UnixSettings{} },
		Probe:       probeUnix,
		CheckTarget: checkUnixTarget,
	})
}

func checkUnixTarget(_ context.Context, target string, m config.Module, _ *Guard) error {
	_, err := allowedSocket(target, m.Settings.(*UnixSettings))
	return err
}

// allowedSocket checks a target against the module's allowed_paths and
// returns the path to dial: the target with its symlinks resolved (the
// resolved path must be allowed too, or a link in an allowed directory
// would reach any socket), or the target itself when it does not resolve
// (the dial then fails with the reason). Errors are *TargetError.
func allowedSocket(target string, s *UnixSettings) (string, error) {
	switch {
	case strings.IndexByte(target, 0) >= 0:
		return "", &TargetError{Reason: fmt.Sprintf("socket path %q contains a NUL byte", oneLine(target))}
	case !filepath.IsAbs(target):
		return "", &TargetError{Reason: fmt.Sprintf("target %q must be the absolute path of a unix socket (relative paths and abstract sockets are not probed)", oneLine(target))}
	case len(target) > maxUnixPath:
		return "", &TargetError{Reason: fmt.Sprintf("socket path is %d bytes; a unix socket path is at most %d", len(target), maxUnixPath)}
	case filepath.Clean(target) != target:
		return "", &TargetError{Reason: fmt.Sprintf("socket path %q is not in clean form (no //, . or .. elements, no trailing /)", oneLine(target))}
	}
	if len(s.AllowedPaths) == 0 {
		return "", &TargetError{Forbidden: true, Reason: "this unix module has no unix.allowed_paths: greybox connects only to the socket paths a module lists"}
	}
	if !pathAllowed(s.AllowedPaths, target) {
		return "", &TargetError{Forbidden: true, Reason: fmt.Sprintf("socket path %q is not in unix.allowed_paths", oneLine(target))}
	}
	resolved, err := filepath.EvalSymlinks(target)
	if err != nil {
		return target, nil
	}
	if resolved != target && !pathAllowed(s.AllowedPaths, resolved) {
		return "", &TargetError{Forbidden: true, Reason: fmt.Sprintf("socket path %q is a symlink to %q, which is not in unix.allowed_paths", oneLine(target), oneLine(resolved))}
	}
	return resolved, nil
}

func pathAllowed(patterns []string, path string) bool {
	return slices.ContainsFunc(patterns, func(p string) bool {
		ok, _ := filepath.Match(p, path) // patterns were checked at load
		return ok
	})
}

func probeUnix(ctx context.Context, target string, module config.Module, reg *Metrics, logger *slog.Logger, env Env) bool {
	s := module.Settings.(*UnixSettings)
	// Checked again here: the handler checked it, but a probe must not
	// depend on its caller for the allowlist.
	path, err := allowedSocket(target, s)
	if err != nil {
		logger.Error("refusing the target", "err", err)
		return false
	}
	logger.Debug("dialing unix socket", "path", path, "tls", s.TLS)
	conn, err := dialUnix(ctx, env.Guard, path)
	if err != nil {
		logger.Error("dialing the unix socket failed", "err", err)
		return false
	}
	defer conn.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(d)
	}
	// The dialogue is tcp's, run by tcp's code: these are the settings a
	// tcp module with this query_response and TLS would have. Built per
	// probe, from the TLS files as the loader resolved them.
	dialogue := &TCPSettings{QueryResponse: s.QueryResponse, TLSFiles: s.TLSFiles, expectLabels: s.expectLabels}
	tm := &tlsMetrics{reg: reg}
	if s.TLS {
		tc, err := tcpHandshake(ctx, conn, dialogue, "", tm)
		if err != nil {
			logger.Error("TLS handshake failed", "err", err)
			return false
		}
		conn = tc
	}
	logger.Debug("connected")
	return runQueryResponses(ctx, conn, dialogue, "", tm, reg, logger)
}

// dialUnix connects to a socket the caller checked, within the probe's
// deadline; the guard closes the connection when the probe ends, as it
// does every connection it dials.
func dialUnix(ctx context.Context, g *Guard, path string) (net.Conn, error) {
	ctx, cancel := g.bound(ctx)
	defer cancel()
	c, err := g.dialer.DialContext(ctx, "unix", path)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("permission denied: greybox's user may not connect to %s: %w", path, err)
		}
		return nil, err
	}
	return g.track(c)
}
