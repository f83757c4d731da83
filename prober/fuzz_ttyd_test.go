package prober

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/common/expfmt"
)

const fuzzTTYDConfig = `
modules:
  fuzz_token:
    prober: ttyd_token
    timeout: 200ms
    allowed_targets: ["127.0.0.0/8", "::1/128"]
    ttyd_token: {redirect_host: "auth.fuzz.invalid", valid_status_codes: [200, 302]}
  fuzz_ws:
    prober: ttyd_ws
    timeout: 200ms
    allowed_targets: ["127.0.0.0/8", "::1/128"]
    ttyd_ws: {expect: "\\$ $"}
  fuzz_names:
    prober: ttyd_ws
    timeout: 200ms
    allowed_targets: ["fuzz.invalid"]
`

// FuzzTTYDTarget: arbitrary targets for the two ttyd probers, parsed on
// their own (the base URL and the derived ws:// URL) and through /probe
// against a fake ttyd, with the same guarantees as FuzzHTTPTarget.
func FuzzTTYDTarget(f *testing.F) {
	for _, s := range [][2]string{
		{"fuzz_ws", "http://SRV"}, {"fuzz_ws", "http://SRV/"}, {"fuzz_token", "http://SRV/base/"},
		{"fuzz_ws", "https://SRV/x?y=1#z"}, {"fuzz_ws", "http://u:p@SRV/"}, {"fuzz_token", "http://SRV/%2F..%2F"},
		{"fuzz_ws", "ws://SRV/"}, {"fuzz_ws", "http://:80/"}, {"fuzz_ws", "http://[::1]:1/"},
		{"fuzz_token", "http://SRV/redirect"}, {"fuzz_token", "http://SRV/notjson"}, {"fuzz_ws", "http://name.example/"},
	} {
		f.Add(s[0], s[1])
	}
	dns := fuzzBlockDNS(f)
	srv := fuzzTTYDServer(func(id string) [][]byte { return [][]byte{[]byte("1bash"), []byte("2{ }"), []byte("0$ ")} })
	defer srv.Close()
	srvHost := srv.Listener.Addr().String()
	h, cfg := fuzzHandler(f, fuzzTTYDConfig)

	f.Fuzz(func(t *testing.T, module, target string) {
		target = strings.ReplaceAll(target, "SRV", srvHost)
		if u, err := ttydBaseURL(target); err == nil {
			if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
				t.Fatalf("ttydBaseURL(%q) accepted %#v", target, u)
			}
			ws := ttydWSURL(u)
			if ws.Scheme != "ws" && ws.Scheme != "wss" || !strings.HasSuffix("/"+ws.Path, "/ws") || ws.Host != u.Host {
				t.Fatalf("ttydWSURL(%q) = %q", target, ws)
			}
			if strings.Contains(ws.Redacted(), "\n") {
				t.Fatalf("ws URL with a newline: %q", ws)
			}
		}
		module, ok := fuzzNoDNS(cfg, "fuzz_names", module, target)
		if !ok {
			return
		}
		fuzzProbe(t, h, dns, module, target, "true", "", 200*time.Millisecond)
	})
}

