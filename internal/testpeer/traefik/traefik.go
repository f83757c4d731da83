// Package traefik is a fake Traefik v3 API for tests: it serves a router
// table byte-for-byte the way Traefik v3.7.9 does (JSON arrays sorted by
// name, per_page/page pagination, X-Next-Page with 1 on the last page, 400
// past the end with a JSON body and a text/plain content type), and can be
// switched into the failure modes a prober must survive.
//
// It listens on 127.0.0.1 only.
package traefik

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Router is one entry of a router list. Raw is the exact JSON object the
// server sends; Name and Provider are kept for filtering tables in tests.
type Router struct {
	Name     string
	Provider string
	Raw      json.RawMessage
}

// Table is what one replica knows: its HTTP, TCP and UDP routers (each
// sorted by name, as Traefik sorts them), and its /api/version and
// /api/overview bodies.
type Table struct {
	HTTP     []Router
	TCP      []Router
	UDP      []Router
	Version  []byte
	Overview []byte // nil: computed from the table
}

// DefaultVersion is the /api/version body recorded from Traefik v3.7.9
// (Traefik writes it without a trailing newline).
var DefaultVersion = []byte(`{"Version":"v3.7.9","Codename":"cheddar","startDate":"2026-11-21T23:29:32.482974128Z"}`)

// FixtureDir is the directory holding the responses recorded from a real
// Traefik v3.7.9 (and the dynamic config that produced them).
func FixtureDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "testdata", "traefik-v3.7.9")
}

// Fixtures loads FixtureDir; it panics when the files are missing, which
// only a broken checkout can cause.
func Fixtures() *Table {
	t, err := LoadFixtures(FixtureDir())
	if err != nil {
		panic(err)
	}
	return t
}

// LoadFixtures reads the recorded responses in dir (routers-page1..3.json,
// tcp-routers.json, version.json, overview.json) into one table.
func LoadFixtures(dir string) (*Table, error) {
	t := &Table{}
	for i := 1; i <= 3; i++ {
		rs, err := readRouters(filepath.Join(dir, fmt.Sprintf("routers-page%d.json", i)))
		if err != nil {
			return nil, err
		}
		t.HTTP = append(t.HTTP, rs...)
	}
	var err error
	if t.TCP, err = readRouters(filepath.Join(dir, "tcp-routers.json")); err != nil {
		return nil, err
	}
	if t.Version, err = os.ReadFile(filepath.Join(dir, "version.json")); err != nil {
		return nil, err
	}
	if t.Overview, err = os.ReadFile(filepath.Join(dir, "overview.json")); err != nil {
		return nil, err
	}
	t.sort()
	return t, nil
}

