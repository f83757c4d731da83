package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// greyboxBin is the binary built once for the whole package by TestMain.
var greyboxBin string

// Every test ends with its processes reaped and its servers closed; goleak
// proves no helper goroutine (process waiters, HTTP transports) outlives it.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "greybox-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	greyboxBin = filepath.Join(dir, "greybox")
	// Built as `make build` builds it, so --version shows what a user's
	// binary shows.
	ldflags, err := exec.Command("make", "-s", "-C", "..", "print-ldflags").Output()
	if err != nil {
		fmt.Fprintf(os.Stderr, "make print-ldflags: %v\n", err)
		os.Exit(1)
	}
	if out, err := exec.Command(goTool(), "build", "-ldflags", strings.TrimSpace(string(ldflags)), "-o", greyboxBin, "../cmd/greybox").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building greybox: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		return m.Run()
	}()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// goTool is the go command of the toolchain running the tests.
func goTool() string {
	if p := filepath.Join(runtime.GOROOT(), "bin", "go"); fileExists(p) {
		return p
	}
	return "go"
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// freeAddr returns a loopback address nobody listens on right now. A
// process started with it may in theory lose the port to someone else;
// startProc then fails clearly when the process exits early.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// proc is a child process in its own process group, reaped exactly once.
type proc struct {
	name   string
	cmd    *exec.Cmd
	log    string
	done   chan struct{}
	waitEr error
}

// startProc starts bin with args; t.Cleanup kills its process group and
// waits for it. Output goes to a file (no copying goroutines) that is
// printed when the test fails.
func startProc(t *testing.T, name, bin string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.waitEr = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
		if t.Failed() {
			out, _ := os.ReadFile(logPath)
			t.Logf("--- %s output ---\n%s", name, tail(string(out), 8000))
		}
	})
	return p
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait returns the process' exit code once it exits, failing the test
// if that takes longer than d.
func (p *proc) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		t.Fatalf("%s did not exit within %v", p.name, d)
	}
	var ee *exec.ExitError
	if errors.As(p.waitEr, &ee) {
		return ee.ExitCode()
	}
	if p.waitEr != nil {
		t.Fatalf("%s: %v", p.name, p.waitEr)
	}
	return 0
}

func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signalling %s: %v", p.name, err)
	}
}

// httpClient never keeps idle connections, so no transport goroutine
// survives a test.
func httpClient() *http.Client {
	return &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}
}

// get returns the status and body of a GET, or an error.
func get(ctx context.Context, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := httpClient().Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// poll calls cond every 200ms until it reports done or d passes; on
// timeout the test fails with cond's last explanation. Bounded polling
// waits for an observable state, never for an assumed duration.
func poll(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %v: %s", what, d, why)
		}
		<-tick.C
	}
}

// waitReady polls url until it answers 200. It reports false if p exits
// first (typically: another process took the port between freeAddr and
// the bind).
func waitReady(t *testing.T, p *proc, url string, d time.Duration) bool {
	t.Helper()
	up := true
	poll(t, d, p.name+" ready", func() (bool, string) {
		if p.exited() {
			up = false
			return true, ""
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		code, body, err := get(ctx, url)
		if err != nil {
			return false, err.Error()
		}
		return code == http.StatusOK, strconv.Itoa(code) + " " + strings.TrimSpace(body)
	})
	return up
}

// startServer starts bin listening on a free loopback address (args
// builds its flags from that address) and waits until readyPath answers
// 200. A process that exits before that is retried on another port.
func startServer(t *testing.T, name, bin, readyPath string, args func(addr string) []string) (*proc, string) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		addr := freeAddr(t)
		p := startProc(t, name, bin, args(addr)...)
		if waitReady(t, p, "http://"+addr+readyPath, 60*time.Second) {
			return p, addr
		}
		if attempt == 3 {
			t.Fatalf("%s exited before becoming ready, %d times", name, attempt)
		}
		t.Logf("%s exited before becoming ready (port %s taken?); retrying", name, addr)
	}
}

// startPrometheus starts the real Prometheus with configPath and a fresh
// TSDB, and returns its host:port once it is ready.
func startPrometheus(t *testing.T, bin, configPath string) string {
	t.Helper()
	_, addr := startServer(t, "prometheus", bin, "/-/ready", func(addr string) []string {
		return []string{
			"--config.file=" + configPath,
			"--storage.tsdb.path=" + t.TempDir(),
			"--web.listen-address=" + addr,
			"--log.level=warn",
		}
	})
	return addr
}

// writeKubeconfig writes a kubeconfig for an anonymous client of server
// (a fake API on loopback) and returns its path.
func writeKubeconfig(t *testing.T, dir, server string) string {
	t.Helper()
	return writeFile(t, dir, "kubeconfig", fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
  - name: fake
    cluster:
      server: %s
contexts:
  - name: fake
    context:
      cluster: fake
      user: anonymous
users:
  - name: anonymous
    user: {}
current-context: fake
`, server))
}

// startGreybox starts the built greybox on a free loopback port with the
// given config and waits until it is ready. It returns the process and
// its host:port.
func startGreybox(t *testing.T, configPath string, flags ...string) (*proc, string) {
	t.Helper()
	return startServer(t, "greybox", greyboxBin, "/-/ready", func(addr string) []string {
		return append([]string{"--config.file=" + configPath, "--web.listen-address=" + addr, "--log.level=debug"}, flags...)
	})
}

// metricValue finds "name value" (exact series, labels included) in a
// Prometheus text exposition.
func metricValue(exposition, series string) (float64, bool) {
	for _, line := range strings.Split(exposition, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v, err == nil
		}
	}
	return 0, false
}