// fuzzTTYDServer is a minimal ttyd: /token answers JSON (or a redirect, or
// garbage, by path), /ws upgrades with tty, reads the init message, sends
// frames(id) — id is the path segment before /ws — and then a close frame:
// 1000, or the code of the first "close:<code>" frame (frames after it are
// not sent).
func fuzzTTYDServer(frames func(id string) [][]byte) *httptest.Server {
	up := websocket.Upgrader{Subprotocols: []string{"tty"}}
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/token"):
			switch {
			case strings.Contains(r.URL.Path, "redirect"):
				http.Redirect(w, r, "https://auth.fuzz.invalid/login", http.StatusFound)
			case strings.Contains(r.URL.Path, "notjson"):
				w.Write([]byte(`{"token": 42}`))
			default:
				w.Header().Set("Content-Type", "application/json;charset=utf-8")
				w.Write([]byte(`{"token": "fuzz-token-value-0123456789"}`))
			}
		case strings.HasSuffix(r.URL.Path, "/ws"):
			id := strings.Trim(strings.TrimSuffix(r.URL.Path, "/ws"), "/")
			msgs := frames(id)
			if len(msgs) > 0 && string(msgs[0]) == "notty" {
				up := websocket.Upgrader{}
				c, err := up.Upgrade(w, r, nil)
				if err == nil {
					c.ReadMessage()
					c.Close()
				}
				return
			}
			c, err := up.Upgrade(w, r, nil)
			if err != nil {
				return
			}
			defer c.Close()
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
			closeCode := websocket.CloseNormalClosure // so that a failing input ends fast
			for _, m := range msgs {
				if code, ok := strings.CutPrefix(string(m), "close:"); ok {
					closeCode, _ = strconv.Atoi(code)
					break
				}
				typ := websocket.BinaryMessage
				if len(m) > 0 && m[0] == 't' {
					typ = websocket.TextMessage
				}
				if err := c.WriteMessage(typ, m); err != nil {
					return
				}
			}
			c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(closeCode, "fuzz"), time.Now().Add(time.Second))
			// Drain until the probe hangs up.
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					return
				}
			}
		default:
			http.NotFound(w, r)
		}
	}))
}

// FuzzTTYDWSFrames feeds a real session with arbitrary server frames
// (split on NUL; "close:<code>" sends a close frame; "notty" refuses the
// subprotocol) to probeTTYDWS with an expect regexp. The probe must end in
// time without panicking, and succeed exactly when the frames before any
// close carry output ('0' frames, concatenated) matching expect.
func FuzzTTYDWSFrames(f *testing.F) {
	for _, s := range []string{
		"1bash\x002{ }\x000$ ", "0$ ", "0$\x000 ", "1t\x00close:1008", "close:1000", "close:1008\x001t\x002{}",
		"0abc\x00close:1000\x000$ ", "notty", "", "\x00\x00", "t0$ ", "2{\"x\":1}\x000\x1b[1m$ \x1b[0m", "close:999",
		"close:1005", "close:4000", strings.Repeat("0x\x00", 50) + "0$ ",
	} {
		f.Add([]byte(s))
	}
	var (
		scripts sync.Map
		ids     atomic.Int64
	)
	srv := fuzzTTYDServer(func(id string) [][]byte {
		v, _ := scripts.Load(id)
		m, _ := v.([][]byte)
		return m
	})
	defer srv.Close()
	// Generous: every script ends with a close frame, so only a hang would
	// use it, and a busy CI machine must not turn a success into a timeout.
	const timeout = 3 * time.Second
	m := testModule(f, "prober: ttyd_ws\ntimeout: 3s\nallowed_targets: [127.0.0.0/8]\nttyd_ws: {fetch_token: false, expect: \"[$] $\"}")
	env := Env{} // runProbeDirect gives each probe its own guard

	f.Fuzz(func(t *testing.T, script []byte) {
		msgs := bytes.Split(script, []byte{0})
		if len(msgs) > 64 {
			msgs = msgs[:64]
		}
		id := "s" + strconv.FormatInt(ids.Add(1), 10)
		scripts.Store(id, msgs)
		defer scripts.Delete(id)

		r := runProbeDirect(t, probeTTYDWS, srv.URL+"/"+id, m, env)
		if r.elapsed > timeout+hostileSlack {
			t.Errorf("probe took %v with a %v budget", r.elapsed, timeout)
		}
		// The reference: output so far, frame by frame, until a close.
		want := false
		if len(msgs) == 0 || string(msgs[0]) != "notty" {
			var out []byte
			for _, msg := range msgs {
				if bytes.HasPrefix(msg, []byte("close:")) {
					break
				}
				if len(msg) > 0 && msg[0] == '0' {
					out = append(out, msg[1:]...)
				}
				if m.Settings.(*TTYDWSSettings).Expect.Match(out) {
					want = true
					break
				}
			}
		}
		if r.ok != want {
			t.Fatalf("frames %q: probe ok=%v, reference %v\n%s", msgs, r.ok, want, r.logs)
		}
	})
}