func readRouters(path string) ([]Router, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(data, &raws); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	out := make([]Router, 0, len(raws))
	for _, raw := range raws {
		r, err := NewRouter(raw)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// NewRouter wraps a raw router object, reading its name and provider.
func NewRouter(raw json.RawMessage) (Router, error) {
	var head struct {
		Name     string `json:"name"`
		Provider string `json:"provider"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return Router{}, err
	}
	if head.Name == "" {
		return Router{}, errors.New("router without a name")
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return Router{}, err
	}
	return Router{Name: head.Name, Provider: head.Provider, Raw: buf.Bytes()}, nil
}

// RouterSpec is what Generate and MakeRouter build a router from.
type RouterSpec struct {
	Name     string // without @provider
	Provider string
	Rule     string
	Service  string
	Errors   []string // non-empty: the router is listed as disabled
}

// MakeRouter renders a router object the way Traefik v3.7.9 does (same
// field order and fields).
func MakeRouter(s RouterSpec) Router {
	status := "enabled"
	if len(s.Errors) > 0 {
		status = "disabled"
	}
	obj := struct {
		EntryPoints   []string `json:"entryPoints"`
		Service       string   `json:"service"`
		Rule          string   `json:"rule"`
		RuleSyntax    string   `json:"ruleSyntax"`
		Priority      int      `json:"priority"`
		Observability any      `json:"observability"`
		Error         []string `json:"error,omitempty"`
		Status        string   `json:"status"`
		Using         []string `json:"using"`
		Name          string   `json:"name"`
		Provider      string   `json:"provider"`
		PriorityStr   string   `json:"priorityStr"`
	}{
		EntryPoints: []string{"web"},
		Service:     s.Service,
		Rule:        s.Rule,
		RuleSyntax:  "default",
		Priority:    len(s.Rule),
		Observability: map[string]any{
			"accessLogs": true, "metrics": true, "tracing": true, "traceVerbosity": "minimal",
		},
		Error:       s.Errors,
		Status:      status,
		Using:       []string{"web"},
		Name:        s.Name + "@" + s.Provider,
		Provider:    s.Provider,
		PriorityStr: strconv.Itoa(len(s.Rule)),
	}
	raw, err := json.Marshal(obj)
	if err != nil {
		panic(err) // only strings and ints: cannot fail
	}
	return Router{Name: obj.Name, Provider: s.Provider, Raw: raw}
}

// Generate builds a table of n user routers spread round-robin across the
// providers kubernetes (Ingress), kubernetescrd (IngressRoute) and file,
// named like Traefik names them, plus the three internal routers a replica
// with api, ping and metrics enabled lists.
func Generate(n int) *Table {
	t := &Table{Version: DefaultVersion}
	for i := range n {
		host := fmt.Sprintf("app%05d.example.com", i)
		ns := []string{"default", "terminal", "monitoring", "nextcloud"}[i%4]
		var s RouterSpec
		switch i % 3 {
		case 0:
			s = RouterSpec{Name: ns + "-ing" + strconv.Itoa(i) + "-" + strings.ReplaceAll(host, ".", "-"), Provider: "kubernetes",
				Rule: "Host(`" + host + "`) && PathPrefix(`/`)", Service: ns + "-svc" + strconv.Itoa(i) + "-80"}
		case 1:
			s = RouterSpec{Name: fmt.Sprintf("%s-route%d-%020x", ns, i, uint64(i)*2654435761), Provider: "kubernetescrd",
				Rule: "Host(`" + host + "`)", Service: ns + "-svc" + strconv.Itoa(i) + "-80"}
		default:
			s = RouterSpec{Name: ns + "-file" + strconv.Itoa(i), Provider: "file", Rule: "Host(`" + host + "`)", Service: "backend"}
		}
		t.HTTP = append(t.HTTP, MakeRouter(s))
	}
	for _, name := range []string{"api", "ping", "prometheus"} {
		t.HTTP = append(t.HTTP, MakeRouter(RouterSpec{Name: name, Provider: "internal", Rule: "PathPrefix(`/" + name + "`)", Service: name + "@internal"}))
	}
	t.sort()
	return t
}

func (t *Table) sort() {
	for _, rs := range [][]Router{t.HTTP, t.TCP, t.UDP} {
		slices.SortFunc(rs, func(a, b Router) int { return strings.Compare(a.Name, b.Name) })
	}
}

// Clone returns a deep-enough copy: the router slices are new, the raw
// bytes are shared (never modified).
func (t *Table) Clone() *Table {
	c := *t
	c.HTTP = slices.Clone(t.HTTP)
	c.TCP = slices.Clone(t.TCP)
	c.UDP = slices.Clone(t.UDP)
	return &c
}

// Without returns a copy of t without the HTTP routers drop selects, e.g.
// the incident replica: Without(ByProvider("kubernetes")).
func (t *Table) Without(drop func(Router) bool) *Table {
	c := t.Clone()
	c.HTTP = slices.DeleteFunc(c.HTTP, drop)
	c.Overview = nil
	return c
}

// With returns a copy of t with routers added to the HTTP list.
func (t *Table) With(routers ...Router) *Table {
	c := t.Clone()
	c.HTTP = append(c.HTTP, routers...)
	c.Overview = nil
	c.sort()
	return c
}

// ByProvider selects routers of one provider.
func ByProvider(p string) func(Router) bool {
	return func(r Router) bool { return r.Provider == p }
}

// Mode is a failure mode for every /api request.
type Mode int32

const (
	OK Mode = iota
	// Slow blocks until the request's context ends (client gone or server
	// closed) and never answers.
	Slow
	// HTML answers 200 text/html, like a login page or a wrong port.
	HTML
	// Truncated sends half of the JSON and ends the response.
	Truncated
	// Huge streams a JSON array that never ends (until the client hangs up
	// or HugeLimit bytes were sent).
	Huge
	// WrongContent answers valid JSON of the wrong shape (an object).
	WrongContent
	// NoNextPage omits X-Next-Page from router lists.
	NoNextPage
	// GarbledNextPage sends a non-numeric X-Next-Page.
	GarbledNextPage
)

// HugeLimit bounds what Huge sends when the client keeps reading.
const HugeLimit = 256 << 20

// Server is a running fake replica.
type Server struct {
	URL  string // http://127.0.0.1:port
	Addr string // 127.0.0.1:port

	srv      *httptest.Server
	mode     atomic.Int32
	closing  chan struct{}
	closeOne sync.Once

	mu       sync.RWMutex
	table    *Table
	overview []byte
	// encoded pages, so that a benchmark measures the client, not the fake
	pageCache map[pageKey][]byte

	requests atomic.Int64
	pages    sync.Map // path → *atomic.Int64
}

// NewServer starts a fake replica serving table on 127.0.0.1.
func NewServer(table *Table) *Server {
	s := &Server{closing: make(chan struct{})}
	s.SetTable(table)
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		panic(fmt.Sprintf("traefik testpeer: listen: %v", err))
	}
	s.srv.Listener = ln
	s.srv.Start()
	s.URL = s.srv.URL
	s.Addr = ln.Addr().String()
	return s
}

// Start is NewServer with Close registered as test cleanup.
func Start(tb interface{ Cleanup(func()) }, table *Table) *Server {
	s := NewServer(table)
	tb.Cleanup(s.Close)
	return s
}

// DownURL returns the URL of a port that was just listening on 127.0.0.1
// and is now closed: connections are refused.
func DownURL() string {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

// Close stops the server; handlers blocked in Slow mode return first.
func (s *Server) Close() {
	s.closeOne.Do(func() { close(s.closing) })
	s.srv.Close()
}

// SetMode switches the failure mode for following requests.
func (s *Server) SetMode(m Mode) { s.mode.Store(int32(m)) }

// SetTable replaces the served table.
func (s *Server) SetTable(t *Table) {
	ov := t.Overview
	if ov == nil {
		ov = overview(t)
	}
	s.mu.Lock()
	s.table, s.overview, s.pageCache = t, ov, map[pageKey][]byte{}
	s.mu.Unlock()
}

// Requests is how many requests the server received.
func (s *Server) Requests() int64 { return s.requests.Load() }

// PathRequests is how many requests the server received for path.
func (s *Server) PathRequests(path string) int64 {
	if v, ok := s.pages.Load(path); ok {
		return v.(*atomic.Int64).Load()
	}
	return 0
}

func overview(t *Table) []byte {
	count := func(rs []Router) (total, errs int) {
		for _, r := range rs {
			total++
			if bytes.Contains(r.Raw, []byte(`"status":"disabled"`)) {
				errs++
			}
		}
		return
	}
	ht, he := count(t.HTTP)
	tt, te := count(t.TCP)
	ut, ue := count(t.UDP)
	return fmt.Appendf(nil, `{"http":{"routers":{"total":%d,"warnings":0,"errors":%d},"services":{"total":0,"warnings":0,"errors":0},"middlewares":{"total":0,"warnings":0,"errors":0}},"tcp":{"routers":{"total":%d,"warnings":0,"errors":%d},"services":{"total":0,"warnings":0,"errors":0},"middlewares":{"total":0,"warnings":0,"errors":0}},"udp":{"routers":{"total":%d,"warnings":0,"errors":%d},"services":{"total":0,"warnings":0,"errors":0}},"certificates":{"total":0,"warnings":0,"errors":0},"features":{"tracing":"","metrics":"Prometheus","accessLog":false},"providers":["File"]}`+"\n",
		ht, he, tt, te, ut, ue)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	v, _ := s.pages.LoadOrStore(r.URL.Path, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)

	s.mu.RLock()
	t, ov := s.table, s.overview
	s.mu.RUnlock()

	var list []Router
	switch r.URL.Path {
	case "/api/http/routers":
		list = t.HTTP
	case "/api/tcp/routers":
		list = t.TCP
	case "/api/udp/routers":
		list = t.UDP
	case "/api/version", "/api/overview":
	default:
		http.NotFound(w, r) // gorilla/mux's answer: "404 page not found\n"
		return
	}
	if r.Method != http.MethodGet {
		http.Error(w, "405 method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if s.failed(w, r, list) {
		return
	}
	switch r.URL.Path {
	case "/api/version":
		// Traefik renders the version with unrolled/render: its own content
		// type, no trailing newline.
		w.Header().Set("Content-Type", "application/json; charset=UTF-8")
		w.Write(t.Version)
		return
	case "/api/overview":
		w.Header().Set("Content-Type", "application/json")
		w.Write(ov)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	start, end, next, err := pagination(r, len(list))
	if err != nil {
		writeError(w, err.Error(), http.StatusBadRequest)
		return
	}
	switch Mode(s.mode.Load()) {
	case NoNextPage:
	case GarbledNextPage:
		w.Header().Set("X-Next-Page", "two")
	default:
		w.Header().Set("X-Next-Page", strconv.Itoa(next))
	}
	w.Write(s.page(t, pageKey{r.URL.Path, start, end}, list))
}

type pageKey struct {
	path       string
	start, end int
}

func (s *Server) page(t *Table, k pageKey, list []Router) []byte {
	s.mu.RLock()
	b, ok := s.pageCache[k]
	same := s.table == t
	s.mu.RUnlock()
	if ok && same {
		return b
	}
	b = encodeList(list[k.start:k.end])
	s.mu.Lock()
	if s.table == t {
		s.pageCache[k] = b
	}
	s.mu.Unlock()
	return b
}

// encodeList renders routers exactly as json.Encoder would: compact array
// and a trailing newline.
func encodeList(rs []Router) []byte {
	n := 3
	for _, r := range rs {
		n += len(r.Raw) + 1
	}
	buf := make([]byte, 0, n)
	buf = append(buf, '[')
	for i, r := range rs {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, r.Raw...)
	}
	return append(buf, ']', '\n')
}

// failed answers the request in the current failure mode; false means
// serve normally.
func (s *Server) failed(w http.ResponseWriter, r *http.Request, list []Router) bool {
	switch Mode(s.mode.Load()) {
	case Slow:
		select {
		case <-r.Context().Done():
		case <-s.closing:
		}
		return true
	case HTML:
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		w.Write([]byte("<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Please sign in</body></html>\n"))
		return true
	case Truncated:
		body := encodeList(list)
		if r.URL.Path == "/api/version" {
			body = DefaultVersion
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Next-Page", "1")
		w.Write(body[:len(body)/2])
		return true
	case Huge:
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Next-Page", "1")
		chunk := bytes.Repeat([]byte(`{"name":"filler@file","provider":"file","status":"enabled"},`), 1000)
		w.Write([]byte("["))
		for sent := 0; sent < HugeLimit; sent += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return true
			}
			select {
			case <-r.Context().Done():
				return true
			case <-s.closing:
				return true
			default:
			}
		}
		return true
	case WrongContent:
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Next-Page", "1")
		w.Write([]byte(`{"routers":{"total":3}}` + "\n"))
		return true
	}
	return false
}

// pagination is Traefik's pkg/api pagination: per_page default 100, page
// default 1, both must be positive integers; a page starting past the end
// is an error unless the list is empty; the next page is 1 on the last one.
func pagination(r *http.Request, total int) (start, end, next int, err error) {
	perPage, err := intParam(r, "per_page", 100)
	if err != nil {
		return 0, 0, 0, err
	}
	page, err := intParam(r, "page", 1)
	if err != nil {
		return 0, 0, 0, err
	}
	start = (page - 1) * perPage
	if start != 0 && start >= total {
		return 0, 0, 0, fmt.Errorf("invalid request: page: %d, per_page: %d", page, perPage)
	}
	end = min(start+perPage, total)
	next = 1
	if page*perPage < total {
		next = page + 1
	}
	return start, end, next, nil
}

func intParam(r *http.Request, key string, def int) (int, error) {
	raw := r.URL.Query().Get(key)
	if raw == "" {
		return def, nil
	}
	v, err := strconv.Atoi(raw)
	if err != nil || v <= 0 {
		if err != nil {
			v = 0
		}
		return 0, fmt.Errorf("invalid request: %s: %d", key, v)
	}
	return v, nil
}

// writeError is Traefik's: a JSON body sent through http.Error, hence
// Content-Type text/plain and a trailing newline.
func writeError(w http.ResponseWriter, msg string, code int) {
	data, err := json.Marshal(struct {
		Message string `json:"message"`
	}{msg})
	if err != nil {
		http.Error(w, msg, code)
		return
	}
	http.Error(w, string(data), code)
}
