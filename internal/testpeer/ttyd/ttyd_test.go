package ttyd

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func get(t *testing.T, url string, auth bool, cred string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if auth {
		u, p, _ := strings.Cut(cred, ":")
		req.SetBasicAuth(u, p)
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestHTTPSide(t *testing.T) {
	s := NewServer(Options{Credential: "u:p", BasePath: "/b"})
	defer s.Close()
	resp, body := get(t, s.URL+"/token", true, "u:p")
	if resp.StatusCode != 200 || body != `{"token": "dTpw"}` || resp.Header.Get("Content-Type") != "application/json;charset=utf-8" || !strings.HasPrefix(resp.Header.Get("Server"), "ttyd/") {
		t.Errorf("token: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	resp, body = get(t, s.URL+"/token", false, "")
	if resp.StatusCode != 401 || body != "" || resp.Header.Get("WWW-Authenticate") != `Basic realm="ttyd"` {
		t.Errorf("no auth: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	if resp, _ = get(t, s.URL+"/ws", false, ""); resp.StatusCode != 401 {
		t.Errorf("plain GET /ws without auth: %d", resp.StatusCode)
	}
	if resp, _ = get(t, s.URL+"/ws", true, "u:p"); resp.StatusCode != 404 {
		t.Errorf("plain GET /ws: %d", resp.StatusCode)
	}
	if resp, _ = get(t, s.URL, true, "u:p"); resp.StatusCode != 302 || resp.Header.Get("Location") != "/b/" {
		t.Errorf("base path: %d %v", resp.StatusCode, resp.Header)
	}
	if resp, body = get(t, s.URL+"/nope", true, "u:p"); resp.StatusCode != 404 || body == UnroutedBody {
		t.Errorf("ttyd 404 must not look like Traefik's: %d %q", resp.StatusCode, body)
	}

	plain := NewServer(Options{})
	defer plain.Close()
	if _, body = get(t, plain.URL+"/token", false, ""); len(body) != 13 {
		t.Errorf("empty token body %q is not 13 bytes", body)
	}

	u := NewUnrouted()
	defer u.Close()
	resp, body = get(t, u.URL+"/token", false, "")
	if resp.StatusCode != 404 || body != "404 page not found\n" || resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("unrouted: %d %q %v", resp.StatusCode, body, resp.Header)
	}
}

func dial(t *testing.T, s *Server, protos []string, h http.Header) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	d := websocket.Dialer{Subprotocols: protos, HandshakeTimeout: 5 * time.Second}
	return d.Dial("ws"+strings.TrimPrefix(s.URL, "http")+"/ws", h)
}

func TestWebSocketSide(t *testing.T) {
	s := NewServer(Options{Credential: "u:p"})
	defer s.Close()
	auth := http.Header{"Authorization": {"Basic dTpw"}}

	if _, resp, err := dial(t, s, []string{"tty"}, nil); err == nil || resp != nil {
		t.Errorf("upgrade without auth: %v %v, want EOF and no response", resp, err)
	}
	if _, resp, err := dial(t, s, []string{"nope"}, auth); err == nil || resp != nil {
		t.Errorf("unknown subprotocol: %v %v, want EOF and no response", resp, err)
	}

	c, _, err := dial(t, s, []string{"tty"}, auth)
	if err != nil {
		t.Fatal(err)
	}
	// Nothing before the init message.
	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	var ne interface{ Timeout() bool }
	if _, _, err := c.ReadMessage(); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read before init: %v, want timeout", err)
	}
	c.Close()
	<-s.Sessions()

	// A wrong AuthToken: close 1008.
	c, _, err = dial(t, s, []string{"tty"}, auth)
	if err != nil {
		t.Fatal(err)
	}
	c.WriteMessage(websocket.BinaryMessage, []byte(`{"AuthToken":"bad"}`))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := c.ReadMessage(); !websocket.IsCloseError(err, websocket.ClosePolicyViolation) {
		t.Errorf("bad token: %v, want close 1008", err)
	}
	c.Close()
	if sess := <-s.Sessions(); !sess.AuthRefused {
		t.Errorf("session %+v", sess)
	}

	// The right one: 1, 2, 0.
	c, _, err = dial(t, s, []string{"tty"}, auth)
	if err != nil {
		t.Fatal(err)
	}
	c.WriteMessage(websocket.BinaryMessage, []byte(`{"AuthToken":"dTpw","columns":100,"rows":30}`))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var kinds []byte
	for range 3 {
		_, msg, err := c.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		kinds = append(kinds, msg[0])
	}
	if string(kinds) != "120" {
		t.Errorf("frames %q, want 1, 2, 0", kinds)
	}
	// Read-only by default: input is dropped.
	c.WriteMessage(websocket.BinaryMessage, []byte("0ls\r"))
	c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
	if _, _, err := c.ReadMessage(); !websocket.IsCloseError(err, 1000) {
		t.Errorf("after input and close: %v, want only the close answer", err)
	}
	c.Close()
	sess := <-s.Sessions()
	if !sess.CloseReceived || sess.Columns != 100 || sess.Rows != 30 || len(sess.Inputs) != 1 {
		t.Errorf("session %+v", sess)
	}
}

func TestChildExit(t *testing.T) {
	s := NewServer(Options{ExitAfterPrompt: true})
	defer s.Close()
	c, _, err := dial(t, s, []string{"tty"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.WriteMessage(websocket.BinaryMessage, []byte(`{"AuthToken":""}`))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, _, err = c.ReadMessage(); err != nil {
			break
		}
	}
	if !websocket.IsCloseError(err, websocket.CloseAbnormalClosure) {
		t.Errorf("child exit: %v, want 1006 (no close frame)", err)
	}
}