// FuzzTTYDTokenAnswer serves arbitrary /token answers (status from a set
// that matters, any content type, any body) to the ttyd_token probe. The
// word SECRET in the body becomes a fresh random value standing for the
// token: it must never reach the probe's log or metrics, wherever the
// fuzzer put it. A 200 whose body is a JSON object with a string "token"
// must succeed; anything else that is not a configured status must fail.
func FuzzTTYDTokenAnswer(f *testing.F) {
	for _, s := range []struct {
		status uint8
		ct     string
		body   string
	}{
		{0, "application/json;charset=utf-8", `{"token": "SECRET"}`},
		{0, "application/json", `{"token": "SECRET", "x": 1}`},
		{0, "text/html", `{"token": 42, "SECRET": "SECRET"}`},
		{0, "", `{"token": "SECRET"`},
		{0, "", `["SECRET"]`},
		{0, "", `{"token": "\u0053ECRET"} SECRET`},
		{1, "text/plain; charset=utf-8", "404 page not found\n"},
		{1, "text/html", "SECRET"},
		{2, "", ""},
		{3, "", "SECRET"},
		{4, "text/plain", "Unauthorized SECRET"},
	} {
		f.Add(s.status, s.ct, []byte(s.body))
	}
	type answer struct {
		status int
		ct     string
		body   []byte
	}
	var (
		answers sync.Map
		ids     atomic.Int64
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := strings.TrimSuffix(strings.Trim(r.URL.Path, "/"), "/token")
		v, ok := answers.Load(id)
		if !ok {
			http.NotFound(w, r)
			return
		}
		a := v.(*answer)
		w.Header()["Content-Type"] = []string{a.ct}
		if a.status == http.StatusFound {
			w.Header().Set("Location", "https://auth.fuzz.invalid/login")
		}
		w.WriteHeader(a.status)
		w.Write(a.body)
	}))
	defer srv.Close()
	m := testModule(f, "prober: ttyd_token\ntimeout: 3s\nallowed_targets: [127.0.0.0/8]\nttyd_token: {valid_status_codes: [200, 302], redirect_host: auth.fuzz.invalid, body_size_limit: 4KiB}")
	env := Env{} // runProbeDirect gives each probe its own guard
	statuses := []int{http.StatusOK, http.StatusNotFound, http.StatusFound, http.StatusInternalServerError, http.StatusUnauthorized}

	f.Fuzz(func(t *testing.T, status uint8, ct string, body []byte) {
		if strings.ContainsFunc(ct, func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f }) {
			return // not a header value a client accepts
		}
		n := ids.Add(1)
		secret := fmt.Sprintf("tok%016x%08x", time.Now().UnixNano(), n)
		a := &answer{status: statuses[int(status)%len(statuses)], ct: ct, body: bytes.ReplaceAll(body, []byte("SECRET"), []byte(secret))}
		id := "t" + strconv.FormatInt(n, 10)
		answers.Store(id, a)
		defer answers.Delete(id)

		r := runProbeDirect(t, probeTTYDToken, srv.URL+"/"+id, m, env)
		var metrics strings.Builder
		if mfs, err := r.reg.Gather(); err == nil {
			for _, mf := range mfs {
				expfmt.NewEncoder(&metrics, expfmt.NewFormat(expfmt.TypeTextPlain)).Encode(mf)
			}
		}
		if strings.Contains(r.logs, secret) || strings.Contains(metrics.String(), secret) {
			t.Fatalf("the token value reached the log or metrics (status %d, body %q):\n%s\n%s", a.status, a.body, r.logs, metrics.String())
		}
		var doc map[string]json.RawMessage
		var tok string
		validToken := a.status == http.StatusOK && len(a.body) <= 4096 && json.Unmarshal(a.body, &doc) == nil &&
			doc["token"] != nil && json.Unmarshal(doc["token"], &tok) == nil
		switch {
		case validToken && !r.ok:
			t.Fatalf("a 200 with a JSON string token failed: %q\n%s", a.body, r.logs)
		case a.status != http.StatusOK && a.status != http.StatusFound && r.ok:
			t.Fatalf("status %d passed with valid_status_codes [200, 302]\n%s", a.status, r.logs)
		case a.status == http.StatusOK && !validToken && r.ok:
			t.Fatalf("a 200 without a JSON string token passed: %q\n%s", a.body, r.logs)
		}
	})
}
